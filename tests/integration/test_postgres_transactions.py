"""PostgreSQL transactions as the stores run them (issue 14): placeholders, snapshots, and
write conflicts between instances, which are retried instead of losing an update."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

import trio

from trioserver.stores.database import Txn
from trioserver.stores.postgres import PostgresDatabase, open_postgres_database
from trioserver.stores.postgres_admin import create_database, drop_database
from trioserver.testing_postgres import POSTGRES_ENV

ADMIN_DSN = os.environ.get(POSTGRES_ENV) or "postgresql://postgres@127.0.0.1:5432/postgres"


@asynccontextmanager
async def two_instances() -> AsyncIterator[tuple[PostgresDatabase, PostgresDatabase]]:
    """Two instances' databases (each its own writer) on one fresh PostgreSQL database."""
    name = f"trioserver_test_txn_{secrets.token_hex(6)}"
    dsn = await trio.to_thread.run_sync(create_database, ADMIN_DSN, name)
    try:
        async with (
            open_postgres_database(dsn, max_connections=2) as first,
            open_postgres_database(dsn, max_connections=2) as second,
        ):
            await first.run_txn(
                "create_counter",
                lambda txn: txn.execute(
                    "CREATE TABLE counter (id TEXT PRIMARY KEY, value BIGINT NOT NULL)"
                ).execute("INSERT INTO counter VALUES ('c', 0)"),
            )
            yield first, second
    finally:
        await trio.to_thread.run_sync(drop_database, ADMIN_DSN, name)


async def test_sqlite_style_statements_run_unchanged() -> None:
    async with two_instances() as (db, _):

        def txn_fn(txn: Txn) -> list[tuple[object, ...]]:
            txn.execute("INSERT INTO counter VALUES (?, ?)", ("50%", 7))
            # Numbered parameters used twice, a literal % and ? in a string, a null-safe test.
            return txn.execute(
                "SELECT id, value + ?1, '%?' FROM counter WHERE value = ?1 OR value = ?2"
                " AND id IS NOT ?3",
                (7, 0, None),
            ).fetchall()

        rows = sorted(await db.run_txn("statements", txn_fn))
        assert rows == [("50%", 14, "%?"), ("c", 7, "%?")]


async def test_a_write_conflict_between_instances_is_retried_not_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="trioserver.stores.postgres")
    async with two_instances() as (first, second):
        first_read = threading.Event()
        second_done = threading.Event()
        attempts = 0

        def slow_increment(txn: Txn) -> None:
            # Read, let the other instance commit its own increment, then write: under
            # REPEATABLE READ the write fails with a serialization failure the first time.
            nonlocal attempts
            attempts += 1
            (value,) = txn.execute("SELECT value FROM counter WHERE id = 'c'").fetchone() or (0,)
            if attempts == 1:
                first_read.set()
                assert second_done.wait(10)
            txn.execute("UPDATE counter SET value = ? WHERE id = 'c'", (value + 1,))

        def increment(txn: Txn) -> None:
            txn.execute("UPDATE counter SET value = value + 1 WHERE id = 'c'")

        async def other_instance() -> None:
            await trio.to_thread.run_sync(first_read.wait, 10)
            await second.run_txn("increment", increment)
            second_done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_instance)
            await first.run_txn("slow_increment", slow_increment)

        def read(txn: Txn) -> int:
            row = txn.execute("SELECT value FROM counter WHERE id = 'c'").fetchone()
            assert row is not None
            return int(row[0])

        assert await first.run_read("read", read) == 2  # neither increment was lost
        assert attempts == 2
        assert "slow_increment: SerializationFailure, running it again" in caplog.text


async def test_a_read_is_one_snapshot() -> None:
    async with two_instances() as (first, second):
        read_once = threading.Event()
        written = threading.Event()

        def read_twice(txn: Txn) -> tuple[int, int]:
            (before,) = txn.execute("SELECT value FROM counter").fetchone() or (None,)
            read_once.set()
            assert written.wait(10)
            (after,) = txn.execute("SELECT value FROM counter").fetchone() or (None,)
            return int(before), int(after)

        async def write() -> None:
            await trio.to_thread.run_sync(read_once.wait, 10)
            await second.run_txn("bump", lambda txn: txn.execute("UPDATE counter SET value = 5"))
            written.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            assert await first.run_read("read_twice", read_twice) == (0, 0)


async def test_text_with_a_nul_is_a_400_and_writes_nothing() -> None:
    from trioserver.errors import MatrixError

    async with two_instances() as (db, _):
        with pytest.raises(MatrixError) as raised:
            await db.run_txn(
                "nul",
                lambda txn: txn.execute("UPDATE counter SET value = 1").execute(
                    "INSERT INTO counter VALUES (?, 2)", ("a\x00b",)
                ),
            )
        assert (raised.value.status, raised.value.errcode) == (400, "M_INVALID_PARAM")

        def read(txn: Txn) -> list[tuple[object, ...]]:
            return txn.execute("SELECT id, value FROM counter").fetchall()

        assert await db.run_read("read", read) == [("c", 0)]
