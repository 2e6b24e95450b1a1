"""Paging back with ``/messages`` from a ``/sync`` timeline's ``prev_batch``.

SyTest 10apidoc/34room-messages.pl ("GET /rooms/:room_id/messages returns a message", "...
lazy loads members correctly") pages back from the ``prev_batch`` of an initial sync whose
timeline holds the room's whole history, and expects the timeline's events (and an ``end``),
then nothing (and no ``end``): Synapse's ``prev_batch`` is then the timeline's end.
"""

from __future__ import annotations

import json
from typing import Any

from tests.integration.client import Client, assert_ok
from tests.integration.room_helpers import bodies, create_room, send_text


async def messages(client: Client, room_id: str, **params: Any) -> dict[str, Any]:
    params.setdefault("dir", "b")
    return assert_ok(await client.get(f"/rooms/{room_id}/messages", params=params))


async def test_prev_batch_of_a_whole_history_timeline_pages_back_through_it(
    alice: Client,
) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "Here is the message content")
    body = assert_ok(await alice.get("/sync"))
    line = body["rooms"]["join"][room_id]["timeline"]
    assert line["limited"] is False
    first = await messages(alice, room_id, **{"from": line["prev_batch"]})
    assert [e["event_id"] for e in reversed(first["chunk"])] == [
        e["event_id"] for e in line["events"]
    ]
    assert first["chunk"][0]["event_id"] == event_id
    second = await messages(alice, room_id, **{"from": first["end"]})
    assert second["chunk"] == []
    assert "end" not in second
    # With lazy loading, the senders' member events come along.
    lazy = await messages(
        alice,
        room_id,
        **{"from": line["prev_batch"], "filter": json.dumps({"lazy_load_members": True})},
    )
    assert [(e["type"], e["state_key"]) for e in lazy["state"]] == [
        ("m.room.member", alice.user_id)
    ]


async def test_prev_batch_of_a_limited_timeline_continues_before_it(alice: Client) -> None:
    # A timeline cut short by its limit goes on exactly where it starts (spec: prev_batch
    # retrieves earlier events), with no overlap.
    room_id = await create_room(alice)
    for n in range(4):
        await send_text(alice, room_id, f"m{n}")
    limit = json.dumps({"room": {"timeline": {"limit": 2}}})
    body = assert_ok(await alice.get("/sync", params={"filter": limit}))
    line = body["rooms"]["join"][room_id]["timeline"]
    assert line["limited"] is True
    assert bodies(line["events"]) == ["m2", "m3"]
    page = await messages(alice, room_id, **{"from": line["prev_batch"], "limit": 2})
    assert bodies(page["chunk"]) == ["m1", "m0"]
