"""The PostgreSQL side of ``port-db``: the schema, the progress tables and the batches.

Theory of operation
-------------------
The target gets the PostgreSQL schema first (`schema.apply_postgres_schema`), so its tables
are exactly what a server on PostgreSQL creates, and the copy fills them.

Progress is kept in the target itself, in two tables dropped at the end:

- ``port_db_source``: one row naming the SQLite file being copied (its path and server
  name). It is what makes a target resumable: a target with it is an unfinished port, to be
  continued only from the same file; a target without it must hold no trioserver data.
- ``port_db_progress``: one row per table, with the rows copied so far, the key of the last
  one (JSON), and whether the table is done.

Each batch is written with ``COPY ... FROM STDIN`` and its progress row updated in the same
transaction, so a crash at any point (Ctrl-C, ``kill -9``, a lost connection) leaves either
both or neither: a resumed port never copies a row twice nor skips one.

The schema itself writes a few rows (``to_device_stream_position`` starts at 0). They are
recognised (`seeded_rows`: the same files applied to an in-memory SQLite database) and
deleted when the port begins, in the transaction that creates the progress tables.

The full-text table is rebuilt, not copied: each batch of (stream_ordering, text) from the
FTS5 table goes into a temporary table by COPY and on into ``event_search`` with its vector
built as the server builds it (``stores.search``: accents folded, `PG_SEARCH_CONFIG`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import StartupError
from trioserver.port_db.source import SEARCH_TABLE
from trioserver.stores.search import PG_SEARCH_CONFIG, fold_accents

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg

    from trioserver.port_db.source import TableSpec

PROGRESS_TABLE = "port_db_progress"
SOURCE_TABLE = "port_db_source"
_SEARCH_STAGING = "port_db_search_batch"


@attrs.frozen
class TableProgress:
    """How far one table's copy has got."""

    copied_rows: int
    last_key: list[Any] | None
    done: bool


@attrs.frozen
class SourceIdentity:
    """Which SQLite database an unfinished port copies."""

    path: str
    server_name: str


