"""Auth events selection, the rules about the auth_events list, and required signatures."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    AuthError,
    Event,
    RoomVersion,
    RoomVersions,
    auth_types_for_event,
    check_auth_events,
    check_auth_rules,
    required_signature_servers,
)

from tests.unit.events.helpers import ALICE, BOB, CAROL, CREATOR, MOD, Room, cosign

CREATE = ("m.room.create", "")
PL = ("m.room.power_levels", "")
JR = ("m.room.join_rules", "")


def member(user: str) -> tuple[str, str]:
    return ("m.room.member", user)


SELECTION_CASES: list[tuple[str, str, str, str | None, dict[str, Any], list[Any]]] = [
    ("create", "m.room.create", CREATOR, "", {}, []),
    ("message", "m.room.message", ALICE, None, {}, [PL, member(ALICE)]),
    ("state", "m.room.topic", ALICE, "", {}, [PL, member(ALICE)]),
    ("join", "m.room.member", ALICE, ALICE, {"membership": "join"}, [PL, member(ALICE), JR]),
    (
        "invite",
        "m.room.member",
        MOD,
        BOB,
        {"membership": "invite"},
        [PL, member(MOD), member(BOB), JR],
    ),
    ("knock", "m.room.member", BOB, BOB, {"membership": "knock"}, [PL, member(BOB), JR]),
    ("leave", "m.room.member", MOD, BOB, {"membership": "leave"}, [PL, member(MOD), member(BOB)]),
    ("ban", "m.room.member", MOD, BOB, {"membership": "ban"}, [PL, member(MOD), member(BOB)]),
    (
        "bad-membership",
        "m.room.member",
        MOD,
        BOB,
        {"membership": 5},
        [PL, member(MOD), member(BOB)],
    ),
    (
        "3pid-invite",
        "m.room.member",
        MOD,
        BOB,
        {"membership": "invite", "third_party_invite": {"signed": {"token": "t"}}},
        [PL, member(MOD), member(BOB), JR, ("m.room.third_party_invite", "t")],
    ),
    (
        "3pid-invite-malformed",
        "m.room.member",
        MOD,
        BOB,
        {"membership": "invite", "third_party_invite": {"signed": "junk"}},
        [PL, member(MOD), member(BOB), JR],
    ),
    (
        "restricted-join",
        "m.room.member",
        BOB,
        BOB,
        {"membership": "join", "join_authorised_via_users_server": CAROL},
        [PL, member(BOB), JR, member(CAROL)],
    ),
    (
        "authoriser-on-leave",
        "m.room.member",
        BOB,
        BOB,
        {"membership": "leave", "join_authorised_via_users_server": CAROL},
        [PL, member(BOB)],
    ),
]


@pytest.mark.parametrize(
    ("event_type", "sender", "state_key", "content", "expected", "room_version"),
    [
        pytest.param(t, s, k, c, e, v, id=f"{name}-v{v.identifier}")
        for name, t, s, k, c, e in SELECTION_CASES
        for v in (
            RoomVersions.V1,
            RoomVersions.V7,
            RoomVersions.V8,
            RoomVersions.V11,
            RoomVersions.V12,
        )
    ],
)
def test_auth_types_for_event(
    event_type: str,
    sender: str,
    state_key: str | None,
    content: dict[str, Any],
    expected: list[Any],
    room_version: RoomVersion,
) -> None:
    keys = auth_types_for_event(
        room_version, type=event_type, sender=sender, state_key=state_key, content=content
    )
    wanted = list(expected)
    if member(CAROL) in wanted and not room_version.restricted_join_rule:
        wanted.remove(member(CAROL))  # join_authorised_via_users_server needs v8+
    if wanted and room_version.create_event_in_auth_events:
        wanted.insert(0, CREATE)  # the create event is selected except in v12
    assert keys == wanted


def _auth_list(room: Room, event: Event) -> list[Event]:
    by_id = {e.event_id: e for e in room.state.values()}
    return [by_id[event_id] for event_id in event.auth_event_ids]


@pytest.mark.parametrize(
    "room_version", list(KNOWN_ROOM_VERSIONS.values()), ids=lambda v: f"v{v.identifier}"
)
def test_check_auth_events_accepts_the_selected_events(room_version: RoomVersion) -> None:
    room = Room(room_version)
    room.set_member(MOD, "join")
    event = room.event("m.room.member", MOD, {"membership": "invite"}, state_key=BOB)
    state = check_auth_events(room_version, event, _auth_list(room, event))
    expected = {PL, member(MOD), JR}
    if room_version.create_event_in_auth_events:
        expected.add(CREATE)
    assert set(state) == expected
    # v12: the caller adds the create event before running the auth rules.
    check_auth_rules(room_version, event, {**state, CREATE: room.create})
    assert check_auth_events(room_version, room.create, []) == {}


def _with_auth_events(room: Room, event: Event, auth_ids: list[str]) -> Event:
    pdu = event.get_pdu_json()
    if room.version.event_id_in_pdu:
        pdu["auth_events"] = [[i, {"sha256": "x"}] for i in auth_ids]
    else:
        pdu["auth_events"] = auth_ids
    return Event.from_pdu(room.version, pdu)


LIST_VERSIONS = (RoomVersions.V1, RoomVersions.V10, RoomVersions.V12)
LIST_CASES = [
    ("duplicate", "duplicate", LIST_VERSIONS),
    ("unselected", "not selected", LIST_VERSIONS),
    ("rejected", "rejected", LIST_VERSIONS),
    ("other-room", "another room", LIST_VERSIONS),
    ("non-state", "not a state event", LIST_VERSIONS),
    ("missing-create", "no m.room.create", (RoomVersions.V1, RoomVersions.V10)),
    ("create-in-v12", "not selected", (RoomVersions.V12,)),
]


@pytest.mark.parametrize(
    ("name", "reason", "room_version"),
    [
        pytest.param(name, reason, v, id=f"{name}-v{v.identifier}")
        for name, reason, versions in LIST_CASES
        for v in versions
    ],
)
def test_check_auth_events_rejections(room_version: RoomVersion, name: str, reason: str) -> None:
    room = Room(room_version)
    room.set_member(ALICE, "join")
    event = room.event("m.room.message", ALICE, {})
    auth = _auth_list(room, event)
    ids = [e.event_id for e in auth]
    rejected: set[str] = set()
    if name == "duplicate":
        old_pl = room.state[PL]
        newer = room.set_state("m.room.power_levels", "", dict(old_pl.content))
        ids.append(newer.event_id)
        auth.append(newer)
    elif name == "unselected":
        topic = room.set_state("m.room.topic", "", {"topic": "t"})
        ids.append(topic.event_id)
        auth.append(topic)
    elif name == "rejected":
        rejected.add(room.state[PL].event_id)
    elif name == "other-room":
        other = Room(room_version, creator="@creator:elsewhere.test")
        ids = [i for i in ids if i != room.state[PL].event_id] + [other.state[PL].event_id]
        auth.append(other.state[PL])
    elif name == "non-state":
        message = room.apply(room.event("m.room.message", ALICE, {}))
        ids.append(message.event_id)
        auth.append(message)
    elif name == "missing-create":
        ids.remove(room.create.event_id)
    elif name == "create-in-v12":
        ids.append(room.create.event_id)
        auth.append(room.create)
    event = _with_auth_events(room, event, ids)
    with pytest.raises(AuthError, match=reason):
        check_auth_events(room_version, event, auth, rejected_event_ids=rejected)


def test_check_auth_events_needs_every_listed_event() -> None:
    room = Room(RoomVersions.V11)
    event = room.event("m.room.message", CREATOR, {})
    with pytest.raises(ValueError, match="not supplied"):
        check_auth_events(RoomVersions.V11, event, [])


# -- Required signatures -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("room_version", "sender", "content", "expected"),
    [
        (RoomVersions.V1, BOB, {"membership": "join"}, {"other.test"}),
        (RoomVersions.V3, BOB, {"membership": "join"}, {"other.test"}),
        (
            RoomVersions.V8,
            BOB,
            {"membership": "join", "join_authorised_via_users_server": ALICE},
            {"other.test", "hs.test"},
        ),
        (
            RoomVersions.V7,
            BOB,
            {"membership": "join", "join_authorised_via_users_server": ALICE},
            {"other.test"},
        ),
        (RoomVersions.V11, BOB, {"membership": "invite", "third_party_invite": {}}, set()),
    ],
)
def test_required_signature_servers(
    room_version: RoomVersion, sender: str, content: dict[str, Any], expected: set[str]
) -> None:
    room = Room(room_version)
    event = room.event("m.room.member", sender, content, state_key=BOB)
    if room_version.event_id_in_pdu:
        expected = expected | {"other.test"}  # the event ID's server
    assert required_signature_servers(room_version, event) == expected


def test_cosigned_event_keeps_its_event_id() -> None:
    room = Room(RoomVersions.V10)
    event = room.event("m.room.member", BOB, {"membership": "join"}, state_key=BOB)
    assert cosign(event, "hs.test").event_id == event.event_id
    assert set(cosign(event, "hs.test").signatures) == {"other.test", "hs.test"}
