"""Direct SQL on a test server's database, whichever backend it runs on.

Tests reach past the API only where an operator would (setting a flag, looking at rows) or to
break something on purpose. `server_db` opens a separate connection, as an operator's tool
would, on SQLite or on the PostgreSQL database of ``TRIOSERVER_TEST_POSTGRES``; statements
are written in SQLite's style (``?`` placeholders) and each one commits on its own.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

import pytest

import trio

from trioserver.testing_postgres import POSTGRES_ENV, database_dsn_for

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence
    from pathlib import Path

    from trioserver.config import Config
    from trioserver.stores.database import Database, Txn

ON_POSTGRES = bool(os.environ.get(POSTGRES_ENV))
# For a test of what only the SQLite backend has (its file, an upgrade from an older schema:
# a PostgreSQL database always starts at the current schema).
sqlite_only = pytest.mark.skipif(ON_POSTGRES, reason="tests the SQLite backend itself")


class ServerDb:
    """A connection that runs SQLite-style statements, each committed at once."""

    def __init__(self, conn: Any, *, postgres: bool) -> None:
        self._conn = conn
        self._postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; returns a cursor (``fetchone``/``fetchall``/``rowcount``)."""
        if self._postgres:
            from trioserver.stores.postgres import convert_placeholders

            converted, numbered = convert_placeholders(sql)
            args: Any = {f"p{i}": v for i, v in enumerate(params, 1)} if numbered else params
            return self._conn.execute(converted, args or None)
        return self._conn.execute(sql, params)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """All rows of one query."""
        return [tuple(row) for row in self.execute(sql, params).fetchall()]


@contextmanager
def server_db(config: Config) -> Iterator[ServerDb]:
    """A direct connection to the database of the server configured by `config`."""
    if config.database.backend == "postgres":
        import psycopg

        assert config.database.dsn is not None
        with psycopg.connect(config.database.dsn, autocommit=True) as conn:
            yield ServerDb(conn, postgres=True)
        return
    lite = sqlite3.connect(config.data_path(config.database.path), isolation_level=None)
    try:
        yield ServerDb(lite, postgres=False)
    finally:
        lite.close()


async def database_section(directory: Path, **sqlite: Any) -> dict[str, Any]:
    """The ``[database]`` of a test server whose data dir is `directory`: the dir's PostgreSQL
    test database with TRIOSERVER_TEST_POSTGRES, else SQLite with the `sqlite` settings."""
    dsn = await trio.to_thread.run_sync(database_dsn_for, directory)
    if dsn is not None:
        return {"backend": "postgres", "dsn": dsn}
    return dict(sqlite)


@asynccontextmanager
async def store_database(
    directory: Path, *, scratch_tables: Sequence[str] = (), **sqlite: Any
) -> AsyncIterator[Database]:
    """The database of the data dir `directory`, schema applied, for tests of the stores
    without a server: a SQLite file there (with the `sqlite` settings), or the dir's PostgreSQL
    test database with TRIOSERVER_TEST_POSTGRES.

    `scratch_tables`: tables the test creates itself, dropped on the way out (a PostgreSQL test
    database is emptied for the next test table by table, knowing only the schema's tables).
    """
    from trioserver.config import config_from_mapping
    from trioserver.stores.database import open_configured_database

    raw = {"database": await database_section(directory, **sqlite)}
    async with open_configured_database(config_from_mapping(raw, base_dir=directory)) as db:
        try:
            yield db
        finally:
            for table in scratch_tables:
                with trio.CancelScope(shield=True):
                    await db.run_txn("drop scratch table", _drop_table, table)


def _drop_table(txn: Txn, table: str) -> None:
    txn.execute(f"DROP TABLE IF EXISTS {table}")
