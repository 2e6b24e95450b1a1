"""The database access paths on a real database (a SQLite file, or the PostgreSQL test
database with TRIOSERVER_TEST_POSTGRES): thread-hop reads, inline reads, writes."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from trioserver.stores import database
from trioserver.stores.database import Database, Txn, open_database

from tests.integration.server_db import sqlite_only, store_database


def _create(txn: Txn) -> None:
    txn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)")


def _add(txn: Txn, note_id: int, body: str) -> None:
    txn.execute("INSERT INTO notes (id, body) VALUES (?, ?)", (note_id, body))


def _bodies(txn: Txn) -> list[str]:
    return [str(row[0]) for row in txn.execute("SELECT body FROM notes ORDER BY id").fetchall()]


def _fail_after_reading(txn: Txn) -> None:
    _bodies(txn)
    raise ValueError("boom")


def _read_only_error(db: Database) -> type[Exception]:
    """What a write in a read-only transaction raises on `db`'s backend."""
    if db.dialect == "postgres":
        import psycopg

        return psycopg.errors.ReadOnlySqlTransaction
    return sqlite3.OperationalError


async def test_inline_and_threaded_reads_see_every_committed_write(tmp_path: Path) -> None:
    async with store_database(tmp_path, scratch_tables=["notes"]) as db:
        await db.run_txn("create", _create)
        await db.run_txn("add", _add, 1, "first")
        assert await db.run_read_inline("bodies", _bodies) == ["first"]
        assert await db.run_read("bodies", _bodies) == ["first"]
        await db.run_txn("add", _add, 2, "second")
        assert await db.run_read_inline("bodies", _bodies) == ["first", "second"]


async def test_a_failing_inline_read_leaves_the_connection_usable(tmp_path: Path) -> None:
    async with store_database(tmp_path, scratch_tables=["notes"]) as db:
        await db.run_txn("create", _create)
        with pytest.raises(ValueError, match="boom"):
            await db.run_read_inline("fails", _fail_after_reading)
        await db.run_txn("add", _add, 1, "after")
        assert await db.run_read_inline("bodies", _bodies) == ["after"]


async def test_inline_reads_cannot_write(tmp_path: Path) -> None:
    async with store_database(tmp_path, scratch_tables=["notes"]) as db:
        await db.run_txn("create", _create)
        # SQLite: "attempt to write a readonly database"; PostgreSQL: "cannot execute INSERT
        # in a read-only transaction".
        with pytest.raises(_read_only_error(db), match=r"readonly|read-only"):
            await db.run_read_inline("add", _add, 1, "sneaky")
        assert await db.run_read("bodies", _bodies) == []


# SQLite's inline reads run on the event loop's thread, so they are timed against
# INLINE_WARN_MS; on PostgreSQL an inline read is a thread hop like any read (stores.postgres).
@sqlite_only
async def test_a_slow_inline_read_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Any read counts as slow with a zero threshold: the warning names the transaction.
    monkeypatch.setattr(database, "INLINE_WARN_MS", 0.0)
    async with open_database(tmp_path / "db.sqlite") as db:
        await db.run_txn("create", _create)
        with caplog.at_level(logging.WARNING, logger="trioserver.stores.database"):
            await db.run_read_inline("list_notes", _bodies)
    assert any("list_notes" in record.getMessage() for record in caplog.records)
