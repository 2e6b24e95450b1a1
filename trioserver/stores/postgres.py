"""The PostgreSQL backend: the same transaction functions, on psycopg 3 connections in threads.

Theory of operation
-------------------
A store's transaction function is written once, against `Txn`, with SQLite's ``?``
placeholders. `PostgresTxn` converts each statement the first time it sees it
(`convert_placeholders`, cached) and runs it on a psycopg cursor; psycopg prepares a statement
on the server once it has been run a few times on a connection.

`PostgresDatabase` keeps the shape of the SQLite `Database` so that nothing above it knows the
backend:

- **Writes** run one at a time per instance (a `trio.Lock`) on a connection from a pool of one,
  so the stream id generators of this instance's streams commit their ids in allocation order,
  exactly as on SQLite. Write transactions are ``REPEATABLE READ``: another instance's
  concurrent change to the same rows makes one of them fail with a serialization failure (or a
  deadlock) instead of losing an update; such a transaction is rolled back and run again, up to
  `MAX_ATTEMPTS` times, with a log line each time. A transaction function only does SQL, so
  running it again is safe (stream ids it took are holes, which readers never miss).
- **Reads** run on a pool of ``min_connections``..``max_connections`` connections
  (`psycopg_pool.ConnectionPool`), each as one ``REPEATABLE READ READ ONLY`` snapshot.
- **Inline reads** (`run_read_inline`) are thread-hop reads here. On SQLite a small read costs
  microseconds of CPU on the loop's thread; here it is a network round trip per statement, and
  a slow or distant database would stall every other request for as long (``bench/db_access.py``
  measures both paths).

Connection loss: a statement that fails because the connection broke (`psycopg.OperationalError`
and its kind) is raised as `DatabaseUnavailable`, a 503 Matrix error, so the request in flight
gets a clear answer. The pool drops the broken connection when it is given back and opens a
new one on demand; waiting for a connection is bounded by ``connect_timeout_s``. A write whose
COMMIT was cut off may or may not have committed: the client sees an error and retries (with its
transaction id), as after any failed request.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Concatenate, Final, ParamSpec, TypeVar

import trio

from trioserver.errors import MatrixError, StartupError
from trioserver.stores.database import SLOW_TXN_WARN_MS, Row, Txn

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Sequence

    import psycopg
    import psycopg_pool

    from trioserver.stores.database import Dialect

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# A serialization failure or deadlock between instances is retried this many times in all.
MAX_ATTEMPTS: Final = 5
_RETRY_SQLSTATES: Final = frozenset({"40001", "40P01"})  # serialization_failure, deadlock


class DatabaseUnavailable(MatrixError):
    """The database connection failed; the request may be retried."""

    def __init__(self) -> None:
        super().__init__("M_UNKNOWN", "The database is unavailable; try again", status=503)


_TOKEN = re.compile(
    r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\bIS\s+(?:NOT\s+)?)?\?(\d+)?|%|--[^\n]*",
    re.IGNORECASE,
)
# SQLite's null-safe comparisons with a parameter, spelled as PostgreSQL spells them.
_NULL_SAFE = {"IS": "IS NOT DISTINCT FROM", "IS NOT": "IS DISTINCT FROM"}


@functools.lru_cache(maxsize=8192)
def convert_placeholders(sql: str) -> tuple[str, bool]:
    """SQLite parameter style (``?`` and ``?N``) to psycopg's (``%s`` and ``%(pN)s``).

    String literals, quoted identifiers and comments are left alone; a literal ``%`` is
    doubled, as psycopg requires. SQLite's null-safe ``IS ?`` / ``IS NOT ?`` become
    ``IS [NOT] DISTINCT FROM``.

    Returns:
        The converted statement, and whether it uses numbered parameters (then its params
        are passed as a mapping ``{"p1": ..., ...}``; see `PostgresTxn.execute`).
    """
    styles: set[str] = set()

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if "?" not in text or text[0] in "'\"-":
            return text.replace("%", "%%")
        comparison = match.group(1)
        prefix = ""
        if comparison is not None:
            prefix = _NULL_SAFE[" ".join(comparison.upper().split())] + " "
        if match.group(2) is not None:
            styles.add("numbered")
            return f"{prefix}%(p{match.group(2)})s"
        styles.add("positional")
        return prefix + "%s"

    converted = _TOKEN.sub(replace, sql)
    if len(styles) > 1:
        raise ValueError(f"a statement mixes ? and ?N parameters: {sql!r}")
    return converted, "numbered" in styles


class PostgresTxn(Txn):
    """`Txn` over a psycopg cursor: converts placeholders, same results as on SQLite."""

    __slots__ = ()
    dialect: Dialect = "postgres"

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Txn:
        """Run one statement."""
        converted, numbered = convert_placeholders(sql)
        if numbered:
            self._cur.execute(converted, {f"p{i}": v for i, v in enumerate(params, 1)})
        elif params:
            self._cur.execute(converted, params)
        else:
            # No parameters: psycopg would still need every % doubled, which it is.
            self._cur.execute(converted, None)
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for each parameter row (pipelined by psycopg)."""
        converted, numbered = convert_placeholders(sql)
        if numbered:
            mapped = ({f"p{i}": v for i, v in enumerate(row, 1)} for row in rows)
            self._cur.executemany(converted, mapped)
        else:
            self._cur.executemany(converted, rows)

    def fetchone(self) -> Row | None:
        """The next result row, or None."""
        row: Row | None = self._cur.fetchone()
        return row

    def fetchall(self) -> list[Row]:
        """All remaining result rows."""
        rows: list[Row] = self._cur.fetchall()
        return rows


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Set up a new pooled connection: what SQLite's loose typing allowed, made explicit."""
    from psycopg.types.numeric import IntDumper

    # SQLite stores True as 1 in an INTEGER column; PostgreSQL refuses a boolean there. The
    # schema keeps flags as integers on both backends, so Python bools are sent as integers.
    conn.adapters.register_dumper(bool, IntDumper)
    # SUM() of BIGINTs is NUMERIC on PostgreSQL (a Decimal); SQLite gives an int. Integral
    # values come back as ints, as there.
    conn.adapters.register_loader("numeric", _integral_numeric_loader())


