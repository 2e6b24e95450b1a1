"""Seed 2: events are persisted only by the events writer, in batches, in order (SEED-SPEC 2.6)."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

import trio

from trioserver.config import config_from_mapping
from trioserver.errors import ConfigError, MatrixError
from trioserver.storage.intents import EventIntent
from trioserver.stores.persist_events import PersistEventStore

from tests.integration.server_db import store_database
from tests.integration.writer_env import writer_env


async def test_only_the_configured_writer_constructs_the_persist_store(tmp_path: Path) -> None:
    async with store_database(tmp_path) as db:
        with pytest.raises(RuntimeError, match="events writer"):
            PersistEventStore(db, server_name="blue", is_writer=False)


def test_writer_missing_from_instance_map_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"stream_writers\.events"):
        config_from_mapping({"stream_writers": {"events": "w1"}}, base_dir=tmp_path)


def test_non_writer_instance_builds_no_persister(tmp_path: Path) -> None:
    raw = {
        "instance_name": "worker1",
        "stream_writers": {"events": "main"},
        "instance_map": {"main": {"host": "127.0.0.1", "port": 9093}},
        "replication": {"secret": "s3cret"},
    }
    config = config_from_mapping(raw, base_dir=tmp_path)
    assert not config.is_events_writer


async def test_one_message_writes_its_rows_in_one_transaction(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        before = len(env.store.batches)
        stored = await env.send_text(alice, room_id, "hello")
        assert env.store.batches[before:] == [[stored.event_id]]
        eid = stored.event_id
        assert env.query("SELECT room_id FROM events WHERE event_id = ?", (eid,)) == [(room_id,)]
        assert env.query("SELECT 1 FROM event_json WHERE event_id = ?", (eid,)) == [(1,)]
        prev = stored.event.prev_event_ids
        edges = env.query("SELECT prev_event_id FROM event_edges WHERE event_id = ?", (eid,))
        assert edges == [(prev[0],)]
        extremities = env.query(
            "SELECT event_id FROM event_forward_extremities WHERE room_id = ?", (room_id,)
        )
        assert extremities == [(eid,)]


async def test_a_failed_transaction_leaves_no_rows_and_fails_the_caller(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        count = env.query("SELECT COUNT(*) FROM events")[0][0]
        env.store.fail_next = sqlite3.OperationalError("disk I/O error")
        with pytest.raises(MatrixError) as failure:
            await env.send_text(alice, room_id, "lost")
        assert failure.value.status == 500
        assert env.query("SELECT COUNT(*) FROM events")[0][0] == count
        assert env.query("SELECT COUNT(*) FROM event_json")[0][0] == count
        # The room is reloaded from the database and the next send builds on what is stored.
        stored = await env.send_text(alice, room_id, "next")
        last = env.query(
            "SELECT event_id FROM events WHERE room_id = ? AND stream_ordering < ?"
            " ORDER BY stream_ordering DESC LIMIT 1",
            (room_id, stored.stream_ordering),
        )
        assert stored.event.prev_event_ids == [last[0][0]]


async def test_concurrent_sends_to_one_room_are_ordered_and_chained(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        results = {}

        async def send(i: int) -> None:
            results[i] = await env.send_text(alice, room_id, f"m{i}")

        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(send, i)
        ordered = sorted(results.values(), key=lambda s: s.stream_ordering)
        # No forks: each event's only prev event is the one before it.
        for earlier, later in itertools.pairwise(ordered):
            assert later.event.prev_event_ids == [earlier.event_id]
            assert later.event.depth == earlier.event.depth + 1
        extremities = env.query(
            "SELECT event_id FROM event_forward_extremities WHERE room_id = ?", (room_id,)
        )
        assert extremities == [(ordered[-1].event_id,)]


async def test_waiting_requests_merge_into_one_batch(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        rooms = [await env.create_room(alice) for _ in range(2)]
        before = len(env.store.batches)
        results = []

        async def send(room_id: str, i: int) -> None:
            results.append(await env.send_text(alice, room_id, f"m{i}"))

        # Queue three requests while the writer is busy with nothing else: they are all
        # waiting when it next looks, so they go into one transaction, across both rooms.
        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(send, rooms[i % 2], i)
        assert [len(b) for b in env.store.batches[before:]] == [3]


async def test_an_error_in_a_batch_reaches_every_waiter(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        env.store.fail_next = sqlite3.OperationalError("disk full")
        errors = []

        async def send(i: int) -> None:
            try:
                await env.send_text(alice, room_id, f"m{i}")
            except MatrixError as err:
                errors.append(err.status)

        async with trio.open_nursery() as nursery:
            for i in range(3):
                nursery.start_soon(send, i)
        assert errors == [500, 500, 500]


async def test_250_waiting_events_take_three_transactions_with_contiguous_orderings(
    tmp_path: Path,
) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        before = len(env.store.batches)
        results = []

        async def send(i: int) -> None:
            results.append(await env.send_text(alice, room_id, f"m{i}"))

        async with trio.open_nursery() as nursery:
            for i in range(250):
                nursery.start_soon(send, i)
        assert [len(b) for b in env.store.batches[before:]] == [100, 100, 50]
        orderings = sorted(s.stream_ordering for s in results)
        assert orderings == list(range(orderings[0], orderings[0] + 250))


async def test_a_refused_request_does_not_affect_others_in_its_batch(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob = await env.user("alice"), await env.user("bob")
        room_id = await env.create_room(alice)
        outcomes: dict[str, object] = {}

        async def send(sender: str) -> None:
            try:
                outcomes[sender] = await env.send_text(sender, room_id, "hi")
            except MatrixError as err:
                outcomes[sender] = err

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, bob)  # not in the room: refused
            nursery.start_soon(send, alice)
        assert isinstance(outcomes[bob], MatrixError)
        assert outcomes[bob].status == 403  # type: ignore[attr-defined]
        assert not isinstance(outcomes[alice], MatrixError)
        assert env.query("SELECT COUNT(*) FROM events WHERE sender = ?", (bob,)) == [(0,)]


async def test_a_request_is_atomic_when_one_of_its_events_is_refused(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob = await env.user("alice"), await env.user("bob")
        room_id = await env.create_room(alice)
        count = env.query("SELECT COUNT(*) FROM events")[0][0]
        intents = [
            EventIntent("m.room.message", alice, {"msgtype": "m.text", "body": "ok"}),
            EventIntent("m.room.message", bob, {"msgtype": "m.text", "body": "refused"}),
        ]
        with pytest.raises(MatrixError):
            await env.persister.submit(room_id, intents)
        assert env.query("SELECT COUNT(*) FROM events")[0][0] == count
        # The room was left as it was: the next event builds on the last stored one.
        stored = await env.send_text(alice, room_id, "after")
        assert stored.stream_ordering == count + 1


async def test_identical_v12_rooms_created_in_one_millisecond_get_distinct_ids(
    tmp_path: Path,
) -> None:
    async with writer_env(tmp_path, clock=lambda: 1_800_000_000.0) as env:
        alice = await env.user("alice")
        first = await env.create_room(alice)
        second = await env.create_room(alice)
        results: list[str] = []

        async def create() -> None:
            results.append(await env.create_room(alice))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(create)
        assert len({first, second, *results}) == 5
