"""Serialising stored events for clients (no I/O: `format_client_event`)."""

from __future__ import annotations

from typing import Any

from trioserver.events import KNOWN_ROOM_VERSIONS
from trioserver.handlers.serialize import SerializeOptions, format_client_event
from trioserver.stores.events import StoredEvent

from tests.unit.events.helpers import ALICE, Room

V10 = KNOWN_ROOM_VERSIONS["10"]
V11 = KNOWN_ROOM_VERSIONS["11"]
OPTIONS = SerializeOptions(user_id=ALICE, device_id="DEV")


def _stored(room: Room, event_type: str, content: dict[str, Any], **kwargs: Any) -> StoredEvent:
    event = room.apply(room.event(event_type, ALICE, content, **kwargs))
    return StoredEvent(event, room.depth, room.depth, 1, None, None, None)


def test_client_event_with_age_txn_and_membership() -> None:
    room = Room(V10)
    stored = _stored(room, "m.room.message", {"body": "hi"})
    now = stored.event.origin_server_ts + 1234
    result = format_client_event(
        stored, now_ms=now, options=OPTIONS, txn_id="t1", membership="join"
    )
    assert result["content"] == {"body": "hi"}
    assert result["room_id"] == stored.room_id
    assert result["unsigned"] == {"age": 1234, "transaction_id": "t1", "membership": "join"}
    assert "hashes" not in result


def test_without_room_id_and_with_event_fields() -> None:
    stored = _stored(Room(V10), "m.room.message", {"body": "hi", "msgtype": "m.text"})
    options = SerializeOptions(include_room_id=False)
    assert "room_id" not in format_client_event(stored, now_ms=0, options=options)
    options = SerializeOptions(event_fields=("content.body", "event_id"))
    assert format_client_event(stored, now_ms=0, options=options) == {
        "content": {"body": "hi"},
        "event_id": stored.event_id,
    }


def test_federation_format() -> None:
    stored = _stored(Room(V10), "m.room.message", {"body": "hi"})
    result = format_client_event(
        stored, now_ms=0, options=SerializeOptions(event_format="federation")
    )
    assert result["event_id"] == stored.event_id
    assert result["depth"] == stored.event.depth
    assert "hashes" in result
    assert "age" in result["unsigned"]


def test_redacted_event_is_pruned_with_redacted_because() -> None:
    room = Room(V11)
    target = _stored(room, "m.room.topic", {"topic": "secret"}, state_key="")
    target = StoredEvent(
        target.event.with_unsigned(
            {"replaces_state": "$old", "prev_content": {"topic": "old"}, "prev_sender": ALICE}
        ),
        target.stream_ordering,
        target.topological_ordering,
        1,
        "$old",
        None,
        None,
    )
    redaction = _stored(room, "m.room.redaction", {"reason": "no"}, redacts=target.event_id)
    redacted = StoredEvent(target.event, 5, 5, 1, "$old", redaction.event_id, None)
    now = redaction.event.origin_server_ts + 10
    result = format_client_event(redacted, now_ms=now, options=OPTIONS, redaction=redaction)
    assert result["content"] == {}
    assert result["state_key"] == ""
    unsigned = result["unsigned"]
    assert unsigned["replaces_state"] == "$old"
    assert "prev_content" not in unsigned
    assert unsigned["redacted_by"] == redaction.event_id
    because = unsigned["redacted_because"]
    assert because["event_id"] == redaction.event_id
    assert because["redacts"] == target.event_id
    assert because["content"] == {"reason": "no", "redacts": target.event_id}
    assert because["unsigned"]["age"] == 10


def test_redaction_without_target_is_an_ordinary_event() -> None:
    stored = _stored(Room(V11), "m.room.redaction", {"reason": "nothing"})
    assert stored.event.redacts is None
    result = format_client_event(stored, now_ms=0, options=OPTIONS)
    assert "redacts" not in result
    assert result["content"] == {"reason": "nothing"}
