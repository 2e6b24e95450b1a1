"""Presence over HTTP, and the presence stream's query API and timers.

Timer tests use pytest-trio's `mock_clock` (time moves only when the test jumps it), not
`autojump_clock`: presence timers write to the database in a worker thread, and while trio waits
for a thread the autojump clock leaps to the next deadline, firing other timers mid-test.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import httpx
import pytest

import trio
import trio.testing
from trio.testing import MockClock

from trioserver.errors import MatrixError
from trioserver.handlers.notifier import Listener
from trioserver.handlers.presence import PresenceHandler
from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join, send_text
from tests.integration.writer_env import WriterEnv, trio_wall_clock, writer_env


def status_path(user_id: str) -> str:
    return f"/presence/{user_id}/status"


@pytest.fixture
async def carol(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("carol", "carolpw")
    return Client(http, user.user_id, user.access_token, user.device_id)


# -- Over HTTP -------------------------------------------------------------------------------


async def test_set_and_get_own_presence(alice: Client) -> None:
    assert assert_ok(await alice.get(status_path(alice.user_id))) == {"presence": "offline"}
    body = {"presence": "online", "status_msg": "Busy coding"}
    assert assert_ok(await alice.put(status_path(alice.user_id), body)) == {}
    got = assert_ok(await alice.get(status_path(alice.user_id)))
    assert got["presence"] == "online"
    assert got["status_msg"] == "Busy coding"
    assert got["currently_active"] is True
    assert 0 <= got["last_active_ago"] < 60_000


async def test_unavailable_and_offline_and_clearing_the_status(alice: Client) -> None:
    path = status_path(alice.user_id)
    assert_ok(await alice.put(path, {"presence": "online", "status_msg": "here"}))
    assert_ok(await alice.put(path, {"presence": "unavailable", "status_msg": "away"}))
    got = assert_ok(await alice.get(path))
    assert got["presence"] == "unavailable"
    assert got["status_msg"] == "away"
    assert "currently_active" not in got  # only given for online users
    # Leaving the status message out clears it (Synapse).
    assert_ok(await alice.put(path, {"presence": "offline"}))
    got = assert_ok(await alice.get(path))
    assert got["presence"] == "offline"
    assert "status_msg" not in got


async def test_cannot_set_someone_elses_presence(alice: Client, bob: Client) -> None:
    response = await alice.put(status_path(bob.user_id), {"presence": "online"})
    assert_error(response, 403, "M_FORBIDDEN")


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"presence": "away"}, "M_INVALID_PARAM"),
        ({"presence": "busy"}, "M_INVALID_PARAM"),
        ({"presence": 1}, "M_INVALID_PARAM"),
        ({"presence": "online", "status_msg": 5}, "M_INVALID_PARAM"),
        ({"presence": "online", "status_msg": None}, "M_INVALID_PARAM"),
        (["online"], "M_BAD_JSON"),
    ],
)
async def test_bad_bodies_are_400(alice: Client, body: Any, errcode: str) -> None:
    assert_error(await alice.put(status_path(alice.user_id), body), 400, errcode)


async def test_seeing_others_needs_a_shared_room(
    alice: Client, bob: Client, carol: Client
) -> None:
    assert_ok(await bob.put(status_path(bob.user_id), {"presence": "online", "status_msg": "hi"}))
    assert_error(await alice.get(status_path(bob.user_id)), 403, "M_FORBIDDEN")
    room_id = await create_room(alice)
    await invite(alice, room_id, bob.user_id)
    # An invite is not yet a shared room.
    assert_error(await alice.get(status_path(bob.user_id)), 403, "M_FORBIDDEN")
    await join(bob, room_id)
    got = assert_ok(await alice.get(status_path(bob.user_id)))
    assert (got["presence"], got["status_msg"]) == ("online", "hi")
    assert assert_ok(await bob.get(status_path(alice.user_id))) == {"presence": "offline"}
    assert_error(await carol.get(status_path(alice.user_id)), 403, "M_FORBIDDEN")


async def test_unknown_and_invalid_users(alice: Client) -> None:
    assert_error(await alice.get(status_path("@nobody:localhost")), 404, "M_NOT_FOUND")
    assert_error(await alice.get(status_path("@someone:elsewhere.org")), 404, "M_NOT_FOUND")
    assert_error(await alice.get(status_path("not-a-user")), 400, "M_INVALID_PARAM")


async def test_messages_typing_and_receipts_count_as_activity(alice: Client) -> None:
    room_id = await create_room(alice)
    path = status_path(alice.user_id)
    assert_ok(await alice.put(path, {"presence": "unavailable"}))
    event_id = await send_text(alice, room_id, "hi")
    # A sent message is applied by the presence task, just after the send returns.
    for _ in range(100):
        if assert_ok(await alice.get(path))["presence"] == "online":
            break
        await trio.sleep(0.01)
    assert assert_ok(await alice.get(path))["presence"] == "online"
    assert_ok(await alice.put(path, {"presence": "unavailable"}))
    assert_ok(await alice.put(f"/rooms/{room_id}/typing/{alice.user_id}", {"typing": True}))
    assert assert_ok(await alice.get(path))["presence"] == "online"
    assert_ok(await alice.put(path, {"presence": "unavailable"}))
    assert_ok(await alice.post(f"/rooms/{room_id}/receipt/m.read/{event_id}", {}))
    assert assert_ok(await alice.get(path))["presence"] == "online"
    assert_ok(await alice.put(path, {"presence": "unavailable"}))
    assert_ok(await alice.post(f"/rooms/{room_id}/read_markers", {"m.fully_read": event_id}))
    assert assert_ok(await alice.get(path))["presence"] == "online"


async def test_presence_needs_a_token(alice: Client) -> None:
    response = await alice.http.get("/_matrix/client/v3" + status_path(alice.user_id))
    assert_error(response, 401, "M_MISSING_TOKEN")


# -- The query API and timers ----------------------------------------------------------------


async def woken(listener: Listener, clock: MockClock) -> bool:
    """Whether the listener was woken (the clock autojumps meanwhile, so "no" cannot hang)."""
    clock.autojump_threshold = 0
    try:
        return await listener.wait(1)
    finally:
        clock.autojump_threshold = math.inf


async def settle() -> None:
    """Let the timer task finish what a clock jump made due (it may wait on a DB thread)."""
    await trio.testing.wait_all_tasks_blocked(cushion=0.05)


def handler(env: WriterEnv) -> PresenceHandler:
    return env.components.deps.presence


def states(events: list[dict[str, Any]]) -> dict[str, str]:
    return {event["sender"]: event["content"]["presence"] for event in events}


async def _users(env: WriterEnv) -> tuple[str, str, str, str]:
    """Alice and Bob share a room; Carol is alone."""
    alice, bob, carol = await env.user("alice"), await env.user("bob"), await env.user("carol")
    room_id = await env.create_room(alice, preset="public_chat")
    await env.components.deps.membership.update_membership(bob, room_id, bob, "join")
    return alice, bob, carol, room_id


async def test_presence_since_shows_users_sharing_a_room(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, carol, _ = await _users(env)
        presence = handler(env)
        start = presence.position()
        await presence.set_presence_from_sync(alice, None)
        after_alice = presence.position()
        assert after_alice == start + 1
        assert env.components.deps.notifier.current_token().presence == after_alice
        await presence.set_presence(carol, carol, "unavailable", "lunch")
        await presence.set_presence_from_sync(bob, "unavailable")
        assert states(await presence.presence_since(alice, None)) == {
            alice: "online",
            bob: "unavailable",
        }
        assert states(await presence.presence_since(alice, after_alice)) == {bob: "unavailable"}
        assert await presence.presence_since(alice, presence.position()) == []
        # Carol sees only herself.
        (event,) = await presence.presence_since(carol, None)
        assert event == {
            "type": "m.presence",
            "sender": carol,
            "content": {"presence": "unavailable", "status_msg": "lunch"},
        }
        alice_event, unknown_event = presence.presence_for_users([alice, "@unknown:blue"])
        assert alice_event["content"] == {
            "presence": "online",
            "last_active_ago": 0,
            "currently_active": True,
        }
        # A user never seen online is reported offline (as Synapse does).
        assert unknown_event == {
            "type": "m.presence",
            "sender": "@unknown:blue",
            "content": {"presence": "offline"},
        }


async def test_last_active_ago_is_current(tmp_path: Path, mock_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, _, _ = await _users(env)
        presence = handler(env)
        async with presence.user_syncing(alice, None):
            mock_clock.jump(12)
            (event,) = await presence.presence_since(bob, presence.position() - 1)
            assert event["content"]["last_active_ago"] == 12_000
            got = await presence.get_presence(bob, alice)
            assert got["last_active_ago"] == 12_000


async def test_set_presence_offline_from_sync_changes_nothing(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with writer_env(tmp_path) as env:
        alice, _, _, _ = await _users(env)
        presence = handler(env)
        position = presence.position()
        async with presence.user_syncing(alice, "offline"):
            pass
        await presence.set_presence_from_sync(alice, "offline")
        assert presence.position() == position
        assert await presence.get_presence(alice, alice) == {"presence": "offline"}


async def test_offline_30_seconds_after_the_last_sync_ends(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, _, room_id = await _users(env)
        presence = handler(env)
        async with presence.user_syncing(alice, None):
            # A long-poll in flight keeps the user online however long it takes.
            mock_clock.jump(45)
            await settle()
            assert (await presence.get_presence(alice, alice))["presence"] == "online"
        mock_clock.jump(29)
        await settle()
        assert (await presence.get_presence(alice, alice))["presence"] == "online"
        position = presence.position()
        with env.components.deps.notifier.listen(bob, [room_id]) as listener:
            mock_clock.jump(2)
            await settle()
            assert await woken(listener, mock_clock)
        assert await presence.get_presence(alice, alice) == {
            "presence": "offline",
            "last_active_ago": 76_000,
        }
        assert states(await presence.presence_since(bob, position)) == {alice: "offline"}


async def test_others_activity_does_not_postpone_a_timeout(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    # Every message wakes the timeout task, which then looks only at the users that moved:
    # a deadline planned before must still fall due on time.
    async with writer_env(tmp_path) as env:
        alice, bob, _, room_id = await _users(env)
        presence = handler(env)
        async with presence.user_syncing(alice, None):
            await settle()
        async with presence.user_syncing(bob, None):
            for n in range(8):
                mock_clock.jump(4)
                await env.send_text(bob, room_id, f"message {n}")
                await settle()
                expected = "online" if 4 * (n + 1) < 30 else "offline"
                assert (await presence.get_presence(alice, alice))["presence"] == expected
            assert (await presence.get_presence(bob, bob))["presence"] == "online"


async def test_a_lone_set_presence_from_sync_counts_as_a_short_sync(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with writer_env(tmp_path) as env:
        alice, _, _, _ = await _users(env)
        presence = handler(env)
        await presence.set_presence_from_sync(alice, None)
        mock_clock.jump(29)
        await settle()
        assert (await presence.get_presence(alice, alice))["presence"] == "online"
        mock_clock.jump(2)
        await settle()
        assert (await presence.get_presence(alice, alice))["presence"] == "offline"


async def test_currently_active_ends_a_minute_after_the_last_activity(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, _, _ = await _users(env)
        presence = handler(env)
        async with presence.user_syncing(alice, None):
            position = presence.position()
            mock_clock.jump(59)
            await settle()
            assert presence.position() == position
            mock_clock.jump(2)
            await settle()
            got = await presence.get_presence(alice, alice)
            assert (got["presence"], got["currently_active"]) == ("online", False)
            # Losing currently_active is news to others (spec "Last active ago").
            assert states(await presence.presence_since(bob, position)) == {alice: "online"}


async def test_syncing_as_unavailable(tmp_path: Path, mock_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice, _, _, _ = await _users(env)
        presence = handler(env)
        async with presence.user_syncing(alice, "unavailable"):
            got = await presence.get_presence(alice, alice)
            assert got == {"presence": "unavailable"}
            mock_clock.jump(40)
            await settle()
            assert got == await presence.get_presence(alice, alice)
        with pytest.raises(MatrixError):
            await presence.set_presence_from_sync(alice, "away")


async def test_idle_users_go_unavailable_and_activity_brings_them_back(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    async with writer_env(tmp_path) as env:
        alice, _, _, room_id = await _users(env)
        presence = handler(env)
        with env.components.deps.notifier.listen(alice, []) as listener:
            # A (very) long-poll in flight: no offline timeout, but no activity either.
            async with presence.user_syncing(alice, None):
                mock_clock.jump(5 * 60 + 1)
                await settle()
                assert await woken(listener, mock_clock)
                got = await presence.get_presence(alice, alice)
                assert got == {"presence": "unavailable", "last_active_ago": 301_000}
                # Sending a message is activity, which brings an idle user back online.
                await env.send_text(alice, room_id, "back")
                await settle()
                got = await presence.get_presence(alice, alice)
        assert got == {"presence": "online", "last_active_ago": 0, "currently_active": True}


async def test_presence_survives_a_restart(tmp_path: Path, mock_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob, _, _ = await _users(env)
        await handler(env).set_presence(alice, alice, "online", "persisted")
        await handler(env).set_presence(bob, bob, "offline", "gone")
        position = handler(env).position()
    async with writer_env(tmp_path) as env:
        presence = handler(env)
        assert presence.position() == position
        events = await presence.presence_since(bob, None)
        assert {e["sender"]: e["content"].get("status_msg") for e in events} == {
            alice: "persisted",
            bob: "gone",
        }
        # Online before the restart: the usual 30 s to come back, then offline.
        mock_clock.jump(31)
        await settle()
        assert (await presence.get_presence(alice, alice))["presence"] == "offline"


async def test_a_clock_step_between_two_readings_does_not_crash_the_timeout_task(
    tmp_path: Path, mock_clock: MockClock
) -> None:
    # Regression (issue 10, found by SyTest): the task computed its next timeout from a
    # deadline that had passed since it last read the clock (another user's deadline passing
    # while it awaited, or the wall clock stepping forward); trio.move_on_after raised
    # ValueError for the negative timeout and, in the root nursery, took the server down.
    readings_until_step = 0
    step = 0.0

    def stepping_clock() -> float:
        nonlocal readings_until_step, step
        if readings_until_step:
            readings_until_step -= 1
            if not readings_until_step:
                step = 3600.0  # the wall clock jumps an hour forward
        return trio_wall_clock() + step

    async with writer_env(tmp_path, clock=stepping_clock) as env:
        _, bob, _, _ = await _users(env)
        presence = handler(env)
        # Bob is online with no sync in flight: his offline timeout is due in 30 s, which
        # wakes the timeout task. Its first reading is before the step, its second after.
        await presence.set_presence(bob, bob, "online", None)
        readings_until_step = 2
        await settle()
        # The task survived the step and applied the timeout that fell due with it.
        assert (await presence.get_presence(bob, bob))["presence"] == "offline"
        await presence.set_presence(bob, bob, "online", None)
        mock_clock.jump(31)
        await settle()
        assert (await presence.get_presence(bob, bob))["presence"] == "offline"
