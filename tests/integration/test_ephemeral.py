"""Self-destructing messages (issue 5, seed 7), driven by trio's MockClock at the writer and
in real time over HTTP."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import trio
from trio.testing import MockClock

from trioserver.storage.intents import EventIntent
from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_ok
from tests.integration.server_db import server_db
from tests.integration.writer_env import WriterEnv, trio_wall_clock, writer_env

FIELD = "org.matrix.self_destruct_after"
EPHEMERAL: dict[str, Any] = {"enable_ephemeral_messages": True}


def now_ms() -> int:
    return int(trio_wall_clock() * 1000)


async def send(env: WriterEnv, user: str, room_id: str, **content: Any) -> str:
    body = {"msgtype": "m.text", "body": "secret", **content}
    intent = EventIntent("m.room.message", user, body)
    (stored,) = await env.persister.submit(room_id, [intent])
    return stored.event_id


async def content_of(env: WriterEnv, event_id: str) -> dict[str, Any]:
    stored = await env.components.deps.events.get_event(event_id)
    assert stored is not None
    return dict(stored.event.content)


def expiry_rows(env: WriterEnv) -> list[tuple[str, int]]:
    return env.query("SELECT event_id, expiry_ts FROM event_expiry ORDER BY expiry_ts")


async def _room(env: WriterEnv) -> tuple[str, str]:
    alice = await env.user("alice")
    return alice, await env.create_room(alice)


async def test_expires_at_the_right_moment_and_not_before(
    tmp_path: Path, db_clock: MockClock
) -> None:
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        alice, room_id = await _room(env)
        event_id = await send(env, alice, room_id, **{FIELD: now_ms() + 5_000})
        assert [row[0] for row in expiry_rows(env)] == [event_id]
        await trio.sleep(4.9)
        assert (await content_of(env, event_id))["body"] == "secret"
        await trio.sleep(0.2)
        assert await content_of(env, event_id) == {}
        assert expiry_rows(env) == []
        # The JSON in the database itself is pruned, not just what we serve.
        (raw,) = env.query("SELECT json FROM event_json WHERE event_id = ?", (event_id,))[0]
        assert "secret" not in raw


async def test_an_earlier_expiry_rearms_the_timer(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        alice, room_id = await _room(env)
        later = await send(env, alice, room_id, **{FIELD: now_ms() + 5_000})
        earlier = await send(env, alice, room_id, **{FIELD: now_ms() + 1_000})
        await trio.sleep(1.1)
        assert await content_of(env, earlier) == {}
        assert (await content_of(env, later))["body"] == "secret"
        await trio.sleep(4.0)
        assert await content_of(env, later) == {}


async def test_many_events_due_at_once(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        alice, room_id = await _room(env)
        due = now_ms() + 2_000
        event_ids = [await send(env, alice, room_id, **{FIELD: due}) for _ in range(25)]
        await trio.sleep(2.5)
        for event_id in event_ids:
            assert await content_of(env, event_id) == {}
        assert expiry_rows(env) == []


async def test_past_timestamps_expire_at_once(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        alice, room_id = await _room(env)
        event_id = await send(env, alice, room_id, **{FIELD: 0})
        await trio.sleep(0.01)
        assert await content_of(env, event_id) == {}


@pytest.mark.parametrize(
    ("value", "room_version"),
    [("0", "12"), (True, "12"), (None, "12"), ({"ts": 0}, "12"), (1.5, "5")],
)
async def test_non_integer_values_are_ignored(
    tmp_path: Path, db_clock: MockClock, value: Any, room_version: str
) -> None:
    # Floats are only possible before room version 6 (strict canonical JSON refuses them).
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice, room_version=room_version)
        event_id = await send(env, alice, room_id, **{FIELD: value})
        assert expiry_rows(env) == []
        await trio.sleep(10)
        assert (await content_of(env, event_id))["body"] == "secret"


async def test_the_original_field_name_works_too(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        alice, room_id = await _room(env)
        event_id = await send(env, alice, room_id, **{"m.self_destruct_after": now_ms() + 100})
        await trio.sleep(0.2)
        assert await content_of(env, event_id) == {}


async def test_state_events_never_expire(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        _, room_id = await _room(env)
        topic_id = await env.components.deps.send.send_state(
            env.requester("alice"), room_id, "m.room.topic", "", {"topic": "t", FIELD: 0}
        )
        await trio.sleep(1)
        assert expiry_rows(env) == []
        assert (await content_of(env, topic_id))["topic"] == "t"


async def test_flag_off_keeps_everything(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice, room_id = await _room(env)
        event_id = await send(env, alice, room_id, **{FIELD: 0})
        await trio.sleep(1)
        assert expiry_rows(env) == []
        assert (await content_of(env, event_id))["body"] == "secret"


async def test_a_row_for_a_missing_event_is_dropped_with_a_warning(
    tmp_path: Path, db_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        alice, room_id = await _room(env)
        with server_db(env.config) as db:
            db.execute("INSERT INTO event_expiry VALUES ('$gone', 0)")
    caplog.set_level(logging.WARNING)
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        event_id = await send(env, alice, room_id, **{FIELD: now_ms() + 1_000})
        await trio.sleep(1.5)
        assert expiry_rows(env) == []
        assert await content_of(env, event_id) == {}
    assert any("$gone" in r.getMessage() for r in caplog.records)


async def test_a_failing_expiry_is_retried_with_backoff(
    tmp_path: Path, db_clock: MockClock
) -> None:
    async with writer_env(tmp_path, **EPHEMERAL) as env:
        alice, room_id = await _room(env)
        event_id = await send(env, alice, room_id, **{FIELD: now_ms() + 100})
        # Make the prune fail: the room's version is unknown, so parsing the event fails.
        with server_db(env.config) as db:
            db.execute("UPDATE rooms SET room_version = 'nope' WHERE room_id = ?", (room_id,))
        await trio.sleep(10)
        # Retried (1 s, 2 s, 4 s, ...), not spun: the row is still there, not thousands of tries.
        assert [row[0] for row in expiry_rows(env)] == [event_id]
        with server_db(env.config) as db:
            db.execute("UPDATE rooms SET room_version = '12' WHERE room_id = ?", (room_id,))
        await trio.sleep(20)
        assert expiry_rows(env) == []


async def _sync_body(client: Client, event_id: str, room_id: str) -> dict[str, Any]:
    body = assert_ok(await client.get("/sync"))
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    (event,) = [e for e in events if e["event_id"] == event_id]
    return dict(event["content"])


async def test_over_http_the_message_is_pruned_everywhere(tmp_path: Path) -> None:
    async with serve_in_process(data_dir=tmp_path, **EPHEMERAL) as hs:
        user = await hs.register_user("alice")
        async with httpx.AsyncClient(base_url=hs.base_url) as http:
            alice = Client(http, user.user_id, user.access_token, user.device_id)
            room_id = assert_ok(await alice.post("/createRoom", json={}))["room_id"]
            expires = int(time.time() * 1000) + 2_000
            content = {"msgtype": "m.text", "body": "gone soon", FIELD: expires}
            sent = await alice.put(f"/rooms/{room_id}/send/m.room.message/t1", json=content)
            event_id = assert_ok(sent)["event_id"]
            path = f"/rooms/{room_id}/event/{event_id}"
            assert assert_ok(await alice.get(path))["content"]["body"] == "gone soon"
            await trio.sleep(2.5)
            assert assert_ok(await alice.get(path))["content"] == {}
            page = assert_ok(await alice.get(f"/rooms/{room_id}/messages", params={"dir": "b"}))
            (listed,) = [e for e in page["chunk"] if e["event_id"] == event_id]
            assert listed["content"] == {}
            assert "redacted_because" not in listed["unsigned"]
            assert await _sync_body(alice, event_id, room_id) == {}


async def test_restart_prunes_what_came_due_while_stopped(tmp_path: Path) -> None:
    async with serve_in_process(data_dir=tmp_path, **EPHEMERAL) as hs:
        user = await hs.register_user("alice")
        async with httpx.AsyncClient(base_url=hs.base_url) as http:
            alice = Client(http, user.user_id, user.access_token, user.device_id)
            room_id = assert_ok(await alice.post("/createRoom", json={}))["room_id"]
            content = {"msgtype": "m.text", "body": "x", FIELD: int(time.time() * 1000) + 500}
            sent = await alice.put(f"/rooms/{room_id}/send/m.room.message/t1", json=content)
            event_id = assert_ok(sent)["event_id"]
    await trio.sleep(0.8)  # the server is stopped when the message comes due
    async with (
        serve_in_process(data_dir=tmp_path, **EPHEMERAL) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        with trio.fail_after(5):
            while True:
                event = assert_ok(await alice.get(f"/rooms/{room_id}/event/{event_id}"))
                if event["content"] == {}:
                    break
                await trio.sleep(0.05)
