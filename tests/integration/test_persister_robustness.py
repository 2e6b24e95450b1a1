"""The events writer survives its own bugs (issue 10): a failing listener, and a restart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from signedjson.key import generate_signing_key

import trio
import trio.testing

from trioserver.config import config_from_mapping
from trioserver.handlers.room_creation import parse_create_room
from trioserver.nursery import build_components
from trioserver.storage.intents import EventIntent
from trioserver.stores.database import open_configured_database
from trioserver.stores.events import StoredEvent

from tests.integration.server_db import database_section
from tests.integration.writer_env import writer_env


def text(sender: str, body: str) -> EventIntent:
    return EventIntent("m.room.message", sender, {"msgtype": "m.text", "body": body})


async def test_a_failing_listener_neither_fails_the_write_nor_silences_the_others(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        heard: list[str] = []

        def broken(stored: Sequence[StoredEvent]) -> None:
            raise RuntimeError("listener bug")

        env.persister.add_listener(broken)
        env.persister.add_listener(lambda stored: heard.extend(s.event_id for s in stored))
        stored = await env.send_text(alice, room_id, "acknowledged")
        assert heard == [stored.event_id]
        assert "listener bug" in caplog.text
        assert env.query("SELECT 1 FROM events WHERE event_id = ?", (stored.event_id,))
        again = await env.send_text(alice, room_id, "the writer goes on")
        assert again.stream_ordering > stored.stream_ordering


async def test_a_restarted_writer_continues_from_what_is_committed(tmp_path: Path) -> None:
    raw = {
        "server_name": "blue",
        "registration": {"bcrypt_rounds": 4},
        "database": await database_section(tmp_path, synchronous="normal"),
    }
    config = config_from_mapping(raw, base_dir=tmp_path)
    async with open_configured_database(config) as db:
        components = build_components(config, db, generate_signing_key("k"))
        persister = components.persister
        assert persister is not None
        for load in components.loaders:
            await load()
        deps = components.deps
        async with trio.open_nursery() as nursery:
            first_run = trio.CancelScope()

            async def run_until_stopped(*, task_status: trio.TaskStatus[None]) -> None:
                with first_run:
                    await persister.run(task_status=task_status)

            await nursery.start(run_until_stopped)
            alice = (await deps.accounts.register("alice", "pw", login=False)).user_id
            request = parse_create_room({}, config.rooms.default_room_version)
            room_id, _ = await deps.room_creation.create_room(alice, request)
            (before,) = await persister.submit(room_id, [text(alice, "before")])
            # The writer stops (as when it fails) with its room heads in memory, and a request
            # arrives while it is down: it waits in the queue, in order.
            first_run.cancel()
            await trio.testing.wait_all_tasks_blocked()
            waiting: list[StoredEvent] = []
            answered = trio.Event()

            async def submit_while_down() -> None:
                waiting.extend(await persister.submit(room_id, [text(alice, "queued")]))
                answered.set()

            nursery.start_soon(submit_while_down)
            await trio.testing.wait_all_tasks_blocked()
            assert waiting == []
            await nursery.start(persister.run)  # what the supervisor does
            with trio.fail_after(5):
                await answered.wait()
            (queued,) = waiting
            (after,) = await persister.submit(room_id, [text(alice, "after")])
            assert before.stream_ordering < queued.stream_ordering < after.stream_ordering
            # No fork: each event follows the one before it.
            assert queued.event.prev_event_ids == [before.event_id]
            assert after.event.prev_event_ids == [queued.event_id]
            nursery.cancel_scope.cancel()
