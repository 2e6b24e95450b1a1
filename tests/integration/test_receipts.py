"""Receipts and read markers over HTTP, and the receipts stream's query API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trio.testing import MockClock

from trioserver.handlers.receipts import ReceiptsHandler

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import (
    create_room,
    invite,
    join,
    send,
    send_text,
    set_visibility,
)
from tests.integration.writer_env import WriterEnv, trio_wall_clock, writer_env


def receipt_path(room_id: str, receipt_type: str, event_id: str) -> str:
    return f"/rooms/{room_id}/receipt/{receipt_type}/{event_id}"


async def fully_read(client: Client, room_id: str) -> dict[str, Any]:
    path = f"/user/{client.user_id}/rooms/{room_id}/account_data/m.fully_read"
    return assert_ok(await client.get(path))


async def thread_reply(client: Client, room_id: str, root: str) -> str:
    relation = {"rel_type": "m.thread", "event_id": root}
    return await send_text(client, room_id, "in thread", **{"m.relates_to": relation})


# -- POST /receipt ---------------------------------------------------------------------------


@pytest.mark.parametrize("receipt_type", ["m.read", "m.read.private"])
async def test_send_receipts(alice: Client, receipt_type: str) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "hi")
    assert assert_ok(await alice.post(receipt_path(room_id, receipt_type, event_id), {})) == {}
    # The body may be left out entirely.
    response = await alice.http.post(
        "/_matrix/client/v3" + receipt_path(room_id, receipt_type, event_id),
        headers=alice.headers,
    )
    assert_ok(response)


async def test_fully_read_through_the_receipt_endpoint(alice: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "hi")
    assert_ok(await alice.post(receipt_path(room_id, "m.fully_read", event_id), {}))
    assert await fully_read(alice, room_id) == {"event_id": event_id}


@pytest.mark.parametrize(
    ("receipt_type", "event_id"),
    [("m.unknown", "$e"), ("m.read", "not-an-event"), ("m.read", "%24")],
)
async def test_bad_types_and_ids_are_400(alice: Client, receipt_type: str, event_id: str) -> None:
    room_id = await create_room(alice)
    response = await alice.post(receipt_path(room_id, receipt_type, event_id), {})
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_bad_room_id_is_400(alice: Client) -> None:
    response = await alice.post(receipt_path("not-a-room", "m.read", "$e"), {})
    assert_error(response, 400, "M_INVALID_PARAM")


@pytest.mark.parametrize("thread_id", ["", 5, None, ["main"]])
async def test_bad_thread_ids_are_400(alice: Client, thread_id: Any) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "hi")
    response = await alice.post(
        receipt_path(room_id, "m.read", event_id), {"thread_id": thread_id}
    )
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_thread_ids_must_match_the_event(alice: Client) -> None:
    room_id = await create_room(alice)
    root = await send_text(alice, room_id, "root")
    reply = await thread_reply(alice, room_id, root)
    reaction = await send(
        alice,
        room_id,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "x"}},
    )
    plain = await send_text(alice, room_id, "main timeline")

    async def post(event_id: str, thread_id: str) -> Any:
        body = {"thread_id": thread_id}
        return await alice.post(receipt_path(room_id, "m.read", event_id), body)

    # Spec "Threaded read receipts": the root is in the main timeline and in its thread.
    for event_id, thread_id in [
        (plain, "main"),
        (root, "main"),
        (root, root),
        (reply, root),
        (reaction, root),
    ]:
        assert_ok(await post(event_id, thread_id))
    for event_id, thread_id in [(reply, "main"), (reaction, "main"), (plain, root)]:
        assert_error(await post(event_id, thread_id), 400, "M_INVALID_PARAM")
    response = await alice.post(
        receipt_path(room_id, "m.fully_read", plain), {"thread_id": "main"}
    )
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_receipts_need_a_joined_user(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "hi")
    assert_error(await bob.post(receipt_path(room_id, "m.read", event_id), {}), 403, "M_FORBIDDEN")
    await invite(alice, room_id, bob.user_id)
    assert_error(await bob.post(receipt_path(room_id, "m.read", event_id), {}), 403, "M_FORBIDDEN")


async def test_receipts_for_events_the_user_cannot_see_are_403(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await set_visibility(alice, room_id, "joined")
    before = await send_text(alice, room_id, "before bob")
    await join(bob, room_id)
    after = await send_text(alice, room_id, "after bob")
    assert_error(await bob.post(receipt_path(room_id, "m.read", before), {}), 403, "M_FORBIDDEN")
    assert_ok(await bob.post(receipt_path(room_id, "m.read", after), {}))


async def test_receipts_for_unknown_events_are_ignored(alice: Client) -> None:
    room_id = await create_room(alice)
    other_room = await create_room(alice)
    elsewhere = await send_text(alice, other_room, "elsewhere")
    # Synapse ignores them (the event may have been purged) rather than failing.
    assert_ok(await alice.post(receipt_path(room_id, "m.read", "$unknown"), {}))
    assert_ok(await alice.post(receipt_path(room_id, "m.read", elsewhere), {}))
    # The fully read marker, though, must name an event of the room.
    response = await alice.post(receipt_path(room_id, "m.fully_read", "$unknown"), {})
    assert_error(response, 404, "M_NOT_FOUND")
    response = await alice.post(receipt_path(room_id, "m.fully_read", elsewhere), {})
    assert_error(response, 404, "M_NOT_FOUND")


async def test_receipts_need_a_token(alice: Client) -> None:
    room_id = await create_room(alice)
    path = "/_matrix/client/v3" + receipt_path(room_id, "m.read", "$e")
    assert_error(await alice.http.post(path, json={}), 401, "M_MISSING_TOKEN")


# -- POST /read_markers ------------------------------------------------------------------------


async def test_read_markers_set_all_three(alice: Client) -> None:
    room_id = await create_room(alice)
    first = await send_text(alice, room_id, "one")
    second = await send_text(alice, room_id, "two")
    body = {"m.fully_read": first, "m.read": second, "m.read.private": second}
    assert assert_ok(await alice.post(f"/rooms/{room_id}/read_markers", body)) == {}
    assert await fully_read(alice, room_id) == {"event_id": first}
    # Everything is optional, and unknown keys are ignored.
    assert_ok(await alice.post(f"/rooms/{room_id}/read_markers", {"org.example": 1}))


async def test_the_fully_read_marker_only_moves_forwards(alice: Client) -> None:
    room_id = await create_room(alice)
    first = await send_text(alice, room_id, "one")
    second = await send_text(alice, room_id, "two")
    assert_ok(await alice.post(f"/rooms/{room_id}/read_markers", {"m.fully_read": second}))
    assert_ok(await alice.post(f"/rooms/{room_id}/read_markers", {"m.fully_read": first}))
    assert await fully_read(alice, room_id) == {"event_id": second}


async def test_read_markers_errors(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "one")
    path = f"/rooms/{room_id}/read_markers"
    assert_error(await alice.post(path, {"m.fully_read": 5}), 400, "M_INVALID_PARAM")
    assert_error(await alice.post(path, {"m.read": ["$x"]}), 400, "M_INVALID_PARAM")
    assert_error(await alice.post(path, [event_id]), 400, "M_BAD_JSON")
    assert_error(await alice.post(path, {"m.fully_read": "$nope"}), 404, "M_NOT_FOUND")
    assert_error(await bob.post(path, {"m.fully_read": event_id}), 403, "M_FORBIDDEN")


# -- The stream's query API --------------------------------------------------------------------


async def _room(env: WriterEnv) -> tuple[str, str, str, list[str]]:
    alice, bob = await env.user("alice"), await env.user("bob")
    room_id = await env.create_room(alice, preset="public_chat")
    await env.components.deps.membership.update_membership(bob, room_id, bob, "join")
    events = [(await env.send_text(alice, room_id, f"m{i}")).event_id for i in range(3)]
    return alice, bob, room_id, events


def receipts(env: WriterEnv) -> ReceiptsHandler:
    return env.components.deps.receipts


async def test_receipt_content_and_privacy(tmp_path: Path, mock_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, room_id, events = await _room(env)
        handler = receipts(env)
        start = handler.position()
        await handler.post_receipt(bob, room_id, "m.read", events[0], None)
        mock_clock.jump(1)
        await handler.post_receipt(bob, room_id, "m.read.private", events[1], None)
        await handler.post_receipt(alice, room_id, "m.read", events[1], "main")
        assert handler.position() == start + 3
        assert env.components.deps.notifier.current_token().receipts == start + 3
        ts = int(trio_wall_clock() * 1000)
        # Bob sees his own private receipt...
        assert await handler.receipts_for_rooms(bob, [room_id], None) == {
            room_id: {
                events[0]: {"m.read": {bob: {"ts": ts - 1000}}},
                events[1]: {
                    "m.read.private": {bob: {"ts": ts}},
                    "m.read": {alice: {"ts": ts, "thread_id": "main"}},
                },
            }
        }
        # ...and nobody else does (spec "Private read receipts").
        assert await handler.receipts_for_rooms(alice, [room_id], None) == {
            room_id: {
                events[0]: {"m.read": {bob: {"ts": ts - 1000}}},
                events[1]: {"m.read": {alice: {"ts": ts, "thread_id": "main"}}},
            }
        }
        assert await handler.receipts_for_rooms(alice, [room_id], start + 2) == {
            room_id: {events[1]: {"m.read": {alice: {"ts": ts, "thread_id": "main"}}}}
        }
        assert await handler.receipts_for_rooms(alice, [room_id], handler.position()) == {}
        assert await handler.receipts_for_rooms(alice, [], None) == {}


async def test_receipts_replace_and_never_move_backwards(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        _, bob, room_id, events = await _room(env)
        handler = receipts(env)
        await handler.post_receipt(bob, room_id, "m.read", events[1], None)
        position = handler.position()
        # An earlier event (or the same one) is ignored: no new stream position.
        await handler.post_receipt(bob, room_id, "m.read", events[0], None)
        await handler.post_receipt(bob, room_id, "m.read", events[1], None)
        assert handler.position() == position
        # A different thread is a different receipt.
        await handler.post_receipt(bob, room_id, "m.read", events[0], "main")
        await handler.post_receipt(bob, room_id, "m.read", events[2], None)
        assert handler.position() == position + 2
        content = (await handler.receipts_for_rooms(bob, [room_id], None))[room_id]
        assert set(content) == {events[0], events[2]}
        assert content[events[0]]["m.read"][bob]["thread_id"] == "main"
        assert "thread_id" not in content[events[2]]["m.read"][bob]


async def test_receipts_wake_the_room_and_survive_a_restart(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, room_id, events = await _room(env)
        handler = receipts(env)
        with env.components.deps.notifier.listen(alice, [room_id]) as listener:
            await handler.post_receipt(bob, room_id, "m.read", events[2], None)
            assert await listener.wait(0.5)
        position = handler.position()
    async with writer_env(tmp_path) as env:
        handler = receipts(env)
        assert handler.position() == position
        content = await handler.receipts_for_rooms(alice, [room_id], None)
        assert list(content[room_id]) == [events[2]]


async def test_fully_read_goes_to_account_data(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        _, bob, room_id, events = await _room(env)
        data = env.components.deps.account_data
        before = data.position()
        await receipts(env).set_read_markers(bob, room_id, {"m.fully_read": events[1]})
        assert await data.rooms_since(bob, [room_id], before) == {
            room_id: [{"type": "m.fully_read", "content": {"event_id": events[1]}}]
        }
        # Not a receipt.
        assert await receipts(env).receipts_for_rooms(bob, [room_id], None) == {}
