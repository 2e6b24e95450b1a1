"""Event filters: parsing (with Matrix errors) and matching."""

from __future__ import annotations

import json
from typing import Any

import pytest

from trioserver.errors import MatrixError
from trioserver.events import KNOWN_ROOM_VERSIONS, Event
from trioserver.handlers.event_filter import (
    EventFilter,
    RoomEventFilter,
    load_filter,
    only_fields,
    parse_event_filter,
    parse_filter_definition,
    parse_json_param,
    parse_room_event_filter,
    split_field_path,
)

from tests.unit.events.helpers import ALICE, BOB, Room

V10 = KNOWN_ROOM_VERSIONS["10"]


def _event(event_type: str = "m.room.message", sender: str = ALICE, **content: Any) -> Event:
    room = Room(V10, creator=ALICE)
    return room.event(event_type, sender, content)


def test_empty_filter_matches_everything() -> None:
    assert parse_room_event_filter(None).matches(_event())
    assert parse_room_event_filter({}).matches(_event("x.y", BOB))


@pytest.mark.parametrize(
    ("types", "event_type", "expected"),
    [
        (["m.room.message"], "m.room.message", True),
        (["m.room.message"], "m.room.messages", False),
        (["m.*"], "m.room.message", True),
        (["m.*"], "org.m.x", False),
        (["*.message"], "m.room.message", True),
        (["m.room.*", "com.x"], "com.x", True),
        (["m.room.*", "com.x"], "com.xy", False),
        (["m.ro?m"], "m.room", False),  # only * is special
        (["m.ro?m"], "m.ro?m", True),
        (["*"], "anything", True),
        ([], "m.room.message", False),
    ],
)
def test_type_patterns(types: list[str], event_type: str, expected: bool) -> None:
    assert parse_event_filter({"types": types}).matches(_event(event_type)) is expected


def test_not_lists_win() -> None:
    event_filter = parse_event_filter(
        {"types": ["m.*"], "not_types": ["m.room.message"], "senders": [ALICE]}
    )
    assert not event_filter.matches(_event("m.room.message"))
    assert event_filter.matches(_event("m.reaction"))
    assert not event_filter.matches(_event("m.reaction", BOB))
    assert not parse_event_filter({"not_senders": [ALICE]}).matches(_event())


def test_contains_url_and_rooms() -> None:
    with_url = _event(url="mxc://x/y")
    without = _event(body="no url")
    bad_url = _event(url=5)
    assert parse_room_event_filter({"contains_url": True}).matches(with_url)
    assert not parse_room_event_filter({"contains_url": True}).matches(without)
    assert not parse_room_event_filter({"contains_url": True}).matches(bad_url)
    assert parse_room_event_filter({"contains_url": False}).matches(without)
    assert not parse_room_event_filter({"contains_url": False}).matches(with_url)
    room_id = with_url.room_id
    assert parse_room_event_filter({"rooms": [room_id]}).matches(with_url)
    assert not parse_room_event_filter({"rooms": ["!other:x"]}).matches(with_url)
    assert not parse_room_event_filter({"not_rooms": [room_id]}).matches(with_url)


def test_filter_helper_keeps_order() -> None:
    events = [_event("a"), _event("b"), _event("a.c")]
    kept = parse_event_filter({"types": ["a*"]}).filter(events, lambda e: e)
    assert [e.type for e in kept] == ["a", "a.c"]


def test_room_event_filter_flags() -> None:
    parsed = parse_room_event_filter(
        {"lazy_load_members": True, "include_redundant_members": True, "limit": 5}
    )
    assert parsed == RoomEventFilter(
        limit=5, lazy_load_members=True, include_redundant_members=True
    )
    assert isinstance(parsed, EventFilter)


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ([], "filter"),
        ({"types": "m.room.message"}, "types"),
        ({"types": [1]}, "types"),
        ({"not_senders": {}}, "not_senders"),
        ({"limit": -1}, "limit"),
        ({"limit": True}, "limit"),
        ({"contains_url": "yes"}, "contains_url"),
        ({"lazy_load_members": 1}, "lazy_load_members"),
    ],
)
def test_bad_room_event_filters(raw: Any, path: str) -> None:
    with pytest.raises(MatrixError) as info:
        parse_room_event_filter(raw)
    assert info.value.errcode == "M_BAD_JSON"
    assert f"'{path}'" in str(info.value.to_json()["error"])


def test_filter_definition() -> None:
    definition = parse_filter_definition(
        {
            "event_fields": ["type"],
            "event_format": "federation",
            "presence": {"not_types": ["*"]},
            "room": {
                "rooms": ["!a:x"],
                "include_leave": True,
                "timeline": {"limit": 10, "lazy_load_members": True},
                "state": {"types": ["m.room.member"]},
            },
        }
    )
    assert definition.event_fields == ("type",)
    assert definition.event_format == "federation"
    assert not definition.presence.matches(_event())
    assert definition.room.matches_room("!a:x")
    assert not definition.room.matches_room("!b:x")
    assert definition.room.include_leave
    assert definition.room.timeline.limit == 10
    assert definition.room.timeline.lazy_load_members
    assert definition.room.state.types == ("m.room.member",)
    assert definition.room.ephemeral == RoomEventFilter()


def test_bad_filter_definition_names_the_path() -> None:
    with pytest.raises(MatrixError) as info:
        parse_filter_definition({"room": {"timeline": {"limit": "x"}}})
    assert "'room.timeline.limit'" in str(info.value.to_json()["error"])
    with pytest.raises(MatrixError):
        parse_filter_definition({"event_format": "xml"})


def test_parse_json_param() -> None:
    assert parse_json_param('{"a": 1}') == {"a": 1}
    with pytest.raises(MatrixError) as info:
        parse_json_param("{")
    assert info.value.errcode == "M_NOT_JSON"
    with pytest.raises(MatrixError) as info:
        parse_json_param("[1]")
    assert info.value.errcode == "M_BAD_JSON"


class _FakeFilterStore:
    def __init__(self, filters: dict[tuple[str, int], dict[str, Any]]) -> None:
        self.filters = filters

    async def get_filter_text(self, user_id: str, filter_id: int) -> str | None:
        found = self.filters.get((user_id, filter_id))
        return None if found is None else json.dumps(found)


async def test_load_filter_inline_or_stored() -> None:
    store: Any = _FakeFilterStore({(ALICE, 3): {"room": {"timeline": {"limit": 2}}}})
    assert (await load_filter(store, ALICE, "3")).room.timeline.limit == 2
    assert (await load_filter(store, ALICE, '{"event_format": "federation"}')).event_format == (
        "federation"
    )
    for bad in ("4", "x", "-1"):
        with pytest.raises(MatrixError) as info:
            await load_filter(store, ALICE, bad)
        assert info.value.errcode == "M_INVALID_PARAM"


def test_split_field_path() -> None:
    assert split_field_path("content.body") == ["content", "body"]
    assert split_field_path("content.m\\.relates_to") == ["content", "m.relates_to"]
    assert split_field_path("a\\\\.b") == ["a\\", "b"]
    assert split_field_path("type") == ["type"]


def test_only_fields() -> None:
    event = {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "x"}, "msgtype": "m.text"},
        "unsigned": {"age": 1},
    }
    fields = ["type", "content.body", "content.m\\.relates_to.rel_type", "nope", "type.x"]
    assert only_fields(event, fields) == {
        "type": "m.room.message",
        "content": {"body": "hi", "m.relates_to": {"rel_type": "x"}},
    }
