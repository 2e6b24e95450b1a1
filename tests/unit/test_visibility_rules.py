"""The history visibility rules as pure functions (spec "Room History Visibility")."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.events import KNOWN_ROOM_VERSIONS
from trioserver.handlers.visibility import Snapshot, Viewer, allowed_by, is_visible, visibility_of
from trioserver.stores.events import StoredEvent

from tests.unit.events.helpers import ALICE, Room

V10 = KNOWN_ROOM_VERSIONS["10"]


def _stored(stream: int, **content: Any) -> StoredEvent:
    event = Room(V10).event("m.room.message", ALICE, content or {"body": "x"})
    return StoredEvent(event, stream, stream, 1, None, None, None)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"history_visibility": "joined"}, "joined"),
        ({"history_visibility": "world_readable"}, "world_readable"),
        ({"history_visibility": "nonsense"}, "shared"),
        ({"history_visibility": 3}, "shared"),
        ({}, "shared"),
    ],
)
def test_visibility_of(content: dict[str, Any], expected: str) -> None:
    event = Room(V10).event("m.room.history_visibility", ALICE, content, state_key="")
    assert visibility_of(event) == expected


def test_visibility_of_missing_event_is_shared() -> None:
    assert visibility_of(None) == "shared"


NEVER_JOINED = Viewer(ALICE, None)
JOINED_LATER = Viewer(ALICE, 100)
JOINED_EARLIER = Viewer(ALICE, 5)


@pytest.mark.parametrize(
    ("visibility", "membership", "viewer", "expected"),
    [
        ("world_readable", None, NEVER_JOINED, True),
        ("joined", "join", NEVER_JOINED, True),
        ("joined", "invite", JOINED_LATER, False),
        ("joined", None, JOINED_LATER, False),
        ("invited", "invite", NEVER_JOINED, True),
        ("invited", "leave", JOINED_LATER, False),
        ("invited", None, JOINED_LATER, False),
        ("shared", None, JOINED_LATER, True),
        ("shared", "invite", NEVER_JOINED, False),
        ("shared", "leave", JOINED_EARLIER, False),
        ("shared", None, NEVER_JOINED, False),
    ],
)
def test_allowed_by(
    visibility: str, membership: str | None, viewer: Viewer, expected: bool
) -> None:
    assert allowed_by(Snapshot(visibility, membership), viewer, 50) is expected


def test_before_or_after_allows_special_events() -> None:
    stored = _stored(50)
    after = Snapshot("joined", "leave")
    assert not is_visible(stored, NEVER_JOINED, None, after)
    assert is_visible(stored, NEVER_JOINED, Snapshot("joined", "join"), after)
    assert is_visible(stored, NEVER_JOINED, Snapshot("world_readable", None), after)
    assert is_visible(stored, NEVER_JOINED, None, Snapshot("world_readable", None))


def test_own_leave_after_invite_is_visible() -> None:
    room = Room(V10)
    room.set_member(ALICE, "invite", sender=room.create.sender)
    leave = room.set_member(ALICE, "leave")
    stored = StoredEvent(leave, 9, 9, 1, None, None, None)
    before = Snapshot("shared", "invite")
    after = Snapshot("shared", "leave")
    assert is_visible(stored, NEVER_JOINED, before, after)
    # Someone else's event with the same snapshots is not (rule 3 needs a later join).
    assert not is_visible(_stored(9), NEVER_JOINED, None, after)