@functools.cache
def _integral_numeric_loader() -> type[Any]:
    # Defined on first use: this module imports without psycopg (the `postgres` extra).
    from psycopg.types.numeric import NumericLoader

    class IntegralNumericLoader(NumericLoader):
        """NUMERIC as int when it has no fraction (else Decimal, as psycopg gives it)."""

        def load(self, data: Any) -> Any:
            value = super().load(data)
            return int(value) if value == value.to_integral_value() else value

    return IntegralNumericLoader


class PostgresDatabase:
    """A PostgreSQL database: one writer connection per instance and a pool of readers."""

    dialect: Dialect = "postgres"

    def __init__(
        self,
        writer: psycopg_pool.ConnectionPool[Any],
        readers: psycopg_pool.ConnectionPool[Any],
        *,
        max_readers: int,
        connect_timeout_s: float,
    ) -> None:
        self._writer = writer
        self._readers = readers
        self._write_lock = trio.Lock()
        self._commit_hooks: list[Callable[[], None]] = []
        # A thread waits for a pooled connection only when the pool could give one: the trio
        # side queues, so a burst of reads does not take every worker thread.
        self._reader_slots = trio.Semaphore(max_readers)
        self._connect_timeout_s = connect_timeout_s

    async def run_txn(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run `fn(txn, *args)` as one write transaction, committed before this returns (see
        `Database.run_txn`; conflicts with other instances are retried, see the module doc).

        Checkpoint: yes.
        """
        async with self._write_lock:
            try:
                return await trio.to_thread.run_sync(
                    self._run, self._writer, name, "BEGIN ISOLATION LEVEL REPEATABLE READ",
                    fn, args, kwargs,
                )  # fmt: skip
            finally:
                for hook in self._commit_hooks:
                    hook()

    def add_commit_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every write transaction (see `Database.add_commit_hook`)."""
        self._commit_hooks.append(hook)

    async def run_read(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """Run `fn(txn, *args)` as one read-only snapshot.

        Checkpoint: yes.
        """
        async with self._reader_slots:
            return await trio.to_thread.run_sync(
                self._run, self._readers, name,
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", fn, args, kwargs,
            )  # fmt: skip

    async def run_read_inline(
        self,
        name: str,
        fn: Callable[Concatenate[Txn, P], R],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R:
        """A small read; on PostgreSQL the same as `run_read` (see the module docstring)."""
        return await self.run_read(name, fn, *args, **kwargs)

    def _run(
        self,
        pool: psycopg_pool.ConnectionPool[Any],
        name: str,
        begin: str,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> R:
        import psycopg

        for attempt in range(1, MAX_ATTEMPTS + 1):
            started = time.perf_counter()
            try:
                with pool.connection(timeout=self._connect_timeout_s) as conn:
                    result = _run_on(conn, begin, fn, args, kwargs)
            except psycopg.DataError as exc:
                # PostgreSQL's text cannot hold NUL, which SQLite stores: the request's text
                # is refused (nothing was written) instead of failing with a 500.
                if "NUL" in str(exc):
                    raise MatrixError(
                        "M_INVALID_PARAM", "Text may not contain NUL characters", status=400
                    ) from exc
                raise
            except psycopg.errors.Error as exc:
                if exc.sqlstate in _RETRY_SQLSTATES and attempt < MAX_ATTEMPTS:
                    logger.warning(
                        "transaction %s: %s, running it again (attempt %d of %d)",
                        name, type(exc).__name__, attempt + 1, MAX_ATTEMPTS,
                    )  # fmt: skip
                    continue
                # A broken connection, a server shutting down, or no connection within the
                # timeout (psycopg_pool.PoolTimeout is an OperationalError without a state).
                if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and (
                    exc.sqlstate is None or exc.sqlstate.startswith(("08", "57P"))
                ):
                    logger.error("transaction %s: database connection failed: %s", name, exc)
                    raise DatabaseUnavailable() from exc
                raise
            elapsed = (time.perf_counter() - started) * 1000
            if elapsed > SLOW_TXN_WARN_MS:
                logger.warning("transaction %s took %.1f ms", name, elapsed)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close both pools. Only call once no transaction can be running."""
        self._writer.close()
        self._readers.close()


def _run_on(
    conn: psycopg.Connection[Any],
    begin: str,
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> R:
    cur = conn.cursor()
    try:
        cur.execute(begin)
        result = fn(PostgresTxn(cur), *args, **kwargs)
        cur.execute("COMMIT")
    except BaseException:
        from psycopg.pq import TransactionStatus

        if not conn.broken and conn.info.transaction_status != TransactionStatus.IDLE:
            conn.execute("ROLLBACK")
        raise
    finally:
        cur.close()
    return result


@asynccontextmanager
async def open_postgres_database(
    dsn: str,
    *,
    min_connections: int = 1,
    max_connections: int = 10,
    connect_timeout_s: float = 10.0,
) -> AsyncIterator[PostgresDatabase]:
    """Connect to the PostgreSQL database `dsn` and apply the schema.

    Raises:
        psycopg.OperationalError: the database cannot be reached.
        StartupError: the database does not use the C collation.

    Yields:
        The `PostgresDatabase`; both pools are closed on exit.
    """
    import psycopg
    import psycopg_pool

    from trioserver.stores.postgres_admin import check_collation
    from trioserver.stores.schema import apply_postgres_schema

    def open_all() -> PostgresDatabase:
        # Autocommit connections: each transaction's BEGIN and COMMIT are ours, as on SQLite.
        kwargs = {"autocommit": True, "connect_timeout": max(1, round(connect_timeout_s))}
        with psycopg.connect(dsn, **kwargs) as conn:  # type: ignore[arg-type]
            # Text must sort by code point, as on SQLite, or pages of rooms, users and
            # directory entries would come out in another order (stores.postgres_admin).
            problem = check_collation(conn)
            if problem is not None:
                raise StartupError(f"database.dsn: {problem}")
            apply_postgres_schema(conn)
        writer: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            dsn, min_size=1, max_size=1, kwargs=kwargs, configure=_configure, open=False,
            name="writer",
        )  # fmt: skip
        readers: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            dsn, min_size=min_connections, max_size=max_connections, kwargs=kwargs,
            configure=_configure, open=False, name="readers",
        )  # fmt: skip
        writer.open(wait=True, timeout=connect_timeout_s)
        try:
            readers.open(wait=True, timeout=connect_timeout_s)
        except BaseException:
            writer.close()
            raise
        return PostgresDatabase(
            writer, readers, max_readers=max_connections, connect_timeout_s=connect_timeout_s
        )

    db = await trio.to_thread.run_sync(open_all)
    try:
        yield db
    finally:
        await trio.to_thread.run_sync(db.close)
