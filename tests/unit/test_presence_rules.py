"""The pure parts of presence: what a presence looks like to clients, and which changes are
worth telling others about."""

from __future__ import annotations

import attrs
import pytest

from trioserver.handlers.presence import (
    LAST_ACTIVE_GRANULARITY_MS,
    UserPresence,
    should_notify,
)

ALICE = "@alice:example.org"
NOW = 1_700_000_000_000


def test_content_of_a_user_never_seen() -> None:
    assert UserPresence(ALICE).content(NOW) == {"presence": "offline"}


def test_content_of_an_online_user() -> None:
    presence = UserPresence(ALICE, "online", "hello", NOW - 1500, currently_active=True)
    assert presence.content(NOW) == {
        "presence": "online",
        "last_active_ago": 1500,
        "status_msg": "hello",
        "currently_active": True,
    }


def test_currently_active_only_for_online_users_and_empty_status_is_left_out() -> None:
    presence = UserPresence(ALICE, "unavailable", "", NOW - 10, currently_active=False)
    assert presence.content(NOW) == {"presence": "unavailable", "last_active_ago": 10}


def test_last_active_ago_is_never_negative() -> None:
    assert UserPresence(ALICE, "offline", None, NOW + 5).content(NOW)["last_active_ago"] == 0


ONLINE = UserPresence(ALICE, "online", None, NOW, currently_active=True)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (ONLINE, ONLINE, False),
        (ONLINE, attrs.evolve(ONLINE, state="unavailable"), True),
        (ONLINE, attrs.evolve(ONLINE, status_msg="hi"), True),
        (ONLINE, attrs.evolve(ONLINE, currently_active=False), True),
        # While currently active, clients need no last-active updates.
        (ONLINE, attrs.evolve(ONLINE, last_active_ts=NOW + 2 * LAST_ACTIVE_GRANULARITY_MS), False),
        (
            attrs.evolve(ONLINE, currently_active=False),
            attrs.evolve(
                ONLINE,
                currently_active=False,
                last_active_ts=NOW + 2 * LAST_ACTIVE_GRANULARITY_MS,
            ),
            True,
        ),
        (
            UserPresence(ALICE, "offline", None, NOW),
            UserPresence(ALICE, "offline", None, NOW + 1000),
            False,
        ),
        (
            UserPresence(ALICE, "offline", None, NOW),
            UserPresence(ALICE, "offline", None, NOW + 2 * LAST_ACTIVE_GRANULARITY_MS),
            True,
        ),
    ],
)
def test_should_notify(old: UserPresence, new: UserPresence, expected: bool) -> None:
    assert should_notify(old, new) is expected