def first_line(exc: BaseException) -> str:
    """An exception's message, first line only (psycopg's carry details below it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def seeded_rows() -> dict[str, list[tuple[Any, ...]]]:
    """The rows the schema files write themselves, by table (found by applying them to an
    in-memory SQLite database; the PostgreSQL translations insert the same)."""
    from trioserver.port_db.source import SqliteSource
    from trioserver.stores.schema import apply_schema

    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        apply_schema(conn)
        seeded = {}
        for spec in SqliteSource(conn).tables():
            rows = conn.execute(f'SELECT * FROM "{spec.name}"').fetchall()
            if rows:
                seeded[spec.name] = sorted(rows)
        return seeded
    finally:
        conn.close()


class PostgresTarget:
    """The PostgreSQL database being filled, over one autocommit connection."""

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
            from psycopg import sql
        except ImportError:
            raise StartupError(
                'port-db needs psycopg: pip install "trioserver[postgres]"'
            ) from None
        self._sql = sql
        try:
            self.conn: psycopg.Connection[Any] = psycopg.connect(
                dsn, autocommit=True, connect_timeout=10
            )
        except psycopg.Error as exc:
            raise StartupError(
                f"cannot connect to the PostgreSQL database (--to): {first_line(exc)}"
            ) from None

    def close(self) -> None:
        """Close the connection (an open transaction is rolled back)."""
        self.conn.close()

    def _ident(self, name: str) -> Any:
        return self._sql.Identifier(name)

    def _exists(self, table: str) -> bool:
        row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        return bool(row and row[0])

    def check_collation(self) -> None:
        """Refuse a database that does not collate as trioserver needs (C)."""
        from trioserver.stores.postgres_admin import check_collation

        problem = check_collation(self.conn)
        if problem is not None:
            raise StartupError(f"the target database (--to): {problem}")

    def apply_schema(self) -> list[str]:
        """Apply the PostgreSQL schema (files not yet applied); the names of all applied."""
        from trioserver.stores.schema import apply_postgres_schema

        apply_postgres_schema(self.conn)
        return [r[0] for r in self.conn.execute("SELECT name FROM schema_files ORDER BY name")]

    def column_types(self, table: str) -> dict[str, str]:
        """The table's columns and their types (``information_schema`` spelling)."""
        rows = self.conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
        return dict(rows)

    def count(self, table: str) -> int:
        """The table's number of rows."""
        query = self._sql.SQL("SELECT count(*) FROM {}").format(self._ident(table))
        row = self.conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])

    def max_value(self, table: str, column: str) -> int | None:
        """The column's largest value (None for an empty table)."""
        query = self._sql.SQL("SELECT MAX({}) FROM {}").format(
            self._ident(column), self._ident(table)
        )
        row = self.conn.execute(query).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _rows(self, table: str, limit: int) -> list[tuple[Any, ...]]:
        query = self._sql.SQL("SELECT * FROM {} LIMIT %s").format(self._ident(table))
        return [tuple(r) for r in self.conn.execute(query, (limit,)).fetchall()]

    # --- beginning, resuming, finishing -------------------------------------------------

    def unfinished_port(self) -> SourceIdentity | None:
        """The source of the unfinished port this target holds, if it holds one."""
        if not self._exists(SOURCE_TABLE):
            return None
        row = self.conn.execute(f"SELECT path, server_name FROM {SOURCE_TABLE}").fetchone()
        return None if row is None else SourceIdentity(row[0], row[1])

    def tables_with_data(
        self, tables: Sequence[str], seeded: dict[str, list[tuple[Any, ...]]]
    ) -> list[str]:
        """The tables among `tables` holding rows other than those the schema writes."""
        found = []
        for table in tables:
            expected = seeded.get(table, [])
            rows = self._rows(table, len(expected) + 1)
            if sorted(rows) != expected:
                found.append(table)
        return found

    def begin(
        self, identity: SourceIdentity, tables: Sequence[str], seeded: Sequence[str]
    ) -> None:
        """Start a port: the progress tables, and no row but the copied ones to come."""
        with self.conn.transaction():
            self.conn.execute(
                f"CREATE TABLE {SOURCE_TABLE} (path TEXT NOT NULL, server_name TEXT NOT NULL,"
                " started_ts BIGINT NOT NULL)"
            )
            self.conn.execute(
                f"INSERT INTO {SOURCE_TABLE} VALUES (%s, %s, %s)",
                (identity.path, identity.server_name, int(time.time() * 1000)),
            )
            self.conn.execute(
                f"CREATE TABLE {PROGRESS_TABLE} (table_name TEXT PRIMARY KEY,"
                " copied_rows BIGINT NOT NULL, last_key TEXT, done BOOLEAN NOT NULL)"
            )
            with self.conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {PROGRESS_TABLE} VALUES (%s, 0, NULL, false)",
                    [(t,) for t in tables],
                )
            for table in seeded:
                self.conn.execute(self._sql.SQL("DELETE FROM {}").format(self._ident(table)))

    def progress(self) -> dict[str, TableProgress]:
        """Every table's progress."""
        rows = self.conn.execute(
            f"SELECT table_name, copied_rows, last_key, done FROM {PROGRESS_TABLE}"
        ).fetchall()
        return {
            name: TableProgress(copied, None if key is None else json.loads(key), done)
            for name, copied, key, done in rows
        }

    def finish(self) -> None:
        """Drop the progress tables: the port is complete."""
        with self.conn.transaction():
            self.conn.execute(f"DROP TABLE {PROGRESS_TABLE}")
            self.conn.execute(f"DROP TABLE {SOURCE_TABLE}")

    # --- copying ------------------------------------------------------------------------

    def _record(self, cur: Any, table: str, added: int, last_key: list[Any] | None) -> None:
        # The last batch (fewer rows than asked for, maybe none) marks the table done.
        cur.execute(
            f"UPDATE {PROGRESS_TABLE} SET copied_rows = copied_rows + %s,"
            " last_key = COALESCE(%s, last_key), done = %s WHERE table_name = %s",
            (added, None if last_key is None else json.dumps(last_key), last_key is None, table),
        )

    def write_batch(
        self,
        spec: TableSpec,
        rows: Sequence[Sequence[Any]],
        last_key: list[Any] | None,
    ) -> None:
        """Copy `rows` into the table and record them, in one transaction.

        Args:
            last_key: the key of the batch's last row; None when this is the last batch.
        """
        query = self._sql.SQL("COPY {} ({}) FROM STDIN").format(
            self._ident(spec.name), self._sql.SQL(", ").join(map(self._ident, spec.columns))
        )
        with self.conn.transaction(), self.conn.cursor() as cur:
            if rows:
                with cur.copy(query) as copy:
                    for row in rows:
                        copy.write_row(row)
            self._record(cur, spec.name, len(rows), last_key)

    def write_search_batch(
        self, rows: Sequence[Sequence[Any]], last_key: list[Any] | None
    ) -> None:
        """Index `rows` (stream_ordering, text) into ``event_search`` and record them, in one
        transaction (`last_key` as for `write_batch`)."""
        with self.conn.transaction(), self.conn.cursor() as cur:
            if rows:
                cur.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_SEARCH_STAGING}"
                    " (stream_ordering BIGINT, value TEXT, folded TEXT) ON COMMIT DELETE ROWS"
                )
                with cur.copy(f"COPY {_SEARCH_STAGING} FROM STDIN") as copy:
                    for stream_ordering, value in rows:
                        copy.write_row((stream_ordering, value, fold_accents(value)))
                # The vector as the events writer builds it (stores.search.index_events_txn).
                cur.execute(
                    f"INSERT INTO {SEARCH_TABLE} (stream_ordering, value, vector)"
                    f" SELECT stream_ordering, value, to_tsvector('{PG_SEARCH_CONFIG}', folded)"
                    f" FROM {_SEARCH_STAGING}"
                )
            self._record(cur, SEARCH_TABLE, len(rows), last_key)

    # --- after copying ------------------------------------------------------------------

    def identity_columns(self) -> list[tuple[str, str]]:
        """Every (table, column) filled by an identity sequence when an insert leaves it out."""
        rows = self.conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND is_identity = 'YES'"
            " ORDER BY table_name"
        ).fetchall()
        return [(t, c) for t, c in rows]

    def _sequence(self, table: str, column: str) -> str:
        # The names are the schema's own: lower-case, so they need no quoting here.
        found = self.conn.execute("SELECT pg_get_serial_sequence(%s, %s)", (table, column))
        row = found.fetchone()
        assert row is not None
        assert row[0] is not None, (table, column)
        return str(row[0])

    def set_identity(self, table: str, column: str, last: int | None) -> None:
        """Make the identity of ``table.column`` hand out ids after `last` (None: from 1)."""
        sequence = self._sequence(table, column)
        if last is None:
            self.conn.execute("SELECT setval(%s, 1, false)", (sequence,))
        else:
            self.conn.execute("SELECT setval(%s, %s, true)", (sequence, last))

    def next_identity(self, table: str, column: str) -> int:
        """The id the identity of ``table.column`` hands out next."""
        sequence = self._sequence(table, column)
        # `sequence` comes quoted as needed from pg_get_serial_sequence.
        query = self._sql.SQL("SELECT last_value, is_called FROM {}").format(
            self._sql.SQL(sequence)
        )
        row = self.conn.execute(query).fetchone()
        assert row is not None
        return int(row[0]) + 1 if row[1] else int(row[0])
