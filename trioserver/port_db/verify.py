"""What ``port-db`` checks once every table is copied, before it calls the port complete.

Theory of operation
-------------------
The copy is checked from both ends, by what a server reads at start:

- every table has as many rows on PostgreSQL as on SQLite, and ``event_search`` as many as
  the FTS5 table indexes;
- every stream position is the same: a server initialises each stream's id generator from
  the largest id in its table (`STREAM_POSITIONS`), so equal maxima mean that the first id it
  hands out on PostgreSQL follows the last one handed out on SQLite, and clients' sync
  tokens stay valid;
- every identity sequence hands out an id above the largest in its column (and above what
  an ``AUTOINCREMENT`` table ever handed out), so an insert that leaves the id to the database
  does not collide.

A mismatch means the source changed while the port was under way (a server started on it
between two runs, which the lock prevents only while port-db runs) or a bug; the port is then
not marked complete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.errors import StartupError
from trioserver.port_db.source import SEARCH_TABLE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.port_db.source import SqliteSource, TableSpec
    from trioserver.port_db.target import PostgresTarget

# (stream, table, column): where each stream's position is read at start (the stores'
# `_max_*_txn` loaders, and `stores.stream_updates` for replication).
STREAM_POSITIONS: tuple[tuple[str, str, str], ...] = (
    ("events", "events", "stream_ordering"),
    ("state groups", "state_groups", "id"),
    ("receipts", "receipts", "stream_id"),
    ("account data", "account_data", "stream_id"),
    ("presence", "presence", "stream_id"),
    ("to-device", "to_device_stream_position", "position"),
    ("to-device inbox", "device_inbox", "stream_id"),
    ("device lists", "device_lists_stream", "stream_id"),
    ("cross-signing keys", "e2e_cross_signing_keys", "stream_id"),
    ("current state deltas", "current_state_delta_stream", "stream_id"),
    ("cache invalidations", "cache_invalidations", "stream_id"),
)


def check_counts(source: SqliteSource, target: PostgresTarget, specs: Sequence[TableSpec]) -> int:
    """Compare every table's row count; the total number of rows.

    Raises:
        StartupError: a table differs.
    """
    different = []
    total = 0
    pairs = [(s.name, source.count(s.name)) for s in specs]
    pairs.append((SEARCH_TABLE, source.search_count()))
    for name, expected in pairs:
        found = target.count(name)
        total += found
        if found != expected:
            different.append(f"{name} {found} (SQLite {expected})")
    if different:
        raise StartupError(
            "the copy is incomplete: rows on PostgreSQL differ for "
            + ", ".join(different)
            + "; the SQLite database changed since the port began (was the server started"
            " on it?): drop the PostgreSQL database, create it again and rerun port-db"
        )
    return total


def check_stream_positions(source: SqliteSource, target: PostgresTarget) -> dict[str, int]:
    """Compare every stream's position; them by stream name (0 for an empty stream).

    Raises:
        StartupError: a position differs.
    """
    positions = {}
    for stream, table, column in STREAM_POSITIONS:
        expected = source.max_value(table, column)
        found = target.max_value(table, column)
        if found != expected:
            raise StartupError(
                f"the {stream} stream's position differs: {found} on PostgreSQL,"
                f" {expected} on SQLite ({table}.{column})"
            )
        positions[stream] = expected or 0
    return positions


def _highest_used(
    source: SqliteSource, target: PostgresTarget, table: str, column: str
) -> int | None:
    used = (target.max_value(table, column), source.autoincrement_seq(table))
    return max((v for v in used if v is not None), default=None)


def reset_identities(source: SqliteSource, target: PostgresTarget) -> None:
    """Move every identity sequence past the ids the copied rows (and SQLite) used."""
    for table, column in target.identity_columns():
        target.set_identity(table, column, _highest_used(source, target, table, column))


def check_identities(source: SqliteSource, target: PostgresTarget) -> None:
    """Check that no identity sequence would hand out an id already used.

    Raises:
        StartupError: one would.
    """
    for table, column in target.identity_columns():
        highest = _highest_used(source, target, table, column) or 0
        upcoming = target.next_identity(table, column)
        if upcoming <= highest:
            raise StartupError(
                f"the identity of {table}.{column} would hand out {upcoming}, which is used"
            )
