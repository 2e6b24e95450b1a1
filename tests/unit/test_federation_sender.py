"""The federation sender (issue 15): who gets an event, transactions, backoff and catch-up.

Against a real database (SQLite, or PostgreSQL with TRIOSERVER_TEST_POSTGRES) whose rows the
tests write directly, and a fake transport that records each transaction and fails on demand.
The sender's backoff runs on an injected wall clock; its flush and wake pauses are set to 0.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import Counter
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import trio

from trioserver.events import KNOWN_ROOM_VERSIONS, Event
from trioserver.federation.destination_queue import (
    MAX_EDUS_PER_TXN,
    MAX_PDUS_PER_TXN,
    BackoffPolicy,
    Outcome,
    classify_failure,
    pdu_errors,
)
from trioserver.federation.sender import MAX_DISPATCH_ATTEMPTS, FederationSender
from trioserver.federation.transport import (
    DestinationNotAllowed,
    DestinationUnreachable,
    RemoteError,
)
from trioserver.stores.events import EventCache, EventStore, StoredEvent
from trioserver.stores.federation_sender import DestinationRow, FederationSenderStore
from trioserver.stores.state import StateStore

from tests.integration.server_db import store_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from trioserver.stores.database import Database, Txn

OURS = "ours.test"
VERSION = KNOWN_ROOM_VERSIONS["10"]
ALICE = f"@alice:{OURS}"
DAN = f"@dan:{OURS}"
BOB = "@bob:one.test"
CAROL = "@carol:two.test"
EVE = "@eve:three.test"


@attrs.define
class Call:
    destination: str
    path: str
    body: dict[str, Any]
    failed: bool

    @property
    def event_ids(self) -> list[str]:
        # Room v10 PDUs carry no event id; the test events' depth is their number.
        return [f"$e{pdu['depth']}" for pdu in self.body["pdus"]]


class FakeTransport:
    """Records transactions; `failing` maps a destination to the exception its sends raise;
    `gate`, when set, holds every send until it is set."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.failing: dict[str, Exception] = {}
        self.response: Any = {"pdus": {}}
        self.gate: trio.Event | None = None
        self.in_flight: Counter[str] = Counter()
        self.max_in_flight: Counter[str] = Counter()
        self._changed = trio.Event()

    async def put_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 -- the real client's signature
    ) -> Any:
        self.in_flight[destination] += 1
        self.max_in_flight[destination] = max(
            self.max_in_flight[destination], self.in_flight[destination]
        )
        try:
            if self.gate is not None:
                await self.gate.wait()
            await trio.lowlevel.checkpoint()
            error = self.failing.get(destination)
            self.calls.append(Call(destination, path, content, error is not None))
            self._changed.set()
            self._changed = trio.Event()
            if error is not None:
                raise error
            return self.response
        finally:
            self.in_flight[destination] -= 1

    def to(self, destination: str, *, ok: bool = True) -> list[Call]:
        return [c for c in self.calls if c.destination == destination and c.failed != ok]

    def sent_ids(self, destination: str) -> list[str]:
        return [eid for call in self.to(destination) for eid in call.event_ids]

    async def wait_calls(self, count: int) -> None:
        with trio.fail_after(10):
            while len(self.calls) < count:
                await self._changed.wait()


