"""The pure relation helpers: `relation_of_content` and `thread_id_of`."""

from __future__ import annotations

from typing import Any

import pytest

from trioserver.events import KNOWN_ROOM_VERSIONS, Event
from trioserver.events.relations import Relation, relation_of_content, thread_id_of


def _event(content: dict[str, Any]) -> Event:
    pdu = {
        "type": "m.room.message",
        "sender": "@a:test",
        "room_id": "!r:test",
        "content": content,
        "origin_server_ts": 0,
        "depth": 1,
        "prev_events": [],
        "auth_events": [],
        "hashes": {"sha256": ""},
        "signatures": {},
    }
    return Event(room_version=KNOWN_ROOM_VERSIONS["10"], event_id="$e", pdu=pdu)


def test_well_formed_relations() -> None:
    assert relation_of_content(
        {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}
    ) == Relation("m.thread", "$root")
    annotation = {"rel_type": "m.annotation", "event_id": "$t", "key": "👍"}
    assert relation_of_content({"m.relates_to": annotation}) == Relation(
        "m.annotation", "$t", "👍"
    )
    # A key only counts for annotations, and only as a string.
    keyed = {"rel_type": "m.reference", "event_id": "$t", "key": "k"}
    assert relation_of_content({"m.relates_to": keyed}) == Relation("m.reference", "$t")
    bad_key = {"rel_type": "m.annotation", "event_id": "$t", "key": 3}
    assert relation_of_content({"m.relates_to": bad_key}) == Relation("m.annotation", "$t")


@pytest.mark.parametrize(
    "relates_to",
    [
        None,
        "text",
        [],
        {"rel_type": "m.thread"},
        {"event_id": "$root"},
        {"rel_type": 1, "event_id": "$root"},
        {"rel_type": "m.thread", "event_id": ["$root"]},
        # A rich reply alone is not a relation with a rel_type.
        {"m.in_reply_to": {"event_id": "$root"}},
    ],
)
def test_malformed_relations_are_none(relates_to: Any) -> None:
    assert relation_of_content({"m.relates_to": relates_to}) is None


def test_thread_id_of() -> None:
    reply = {"m.relates_to": {"rel_type": "m.thread", "event_id": "$root"}}
    assert thread_id_of(_event(reply)) == "$root"
    assert thread_id_of(_event({"body": "hi"})) == "main"
    edit = {"m.relates_to": {"rel_type": "m.replace", "event_id": "$root"}}
    assert thread_id_of(_event(edit)) == "main"
