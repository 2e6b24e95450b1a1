"""Database connections and the one way to run SQL: a transaction function in one thread hop.

Theory of operation
-------------------
A transaction is a plain synchronous function ``fn(txn, *args)`` over a `Txn`. It never awaits
and never does anything but SQL, so it can run start to finish in a worker thread:
``await db.run_txn("verb_noun", fn, *args)`` costs one thread hop however many statements it
runs (DESIGN.md, "Database: decided by measurement").

SQLite in WAL mode allows one writer and many readers at once. `Database` therefore keeps one
writer connection, used by one transaction at a time (a `trio.Lock`), and a small pool of
read-only connections for `run_read`. Readers see every transaction committed before they
began, so a read issued after a write has returned sees that write.

Small reads skip the hop. Measured on the 2-core machine (``bench/read_path.py``), a
one-row indexed read costs ~190 µs of CPU through a thread hop (mostly the GIL hand-over and
waking the worker) and ~10 µs run on the event-loop thread, and a /sync does a dozen such
reads. `run_read_inline` therefore runs a read on the loop's own thread, on a
reader connection of its own: WAL readers never wait for the writer, so such a read blocks
the loop only for its own SQL time. It is for reads bounded by an index and a limit (a
user's rows, one room's page); anything whose cost grows with the data (whole-table scans,
start-up loads, searches) stays on `run_read`, which lets the loop serve others meanwhile.
An inline read that takes longer than `INLINE_WARN_MS` is logged, to catch misuse.

Thread hops are not cancellable (`abandon_on_cancel=False`): once a transaction has started it
commits or rolls back before cancellation is delivered, so a shutdown never leaves a write half
done and an acknowledged write is always committed.

SQL uses ``?`` placeholders. The PostgreSQL backend (``stores/postgres.py``) runs the same
transaction functions and converts them; `Database` is the interface both backends give, and
`Txn.dialect` tells the few statements that differ which one they run on.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Concatenate, Literal, ParamSpec, Protocol, TypeVar

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence
    from pathlib import Path

    from trioserver.config import Config

logger = logging.getLogger(__name__)

SLOW_TXN_WARN_MS = 200.0
# An inline read holds up every other request while it runs: it should take microseconds.
INLINE_WARN_MS = 20.0

P = ParamSpec("P")
R = TypeVar("R")

Row = tuple[Any, ...]
Dialect = Literal["sqlite", "postgres"]


class Txn:
    """The cursor a transaction function works with.

    A thin wrapper over a DB-API cursor so that transaction functions do not depend on the
    backend (placeholder style, row types).
    """

    __slots__ = ("_cur",)
    # Which SQL the statements run as; a store branches on it only where the dialects differ.
    dialect: Dialect = "sqlite"

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Txn:
        """Run one statement."""
        self._cur.execute(sql, params)
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter row."""
        self._cur.executemany(sql, rows)

    def fetchone(self) -> Row | None:
        """The next result row, or None."""
        row: Row | None = self._cur.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        """All remaining result rows."""
        rows: list[Row] = self._cur.fetchall()
        return rows

    @property
    def rowcount(self) -> int:
        """Rows changed by the last INSERT/UPDATE/DELETE."""
        count: int = self._cur.rowcount
        return count


def _connect(path: Path, *, read_only: bool, synchronous: str) -> sqlite3.Connection:
    # check_same_thread=False: a connection is used from whichever worker thread trio picks,
    # but never by two at once (the writer lock / reader pool guarantee that).
    conn = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=30.0, cached_statements=256
    )
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("PRAGMA busy_timeout = 30000")
    if read_only:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    return conn