class Clock:
    """The sender's wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class World:
    """Rooms and events written straight into the tables the sender reads."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.stream = 0
        self.group = 0
        self.rooms: set[str] = set()

    async def event(
        self,
        room_id: str,
        sender: str,
        *,
        type: str = "m.room.message",
        state_key: str | None = None,
        membership: str | None = None,
        state_group: int | None = None,
        current: bool = True,
    ) -> StoredEvent:
        """Store an event; a state event also becomes current state (unless `current` is
        False)."""
        self.stream += 1
        event_id = f"$e{self.stream}"
        pdu: dict[str, Any] = {
            "type": type,
            "room_id": room_id,
            "sender": sender,
            "content": {"membership": membership} if membership else {"body": str(self.stream)},
            "origin_server_ts": 1_700_000_000_000 + self.stream,
            "depth": self.stream,
            "prev_events": [],
            "auth_events": [],
            "hashes": {"sha256": "x"},
            "signatures": {},
        }
        if state_key is not None:
            pdu["state_key"] = state_key
        stored = StoredEvent(
            Event(room_version=VERSION, event_id=event_id, pdu=pdu),
            self.stream,
            self.stream,
            state_group,
            None,
            None,
            None,
        )
        new_room = room_id not in self.rooms
        self.rooms.add(room_id)
        await self.db.run_txn("test_event", _insert_txn, stored, new_room, membership, current)
        return stored

    async def join(self, room_id: str, user: str) -> StoredEvent:
        return await self.member(room_id, user, user, "join")

    async def member(self, room_id: str, sender: str, target: str, membership: str) -> StoredEvent:
        return await self.event(
            room_id, sender, type="m.room.member", state_key=target, membership=membership
        )

    async def snapshot_group(self, room_id: str, members: list[StoredEvent]) -> int:
        """A full state group holding these membership events."""
        self.group += 1
        await self.db.run_txn("test_group", _group_txn, self.group, room_id, members)
        return self.group


def _insert_txn(
    txn: Txn, stored: StoredEvent, new_room: bool, membership: str | None, current: bool
) -> None:
    event = stored.event
    if new_room:
        txn.execute(
            "INSERT INTO rooms (room_id, room_version, created_ts) VALUES (?, ?, 0)",
            (event.room_id, VERSION.identifier),
        )
    txn.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
        " topological_ordering, origin_server_ts, received_ts, membership, state_group)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
        (
            stored.stream_ordering,
            event.event_id,
            event.room_id,
            event.type,
            event.state_key,
            event.sender,
            stored.topological_ordering,
            event.origin_server_ts,
            membership,
            stored.state_group,
        ),
    )
    txn.execute(
        "INSERT INTO event_json (event_id, room_id, json) VALUES (?, ?, ?)",
        (event.event_id, event.room_id, _json(event.get_pdu_json())),
    )
    if event.state_key is not None and current:
        txn.execute(
            "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership,"
            " event_stream_ordering) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id,"
            " membership = excluded.membership,"
            " event_stream_ordering = excluded.event_stream_ordering",
            (
                event.room_id,
                event.type,
                event.state_key,
                event.event_id,
                membership,
                stored.stream_ordering,
            ),
        )


def _group_txn(txn: Txn, group: int, room_id: str, members: list[StoredEvent]) -> None:
    txn.execute(
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (?, ?, NULL, 0)",
        (group, room_id),
    )
    for member in members:
        txn.execute(
            "INSERT INTO state_group_state (state_group, type, state_key, event_id)"
            " VALUES (?, 'm.room.member', ?, ?)",
            (group, member.event.state_key, member.event_id),
        )


def _clear_current_state_txn(txn: Txn, room_id: str) -> None:
    txn.execute("DELETE FROM current_state_events WHERE room_id = ?", (room_id,))


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()


@attrs.define
class Env:
    db: Database
    world: World
    transport: FakeTransport
    clock: Clock
    store: FederationSenderStore
    nursery: trio.Nursery
    sender: FederationSender = attrs.field(init=False)

    def new_sender(self) -> FederationSender:
        return FederationSender(
            server_name=OURS,
            store=self.store,
            events=EventStore(self.db, EventCache()),
            state=StateStore(self.db, server_name=OURS),
            transport=self.transport,
            clock=self.clock,
            backoff=BackoffPolicy(min_ms=5_000, max_ms=3_600_000, jitter=0.2),
            rng=random.Random(7),
            flush_interval=0,
            startup_wake_interval=0,
        )

    async def persist(self, *events: StoredEvent) -> None:
        """Hand committed events to the sender, as the events writer does, and let it
        finish with them."""
        self.sender.on_persisted(list(events))
        await settle(self.sender)

    async def restart(self) -> FederationSender:
        """A new sender on the same database (as after a process restart), running."""
        self.sender = self.new_sender()
        await self.nursery.start(self.sender.run)
        return self.sender

    async def row(self, destination: str) -> DestinationRow | None:
        rows = {r.destination: r for r in await self.store.all_destinations()}
        return rows.get(destination)


