"""The deprecated v1 endpoints over HTTP: POST /send without a txn id, GET /events (and room
previews), GET /events/{eventId}, GET /initialSync, GET /rooms/{roomId}/initialSync.

The cases follow SyTest (tests/10apidoc/03events-initial.pl, 30rooms/01state.pl,
30rooms/09eventstream.pl, 30rooms/11leaving.pl, 30rooms/13guestaccess.pl,
30rooms/30history-visibility.pl, 90jira/SYN-606.pl).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import trio
import trio.lowlevel

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.guest_helpers import GUEST_REGISTRATION, register_guest
from tests.integration.room_helpers import (
    create_room,
    join,
    leave,
    send_text,
    set_state,
    set_visibility,
)


@pytest.fixture
async def hs() -> AsyncIterator[InProcessServer]:
    async with serve_in_process(registration=GUEST_REGISTRATION) as server:
        yield server


async def events(client: Client, **params: Any) -> dict[str, Any]:
    params.setdefault("timeout", 0)
    return assert_ok(await client.get("/events", params=params))


async def stream_token(client: Client, **params: Any) -> str:
    return str((await events(client, **params))["end"])


def of_type(chunk: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [e for e in chunk if e["type"] == event_type]


async def test_post_send_without_txn_id_sends_each_time(alice: Client) -> None:
    room_id = await create_room(alice)
    path = f"/rooms/{room_id}/send/m.room.message"
    content = {"msgtype": "m.text", "body": "hi"}
    first = assert_ok(await alice.post(path, content))["event_id"]
    second = assert_ok(await alice.post(path, content))["event_id"]
    assert first != second
    event = assert_ok(await alice.get(f"/rooms/{room_id}/event/{first}"))
    assert event["content"] == content


async def test_events_initially_gives_tokens(alice: Client) -> None:
    body = await events(alice)
    assert isinstance(body["start"], str)
    assert isinstance(body["end"], str)
    assert body["chunk"] == []


async def test_events_stream_catches_up_in_order_with_limit(alice: Client) -> None:
    room_id = await create_room(alice)
    token = await stream_token(alice)
    sent = [await send_text(alice, room_id, f"m{i}") for i in range(12)]
    seen: list[str] = []
    for _ in range(5):
        body = await events(alice, **{"from": token, "limit": 5})
        assert len(body["chunk"]) <= 5
        seen += [e["event_id"] for e in of_type(body["chunk"], "m.room.message")]
        assert all(e["room_id"] == room_id for e in body["chunk"])
        token = body["end"]
    assert seen == sent


async def test_events_long_poll_wakes_for_a_message(alice: Client) -> None:
    room_id = await create_room(alice)
    token = await stream_token(alice)
    result: dict[str, Any] = {}

    async def poll() -> None:
        result.update(await events(alice, **{"from": token, "timeout": 20_000}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        # Let the poll start first: it must wake for the message, not time out.
        await trio.lowlevel.checkpoint()
        event_id = await send_text(alice, room_id, "wake up")
    assert event_id in [e["event_id"] for e in result["chunk"]]


async def test_events_include_own_invite(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    token = await stream_token(bob)
    assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))
    chunk = (await events(bob, **{"from": token}))["chunk"]
    invites = of_type(chunk, "m.room.member")
    assert [e["content"]["membership"] for e in invites] == ["invite"]
    assert invites[0]["room_id"] == room_id


async def test_get_event_by_id(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "hello")
    event = assert_ok(await alice.get(f"/events/{event_id}"))
    assert event["event_id"] == event_id
    assert event["content"]["body"] == "hello"
    assert_error(await bob.get(f"/events/{event_id}"), 404, "M_NOT_FOUND")
    assert_error(await alice.get("/events/$nope"), 404, "M_NOT_FOUND")


async def test_guest_cannot_stream_globally(http: httpx.AsyncClient) -> None:
    guest = await register_guest(http)
    response = await guest.get("/events", params={"timeout": 0})
    assert_error(response, 403, "M_GUEST_ACCESS_FORBIDDEN")


@pytest.mark.parametrize("visibility", ["shared", "invited", "joined"])
async def test_non_member_cannot_stream_a_room_that_is_not_world_readable(
    alice: Client, bob: Client, visibility: str
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await set_visibility(alice, room_id, visibility)
    await send_text(alice, room_id, "mice")
    response = await bob.get("/events", params={"room_id": room_id, "timeout": 0})
    assert_error(response, 403, "M_FORBIDDEN")


async def test_guest_previews_world_readable_room_through_events(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    guest = await register_guest(http)
    room_id = await create_room(alice, preset="public_chat")
    await set_visibility(alice, room_id, "world_readable")
    snapshot = assert_ok(await guest.get(f"/rooms/{room_id}/initialSync"))
    token = snapshot["messages"]["end"]
    # Nothing new: a re-poll from the end is empty (SyTest: "doesn't tightloop").
    assert (await events(guest, room_id=room_id, **{"from": token}))["chunk"] == []
    event_id = await send_text(alice, room_id, "mice")
    body = await events(guest, room_id=room_id, **{"from": token})
    assert [e["content"]["body"] for e in of_type(body["chunk"], "m.room.message")] == ["mice"]
    token = body["end"]
    # Presence of the room's members (not of others), receipts and typing.
    assert_ok(await bob.put(f"/presence/{bob.user_id}/status", {"presence": "online"}))
    assert_ok(await alice.put(f"/presence/{alice.user_id}/status", {"presence": "online"}))
    body = await events(guest, room_id=room_id, **{"from": token})
    users = {e["content"]["user_id"] for e in of_type(body["chunk"], "m.presence")}
    assert alice.user_id in users
    assert bob.user_id not in users
    token = body["end"]
    assert_ok(await alice.post(f"/rooms/{room_id}/receipt/m.read/{event_id}", {}))
    body = await events(guest, room_id=room_id, **{"from": token})
    (receipt,) = of_type(body["chunk"], "m.receipt")
    assert receipt["room_id"] == room_id
    assert alice.user_id in receipt["content"][event_id]["m.read"]
    token = body["end"]
    typing = {"typing": True, "timeout": 30_000}
    assert_ok(await alice.put(f"/rooms/{room_id}/typing/{alice.user_id}", typing))
    body = await events(guest, room_id=room_id, **{"from": token})
    (typing_event,) = of_type(body["chunk"], "m.typing")
    assert typing_event["room_id"] == room_id
    assert typing_event["content"]["user_ids"] == [alice.user_id]


async def test_room_initial_sync_for_member(alice: Client) -> None:
    room_id = await create_room(alice, preset="public_chat", topic="Testing topic")
    await send_text(alice, room_id, "hello")
    body = assert_ok(await alice.get(f"/rooms/{room_id}/initialSync"))
    assert body["room_id"] == room_id
    assert body["membership"] == "join"
    types = {e["type"] for e in body["state"]}
    assert {"m.room.create", "m.room.join_rules", "m.room.member", "m.room.topic"} <= types
    messages = body["messages"]
    assert set(messages) == {"chunk", "start", "end"}
    assert messages["chunk"][-1]["content"]["body"] == "hello"
    assert all(e["room_id"] == room_id for e in messages["chunk"])
    # `start` pages back through /messages; `end` continues with /events.
    older = assert_ok(
        await alice.get(
            f"/rooms/{room_id}/messages", params={"dir": "b", "from": messages["start"]}
        )
    )
    assert isinstance(older["chunk"], list)
    # (Streaming marks alice online: that presence change is all that is new.)
    chunk = (await events(alice, **{"from": messages["end"]}))["chunk"]
    assert [e["type"] for e in chunk if e["type"] != "m.presence"] == []
    assert isinstance(body["presence"], list)
    limited = assert_ok(await alice.get(f"/rooms/{room_id}/initialSync", params={"limit": 0}))
    assert limited["messages"]["chunk"] == []


async def test_room_initial_sync_preview_shows_only_world_readable_history(
    alice: Client, http: httpx.AsyncClient
) -> None:
    guest = await register_guest(http)
    room_id = await create_room(alice, preset="public_chat")
    await send_text(alice, room_id, "private")
    assert_error(await guest.get(f"/rooms/{room_id}/initialSync"), 403, "M_FORBIDDEN")
    await set_visibility(alice, room_id, "world_readable")
    await send_text(alice, room_id, "public")
    body = assert_ok(await guest.get(f"/rooms/{room_id}/initialSync"))
    chunk = body["messages"]["chunk"]
    assert [e["type"] for e in chunk] == ["m.room.history_visibility", "m.room.message"]
    assert chunk[1]["content"]["body"] == "public"
    assert {"room_id", "state", "messages", "presence"} <= set(body)


async def test_room_initial_sync_of_departed_room(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await set_state(alice, room_id, "madeup.test.state", {"body": "before"})
    await send_text(alice, room_id, "M2 before")
    await leave(bob, room_id)
    await set_state(alice, room_id, "madeup.test.state", {"body": "after"})
    await send_text(alice, room_id, "after")
    body = assert_ok(await bob.get(f"/rooms/{room_id}/initialSync", params={"limit": 2}))
    assert body["membership"] == "leave"
    (made_up,) = [e for e in body["state"] if e["type"] == "madeup.test.state"]
    assert made_up["content"]["body"] == "before"
    assert body["messages"]["chunk"][0]["content"]["body"] == "M2 before"
    assert body["presence"] == []
    assert body["receipts"] == []


async def test_global_initial_sync(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat", topic="Testing topic")
    assert_ok(await alice.put(f"/directory/list/room/{room_id}", {"visibility": "public"}))
    event_id = await send_text(alice, room_id, "hello")
    assert_ok(await alice.post(f"/rooms/{room_id}/receipt/m.read/{event_id}", {}))
    assert_ok(await alice.put(f"/presence/{alice.user_id}/status", {"presence": "online"}))
    body = assert_ok(await alice.get("/initialSync"))
    assert isinstance(body["end"], str)
    (room,) = [r for r in body["rooms"] if r["room_id"] == room_id]
    assert room["membership"] == "join"
    assert room["visibility"] == "public"
    topic = [e for e in room["state"] if e["type"] == "m.room.topic"]
    assert topic[0]["content"]["topic"] == "Testing topic"
    assert room["messages"]["chunk"][-1]["content"]["body"] == "hello"
    assert set(room["messages"]) == {"chunk", "start", "end"}
    # `start` pages back to what comes before the messages given (none here).
    older = assert_ok(
        await alice.get(
            f"/rooms/{room_id}/messages", params={"dir": "b", "from": room["messages"]["start"]}
        )
    )
    assert older["chunk"] == []
    presence = [e for e in body["presence"] if e["content"]["user_id"] == alice.user_id]
    assert presence[0]["content"]["presence"] == "online"
    (receipt,) = [r for r in body["receipts"] if r["room_id"] == room_id]
    assert alice.user_id in receipt["content"][event_id]["m.read"]
    limited = assert_ok(await alice.get("/initialSync", params={"limit": 0}))
    (room,) = [r for r in limited["rooms"] if r["room_id"] == room_id]
    assert room["messages"]["chunk"] == []
    # The `end` token continues with /events.
    assert (await events(alice, **{"from": body["end"]}))["chunk"] == []


async def test_global_initial_sync_archived_includes_departed_rooms(
    alice: Client, bob: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await set_state(alice, room_id, "madeup.test.state", {"body": "before"})
    await send_text(alice, room_id, "M2 before")
    await leave(bob, room_id)
    await send_text(alice, room_id, "after")
    plain = assert_ok(await bob.get("/initialSync"))
    assert room_id not in [r["room_id"] for r in plain["rooms"]]
    body = assert_ok(await bob.get("/initialSync", params={"limit": 2, "archived": "true"}))
    (room,) = [r for r in body["rooms"] if r["room_id"] == room_id]
    assert room["membership"] == "leave"
    (made_up,) = [e for e in room["state"] if e["type"] == "madeup.test.state"]
    assert made_up["content"]["body"] == "before"
    assert room["messages"]["chunk"][0]["content"]["body"] == "M2 before"


async def test_v1_endpoints_serialise_events_in_the_v1_format(alice: Client) -> None:
    # SyTest 30rooms/01state.pl "Room initialSync" indexes members by `user_id`; Synapse's v1
    # format repeats `sender` as `user_id` and `unsigned.age`/`prev_content` at the top level.
    status = {"presence": "online", "status_msg": "Online"}
    assert_ok(await alice.put(f"/presence/{alice.user_id}/status", status))
    room_id = await create_room(alice, preset="public_chat", topic="first")
    await set_state(alice, room_id, "m.room.topic", {"topic": "second"})
    event_id = await send_text(alice, room_id, "hello")
    body = assert_ok(await alice.get(f"/rooms/{room_id}/initialSync"))
    (member,) = [e for e in body["state"] if e["type"] == "m.room.member"]
    assert member["user_id"] == alice.user_id
    assert member["content"]["membership"] == "join"
    (topic,) = [e for e in body["state"] if e["type"] == "m.room.topic"]
    assert topic["prev_content"]["topic"] == "first"
    assert topic["prev_content"] == topic["unsigned"]["prev_content"]
    assert topic["replaces_state"] == topic["unsigned"]["replaces_state"]
    message = body["messages"]["chunk"][-1]
    assert message["user_id"] == alice.user_id
    assert message["age"] == message["unsigned"]["age"]
    (presence,) = [e for e in body["presence"] if e["content"]["user_id"] == alice.user_id]
    assert presence["type"] == "m.presence"
    assert {"presence", "status_msg", "last_active_ago"} <= set(presence["content"])
    assert presence["content"]["presence"] == "online"
    assert presence["content"]["status_msg"] == "Online"
    # The same shape from the global snapshot, /events and /events/{eventId}.
    snapshot = assert_ok(await alice.get("/initialSync"))
    (room,) = [r for r in snapshot["rooms"] if r["room_id"] == room_id]
    assert all(e["user_id"] == e["sender"] for e in room["state"] + room["messages"]["chunk"])
    assert assert_ok(await alice.get(f"/events/{event_id}"))["user_id"] == alice.user_id
    token = snapshot["end"]
    sent = await send_text(alice, room_id, "again")
    chunk = (await events(alice, **{"from": token}))["chunk"]
    (streamed,) = [e for e in chunk if e.get("event_id") == sent]
    assert streamed["user_id"] == alice.user_id
    assert "age" in streamed
    # The v3 /sync keeps the spec's ClientEvent shape.
    sync = assert_ok(await alice.get("/sync"))
    timeline = sync["rooms"]["join"][room_id]["timeline"]["events"]
    assert all("user_id" not in e and "age" not in e for e in timeline)


async def test_events_stream_delivers_account_data_and_tags(alice: Client) -> None:
    # SyTest 42tags.pl / 44account_data.pl "... appears in v1 /events stream".
    room_id = await create_room(alice)
    token = await stream_token(alice)
    base = f"/user/{alice.user_id}"
    assert_ok(await alice.put(f"{base}/account_data/my.test.type", {"cats_or_rats": "cats"}))
    path = f"{base}/rooms/{room_id}/account_data/my.test.type"
    assert_ok(await alice.put(path, {"cats_or_rats": "rats"}))
    assert_ok(await alice.put(f"{base}/rooms/{room_id}/tags/test_tag", {"order": 1}))
    body = await events(alice, **{"from": token})
    chunk = [e for e in body["chunk"] if e["type"] in ("my.test.type", "m.tag")]
    assert {"type": "my.test.type", "content": {"cats_or_rats": "cats"}} in chunk
    assert {
        "type": "my.test.type",
        "content": {"cats_or_rats": "rats"},
        "room_id": room_id,
    } in chunk
    tags = {"test_tag": {"order": 1}}
    assert {"type": "m.tag", "content": {"tags": tags}, "room_id": room_id} in chunk
    # Nothing new from `end`, and a long poll wakes for the next change.
    later = await events(alice, **{"from": body["end"]})
    assert [e for e in later["chunk"] if e["type"] != "m.presence"] == []
    result: dict[str, Any] = {}

    async def poll() -> None:
        result.update(await events(alice, **{"from": later["end"], "timeout": 20_000}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.lowlevel.checkpoint()
        assert_ok(await alice.put(f"{base}/account_data/my.test.type", {"cats_or_rats": "both"}))
    assert {"type": "my.test.type", "content": {"cats_or_rats": "both"}} in result["chunk"]