class Database(Protocol):
    """What the stores use of a database, on either backend (`SqliteDatabase`,
    `trioserver.stores.postgres.PostgresDatabase`)."""

    @property
    def dialect(self) -> Dialect:
        """The backend's SQL dialect."""
        ...

    async def run_txn(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run `fn(txn, *args)` as one write transaction, committed before this returns."""
        ...

    def add_commit_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every write transaction has finished."""
        ...

    async def run_read(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run `fn(txn, *args)` as one consistent read-only snapshot."""
        ...

    async def run_read_inline(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run a small read bounded by an index and a limit, as cheaply as the backend can."""
        ...

    def close(self) -> None:
        """Close every connection."""
        ...


class SqliteDatabase:
    """One SQLite database: a writer connection and a pool of reader connections."""

    dialect: Dialect = "sqlite"

    def __init__(
        self,
        writer: sqlite3.Connection,
        readers: list[sqlite3.Connection],
        inline_reader: sqlite3.Connection,
    ) -> None:
        self._writer = writer
        self._write_lock = trio.Lock()
        self._commit_hooks: list[Callable[[], None]] = []
        self._idle_readers = list(readers)
        self._all_readers = [*readers, inline_reader]
        self._reader_slots = trio.Semaphore(len(readers))
        self._inline_reader = inline_reader

    async def run_txn(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run `fn(txn, *args)` as one write transaction, committed before this returns.

        Args:
            name: the transaction's name, for logs (``verb_noun``).
            fn: a synchronous function doing only SQL.

        Returns:
            Whatever `fn` returns.

        Raises:
            Whatever `fn` raises; the transaction is then rolled back.

        Checkpoint: yes (waits for the writer, then one thread hop).
        """
        async with self._write_lock:
            try:
                return await trio.to_thread.run_sync(
                    _run_in_transaction, self._writer, name, "BEGIN IMMEDIATE", fn, args, kwargs
                )
            finally:
                # Still holding the lock: no other write transaction has begun.
                for hook in self._commit_hooks:
                    hook()

    def add_commit_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every write transaction has finished, before `run_txn` returns
        (stream id generators publish their ids then: `StreamIdGenerator.mark_committed`)."""
        self._commit_hooks.append(hook)

    async def run_read(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run `fn(txn, *args)` on a read-only connection, as one consistent snapshot.

        Checkpoint: yes.
        """
        async with self._reader_slots:
            conn = self._idle_readers.pop()
            try:
                return await trio.to_thread.run_sync(
                    _run_in_transaction, conn, name, "BEGIN", fn, args, kwargs
                )
            finally:
                self._idle_readers.append(conn)

    async def run_read_inline(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run the small read `fn(txn, *args)` on the event loop's thread, as one snapshot.

        Only for reads bounded by an index and a limit (see the module docstring): the loop
        serves nothing else while it runs.

        Checkpoint: yes.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return _run_in_transaction(
                self._inline_reader, name, "BEGIN", fn, args, kwargs, warn_ms=INLINE_WARN_MS
            )
        finally:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def close(self) -> None:
        """Close every connection. Only call once no transaction can be running."""
        for conn in [self._writer, *self._all_readers]:
            conn.close()


def _run_in_transaction(
    conn: sqlite3.Connection,
    name: str,
    begin: str,
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    warn_ms: float = SLOW_TXN_WARN_MS,
) -> R:
    started = time.perf_counter()
    cur = conn.cursor()
    try:
        cur.execute(begin)
        result = fn(Txn(cur), *args, **kwargs)
        cur.execute("COMMIT")
    except BaseException:
        # SQLite may already have rolled back (e.g. SQLITE_FULL); only roll back what is open.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        cur.close()
    elapsed = (time.perf_counter() - started) * 1000
    if elapsed > warn_ms:
        logger.warning("transaction %s took %.1f ms", name, elapsed)
    return result


@asynccontextmanager
async def open_configured_database(
    config: Config, *, readers: int | None = None
) -> AsyncIterator[Database]:
    """Open the database `config` names (``[database]``), on its backend.

    Args:
        readers: how many reader connections at most (default: the config's).

    Raises:
        StartupError: the SQLite database is locked by ``trioserver port-db``.
    """
    settings = config.database
    if settings.backend == "postgres":
        from trioserver.stores.postgres import open_postgres_database

        assert settings.dsn is not None  # the config's validation requires it
        max_connections = settings.max_connections if readers is None else readers
        async with open_postgres_database(
            settings.dsn,
            min_connections=min(settings.min_connections, max_connections),
            max_connections=max_connections,
            connect_timeout_s=settings.connect_timeout_seconds,
        ) as pg:
            yield pg
        return
    from trioserver.stores.sqlite_lock import shared_database_lock

    path = config.data_path(settings.path)
    # Shared with every other server on this file, held while it is open: `trioserver
    # port-db` takes it exclusively (stores.sqlite_lock).
    with shared_database_lock(path):
        async with open_database(
            path,
            synchronous=settings.synchronous,
            readers=settings.reader_connections if readers is None else readers,
        ) as db:
            yield db


@asynccontextmanager
async def open_database(
    path: Path, *, synchronous: str = "full", readers: int = 4
) -> AsyncIterator[SqliteDatabase]:
    """Open (creating if needed) the SQLite database at `path` and apply the schema.

    Args:
        path: the database file.
        synchronous: the writer's `PRAGMA synchronous` (``full`` or ``normal``).
        readers: how many read-only connections to keep.

    Yields:
        The `Database`; every connection is closed on exit.
    """
    from trioserver.stores.schema import apply_schema

    def open_all() -> SqliteDatabase:
        writer = _connect(path, read_only=False, synchronous=synchronous)
        apply_schema(writer)
        reader_conns = [
            _connect(path, read_only=True, synchronous=synchronous) for _ in range(readers)
        ]
        inline_reader = _connect(path, read_only=True, synchronous=synchronous)
        return SqliteDatabase(writer, reader_conns, inline_reader)

    db = await trio.to_thread.run_sync(open_all)
    try:
        yield db
    finally:
        db.close()