async def settle(sender: FederationSender) -> None:
    """Wait until the sender has dispatched, sent and stored everything it can."""
    with trio.fail_after(10):
        while True:
            stats = sender.statistics()
            if not (stats.undispatched_events or stats.running or stats.unsaved_destinations):
                return
            await trio.sleep(0.001)


@asynccontextmanager
async def running_env(tmp_path: Path) -> AsyncIterator[Env]:
    async with store_database(tmp_path) as db, trio.open_nursery() as nursery:
        transport = FakeTransport()
        env = Env(db, World(db), transport, Clock(), FederationSenderStore(db), nursery)
        env.sender = env.new_sender()
        await nursery.start(env.sender.run)
        try:
            yield env
        finally:
            nursery.cancel_scope.cancel()


async def shared_room(env: Env, room_id: str = "!a:ours.test") -> str:
    """A room where ALICE, DAN (ours), BOB (one.test) and CAROL (two.test) are joined."""
    for user in (ALICE, DAN, BOB, CAROL):
        await env.world.join(room_id, user)
    return room_id


# -- Who gets an event ------------------------------------------------------------------------


async def test_a_local_event_goes_once_to_each_other_joined_server(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        message = await env.world.event(room, ALICE)
        await env.persist(message)

        assert sorted(c.destination for c in env.transport.calls) == ["one.test", "two.test"]
        call = env.transport.to("one.test")[0]
        assert call.path.startswith("/_matrix/federation/v1/send/")
        assert call.body["origin"] == OURS
        assert call.body["origin_server_ts"] == int(env.clock.now * 1000)
        assert call.body["pdus"] == [message.event.get_pdu_json()]
        assert call.body["edus"] == []
        assert "unsigned" not in call.body["pdus"][0]
        # Transaction ids are unique, and quoted whole into the path.
        paths = [c.path for c in env.transport.calls]
        assert len(set(paths)) == len(paths)


async def test_events_from_other_servers_are_not_sent(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        await env.persist(await env.world.event(room, BOB), await env.world.event(room, CAROL))
        assert env.transport.calls == []


async def test_a_room_of_only_local_users_sends_nothing(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = "!local:ours.test"
        await env.world.join(room, ALICE)
        await env.world.join(room, DAN)
        await env.persist(
            await env.world.event(room, ALICE),
            await env.world.member(room, ALICE, f"@zed:{OURS}", "invite"),
        )
        assert env.transport.calls == []
        env.sender.send_edu(OURS, "m.typing", {})
        env.sender.wake_destination(OURS)
        await settle(env.sender)
        assert env.transport.calls == []


async def test_membership_events_reach_their_target_server(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        invite = await env.world.member(room, ALICE, EVE, "invite")
        await env.persist(invite)
        # An invitee's server hears of its invite through /invite, not a transaction: it is
        # not in the room, and cannot take the PDU (SyTest's fake servers fail on it).
        assert env.transport.sent_ids("three.test") == []

        await env.persist(await env.world.join(room, EVE))
        kick = await env.world.member(room, ALICE, EVE, "leave")
        await env.persist(kick)
        assert env.transport.sent_ids("three.test") == [kick.event_id]
        # The kick went to everyone, and later messages no longer go to the kicked server.
        assert env.transport.sent_ids("one.test")[-1] == kick.event_id
        await env.persist(await env.world.event(room, ALICE))
        assert env.transport.sent_ids("three.test") == [kick.event_id]


async def test_joined_servers_are_read_again_after_a_membership_change(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        await env.persist(await env.world.event(room, ALICE))
        assert env.transport.to("three.test") == []
        # A remote server joined (its join came over federation: an event from elsewhere).
        await env.persist(await env.world.join(room, EVE))
        message = await env.world.event(room, ALICE)
        await env.persist(message)
        assert env.transport.sent_ids("three.test") == [message.event_id]
        # A remote member leaving: the room's servers are read again, without two.test.
        await env.persist(await env.world.member(room, CAROL, CAROL, "leave"))
        await env.persist(await env.world.event(room, ALICE))
        assert len(env.transport.to("two.test")) == 2
        assert len(env.transport.to("one.test")) == 3


async def test_the_last_local_leave_reaches_the_servers_still_in_the_room(
    tmp_path: Path,
) -> None:
    async with running_env(tmp_path) as env:
        room = "!left:ours.test"
        joins = [await env.world.join(room, user) for user in (ALICE, BOB)]
        leave = await env.world.member(room, ALICE, ALICE, "leave")
        # As after seed 4: the server left, so the room's current state is gone; the state
        # after the leave still has BOB joined.
        await env.db.run_txn("clear", _clear_current_state_txn, room)
        group = await env.world.snapshot_group(room, [leave, joins[1]])
        await env.persist(attrs.evolve(leave, state_group=group))
        assert env.transport.sent_ids("one.test") == [leave.event_id]


# -- Transactions ----------------------------------------------------------------------------


async def test_at_most_50_pdus_per_transaction_and_one_in_flight(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.gate = trio.Event()
        events = [await env.world.event(room, ALICE) for _ in range(120)]
        for stored in events:
            env.sender.on_persisted([stored])
        await trio.sleep(0.05)
        assert env.transport.in_flight["one.test"] == 1
        env.transport.gate.set()
        await settle(env.sender)

        calls = env.transport.to("one.test")
        assert all(len(c.body["pdus"]) <= MAX_PDUS_PER_TXN for c in calls)
        assert len(calls) >= 3
        assert env.transport.sent_ids("one.test") == [e.event_id for e in events]
        assert env.transport.max_in_flight["one.test"] == 1
        row = await env.row("one.test")
        assert row is not None
        assert row.last_successful_stream_ordering == events[-1].stream_ordering


async def test_edus_go_in_transactions_of_at_most_100(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        env.transport.gate = trio.Event()
        for i in range(150):
            env.sender.send_edu("one.test", "m.typing", {"n": i})
        env.transport.gate.set()
        await settle(env.sender)
        calls = env.transport.to("one.test")
        edus = [edu for call in calls for edu in call.body["edus"]]
        assert all(len(c.body["edus"]) <= MAX_EDUS_PER_TXN for c in calls)
        assert edus == [{"edu_type": "m.typing", "content": {"n": i}} for i in range(150)]
        assert all(c.body["pdus"] == [] for c in calls)


async def test_pdu_errors_in_the_response_are_logged_and_not_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserver.federation.sender")
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        message = await env.world.event(room, ALICE)
        env.transport.response = {"pdus": {message.event_id: {"error": "Bad signature"}}}
        await env.persist(message)
        env.transport.response = {"pdus": {}}
        await env.persist(await env.world.event(room, ALICE))
        assert "Bad signature" in caplog.text
        assert env.transport.sent_ids("one.test").count(message.event_id) == 1


async def test_a_refused_transaction_is_dropped_without_backoff(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.failing["one.test"] = RemoteError(400, "M_BAD_JSON", "no", None)
        refused = await env.world.event(room, ALICE)
        await env.persist(refused)
        del env.transport.failing["one.test"]
        after = await env.world.event(room, ALICE)
        await env.persist(after)
        # Sent at once (no backoff), and the refused event is not sent again.
        assert env.transport.sent_ids("one.test") == [after.event_id]
        row = await env.row("one.test")
        assert row is not None
        assert row.retry_interval == 0


# -- Backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        DestinationUnreachable("connection refused"),
        RemoteError(502, None, None, None),
        RemoteError(404, "M_UNRECOGNIZED", "gone", None),
        RemoteError(429, "M_LIMIT_EXCEEDED", "slow down", None),
    ],
    ids=["unreachable", "502", "404", "429"],
)
async def test_backoff_grows_and_survives_a_restart(tmp_path: Path, error: Exception) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.failing["one.test"] = error
        await env.persist(await env.world.event(room, ALICE))
        first = await env.row("one.test")
        assert first is not None
        assert 4_000 <= first.retry_interval <= 6_000
        assert first.failure_ts == first.retry_last_ts == int(env.clock.now * 1000)

        # Backing off: nothing is tried.
        env.clock.now += 1
        await env.persist(await env.world.event(room, ALICE))
        assert len(env.transport.to("one.test", ok=False)) == 1

        # The wait is over: the next event tries again, fails, and waits about twice as long.
        env.clock.now += first.retry_interval / 1000 + 1
        await env.persist(await env.world.event(room, ALICE))
        assert len(env.transport.to("one.test", ok=False)) == 2
        second = await env.row("one.test")
        assert second is not None
        assert 1.3 * first.retry_interval <= second.retry_interval <= 2.6 * first.retry_interval
        assert second.failure_ts == first.failure_ts

        # A new sender on the same database keeps waiting.
        await env.restart()
        env.clock.now += 1
        await env.persist(await env.world.event(room, ALICE))
        assert len(env.transport.to("one.test", ok=False)) == 2
        # Other destinations are not held up by it.
        assert len(env.transport.to("two.test")) == 4


async def test_backoff_is_capped(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.failing["one.test"] = DestinationUnreachable("down")
        intervals = []
        for _ in range(14):
            await env.persist(await env.world.event(room, ALICE))
            row = await env.row("one.test")
            assert row is not None
            intervals.append(row.retry_interval)
            env.clock.now += row.retry_interval / 1000 + 1
        assert intervals == sorted(intervals)
        assert intervals[-1] == 3_600_000


async def test_a_dead_destination_holds_nothing_in_memory(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.failing["one.test"] = DestinationUnreachable("down")
        first = await env.world.event(room, ALICE)
        await env.persist(first)
        for _ in range(3):
            batch = [await env.world.event(room, ALICE) for _ in range(100)]
            await env.persist(*batch)
            env.sender.send_edu("one.test", "m.typing", {})
        stats = env.sender.statistics()
        assert stats.pending_pdus == 0
        assert stats.pending_edus == 0
        assert stats.running == 0
        assert stats.backing_off == 1
        assert len(env.transport.to("one.test", ok=False)) == 1
        # What it must still hear of is remembered as a position only.
        row = await env.row("one.test")
        assert row is not None
        assert row.last_successful_stream_ordering == first.stream_ordering - 1


async def test_an_unexpected_transport_error_counts_as_a_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.failing["one.test"] = RuntimeError("transport bug")
        await env.persist(await env.world.event(room, ALICE))
        assert "transport bug" in caplog.text
        # The sender goes on: other servers get the next events, and one.test after its wait.
        del env.transport.failing["one.test"]
        env.clock.now += 3_600
        message = await env.world.event(room, ALICE)
        await env.persist(message)
        assert env.transport.sent_ids("one.test") == [message.event_id]
        assert len(env.transport.to("two.test")) == 2
        row = await env.row("one.test")
        assert row is not None
        assert (row.retry_interval, row.failure_ts) == (0, None)


# -- Catch-up --------------------------------------------------------------------------------


async def test_catch_up_sends_the_newest_local_event_of_each_shared_room(
    tmp_path: Path,
) -> None:
    async with running_env(tmp_path) as env:
        room_a = await shared_room(env, "!a:ours.test")
        room_b = await shared_room(env, "!b:ours.test")
        other = "!c:ours.test"  # one.test is not in it
        await env.world.join(other, ALICE)
        await env.world.join(other, CAROL)
        env.transport.failing["one.test"] = DestinationUnreachable("down")
        await env.persist(await env.world.event(room_a, ALICE))

        await env.persist(*[await env.world.event(room_a, ALICE) for _ in range(5)])
        older_b = await env.world.event(room_b, ALICE)
        newest_b = await env.world.event(room_b, DAN)
        await env.persist(older_b, newest_b)
        newest_a = await env.world.event(room_a, ALICE)
        await env.persist(newest_a, await env.world.event(room_b, BOB))
        await env.persist(await env.world.event(other, ALICE))

        del env.transport.failing["one.test"]
        env.clock.now += 3_600
        env.sender.wake_destination("one.test")
        await settle(env.sender)
        assert env.transport.sent_ids("one.test") == [newest_b.event_id, newest_a.event_id]

        # Caught up: the next event goes straight out.
        message = await env.world.event(room_b, ALICE)
        await env.persist(message)
        assert env.transport.sent_ids("one.test")[-1] == message.event_id
        row = await env.row("one.test")
        assert row is not None
        assert row.last_successful_stream_ordering == message.stream_ordering


async def test_a_new_event_after_the_backoff_starts_the_catch_up(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room_a = await shared_room(env, "!a:ours.test")
        room_b = await shared_room(env, "!b:ours.test")
        env.transport.failing["one.test"] = RemoteError(503, None, None, None)
        await env.persist(await env.world.event(room_a, ALICE))
        missed_b = await env.world.event(room_b, ALICE)
        await env.persist(missed_b)
        del env.transport.failing["one.test"]

        env.clock.now += 3_600
        new_a = await env.world.event(room_a, ALICE)
        await env.persist(new_a)
        assert env.transport.sent_ids("one.test") == [missed_b.event_id, new_a.event_id]


async def test_catch_up_covers_a_kick_of_the_destinations_last_member(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.failing["one.test"] = DestinationUnreachable("down")
        await env.persist(await env.world.event(room, ALICE))
        kick = await env.world.member(room, ALICE, BOB, "leave")
        await env.persist(kick, await env.world.event(room, ALICE))
        del env.transport.failing["one.test"]

        env.clock.now += 3_600
        env.sender.wake_destination("one.test")
        await settle(env.sender)
        # Its kick, not the message after it, which is no longer its business.
        assert env.transport.sent_ids("one.test") == [kick.event_id]


async def test_a_failure_during_catch_up_keeps_the_position(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.failing["one.test"] = DestinationUnreachable("down")
        first = await env.world.event(room, ALICE)
        await env.persist(first)
        env.clock.now += 3_600
        env.sender.wake_destination("one.test")
        await settle(env.sender)
        assert len(env.transport.to("one.test", ok=False)) == 2
        row = await env.row("one.test")
        assert row is not None
        assert row.last_successful_stream_ordering == first.stream_ordering - 1
        assert row.retry_interval > 0


async def test_after_a_restart_a_destination_catches_up_on_what_it_missed(
    tmp_path: Path,
) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        served = await env.world.event(room, ALICE)
        await env.persist(served)
        # Written while no sender ran (or queued in memory when the process stopped).
        missed = [await env.world.event(room, ALICE) for _ in range(3)]
        await env.restart()
        await settle(env.sender)
        assert env.transport.sent_ids("one.test") == [served.event_id, missed[-1].event_id]
        assert env.transport.sent_ids("two.test") == [served.event_id, missed[-1].event_id]


async def test_a_restart_with_nothing_missed_sends_nothing(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        await env.persist(await env.world.event(room, ALICE))
        await env.restart()
        await settle(env.sender)
        assert len(env.transport.calls) == 2
        assert env.sender.statistics().catching_up == 0


# -- The store on its own --------------------------------------------------------------------


async def test_destination_rows_round_trip(tmp_path: Path) -> None:
    async with store_database(tmp_path) as db:
        store = FederationSenderStore(db)
        rows = [
            DestinationRow("one.test", 1_800_000_000_000, 86_400_000, 1_700_000_000_000, 42),
            DestinationRow("two.test"),
        ]
        await store.store_destinations(rows)
        await store.store_destinations([attrs.evolve(rows[1], retry_interval=5_000)])
        found = sorted(await store.all_destinations(), key=lambda r: r.destination)
        assert found == [rows[0], attrs.evolve(rows[1], retry_interval=5_000)]


async def test_catch_up_matches_server_names_exactly(tmp_path: Path) -> None:
    async with store_database(tmp_path) as db:
        world = World(db)
        store = FederationSenderStore(db)
        room = "!a:ours.test"
        await world.join(room, ALICE)
        # Neither "ONE.test" nor "x.one.test" is one.test.
        await world.join(room, "@u:ONE.test")
        await world.join(room, "@u:x.one.test")
        await world.join(room, "@v:xours.test")
        await world.event(room, "@v:xours.test")
        assert await store.catch_up_events("one.test", OURS, 0, limit=50) == []
        await world.join(room, BOB)
        found = await store.catch_up_events("one.test", OURS, 0, limit=50)
        # The newest event of ours: the xours.test message is not one of ours.
        assert [e.event_id for e in found] == ["$e1"]
        assert await store.newest_local_stream(OURS) == 1


async def test_joined_servers_are_cached_until_the_state_may_have_changed(
    tmp_path: Path,
) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        await env.persist(await env.world.event(room, ALICE, state_group=1))
        # EVE's join is written where the sender does not see it as an event (as state
        # resolution might let her in): the cached servers stay until the state changes.
        await env.world.join(room, EVE)
        await env.persist(await env.world.event(room, BOB, state_group=1))
        await env.persist(await env.world.event(room, ALICE, state_group=1))
        assert env.transport.to("three.test") == []
        # A remote event with a state of its own (a merge of forks): read again.
        await env.persist(await env.world.event(room, BOB, state_group=2))
        message = await env.world.event(room, ALICE, state_group=2)
        await env.persist(message)
        assert env.transport.sent_ids("three.test") == [message.event_id]


async def test_a_destination_our_config_forbids_is_not_backed_off(tmp_path: Path) -> None:
    async with running_env(tmp_path) as env:
        room = await shared_room(env)
        env.transport.failing["one.test"] = DestinationNotAllowed("not in domain_whitelist")
        await env.persist(await env.world.event(room, ALICE))
        await env.persist(await env.world.event(room, ALICE))
        assert len(env.transport.to("one.test", ok=False)) == 2
        assert env.sender.statistics().backing_off == 0


class PoisonedState(StateStore):
    """A state store whose reads of one room fail (as a bug would)."""

    async def joined_users(self, room_id: str) -> list[str]:
        if room_id == "!poison:ours.test":
            raise RuntimeError("a bug")
        return await super().joined_users(room_id)


async def test_an_event_that_keeps_failing_is_dropped_after_some_restarts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_env(tmp_path) as env:
        good_room = await shared_room(env)
        poison = await env.world.event("!poison:ours.test", ALICE)
        message = await env.world.event(good_room, ALICE)
        sender = FederationSender(
            server_name=OURS,
            store=env.store,
            events=EventStore(env.db, EventCache()),
            state=PoisonedState(env.db, server_name=OURS),
            transport=env.transport,
            flush_interval=0,
        )
        sender.on_persisted([poison, message])
        failures = 0
        for _ in range(MAX_DISPATCH_ATTEMPTS):
            # As `run_supervised` restarts it.
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(sender.run)
                    await settle(sender)
                    nursery.cancel_scope.cancel()
            except* RuntimeError:
                failures += 1
        assert failures == MAX_DISPATCH_ATTEMPTS - 1
        assert "giving up on sending $e" in caplog.text
        assert env.transport.sent_ids("one.test") == [message.event_id]


# -- Pure parts ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (RemoteError(400, "M_BAD_JSON", None, None), Outcome.REFUSED),
        (RemoteError(403, "M_FORBIDDEN", None, None), Outcome.REFUSED),
        (RemoteError(413, "M_TOO_LARGE", None, None), Outcome.REFUSED),
        (RemoteError(401, "M_UNAUTHORIZED", None, None), Outcome.FAILED),
        (RemoteError(404, None, None, None), Outcome.FAILED),
        (RemoteError(408, None, None, None), Outcome.FAILED),
        (RemoteError(429, "M_LIMIT_EXCEEDED", None, None), Outcome.FAILED),
        (RemoteError(500, None, None, None), Outcome.FAILED),
        (DestinationUnreachable("timeout"), Outcome.FAILED),
        (ValueError("a bug"), Outcome.FAILED),
    ],
)
def test_which_failures_back_off(error: Exception, outcome: Outcome) -> None:
    assert classify_failure(error) is outcome


def test_backoff_doubles_with_jitter_between_its_bounds() -> None:
    policy = BackoffPolicy(min_ms=5_000, max_ms=86_400_000, jitter=0.2)
    rng = random.Random(1)
    intervals = [policy.next_interval(0, rng)]
    while intervals[-1] < policy.max_ms:
        intervals.append(policy.next_interval(intervals[-1], rng))
    assert 5_000 <= intervals[0] <= 6_000
    assert all(1.6 * a <= b or b == policy.max_ms for a, b in itertools.pairwise(intervals))
    assert len(intervals) < 20
    assert policy.next_interval(policy.max_ms, rng) == policy.max_ms


def test_pdu_errors_are_read_leniently() -> None:
    assert pdu_errors({"pdus": {"$a": {}, "$b": {"error": "no"}}}) == [("$b", "no")]
    assert pdu_errors({"pdus": []}) == []
    assert pdu_errors(None) == []
