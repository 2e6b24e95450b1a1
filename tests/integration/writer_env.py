"""The server's components on a real database (a SQLite file, or PostgreSQL), without HTTP,
for tests of the write path.

Seed scenarios look at tables and at the persistence controller directly; this builds exactly
what `trioserver.nursery.serve` builds (same function) and runs the events writer task.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
from signedjson.key import generate_signing_key

import trio

from trioserver.config import Config, config_from_mapping
from trioserver.handlers.auth import Requester
from trioserver.nursery import Components, build_components
from trioserver.storage.persistence import EventPersister
from trioserver.stores.database import Database, open_configured_database
from trioserver.stores.events import StoredEvent
from trioserver.stores.persist_events import EventWrite, PersistEventStore, RoomWrite
from trioserver.testing_postgres import database_dsn_for

from tests.integration.server_db import server_db


class RecordingPersistStore(PersistEventStore):
    """The real PersistEventStore, recording each batch (and failing on demand)."""

    def __init__(self, db: Database, *, server_name: str) -> None:
        super().__init__(db, server_name=server_name, is_writer=True)
        self.batches: list[list[str]] = []
        self.fail_next: Exception | None = None

    async def persist_batch(
        self, events: Sequence[EventWrite], rooms: Sequence[RoomWrite]
    ) -> None:
        self.batches.append([w.stored.event_id for w in events])
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        await super().persist_batch(events, rooms)


@attrs.define
class WriterEnv:
    """Components of one server instance, and a direct connection for inspecting tables."""

    config: Config
    db: Database
    components: Components
    store: RecordingPersistStore

    @property
    def persister(self) -> EventPersister:
        assert self.components.persister is not None
        return self.components.persister

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL on the database directly (a separate connection, as an operator would)."""
        with server_db(self.config) as db:
            cursor = db.execute(sql, params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def requester(self, localpart: str) -> Requester:
        return Requester(f"@{localpart}:{self.config.server_name}", "DEVICE", "token")

    async def user(self, localpart: str) -> str:
        result = await self.components.deps.accounts.register(localpart, "pw", login=False)
        return result.user_id

    async def create_room(self, creator: str, **body: Any) -> str:
        from trioserver.handlers.room_creation import parse_create_room

        request = parse_create_room(body, self.config.rooms.default_room_version)
        room_id, _ = await self.components.deps.room_creation.create_room(creator, request)
        return room_id

    async def send_text(self, sender: str, room_id: str, body: str) -> StoredEvent:
        from trioserver.storage.intents import EventIntent

        intent = EventIntent("m.room.message", sender, {"msgtype": "m.text", "body": body})
        (stored,) = await self.persister.submit(room_id, [intent])
        return stored


# Wall-clock time at trio time 0, so that trio's MockClock drives timestamps too.
CLOCK_BASE = 1_800_000_000.0


def trio_wall_clock() -> float:
    """Wall-clock seconds that advance with trio's clock (for `autojump_clock` tests)."""
    return CLOCK_BASE + trio.current_time()


@asynccontextmanager
async def writer_env(
    tmp_path: Path, *, clock: Callable[[], float] = trio_wall_clock, **overrides: Any
) -> AsyncIterator[WriterEnv]:
    """Build the components on a SQLite file in `tmp_path` (or the PostgreSQL test database of
    that dir, with TRIOSERVER_TEST_POSTGRES); run the writer and subsystems."""
    raw: dict[str, Any] = {
        "server_name": "blue",
        "registration": {"bcrypt_rounds": 4},
        "database": {"synchronous": "normal"},
        # No HTTP listener here, so no federation: tests give rooms members of other servers
        # by recording their invites locally, as the membership handler does without it.
        "federation": {"enabled": False},
    }
    dsn = await trio.to_thread.run_sync(database_dsn_for, tmp_path)
    if dsn is not None:
        raw["database"] = {"backend": "postgres", "dsn": dsn}
    raw.update(overrides)
    config = config_from_mapping(raw, base_dir=tmp_path)
    async with open_configured_database(config) as db:
        store = RecordingPersistStore(db, server_name=config.server_name)
        components = build_components(
            config, db, generate_signing_key("a_test"), persist_store=store, clock=clock
        )
        assert components.persister is not None
        for load in components.loaders:
            await load()
        async with trio.open_nursery() as nursery:
            await nursery.start(components.persister.run)
            for subsystem in components.subsystems:
                await nursery.start(subsystem)
            try:
                yield WriterEnv(config, db, components, store)
            finally:
                nursery.cancel_scope.cancel()
