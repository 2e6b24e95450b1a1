"""The SQLite side of ``port-db``: what tables there are, and their rows in key order.

Theory of operation
-------------------
The database is opened read-only (``mode=ro``): port-db never changes the file it copies
from, so it stays a complete backup whatever happens to the copy.

Every ordinary table is copied, except what only SQLite has: its own ``sqlite_*`` tables,
``schema_files`` (the target's is written by applying the PostgreSQL schema) and the virtual
full-text table ``event_search`` with its shadow tables, whose content is read back through
the virtual table instead (`search_batch`) to be indexed anew on PostgreSQL.

Rows are read in batches in key order, each batch starting after the key of the last row
copied, so a resumed port reads on from there without rereading anything: the key is the
rowid for ordinary tables and the primary key for ``WITHOUT ROWID`` ones (row-value
comparison ``(a, b) > (?, ?)``, which SQLite answers from the primary key's index).
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from trioserver.stores.database import Row

# The virtual full-text table and the shadow tables FTS5 keeps for it.
SEARCH_TABLE = "event_search"
_FTS5_SHADOWS = ("data", "idx", "content", "docsize", "config")


@attrs.frozen
class TableSpec:
    """One table to copy.

    Attributes:
        columns: the copied columns, in the table's order.
        key: the columns rows are ordered and resumed by: ``("rowid",)`` or the primary key.
    """

    name: str
    columns: tuple[str, ...]
    key: tuple[str, ...]

    @property
    def by_rowid(self) -> bool:
        """Whether the key is the rowid (read first, and not a copied column)."""
        return self.key == ("rowid",)

    def key_of(self, row: Row) -> list[Any]:
        """The key of a row as `SqliteSource.batch` returns it."""
        if self.by_rowid:
            return [row[0]]
        return [row[self.columns.index(column)] for column in self.key]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def open_source(path: Path) -> SqliteSource:
    """Open the SQLite database at `path` read-only.

    Raises:
        StartupError: it cannot be opened or is not an SQLite database.
    """
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise StartupError(f"cannot read the SQLite database {path}: {exc}") from None
    return SqliteSource(conn)


class SqliteSource:
    """An SQLite database's tables and rows, as port-db reads them."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def _has_table(self, name: str) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()
        return row is not None

    def schema_files(self) -> list[str]:
        """The schema files applied to the database, by name (none if it has no schema)."""
        if not self._has_table("schema_files"):
            return []
        return [r[0] for r in self._conn.execute("SELECT name FROM schema_files ORDER BY name")]

    def server_name(self) -> str | None:
        """The server name recorded at the server's first start, if any."""
        if not self._has_table("server_meta"):
            return None
        row = self._conn.execute(
            "SELECT value FROM server_meta WHERE key = 'server_name'"
        ).fetchone()
        return None if row is None else str(row[0])

    def tables(self) -> list[TableSpec]:
        """Every table to copy, by name."""
        entries = self._conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
        ).fetchall()
        virtual = {name for name, sql in entries if sql.upper().startswith("CREATE VIRTUAL")}
        skipped = {"schema_files", *virtual}
        skipped |= {f"{v}_{suffix}" for v in virtual for suffix in _FTS5_SHADOWS}
        return [
            self._spec(name)
            for name, _ in entries
            if name not in skipped and not name.startswith("sqlite_")
        ]

    def _spec(self, name: str) -> TableSpec:
        info = self._conn.execute(f"PRAGMA table_info({_quote(name)})").fetchall()
        columns = tuple(r[1] for r in info)
        try:
            self._conn.execute(f"SELECT rowid FROM {_quote(name)} LIMIT 0")
        except sqlite3.OperationalError:
            # WITHOUT ROWID: the primary key orders the rows (pk is its 1-based position).
            key = tuple(r[1] for r in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            return TableSpec(name, columns, key)
        return TableSpec(name, columns, ("rowid",))

    def count(self, table: str) -> int:
        """The table's number of rows."""
        row = self._conn.execute(f"SELECT count(*) FROM {_quote(table)}").fetchone()
        return int(row[0])

    def batch(self, spec: TableSpec, after: Sequence[Any] | None, limit: int) -> list[Row]:
        """Up to `limit` rows of `spec` after the key `after` (None: from the start), in key
        order; a rowid-keyed table's rows start with the rowid."""
        key = ", ".join(map(_quote, spec.key))
        selected = ", ".join(map(_quote, spec.columns))
        if spec.by_rowid:
            selected = f"rowid, {selected}"
        sql = f"SELECT {selected} FROM {_quote(spec.name)}"
        params: list[Any] = []
        if after is not None:
            marks = ", ".join("?" * len(spec.key))
            sql += f" WHERE ({key}) > ({marks})"
            params.extend(after)
        sql += f" ORDER BY {key} LIMIT ?"
        return self._conn.execute(sql, [*params, limit]).fetchall()

    def search_count(self) -> int:
        """How many events the full-text table indexes."""
        return self.count(SEARCH_TABLE)

    def search_batch(self, after: int | None, limit: int) -> list[Row]:
        """Up to `limit` (stream_ordering, text) rows of the full-text table, after `after`."""
        where = "" if after is None else "WHERE rowid > ?"
        params = [limit] if after is None else [after, limit]
        return self._conn.execute(
            f"SELECT rowid, value FROM {SEARCH_TABLE} {where} ORDER BY rowid LIMIT ?", params
        ).fetchall()

    def max_value(self, table: str, column: str) -> int | None:
        """The column's largest value (None for an empty table)."""
        row = self._conn.execute(f"SELECT MAX({_quote(column)}) FROM {_quote(table)}").fetchone()
        return None if row[0] is None else int(row[0])

    def autoincrement_seq(self, table: str) -> int | None:
        """The last id an ``AUTOINCREMENT`` table handed out, which may be above its largest
        remaining id (SQLite never reuses those; PostgreSQL's sequence must not either)."""
        if not self._has_table("sqlite_sequence"):
            return None
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,))
        found = row.fetchone()
        return None if found is None else int(found[0])
