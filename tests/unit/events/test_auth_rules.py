"""Authorisation rules other than membership, as tables of cases.

Cast as in test_auth_membership: CREATOR (100 / infinite in v12), MOD (50,
joined), ALICE (0), BOB (other.test, 0).  Defaults: events_default 0,
state_default 50, invite 0, kick/ban/redact 50.
"""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    AuthError,
    RoomVersion,
    RoomVersions,
    check_auth_rules,
    check_create,
)

from tests.unit.events.authcases import ALL, Case, expand, run, since
from tests.unit.events.helpers import ALICE, BOB, CREATOR, MOD, Room, signed_raw_event

MSG = "m.room.message"

EVENT_CASES = [
    Case("message-by-member", (MSG, ALICE, None, {}), True, members={ALICE: "join"}),
    Case("message-by-non-member", (MSG, BOB, None, {}), False, reason="not joined"),
    Case(
        "message-by-invitee",
        (MSG, BOB, None, {}),
        False,
        reason="not joined",
        members={BOB: "invite"},
    ),
    Case(
        "message-below-events-default",
        (MSG, ALICE, None, {}),
        False,
        reason="power level",
        power_levels={"events_default": 10},
        members={ALICE: "join"},
    ),
    Case(
        "message-at-events-default",
        (MSG, MOD, None, {}),
        True,
        power_levels={"events_default": 50},
    ),
    Case(
        "message-type-override",
        (MSG, ALICE, None, {}),
        False,
        reason="power level",
        power_levels={"events": {MSG: 1}},
        members={ALICE: "join"},
    ),
    Case(
        "state-below-state-default",
        ("m.room.topic", ALICE, "", {}),
        False,
        reason="power level",
        members={ALICE: "join"},
    ),
    Case("state-at-state-default", ("m.room.topic", MOD, "", {}), True),
    Case(
        "state-type-override",
        ("m.room.topic", ALICE, "", {}),
        True,
        power_levels={"events": {"m.room.topic": 0}},
        members={ALICE: "join"},
    ),
    Case("state-key-of-another-user", ("m.custom", MOD, BOB, {}), False, reason="reserved"),
    Case(
        "state-key-own-user-id",
        ("m.custom", ALICE, ALICE, {}),
        True,
        power_levels={"events": {"m.custom": 0}},
        members={ALICE: "join"},
    ),
    Case("state-key-at-without-user", ("m.custom", MOD, "@", {}), False, reason="reserved"),
    Case(
        "third-party-invite",
        ("m.room.third_party_invite", ALICE, "tok", {}),
        True,
        members={ALICE: "join"},
    ),
    Case(
        "third-party-invite-below-invite-level",
        ("m.room.third_party_invite", ALICE, "tok", {}),
        False,
        reason="invite level",
        power_levels={"invite": 10},
        members={ALICE: "join"},
    ),
    Case(
        "third-party-invite-ignores-state-default",
        ("m.room.third_party_invite", ALICE, "tok", {}),
        True,
        power_levels={"state_default": 100},
        members={ALICE: "join"},
    ),
    Case(
        "third-party-invite-non-member",
        ("m.room.third_party_invite", BOB, "tok", {}),
        False,
        reason="not joined",
    ),
    # v1-5 rule 4: aliases bypass membership and power; v6+ they are ordinary state.
    Case("aliases-own-domain", ("m.room.aliases", BOB, "other.test", {}), True, since(1, 5)),
    Case(
        "aliases-other-domain",
        ("m.room.aliases", BOB, "hs.test", {}),
        False,
        since(1, 5),
        reason="domain",
    ),
    Case("aliases-no-state-key", ("m.room.aliases", BOB, None, {}), False, since(1, 5)),
    Case(
        "aliases-ordinary-state",
        ("m.room.aliases", BOB, "other.test", {}),
        False,
        since(6),
        reason="not joined",
    ),
    Case("aliases-by-moderator", ("m.room.aliases", MOD, "elsewhere", {}), True, since(6)),
    # v1/v2 rule 11; v3+ only the events levels apply to m.room.redaction.
    Case(
        "redact-with-redact-level",
        ("m.room.redaction", MOD, None, {}),
        True,
        redacts="$x:other.test",
    ),
    Case(
        "redact-same-event-id-domain",
        ("m.room.redaction", ALICE, None, {}),
        True,
        redacts="$x:hs.test",
        members={ALICE: "join"},
    ),
    Case(
        "redact-remote-without-level",
        ("m.room.redaction", ALICE, None, {}),
        False,
        since(1, 2),
        reason="redact",
        redacts="$x:other.test",
        members={ALICE: "join"},
    ),
    Case(
        "redact-remote-allowed-by-auth-rules",
        ("m.room.redaction", ALICE, None, {}),
        True,
        since(3),
        redacts="$x:other.test",
        members={ALICE: "join"},
    ),
    Case(
        "redact-without-target",
        ("m.room.redaction", ALICE, None, {}),
        False,
        since(1, 2),
        members={ALICE: "join"},
    ),
    Case(
        "redaction-below-events-level",
        ("m.room.redaction", ALICE, None, {}),
        False,
        reason="power level",
        power_levels={"events": {"m.room.redaction": 10}},
        redacts="$x:hs.test",
        members={ALICE: "join"},
    ),
]


