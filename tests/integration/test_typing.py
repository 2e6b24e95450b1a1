"""Typing notifications: ``PUT /rooms/{roomId}/typing/{userId}`` over HTTP, and the typing
stream's query API (what ``/sync`` calls) with expiry driven by trio's clock.

Timer tests use pytest-trio's `mock_clock` (time moves only when the test jumps it), not
`autojump_clock`: while trio waits for a database thread (every membership check), the
autojump clock leaps to the next deadline and expires typing mid-test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

import trio
import trio.testing
from trio.testing import MockClock

from trioserver.handlers.notifier import Listener
from trioserver.handlers.typing import TypingHandler

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join
from tests.integration.writer_env import WriterEnv, writer_env


def typing_path(room_id: str, user_id: str) -> str:
    return f"/rooms/{room_id}/typing/{user_id}"


# -- Over HTTP -------------------------------------------------------------------------------


async def test_start_and_stop_typing(alice: Client) -> None:
    room_id = await create_room(alice)
    path = typing_path(room_id, alice.user_id)
    assert assert_ok(await alice.put(path, {"typing": True, "timeout": 30000})) == {}
    assert assert_ok(await alice.put(path, {"typing": False})) == {}
    # The timeout is optional, and stopping when not typing is fine.
    assert_ok(await alice.put(path, {"typing": True}))
    assert_ok(await alice.put(path, {"typing": False}))
    assert_ok(await alice.put(path, {"typing": False}))


async def test_cannot_set_someone_elses_typing(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    await invite(alice, room_id, bob.user_id)
    await join(bob, room_id)
    response = await alice.put(typing_path(room_id, bob.user_id), {"typing": True})
    assert_error(response, 403, "M_FORBIDDEN")


async def test_must_be_joined(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    body = {"typing": True}
    assert_error(await bob.put(typing_path(room_id, bob.user_id), body), 403, "M_FORBIDDEN")
    await invite(alice, room_id, bob.user_id)
    # Invited is not joined.
    assert_error(await bob.put(typing_path(room_id, bob.user_id), body), 403, "M_FORBIDDEN")
    unknown = "!nowhere:localhost"
    assert_error(await bob.put(typing_path(unknown, bob.user_id), body), 403, "M_FORBIDDEN")


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"typing": "yes"}, "M_INVALID_PARAM"),
        ({"typing": 1}, "M_INVALID_PARAM"),
        ({"typing": True, "timeout": "30000"}, "M_INVALID_PARAM"),
        ({"typing": True, "timeout": 1.5}, "M_INVALID_PARAM"),
        ({"typing": True, "timeout": -1}, "M_INVALID_PARAM"),
        ([True], "M_BAD_JSON"),
    ],
)
async def test_bad_bodies_are_400(alice: Client, body: Any, errcode: str) -> None:
    room_id = await create_room(alice)
    assert_error(await alice.put(typing_path(room_id, alice.user_id), body), 400, errcode)


async def test_not_json_and_no_token(alice: Client) -> None:
    room_id = await create_room(alice)
    path = "/_matrix/client/v3" + typing_path(room_id, alice.user_id)
    response = await alice.http.put(path, content=b"{", headers=alice.headers)
    assert_error(response, 400, "M_NOT_JSON")
    assert_error(await alice.http.put(path, json={"typing": True}), 401, "M_MISSING_TOKEN")


# -- The query API, with trio's clock --------------------------------------------------------


async def _room_with_two(env: WriterEnv) -> tuple[str, str, str]:
    alice, bob = await env.user("alice"), await env.user("bob")
    room_id = await env.create_room(alice, preset="public_chat")
    await env.components.deps.membership.update_membership(bob, room_id, bob, "join")
    return alice, bob, room_id


def handler(env: WriterEnv) -> TypingHandler:
    return env.components.deps.typing


async def settle() -> None:
    """Let the expiry task act on a clock jump."""
    await trio.testing.wait_all_tasks_blocked()


async def woken(listener: Listener, clock: MockClock) -> bool:
    """Whether the listener was woken (the clock autojumps meanwhile, so "no" cannot hang)."""
    clock.autojump_threshold = 0
    try:
        return await listener.wait(1)
    finally:
        clock.autojump_threshold = math.inf


async def test_typing_stream_positions_and_deltas(tmp_path: Path, mock_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, room_id = await _room_with_two(env)
        mock_clock.jump(1)  # two identical create events at one instant would clash
        other = await env.create_room(alice)
        typing = handler(env)
        start = typing.position()
        assert env.components.deps.notifier.current_token().typing == start
        await typing.set_typing(alice, room_id, alice, True, 30_000)
        after_alice = typing.position()
        assert after_alice == start + 1
        await typing.set_typing(bob, room_id, bob, True, 30_000)
        assert typing.position() == start + 2
        assert typing.typing_for_rooms([room_id, other], 0) == {room_id: [alice, bob]}
        assert typing.typing_for_rooms([room_id, other], after_alice) == {room_id: [alice, bob]}
        assert typing.typing_for_rooms([room_id, other], typing.position()) == {}
        # Typing again only extends the deadline: no change to tell anyone about.
        await typing.set_typing(alice, room_id, alice, True, 30_000)
        assert typing.position() == start + 2
        before_stop = typing.position()
        await typing.set_typing(alice, room_id, alice, False, 0)
        # A room whose typing set changed is reported even when it became empty of someone.
        assert typing.typing_for_rooms([room_id], before_stop) == {room_id: [bob]}
        await typing.set_typing(bob, room_id, bob, False, 0)
        assert typing.typing_for_rooms([room_id], before_stop) == {room_id: []}
        assert typing.typing_for_rooms([room_id], 0) == {}


async def test_a_since_ahead_of_the_stream_reports_every_room(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with writer_env(tmp_path) as env:
        alice, _, room_id = await _room_with_two(env)
        mock_clock.jump(1)  # two identical create events at one instant would clash
        other = await env.create_room(alice)
        typing = handler(env)
        await typing.set_typing(alice, room_id, alice, True, 30_000)
        # E.g. a client's token from before a restart (the stream restarted at 0).
        ahead = typing.position() + 10
        assert typing.typing_for_rooms([room_id, other], ahead) == {room_id: [alice], other: []}


async def test_typing_expires_at_its_timeout(tmp_path: Path, mock_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice, _, room_id = await _room_with_two(env)
        typing = handler(env)
        await typing.set_typing(alice, room_id, alice, True, 10_000)
        position = typing.position()
        mock_clock.jump(9.9)
        await settle()
        assert typing.typing_for_rooms([room_id], 0) == {room_id: [alice]}
        notifier = env.components.deps.notifier
        with notifier.listen("@someone:blue", [room_id]) as listener:
            mock_clock.jump(0.2)
            await settle()
            assert await woken(listener, mock_clock)
        assert typing.typing_for_rooms([room_id], 0) == {}
        assert typing.position() == position + 1
        assert typing.typing_for_rooms([room_id], position) == {room_id: []}


async def test_retyping_extends_and_timeouts_are_capped(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, room_id = await _room_with_two(env)
        typing = handler(env)
        await typing.set_typing(alice, room_id, alice, True, 10_000)
        mock_clock.jump(8)
        await typing.set_typing(alice, room_id, alice, True, 10_000)
        mock_clock.jump(8)
        await settle()
        assert typing.typing_for_rooms([room_id], 0) == {room_id: [alice]}
        mock_clock.jump(2)
        await settle()
        assert typing.typing_for_rooms([room_id], 0) == {}
        # Synapse caps the timeout at 2 minutes.
        await typing.set_typing(bob, room_id, bob, True, 10_000_000)
        mock_clock.jump(119)
        await settle()
        assert typing.typing_for_rooms([room_id], 0) == {room_id: [bob]}
        mock_clock.jump(2)
        await settle()
        assert typing.typing_for_rooms([room_id], 0) == {}


async def test_leaving_the_room_stops_typing(tmp_path: Path, mock_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        _, bob, room_id = await _room_with_two(env)
        typing = handler(env)
        await typing.set_typing(bob, room_id, bob, True, 30_000)
        position = typing.position()
        await env.components.deps.membership.update_membership(bob, room_id, bob, "leave")
        assert typing.typing_for_rooms([room_id], position) == {room_id: []}
        assert typing.position() == position + 1


async def test_typing_wakes_the_rooms_waiters(tmp_path: Path, mock_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, room_id = await _room_with_two(env)
        notifier = env.components.deps.notifier
        with notifier.listen(bob, [room_id]) as listener:
            await handler(env).set_typing(alice, room_id, alice, True, 30_000)
            assert await woken(listener, mock_clock)
