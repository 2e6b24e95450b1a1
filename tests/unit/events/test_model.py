"""The Event model: properties, ``redacts``, serialisation and PDU parsing."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    Event,
    InvalidEventError,
    RoomVersion,
    RoomVersions,
)

from tests.unit.events.helpers import ALICE, CREATOR, Room, signed_raw_event

ALL_VERSIONS = list(KNOWN_ROOM_VERSIONS.values())


def vid(version: RoomVersion) -> str:
    return f"v{version.identifier}"


def test_properties_of_a_state_event() -> None:
    room = Room(RoomVersions.V10)
    event = room.event("m.room.member", ALICE, {"membership": "join"}, state_key=ALICE)
    assert event.type == "m.room.member"
    assert event.sender == ALICE
    assert event.room_id == "!room:hs.test"
    assert event.state_key == ALICE
    assert event.is_state()
    assert event.membership == "join"
    assert event.depth == room.depth + 1
    assert event.prev_event_ids == room.tip
    assert set(event.auth_event_ids) == {
        room.create.event_id,
        room.state[("m.room.power_levels", "")].event_id,
        room.state[("m.room.join_rules", "")].event_id,
    }
    assert event.origin_server_ts > 0
    assert set(event.hashes) == {"sha256"}
    assert set(event.signatures) == {"hs.test"}
    assert event.redacts is None
    with pytest.raises(TypeError):
        event.content["membership"] = "leave"  # type: ignore[index]


def test_message_event_has_no_state_key_or_membership() -> None:
    event = Room(RoomVersions.V11).event("m.room.message", ALICE, {"membership": "join"})
    assert event.state_key is None
    assert not event.is_state()
    assert event.membership is None  # only m.room.member events have a membership


@pytest.mark.parametrize("room_version", [RoomVersions.V1, RoomVersions.V2], ids=vid)
def test_v1_prev_and_auth_events_are_pairs_with_reference_hashes(
    room_version: RoomVersion,
) -> None:
    room = Room(room_version)
    event = room.event("m.room.message", ALICE, {})
    pdu = event.get_pdu_json()
    assert pdu["prev_events"] == [[room.tip[0], {"sha256": pdu["prev_events"][0][1]["sha256"]}]]
    assert event.prev_event_ids == room.tip
    assert all(isinstance(ref, list) and len(ref) == 2 for ref in pdu["auth_events"])


# -- redacts ----------------------------------------------------------------------------


def _redaction(version: RoomVersion, content: dict[str, Any], **top: Any) -> Event:
    room = Room(version)
    pdu = room.event("m.room.redaction", CREATOR, content).get_pdu_json()
    pdu.update(top)
    return signed_raw_event(version, pdu)


@pytest.mark.parametrize("room_version", ALL_VERSIONS, ids=vid)
def test_redacts_is_none_without_a_target(room_version: RoomVersion) -> None:
    event = _redaction(room_version, {"reason": "foo"})
    assert event.redacts is None
    assert "redacts" not in event.for_client()
    assert event.for_client()["content"] == {"reason": "foo"}


@pytest.mark.parametrize(
    ("room_version", "content", "top", "expected"),
    [
        (RoomVersions.V1, {}, {"redacts": "$t:hs.test"}, "$t:hs.test"),
        (RoomVersions.V1, {"redacts": "$c:hs.test"}, {}, None),  # content ignored before v11
        (RoomVersions.V10, {"redacts": "$c"}, {"redacts": "$t"}, "$t"),
        (RoomVersions.V11, {"redacts": "$c"}, {}, "$c"),
        (RoomVersions.V11, {}, {"redacts": "$t"}, None),  # top level ignored from v11
        (RoomVersions.V12, {"redacts": "$c"}, {"redacts": "$t"}, "$c"),
        (RoomVersions.V1, {}, {"redacts": 5}, None),
        (RoomVersions.V11, {"redacts": ["$x"]}, {}, None),
        (RoomVersions.V11, {"redacts": None}, {}, None),
    ],
)
def test_redacts_source_per_version(
    room_version: RoomVersion, content: dict[str, Any], top: dict[str, Any], expected: str | None
) -> None:
    assert _redaction(room_version, content, **top).redacts == expected


@pytest.mark.parametrize("room_version", ALL_VERSIONS, ids=vid)
def test_for_client_copies_redacts_to_both_places(room_version: RoomVersion) -> None:
    room = Room(room_version)
    target = room.apply(room.event("m.room.message", ALICE, {"body": "x"}))
    redaction = room.event("m.room.redaction", CREATOR, {"reason": "r"}, redacts=target.event_id)
    client = redaction.for_client()
    assert client["redacts"] == target.event_id
    assert client["content"] == {"reason": "r", "redacts": target.event_id}
    pdu = redaction.get_pdu_json()
    if room_version.updated_redaction_rules:
        assert "redacts" not in pdu
        assert pdu["content"]["redacts"] == target.event_id
    else:
        assert pdu["redacts"] == target.event_id
        assert "redacts" not in pdu["content"]


def test_for_client_format() -> None:
    room = Room(RoomVersions.V12)
    event = room.event("m.room.topic", CREATOR, {"topic": "t"}, state_key="")
    event = event.with_unsigned({"age": 3})
    client = event.for_client()
    assert client == {
        "event_id": event.event_id,
        "room_id": room.create.room_id,
        "type": "m.room.topic",
        "sender": CREATOR,
        "content": {"topic": "t"},
        "origin_server_ts": event.origin_server_ts,
        "state_key": "",
        "unsigned": {"age": 3},
    }
    assert "room_id" not in event.for_client(include_room_id=False)
    # The v12 create event gets its derived room_id in the client format.
    assert room.create.for_client()["room_id"] == room.create.room_id
    client["content"]["topic"] = "mutated"
    assert event.content["topic"] == "t"


def test_pdu_json_is_a_copy_and_unsigned_is_separate() -> None:
    room = Room(RoomVersions.V11)
    pdu = room.event("m.room.message", ALICE, {"body": "x"}).get_pdu_json()
    pdu["unsigned"] = {"age": 10}
    event = Event.from_pdu(RoomVersions.V11, pdu)
    assert event.unsigned == {"age": 10}
    assert "unsigned" not in event.get_pdu_json()
    assert event.get_pdu_json(include_unsigned=True)["unsigned"] == {"age": 10}
    copy = event.get_pdu_json()
    copy["content"]["body"] = "changed"
    assert event.content["body"] == "x"
    assert Event.from_pdu(RoomVersions.V11, pdu, unsigned={"x": 1}).unsigned == {"x": 1}
    pdu["unsigned"] = "junk"
    assert Event.from_pdu(RoomVersions.V11, pdu).unsigned == {}


def test_redacted_event() -> None:
    room = Room(RoomVersions.V11)
    event = room.event(
        "m.room.member", ALICE, {"membership": "join", "displayname": "A"}, state_key=ALICE
    ).with_unsigned({"age": 1})
    redacted = event.redacted(unsigned={"redacted_because": {"type": "m.room.redaction"}})
    assert redacted.event_id == event.event_id
    assert redacted.content == {"membership": "join"}
    assert redacted.unsigned == {"redacted_because": {"type": "m.room.redaction"}}
    assert event.redacted().unsigned == {}


def test_events_compare_by_value_and_hash_by_id() -> None:
    room = Room(RoomVersions.V11)
    event = room.event("m.room.message", ALICE, {"body": "x"})
    again = Event.from_pdu(RoomVersions.V11, event.get_pdu_json())
    assert event == again
    assert hash(event) == hash(again)
    assert event != event.redacted()
    assert len({event, again}) == 1


def _valid_pdu(version: RoomVersion) -> dict[str, Any]:
    return Room(version).event("m.room.message", ALICE, {"body": "x"}).get_pdu_json()


@pytest.mark.parametrize(
    ("version", "change"),
    [
        (RoomVersions.V10, {"sender": None}),
        (RoomVersions.V10, {"sender": "alice"}),
        (RoomVersions.V10, {"sender": "@alice"}),
        (RoomVersions.V10, {"type": 5}),
        (RoomVersions.V10, {"content": []}),
        (RoomVersions.V10, {"depth": True}),
        (RoomVersions.V10, {"depth": "1"}),
        (RoomVersions.V10, {"origin_server_ts": 1.5}),
        (RoomVersions.V10, {"hashes": None}),
        (RoomVersions.V10, {"signatures": []}),
        (RoomVersions.V10, {"state_key": 1}),
        (RoomVersions.V10, {"room_id": "not-a-room"}),
        (RoomVersions.V10, {"prev_events": "$x"}),
        (RoomVersions.V10, {"auth_events": [["$x", {}]]}),
        (RoomVersions.V1, {"prev_events": ["$x:hs.test"]}),
        (RoomVersions.V1, {"event_id": None}),
        (RoomVersions.V1, {"event_id": "$nodomain"}),
        (RoomVersions.V1, {"event_id": "x:hs.test"}),
        (RoomVersions.V12, {"room_id": "!room:hs.test"}),
    ],
)
def test_from_pdu_rejects_malformed_events(version: RoomVersion, change: dict[str, Any]) -> None:
    pdu = _valid_pdu(version)
    for key, value in change.items():
        if value is None:
            pdu.pop(key)
        else:
            pdu[key] = value
    with pytest.raises(InvalidEventError):
        Event.from_pdu(version, pdu)


def test_from_pdu_accepts_historical_sender_ids() -> None:
    pdu = _valid_pdu(RoomVersions.V10)
    pdu["sender"] = "@Old User!:hs.test"
    assert Event.from_pdu(RoomVersions.V10, pdu).sender == "@Old User!:hs.test"
