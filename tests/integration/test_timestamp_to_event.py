"""GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event over real HTTP (spec v1.6)."""

from __future__ import annotations

from typing import Any

import httpx

import trio

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, join, send_text, set_visibility

V1 = "/_matrix/client/v1"


async def lookup(client: Client, room_id: str, **params: Any) -> httpx.Response:
    return await client.http.get(
        f"{V1}/rooms/{room_id}/timestamp_to_event", params=params, headers=client.headers
    )


async def ts_of(client: Client, room_id: str, event_id: str) -> int:
    event = assert_ok(await client.get(f"/rooms/{room_id}/event/{event_id}"))
    ts: int = event["origin_server_ts"]
    return ts


async def spaced_messages(client: Client, room_id: str, count: int) -> list[tuple[str, int]]:
    """Send messages a few milliseconds apart; (event id, origin_server_ts) of each."""
    sent = []
    for n in range(count):
        await trio.sleep(0.01)
        event_id = await send_text(client, room_id, f"message {n}")
        sent.append((event_id, await ts_of(client, room_id, event_id)))
    assert len({ts for _, ts in sent}) == count
    return sent


async def test_finds_the_nearest_event_each_way(alice: Client) -> None:
    room = await create_room(alice)
    (first, t1), (second, t2), (third, t3) = await spaced_messages(alice, room, 3)
    # At a message's own timestamp, both directions find it.
    for direction in ("f", "b"):
        body = assert_ok(await lookup(alice, room, ts=t2, dir=direction))
        assert body == {"event_id": second, "origin_server_ts": t2}
    # Between two messages: forwards the later one, backwards the earlier one.
    assert assert_ok(await lookup(alice, room, ts=t1 + 1, dir="f"))["event_id"] == second
    assert assert_ok(await lookup(alice, room, ts=t3 - 1, dir="b"))["event_id"] == second
    assert assert_ok(await lookup(alice, room, ts=t3 + 10**6, dir="b"))["event_id"] == third
    # Nothing after the last event, nothing before the room.
    assert_error(await lookup(alice, room, ts=t3 + 10**6, dir="f"), 404, "M_NOT_FOUND")
    assert_error(await lookup(alice, room, ts=0, dir="b"), 404, "M_NOT_FOUND")
    # From the start of time forwards: the room's first event (its creation).
    body = assert_ok(await lookup(alice, room, ts=0, dir="f"))
    created = assert_ok(await alice.get(f"/rooms/{room}/event/{body['event_id']}"))
    assert created["type"] == "m.room.create"
    assert body["origin_server_ts"] <= t1
    assert first != body["event_id"]


async def test_only_events_the_user_may_see(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await set_visibility(alice, room, "joined")
    [(message, sent)] = await spaced_messages(alice, room, 1)
    await trio.sleep(0.01)
    await join(bob, room)
    # Bob may not see the message sent before he joined: backwards from it, the nearest event
    # he may see is the visibility change (the rules allow it by the "shared" before it).
    body = assert_ok(await lookup(bob, room, ts=sent, dir="b"))
    assert body["event_id"] != message
    event = assert_ok(await bob.get(f"/rooms/{room}/event/{body['event_id']}"))
    assert event["type"] == "m.room.history_visibility"
    # Forwards from the message, his own join is the first event he may see.
    body = assert_ok(await lookup(bob, room, ts=sent, dir="f"))
    event = assert_ok(await bob.get(f"/rooms/{room}/event/{body['event_id']}"))
    assert (event["type"], event["state_key"]) == ("m.room.member", bob.user_id)
    # Alice sees the message.
    assert assert_ok(await lookup(alice, room, ts=sent, dir="b"))["event_id"] == message


async def test_non_members_are_refused(alice: Client, bob: Client) -> None:
    room = await create_room(alice)
    assert_error(await lookup(bob, room, ts=0, dir="f"), 403, "M_FORBIDDEN")
    assert_error(await lookup(bob, "!unknown:localhost", ts=0, dir="f"), 403, "M_FORBIDDEN")
    # A world-readable room may be searched by anyone.
    await set_visibility(alice, room, "world_readable")
    assert_ok(await lookup(bob, room, ts=0, dir="f"))


async def test_bad_parameters(alice: Client, http: httpx.AsyncClient) -> None:
    room = await create_room(alice)
    for params, errcode in (
        ({"dir": "f"}, "M_MISSING_PARAM"),
        ({"ts": 0}, "M_MISSING_PARAM"),
        ({"ts": "yesterday", "dir": "f"}, "M_INVALID_PARAM"),
        ({"ts": -1, "dir": "f"}, "M_INVALID_PARAM"),
        ({"ts": 10**30, "dir": "f"}, "M_INVALID_PARAM"),
        ({"ts": 0, "dir": "up"}, "M_INVALID_PARAM"),
    ):
        assert_error(await lookup(alice, room, **params), 400, errcode)
    response = await http.get(f"{V1}/rooms/{room}/timestamp_to_event?ts=0&dir=f")
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_searches_past_many_hidden_events(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await set_visibility(alice, room, "joined")
    hidden = [await send_text(alice, room, f"hidden {n}") for n in range(45)]
    last = await ts_of(alice, room, hidden[-1])
    await join(bob, room)
    body = assert_ok(await lookup(bob, room, ts=last, dir="b"))
    assert body["event_id"] not in hidden
    event = assert_ok(await bob.get(f"/rooms/{room}/event/{body['event_id']}"))
    assert event["type"] == "m.room.history_visibility"


async def test_a_user_who_left_searches_up_to_their_leave(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    [(seen, seen_ts)] = await spaced_messages(alice, room, 1)
    assert_ok(await bob.post(f"/rooms/{room}/leave", {}))
    [(_, later_ts)] = await spaced_messages(alice, room, 1)
    assert assert_ok(await lookup(bob, room, ts=seen_ts, dir="f"))["event_id"] == seen
    # After his leave there is nothing he may see.
    assert_error(await lookup(bob, room, ts=later_ts, dir="f"), 404, "M_NOT_FOUND")
    body = assert_ok(await lookup(bob, room, ts=later_ts, dir="b"))
    event = assert_ok(await bob.get(f"/rooms/{room}/event/{body['event_id']}"))
    assert (event["type"], event["content"]["membership"]) == ("m.room.member", "leave")
