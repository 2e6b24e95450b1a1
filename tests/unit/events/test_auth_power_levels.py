"""Power level rules and helpers, including v12 room creators.

Each PL case describes the change a sender makes to the room's current power
levels (defaults: MOD 50, CREATOR 100 before v12, users_default 0), with
``None`` meaning "remove this key".
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from trioserver.events import (
    CREATOR_POWER_LEVEL,
    KNOWN_ROOM_VERSIONS,
    AuthError,
    RoomVersion,
    RoomVersions,
    get_named_level,
    get_send_level,
    get_user_power_level,
    parse_power_level,
)

from tests.unit.events.authcases import ALL, since
from tests.unit.events.helpers import (
    ALICE,
    BOB,
    CREATOR,
    MOD,
    Room,
    default_power_levels,
    signed_raw_event,
)

PL = "m.room.power_levels"
MOD2 = "@mod2:hs.test"


@attrs.frozen
class PLCase:
    name: str
    sender: str
    change: dict[str, Any]
    allowed: bool
    versions: tuple[str, ...] = ALL
    current: dict[str, Any] = attrs.field(factory=dict)
    reason: str | None = None


def _apply(content: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    result = dict(content)
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            merged = {**result[key], **value}
            result[key] = {k: v for k, v in merged.items() if v is not None}
        elif value is None:
            result.pop(key, None)
        else:
            result[key] = value
    return result


PL_CASES = [
    PLCase("lower-own-level", MOD, {"users": {MOD: 40}}, True),
    PLCase("raise-own-level-above-own", MOD, {"users": {MOD: 51}}, False, reason="above"),
    PLCase("remove-own-entry", MOD, {"users": {MOD: None}}, True),
    PLCase("promote-to-own-level", MOD, {"users": {ALICE: 50}}, True),
    PLCase("promote-above-own-level", MOD, {"users": {ALICE: 51}}, False, reason="above"),
    PLCase(
        "demote-equal-user",
        MOD,
        {"users": {MOD2: 40}},
        False,
        current={"users": {MOD2: 50}},
        reason="not below",
    ),
    PLCase(
        "remove-equal-user",
        MOD,
        {"users": {MOD2: None}},
        False,
        current={"users": {MOD2: 50}},
        reason="not below",
    ),
    PLCase("demote-lower-user", MOD, {"users": {ALICE: 0}}, True, current={"users": {ALICE: 10}}),
    PLCase("remove-higher-user", MOD, {"users": {CREATOR: None}}, False, since(1, 11)),
    PLCase("lower-ban", MOD, {"ban": 40}, True),
    PLCase("raise-ban-above-own", MOD, {"ban": 60}, False, reason="above"),
    PLCase(
        "change-level-currently-above-own",
        MOD,
        {"kick": 50},
        False,
        current={"kick": 75},
        reason="from above",
    ),
    PLCase("remove-level-currently-above-own", MOD, {"kick": None}, False, current={"kick": 75}),
    PLCase("add-level-at-own", MOD, {"invite": 50}, True),
    PLCase("add-events-entry", MOD, {"events": {"m.room.name": 50}}, True),
    PLCase("add-events-entry-above-own", MOD, {"events": {"m.room.name": 60}}, False),
    PLCase(
        "change-events-entry-above-own",
        MOD,
        {"events": {"m.room.tombstone": 50}},
        False,
        current={"events": {"m.room.tombstone": 100}},
    ),
    PLCase(
        "remove-events-entry-above-own",
        MOD,
        {"events": {"m.room.tombstone": None}},
        False,
        current={"events": {"m.room.tombstone": 100}},
    ),
    PLCase(
        "notifications-checked-v6",
        MOD,
        {"notifications": {"room": 40}},
        False,
        since(6),
        current={"notifications": {"room": 100}},
    ),
    PLCase(
        "notifications-unchecked-v1-5",
        MOD,
        {"notifications": {"room": 40}},
        True,
        since(1, 5),
        current={"notifications": {"room": 100}},
    ),
    PLCase("not-enough-power-to-send", ALICE, {"users": {ALICE: 0}}, False, reason="power level"),
    PLCase("string-level-equal-value", MOD, {"ban": "50"}, True, since(1, 9), current={"ban": 50}),
    PLCase(
        "string-level-rejected-v10", MOD, {"ban": "50"}, False, since(10), reason="not an integer"
    ),
    PLCase("stringy-format", MOD, {"ban": " +040 ", "users": {ALICE: "-5"}}, True, since(1, 9)),
    PLCase("string-not-integer", MOD, {"ban": "4x"}, False),
    PLCase("string-decimal", MOD, {"ban": "40.5"}, False),
    PLCase("string-user-level-above-own", MOD, {"users": {ALICE: "51"}}, False, since(1, 9)),
    PLCase("float-truncated-v1-5", MOD, {"ban": 40.7, "users": {ALICE: 50.9}}, True, since(1, 5)),
    PLCase("float-rejected-v6", MOD, {"ban": 40.0}, False, since(6)),
    PLCase("boolean-level", MOD, {"ban": True}, False),
    PLCase("invalid-user-id", MOD, {"users": {"notauser": 0}}, False, reason="invalid user ID"),
    PLCase("historical-user-id", MOD, {"users": {"@Old:hs.test": 0}}, True),
    PLCase("user-level-not-integer", MOD, {"users": {ALICE: [1]}}, False),
    PLCase("users-not-object", MOD, {"users": [ALICE]}, False),
    PLCase("events-not-object", MOD, {"events": 5}, False),
    PLCase("events-value-string-v10", MOD, {"events": {"m.room.name": "5"}}, False, since(10)),
    PLCase("notifications-not-object-v6", MOD, {"notifications": 5}, False, since(6)),
    PLCase("notifications-unvalidated-v1-5", MOD, {"notifications": 5}, True, since(1, 5)),
    PLCase(
        "creator-listed-v12", CREATOR, {"users": {CREATOR: 100}}, False, ("12",), reason="creators"
    ),
    PLCase(
        "creator-sets-any-level-v12",
        CREATOR,
        {"users": {ALICE: 2**53 - 1}, "ban": 2**53 - 1},
        True,
        ("12",),
    ),
]


def _pl_room(case: PLCase, version: RoomVersion) -> Room:
    room = Room(version)
    room.set_state(PL, "", _apply(default_power_levels(version), case.current))
    room.set_member(MOD, "join")
    room.set_member(ALICE, "join")
    return room


@pytest.mark.parametrize(
    ("case", "room_version"),
    [
        pytest.param(case, KNOWN_ROOM_VERSIONS[v], id=f"{case.name}-v{v}")
        for case in PL_CASES
        for v in case.versions
    ],
)
def test_power_level_changes(case: PLCase, room_version: RoomVersion) -> None:
    room = _pl_room(case, room_version)
    current = room.state[(PL, "")].content
    content = _apply(dict(current), case.change)
    # Build via a raw PDU so that values the builder refuses (floats in v6+)
    # reach the auth rules, as they would from a non-validating server.
    pdu = room.event(PL, case.sender, {}, state_key="").get_pdu_json()
    pdu["content"] = content
    event = signed_raw_event(room_version, pdu)
    if case.allowed:
        room.check(event)
    else:
        with pytest.raises(AuthError, match=case.reason):
            room.check(event)


@pytest.mark.parametrize(
    "room_version", list(KNOWN_ROOM_VERSIONS.values()), ids=lambda v: f"v{v.identifier}"
)
def test_first_power_levels_event(room_version: RoomVersion) -> None:
    room = Room(room_version, with_power_levels=False, join_rule=None)
    room.set_member(ALICE, "join")
    # No previous power levels: the creator may send any (valid) content.
    content = {"users": {ALICE: 100}, "ban": 1000}
    room.check(room.event(PL, CREATOR, content, state_key=""))
    # Everyone else is at 0, below state_default (50).
    with pytest.raises(AuthError, match="power level"):
        room.check(room.event(PL, ALICE, content, state_key=""))
    # Format rules still apply to the first power levels event.
    with pytest.raises(AuthError):
        room.check(room.event(PL, CREATOR, {"users": {"x": 1}}, state_key=""))


def test_v12_additional_creators_cannot_be_listed() -> None:
    content = {"room_version": "12", "additional_creators": [BOB]}
    room = Room(RoomVersions.V12, create_content=content)
    event = room.event(PL, CREATOR, {"users": {BOB: 100}}, state_key="")
    with pytest.raises(AuthError, match="creators"):
        room.check(event)


# -- Helpers --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "value", "expected"),
    [
        (RoomVersions.V10, 5, 5),
        (RoomVersions.V10, "5", None),
        (RoomVersions.V10, True, None),
        (RoomVersions.V9, "5", 5),
        (RoomVersions.V9, " -0010\t", -10),
        (RoomVersions.V9, "+7", 7),
        (RoomVersions.V9, "1_000", None),
        (RoomVersions.V9, "٣", None),  # non-ASCII digits
        (RoomVersions.V9, "++1", None),
        (RoomVersions.V9, "", None),
        (RoomVersions.V9, 5.5, None),
        (RoomVersions.V5, 5.5, 5),
        (RoomVersions.V5, -5.9, -5),
        (RoomVersions.V5, 5.114698e4, 51146),
        (RoomVersions.V5, float("inf"), None),
        (RoomVersions.V5, float("nan"), None),
        (RoomVersions.V5, None, None),
        (RoomVersions.V5, [1], None),
    ],
)
def test_parse_power_level(version: RoomVersion, value: object, expected: int | None) -> None:
    assert parse_power_level(version, value) == expected


@pytest.mark.parametrize(
    ("room_version", "creator", "other"),
    [
        (RoomVersions.V1, 100, 0),
        (RoomVersions.V11, 100, 0),
        (RoomVersions.V12, CREATOR_POWER_LEVEL, 0),
    ],
)
def test_levels_without_power_levels_event(
    room_version: RoomVersion, creator: int, other: int
) -> None:
    room = Room(room_version, with_power_levels=False)
    assert get_user_power_level(room_version, CREATOR, room.state) == creator
    assert get_user_power_level(room_version, ALICE, room.state) == other
    # "state_default is 50 ... or there is no m.room.power_levels event".
    assert get_send_level(room_version, "m.room.topic", True, None) == 50
    assert get_send_level(room_version, MSG_TYPE, False, None) == 0
    assert [
        get_named_level(room_version, n, None) for n in ("invite", "kick", "ban", "redact")
    ] == [
        0,
        50,
        50,
        50,
    ]


MSG_TYPE = "m.room.message"


def test_levels_from_power_levels_content() -> None:
    content = {
        "users": {ALICE: "7", BOB: "junk"},
        "users_default": 3,
        "events": {MSG_TYPE: "9", "m.x": "junk"},
        "events_default": 1,
        "state_default": 2,
        "kick": "11",
        "ban": "junk",
    }
    version = RoomVersions.V9
    room = Room(version, power_levels=content)
    assert get_user_power_level(version, ALICE, room.state) == 7
    # Unreadable values in accepted state fall back to the default.
    assert get_user_power_level(version, BOB, room.state) == 3
    assert get_user_power_level(version, MOD, room.state) == 3
    assert get_send_level(version, MSG_TYPE, False, content) == 9
    assert get_send_level(version, "m.x", False, content) == 1
    assert get_send_level(version, "m.x", True, content) == 2
    assert get_named_level(version, "kick", content) == 11
    assert get_named_level(version, "ban", content) == 50


def test_v12_creator_power() -> None:
    content = {"room_version": "12", "additional_creators": [BOB, "not-a-user"]}
    room = Room(RoomVersions.V12, create_content=content)
    room.set_member(BOB, "join")
    state = room.state
    assert get_user_power_level(RoomVersions.V12, CREATOR, state) == CREATOR_POWER_LEVEL
    assert get_user_power_level(RoomVersions.V12, BOB, state) == CREATOR_POWER_LEVEL
    assert get_user_power_level(RoomVersions.V12, MOD, state) == 50
    # Creators outrank everyone but cannot act against each other.
    room.set_member(MOD, "join")
    room.check(room.event("m.room.member", BOB, {"membership": "ban"}, state_key=MOD))
    for target in (CREATOR, BOB):
        sender = BOB if target == CREATOR else CREATOR
        with pytest.raises(AuthError):
            room.check(
                room.event("m.room.member", sender, {"membership": "ban"}, state_key=target)
            )
        with pytest.raises(AuthError):
            room.check(room.event("m.room.member", MOD, {"membership": "leave"}, state_key=target))
    # An additional creator may edit power levels like the creator.
    room.check(room.event(PL, BOB, {"users": {MOD: 2**53 - 1}}, state_key=""))


def test_v11_ignores_additional_creators() -> None:
    content = {"room_version": "11", "additional_creators": [BOB]}
    room = Room(RoomVersions.V11, create_content=content)
    assert get_user_power_level(RoomVersions.V11, BOB, room.state) == 0
    room.check(room.event(PL, CREATOR, {"users": {BOB: 100, CREATOR: 100}}, state_key=""))