@pytest.mark.parametrize(("case", "room_version"), expand(EVENT_CASES))
def test_event_rules(case: Case, room_version: RoomVersion) -> None:
    run(case, room_version)


# -- m.room.create ---------------------------------------------------------------------


def _create_pdu(version: RoomVersion, **changes: Any) -> dict[str, Any]:
    pdu: dict[str, Any] = {
        "type": "m.room.create",
        "state_key": "",
        "sender": CREATOR,
        "content": {"room_version": version.identifier},
        "prev_events": [],
        "auth_events": [],
        "depth": 1,
        "origin_server_ts": 1,
    }
    if not version.room_id_from_create_event:
        pdu["room_id"] = "!r:hs.test"
    if not version.implicit_room_creator:
        pdu["content"]["creator"] = CREATOR
    for key, value in changes.items():
        if value is None:
            pdu.pop(key, None)
        else:
            pdu[key] = value
    if version.event_id_in_pdu:
        pdu["event_id"] = "$create:hs.test"
    return pdu


def _content(version: RoomVersion, **changes: Any) -> dict[str, Any]:
    content: dict[str, Any] = _create_pdu(version)["content"]
    content.update(changes)
    return {key: value for key, value in content.items() if value is not None}


def _prev(version: RoomVersion) -> list[Any]:
    return [["$p:hs.test", {"sha256": "x"}]] if version.event_id_in_pdu else ["$p"]


CREATE_CASES: list[tuple[str, Any, bool, tuple[str, ...]]] = [
    ("valid", lambda v: {}, True, ALL),
    ("has-prev-events", lambda v: {"prev_events": _prev(v)}, False, ALL),
    ("room-id-domain-mismatch", lambda v: {"room_id": "!r:other.test"}, False, since(1, 11)),
    ("room-id-present", lambda v: {"room_id": "!r:hs.test"}, False, ("12",)),
    ("no-creator", lambda v: {"content": _content(v, creator=None)}, False, since(1, 10)),
    ("no-creator-needed", lambda v: {"content": _content(v, creator=None)}, True, since(11)),
    ("unknown-room-version", lambda v: {"content": _content(v, room_version="99")}, False, ALL),
    ("non-string-room-version", lambda v: {"content": _content(v, room_version=[1])}, False, ALL),
    ("other-known-room-version", lambda v: {"content": _content(v, room_version="1")}, True, ALL),
    ("room-version-absent", lambda v: {"content": _content(v, room_version=None)}, True, ALL),
    (
        "additional-creators",
        lambda v: {"content": _content(v, additional_creators=[BOB])},
        True,
        ALL,
    ),
    (
        "additional-creators-not-list",
        lambda v: {"content": _content(v, additional_creators=BOB)},
        False,
        ("12",),
    ),
    (
        "additional-creators-bad-id",
        lambda v: {"content": _content(v, additional_creators=["bob"])},
        False,
        ("12",),
    ),
    (
        "additional-creators-non-string",
        lambda v: {"content": _content(v, additional_creators=[1])},
        False,
        ("12",),
    ),
    (
        "additional-creators-unchecked-before-v12",
        lambda v: {"content": _content(v, additional_creators=[1])},
        True,
        since(1, 11),
    ),
]


@pytest.mark.parametrize(
    ("changes", "allowed", "room_version"),
    [
        pytest.param(changes, allowed, KNOWN_ROOM_VERSIONS[v], id=f"{name}-v{v}")
        for name, changes, allowed, versions in CREATE_CASES
        for v in versions
    ],
)
def test_create_rules(changes: Any, allowed: bool, room_version: RoomVersion) -> None:
    event = signed_raw_event(room_version, _create_pdu(room_version, **changes(room_version)))
    if allowed:
        check_create(room_version, event)
        check_auth_rules(room_version, event, {})
    else:
        with pytest.raises(AuthError):
            check_auth_rules(room_version, event, {})


# -- Rules that need a particular state ----------------------------------------------------


@pytest.mark.parametrize("room_version", [RoomVersions.V1, RoomVersions.V11, RoomVersions.V12])
def test_missing_create_event_is_rejected(room_version: RoomVersion) -> None:
    room = Room(room_version)
    event = room.event(MSG, CREATOR, {})
    state = {key: value for key, value in room.state.items() if key[0] != "m.room.create"}
    with pytest.raises(AuthError, match=r"m\.room\.create"):
        check_auth_rules(room_version, event, state)


def test_v12_room_id_must_match_the_create_event() -> None:
    room = Room(RoomVersions.V12)
    other = Room(RoomVersions.V12, create_content={"room_version": "12", "x": 1})
    event = other.event(MSG, CREATOR, {})
    assert event.room_id != room.create.room_id
    with pytest.raises(AuthError, match="room_id does not match"):
        check_auth_rules(RoomVersions.V12, event, room.state)
    check_auth_rules(RoomVersions.V12, event, other.state)
