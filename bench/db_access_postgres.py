"""The database access path on PostgreSQL: psycopg 3 in one thread hop vs asyncpg via trio-asyncio.

The PostgreSQL counterpart of `bench/db_access.py`, for the choice behind trioserver's
PostgreSQL backend (`trioserver/stores/postgres.py`): a transaction is a plain synchronous
function over a psycopg 3 cursor, run in one ``trio.to_thread.run_sync`` hop, on an
autocommit connection that sends its own ``BEGIN ISOLATION LEVEL REPEATABLE READ`` and
``COMMIT``. Two workloads, on a fresh C-collated database per measurement (dropped after):

* **persist**: `db_access.py`'s 5-step event-persist transaction (INSERT events, INSERT
  event_json with ~700 bytes of JSON, INSERT event_edges, DELETE + INSERT
  event_forward_extremities, an upsert of current_state_events): BEGIN + 6 DML + COMMIT, 8
  statements. The schema is `db_access.py`'s with PostgreSQL's types (BIGINT for SQLite's
  64-bit INTEGER). N tasks share one writer connection behind a ``trio.Lock``, as in
  trioserver (one writer per instance).
* **read**: one event's JSON by primary key (``SELECT json FROM event_json WHERE event_id =
  ?``) from a database filled with ``--read-rows`` events, as a ``REPEATABLE READ READ ONLY``
  transaction (BEGIN + SELECT + COMMIT, 3 statements), the shape of every trioserver read.
  N tasks read random existing events over N connections.

Access paths:

* **A psycopg 3, 1 thread hop/txn**: trioserver's own `PostgresDatabase` (``run_txn`` and
  ``run_read``: the write lock or the reader semaphore, a ``psycopg_pool`` connection, the
  whole transaction in one ``trio.to_thread.run_sync``, SQLite placeholders converted once),
  on pools made here (one writer connection, N readers).
* **B asyncpg + trio-asyncio, 1 await/stmt**: ``asyncpg`` connections on the asyncio loop
  that ``trio_asyncio.open_loop()`` runs inside Trio; every statement is one
  ``trio_asyncio.aio_as_trio`` call (8 per write, 3 per read). asyncpg prepares and caches
  each statement itself.
* **C asyncpg + trio-asyncio, 1 await/txn** (reference): the same, with the whole
  transaction one coroutine on the asyncio side, so it crosses from Trio to asyncio once.
  This is the best an asyncpg design could do; it was not asked for, but without it B would
  be beaten by its boundary crossings alone.
* **D psycopg 3, 1 thread hop/txn, pipeline** (reference): A's pools, lock and hop, with the
  transaction's statements sent in psycopg's pipeline mode (one network round trip for
  BEGIN ... COMMIT instead of one per statement): what trioserver's path could gain.

Each row: ``--warmup`` untimed transactions, then ``--count`` timed ones, repeated
``--repeat`` times; the median run's figures are shown (rate, latency quantiles, CPU).
Latency is one task's wait for its transaction, from asking for the lock or connection to
the result: with 10 tasks on one writer it includes the queue. CPU: the benchmark process's
(all threads, ``getrusage``), the share of it on the Trio thread (``time.thread_time``; with
A the rest is psycopg in worker threads) and the database backends' (``/proc`` of the pids
``pg_stat_activity`` shows for the database). Then the cost of one round trip in isolation.

Needs asyncpg and trio-asyncio (the ``bench`` extra: ``pip install -e '.[bench]'``); without
them only A and D run. Run (default: 2,000 transactions per row, 3 repeats; ~2 minutes)::

    .venv/bin/python bench/db_access_postgres.py
    .venv/bin/python bench/db_access_postgres.py --count 200 --repeat 1     # smoke run
    .venv/bin/python bench/db_access_postgres.py --workload read --variant A B
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import platform
import random
import re
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
import psycopg_pool

import trio

from db_access import EventSource, Statement
from pglib import BackendCpu, admin_dsn, fresh_database, server_version
from trioserver.stores.postgres import PostgresDatabase

from benchlib import percentile, self_cpu_s

if TYPE_CHECKING:
    from trioserver.stores.database import Txn

try:
    # Neither ships type information (no py.typed marker, no stubs in typeshed), so mypy sees
    # them as untyped; their objects are used as Any below.
    import asyncpg  # type: ignore[import-untyped]
    import trio_asyncio  # type: ignore[import-untyped]
except ImportError as _exc:
    HAVE_ASYNC_DEPS = False
    MISSING_DEPS_REASON = str(_exc)
else:
    HAVE_ASYNC_DEPS = True
    MISSING_DEPS_REASON = ""

INSTALL_HINT = "pip install -e '.[bench]'  (asyncpg, trio-asyncio)"

SCHEMA = """
CREATE TABLE events (
    stream_ordering BIGINT PRIMARY KEY,
    topological_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    outlier BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE TABLE event_json (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    format_version BIGINT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);
CREATE TABLE event_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);
CREATE TABLE current_state_events (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    membership TEXT,
    PRIMARY KEY (room_id, type, state_key)
);
"""

BEGIN_WRITE = "BEGIN ISOLATION LEVEL REPEATABLE READ"
BEGIN_READ = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
READ_JSON = "SELECT json FROM event_json WHERE event_id = ?"
STATEMENTS = {"persist": 8, "read": 3}  # per transaction, BEGIN and COMMIT included
PATH_NAMES = {
    "A": "A psycopg 3, 1 thread hop/txn",
    "B": "B asyncpg+trio-asyncio, 1 await/stmt",
    "C": "C asyncpg+trio-asyncio, 1 await/txn",
    "D": "D psycopg 3, 1 hop/txn, pipeline",
}
VARIANTS = tuple(PATH_NAMES)
# One unit of work of a measurement: a write's statements, or the event id a read looks up.
Work = Any
Op = Callable[[Work], Awaitable[None]]


def asyncpg_sql(sql: str) -> str:
    """SQLite's ``?`` placeholders as asyncpg's ``$1, $2, ...`` (these statements have no
    string literals, so a plain substitution is enough)."""
    numbers = iter(range(1, 100))
    return re.sub(r"\?", lambda _: f"${next(numbers)}", sql)


# ---------------------------------------------------------------------------------------------
# Databases
# ---------------------------------------------------------------------------------------------


def create_schema(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)


def fill_events(dsn: str, rows: int) -> list[str]:
    """Persist `rows` events (in one transaction); their event ids."""
    batches = EventSource().take(rows)
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for step in range(len(batches[0])):
            sql = batches[0][step][0].replace("?", "%s")
            cur.executemany(sql, [batch[step][1] for batch in batches])
    return [str(batch[1][1][0]) for batch in batches]


def check_persisted(dsn: str, expected: int) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    if row is None or row[0] != expected:
        raise RuntimeError(f"{row} events persisted, expected {expected}")


# ---------------------------------------------------------------------------------------------
# A: trioserver's PostgresDatabase (psycopg 3 in threads)
# ---------------------------------------------------------------------------------------------


def open_pool(dsn: str, size: int, name: str) -> psycopg_pool.ConnectionPool[Any]:
    """A pool of `size` open autocommit connections, as `open_postgres_database` makes."""
    pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
        dsn, min_size=size, max_size=size, kwargs={"autocommit": True}, open=False, name=name
    )
    pool.open(wait=True, timeout=30)
    return pool


def _persist_txn(txn: Txn, statements: Sequence[Statement]) -> None:
    for sql, params in statements:
        txn.execute(sql, params)


def _read_txn(txn: Txn, event_id: str) -> None:
    row = txn.execute(READ_JSON, (event_id,)).fetchone()
    if row is None:
        raise RuntimeError(f"no event {event_id}")


class PsycopgPath:
    """Path A on its own pools; `op` runs one unit of work."""

    def __init__(self, dsn: str, workload: str, concurrency: int) -> None:
        self.workload = workload
        readers = concurrency if workload == "read" else 1
        self._writer = open_pool(dsn, 1, "writer")
        self._readers = open_pool(dsn, readers, "readers")
        self.db = PostgresDatabase(
            self._writer, self._readers, max_readers=readers, connect_timeout_s=30
        )

    async def op(self, work: Work) -> None:
        if self.workload == "persist":
            await self.db.run_txn("bench_persist", _persist_txn, work)
        else:
            await self.db.run_read("bench_read", _read_txn, work)

    def close(self) -> None:
        self.db.close()


def _pipelined(
    conn: psycopg.Connection[Any], begin: str, statements: Sequence[Statement]
) -> list[Any]:
    """BEGIN, `statements` and COMMIT in one pipeline: one round trip; the last result."""
    results = []
    with conn.pipeline():
        control = conn.cursor()
        control.execute(begin)
        cursors = []
        for sql, params in statements:
            cur = conn.cursor()
            cur.execute(sql.replace("?", "%s"), params)
            cursors.append(cur)
        control.execute("COMMIT")
    for cur in cursors:
        results.append(cur.fetchall() if cur.description else None)
        cur.close()
    control.close()
    return results


class PipelinePath:
    """Path D: A's pools, write lock, reader slots and thread hop; the statements pipelined."""

    def __init__(self, dsn: str, workload: str, concurrency: int) -> None:
        self.workload = workload
        readers = concurrency if workload == "read" else 1
        self._pool = open_pool(dsn, readers, workload)
        self._lock = trio.Lock() if workload == "persist" else trio.Semaphore(readers)

    def _run(self, begin: str, statements: Sequence[Statement]) -> list[Any]:
        with self._pool.connection() as conn:
            return _pipelined(conn, begin, statements)

    async def op(self, work: Work) -> None:
        async with self._lock:
            if self.workload == "persist":
                await trio.to_thread.run_sync(self._run, BEGIN_WRITE, work)
                return
            results = await trio.to_thread.run_sync(self._run, BEGIN_READ, [(READ_JSON, (work,))])
        if not results[0]:
            raise RuntimeError(f"no event {work}")

    def close(self) -> None:
        self._pool.close()


# ---------------------------------------------------------------------------------------------
# B and C: asyncpg through trio-asyncio
# ---------------------------------------------------------------------------------------------

# These coroutines run on the asyncio side; Trio code calls them through aio_as_trio.


async def _aio_connect(params: dict[str, Any]) -> Any:
    return await asyncpg.connect(**params)


async def _aio_execute(conn: Any, sql: str, params: Sequence[object]) -> None:
    await conn.execute(sql, *params)


async def _aio_fetchval(conn: Any, sql: str, params: Sequence[object]) -> object:
    return await conn.fetchval(sql, *params)


async def _aio_persist(conn: Any, statements: Sequence[Statement]) -> None:
    await conn.execute(BEGIN_WRITE)
    try:
        for sql, params in statements:
            await conn.execute(sql, *params)
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


async def _aio_read(conn: Any, sql: str, event_id: str) -> object:
    await conn.execute(BEGIN_READ)
    try:
        value = await conn.fetchval(sql, event_id)
    finally:
        await conn.execute("COMMIT")
    return value


async def _aio_close(conn: Any) -> None:
    await conn.close()


async def _aio_noop() -> None:
    return None


def asyncpg_params(dsn: str) -> dict[str, Any]:
    """asyncpg's connect() keywords for a libpq key=value DSN."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {
        "host": info.get("host", "127.0.0.1"),
        "port": int(str(info.get("port", 5432))),
        "user": info.get("user", "postgres"),
        "database": info["dbname"],
    }


class AsyncpgPath:
    """Paths B (`per_statement`) and C: one writer connection or one reader per task."""

    def __init__(self, workload: str, per_statement: bool) -> None:
        self.workload = workload
        self.per_statement = per_statement
        self._lock = trio.Lock()
        self._conns: list[Any] = []
        self._free: list[Any] = []
        self._execute = trio_asyncio.aio_as_trio(_aio_execute)
        self._fetchval = trio_asyncio.aio_as_trio(_aio_fetchval)
        self._persist = trio_asyncio.aio_as_trio(_aio_persist)
        self._read = trio_asyncio.aio_as_trio(_aio_read)
        self._persist_sql: dict[str, str] = {}
        self._read_sql = asyncpg_sql(READ_JSON)

    async def open(self, dsn: str, connections: int) -> None:
        connect = trio_asyncio.aio_as_trio(_aio_connect)
        for _ in range(connections):
            self._conns.append(await connect(asyncpg_params(dsn)))
        self._free = list(self._conns)

    def _sql(self, statements: Sequence[Statement]) -> list[Statement]:
        # The statements' text converted once, outside the timed path's hot loop cost.
        out = []
        for sql, params in statements:
            converted = self._persist_sql.get(sql)
            if converted is None:
                converted = self._persist_sql[sql] = asyncpg_sql(sql)
            out.append((converted, params))
        return out

    async def op(self, work: Work) -> None:
        if self.workload == "persist":
            async with self._lock:
                await self._write(self._conns[0], self._sql(work))
            return
        conn = self._free.pop()  # one per task: never empty while tasks <= connections
        try:
            if self.per_statement:
                await self._execute(conn, BEGIN_READ, ())
                try:
                    value = await self._fetchval(conn, self._read_sql, (work,))
                finally:
                    await self._execute(conn, "COMMIT", ())
            else:
                value = await self._read(conn, self._read_sql, work)
            if value is None:
                raise RuntimeError(f"no event {work}")
        finally:
            self._free.append(conn)

    async def _write(self, conn: Any, statements: list[Statement]) -> None:
        if not self.per_statement:
            await self._persist(conn, statements)
            return
        await self._execute(conn, BEGIN_WRITE, ())
        try:
            for sql, params in statements:
                await self._execute(conn, sql, params)
            await self._execute(conn, "COMMIT", ())
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._execute(conn, "ROLLBACK", ())
            raise

    async def close(self) -> None:
        close = trio_asyncio.aio_as_trio(_aio_close)
        for conn in self._conns:
            await close(conn)


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed run."""

    elapsed_s: float
    latencies_s: list[float]
    process_cpu_s: float
    loop_cpu_s: float
    backend_cpu_s: float


@dataclass
class Row:
    """One measurement: `repeat` runs of `count` transactions."""

    workload: str
    path: str
    concurrency: int
    count: int
    runs: list[Run] = field(default_factory=list)

    def _median(self, value: Callable[[Run], float]) -> float:
        return statistics.median(value(r) for r in self.runs)

    @property
    def txn_per_s(self) -> float:
        return self._median(lambda r: self.count / r.elapsed_s)

    def latency_ms(self, fraction: float) -> float:
        return self._median(lambda r: percentile(sorted(r.latencies_s), fraction) * 1e3)

    def cpu_us(self, kind: str) -> float:
        values = {
            "process": lambda r: r.process_cpu_s,
            "loop": lambda r: r.loop_cpu_s,
            "backend": lambda r: r.backend_cpu_s,
        }[kind]
        return self._median(values) / self.count * 1e6

    def rate_range(self) -> str:
        rates = [self.count / r.elapsed_s for r in self.runs]
        return f"{min(rates):,.0f}-{max(rates):,.0f}"


async def run_tasks(concurrency: int, work: list[Work], op: Op) -> tuple[float, list[float]]:
    """Run `op` on every item of `work` from `concurrency` tasks; wall time, latencies."""
    todo = iter(work)
    latencies: list[float] = []

    async def worker() -> None:
        for item in todo:  # shared iterator: each item is taken by one task
            started = time.perf_counter()
            await op(item)
            latencies.append(time.perf_counter() - started)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - start, latencies


async def timed_run(
    op: Op, concurrency: int, warm: list[Work], timed: list[Work], backends: BackendCpu
) -> Run:
    await run_tasks(concurrency, warm, op)
    cpu, loop_cpu, db_cpu = self_cpu_s(), time.thread_time(), backends.cpu_s()
    elapsed, latencies = await run_tasks(concurrency, timed, op)
    return Run(
        elapsed,
        latencies,
        self_cpu_s() - cpu,
        time.thread_time() - loop_cpu,
        backends.cpu_s() - db_cpu,
    )


@dataclass
class Config:
    admin: str
    workloads: list[str]
    variants: list[str]
    concurrencies: list[int]
    count: int
    warmup: int
    repeat: int
    read_rows: int


async def run_path(
    cfg: Config, variant: str, workload: str, concurrency: int, dsn: str, work: list[Work],
    backends: BackendCpu,
) -> Run:  # fmt: skip
    """One timed run of `variant` (its connections opened first, closed after)."""
    warm, timed = work[: cfg.warmup], work[cfg.warmup :]
    if variant in ("A", "D"):
        kind = PsycopgPath if variant == "A" else PipelinePath
        path: PsycopgPath | PipelinePath
        path = await trio.to_thread.run_sync(kind, dsn, workload, concurrency)
        try:
            return await timed_run(path.op, concurrency, warm, timed, backends)
        finally:
            await trio.to_thread.run_sync(path.close)
    apath = AsyncpgPath(workload, per_statement=variant == "B")
    try:
        await apath.open(dsn, 1 if workload == "persist" else concurrency)
        return await timed_run(apath.op, concurrency, warm, timed, backends)
    finally:
        await apath.close()


async def measure_persist(cfg: Config, variant: str, concurrency: int) -> Row:
    row = Row("persist", variant, concurrency, cfg.count)
    for _ in range(cfg.repeat):
        with fresh_database(cfg.admin, "trioserver_bench_dbaccess") as (name, dsn):
            await trio.to_thread.run_sync(create_schema, dsn)
            work = EventSource().take(cfg.warmup + cfg.count)
            backends = await trio.to_thread.run_sync(BackendCpu, cfg.admin, name)
            try:
                run = await run_path(cfg, variant, "persist", concurrency, dsn, work, backends)
            finally:
                backends.close()
            await trio.to_thread.run_sync(check_persisted, dsn, cfg.warmup + cfg.count)
        row.runs.append(run)
    print(f"  persist {variant} tasks={concurrency:<3} {row.txn_per_s:9,.0f} txn/s", flush=True)
    return row


async def measure_reads(cfg: Config, name: str, dsn: str, ids: list[str]) -> list[Row]:
    rows = []
    rng = random.Random(14)
    backends = await trio.to_thread.run_sync(BackendCpu, cfg.admin, name)
    try:
        for variant in cfg.variants:
            for concurrency in cfg.concurrencies:
                row = Row("read", variant, concurrency, cfg.count)
                for _ in range(cfg.repeat):
                    work = [rng.choice(ids) for _ in range(cfg.warmup + cfg.count)]
                    run = await run_path(cfg, variant, "read", concurrency, dsn, work, backends)
                    row.runs.append(run)
                rate = row.txn_per_s
                print(f"  read {variant} tasks={concurrency:<3} {rate:9,.0f} txn/s", flush=True)
                rows.append(row)
    finally:
        backends.close()
    return rows


@dataclass
class Hop:
    name: str
    per_op_s: list[float] = field(default_factory=list)

    @property
    def us(self) -> float:
        return statistics.median(self.per_op_s) * 1e6


async def time_op(n: int, warmup: int, op: Callable[[], Awaitable[object]]) -> float:
    for _ in range(warmup):
        await op()
    start = time.perf_counter()
    for _ in range(n):
        await op()
    return (time.perf_counter() - start) / n


async def measure_hops(cfg: Config, dsn: str) -> list[Hop]:
    """One round trip of each kind, back to back from one task."""
    conn = await trio.to_thread.run_sync(lambda: psycopg.connect(dsn, autocommit=True))

    def select_one() -> None:
        conn.execute("SELECT 1").close()

    async def empty_hop() -> None:
        await trio.to_thread.run_sync(lambda: None)

    async def psycopg_hop() -> None:
        await trio.to_thread.run_sync(select_one)

    async def psycopg_inline() -> None:
        select_one()  # deliberately blocking: the no-hop reference point

    cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("trio.to_thread.run_sync(lambda: None) round trip", empty_hop),
        ("psycopg SELECT 1 in trio.to_thread.run_sync", psycopg_hop),
        ("psycopg SELECT 1 inline, blocking the loop (reference)", psycopg_inline),
    ]
    aconn = None
    if HAVE_ASYNC_DEPS and ("B" in cfg.variants or "C" in cfg.variants):
        aconn = await trio_asyncio.aio_as_trio(_aio_connect)(asyncpg_params(dsn))
        execute = trio_asyncio.aio_as_trio(_aio_execute)
        noop = trio_asyncio.aio_as_trio(_aio_noop)

        async def asyncpg_hop() -> None:
            await execute(aconn, "SELECT 1", ())

        async def boundary() -> None:
            await noop()

        cases += [
            ("asyncpg SELECT 1 through trio-asyncio", asyncpg_hop),
            ("trio-asyncio aio_as_trio(no-op coroutine) only", boundary),
        ]
    hops = [Hop(name) for name, _ in cases]
    try:
        for _ in range(cfg.repeat):
            for hop, (_, op) in zip(hops, cases, strict=True):
                hop.per_op_s.append(await time_op(cfg.count, cfg.warmup, op))
    finally:
        conn.close()
        if aconn is not None:
            await trio_asyncio.aio_as_trio(_aio_close)(aconn)
    return hops


async def plain_asyncio_hop(cfg: Config, dsn: str) -> Hop:
    """asyncpg SELECT 1 on a plain asyncio loop: asyncpg's own cost without trio-asyncio."""
    conn = await asyncpg.connect(**asyncpg_params(dsn))
    hop = Hop("asyncpg SELECT 1, plain asyncio (reference)")
    try:
        for _ in range(cfg.repeat):
            for _ in range(cfg.warmup):
                await conn.execute("SELECT 1")
            start = time.perf_counter()
            for _ in range(cfg.count):
                await conn.execute("SELECT 1")
            hop.per_op_s.append((time.perf_counter() - start) / cfg.count)
    finally:
        await conn.close()
    return hop


async def trio_main(cfg: Config) -> tuple[list[Row], list[Hop]]:
    rows: list[Row] = []
    hops: list[Hop] = []
    async with trio_asyncio.open_loop() if HAVE_ASYNC_DEPS else _no_loop():
        if "persist" in cfg.workloads:
            print("persist: the 5-step event transaction", flush=True)
            for variant in cfg.variants:
                for concurrency in cfg.concurrencies:
                    rows.append(await measure_persist(cfg, variant, concurrency))
        with fresh_database(cfg.admin, "trioserver_bench_dbaccess") as (name, dsn):
            await trio.to_thread.run_sync(create_schema, dsn)
            if "read" in cfg.workloads:
                print(f"read: one event's JSON by primary key, of {cfg.read_rows:,}", flush=True)
                ids = await trio.to_thread.run_sync(fill_events, dsn, cfg.read_rows)
                await trio.to_thread.run_sync(_analyze, dsn)
                rows += await measure_reads(cfg, name, dsn, ids)
            hops = await measure_hops(cfg, dsn)
    return rows, hops


def _analyze(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


class _no_loop:  # stands in for trio_asyncio.open_loop() in an `async with`
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def print_report(cfg: Config, rows: list[Row], hops: list[Hop], pg: str) -> None:
    print()
    print(
        f"Python {platform.python_version()}, {pg}, psycopg {version_of('psycopg')}, "
        f"psycopg-pool {version_of('psycopg-pool')}, asyncpg {version_of('asyncpg')}, "
        f"trio {version_of('trio')}, trio-asyncio {version_of('trio-asyncio')}; "
        f"{os.cpu_count()} CPUs; {platform.system()} {platform.release()}"
    )
    print(
        f"Each row: median of {cfg.repeat} run(s) of {cfg.count:,} transactions after "
        f"{cfg.warmup:,} warm-up; persist: fresh database per run, N tasks share one writer "
        f"connection; read: N tasks over N connections, {cfg.read_rows:,} events"
    )
    print()
    header = (
        f"{'workload':<8} {'access path':<38} {'tasks':>5} {'txn/s':>8} {'µs/txn':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'CPU µs/txn':>10} {'loop µs':>8} {'PG µs':>7} "
        f"{'txn/s min-max':>14}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.workload:<8} {PATH_NAMES[r.path]:<38} {r.concurrency:>5} {r.txn_per_s:>8,.0f} "
            f"{1e6 / r.txn_per_s:>7.0f} {r.latency_ms(0.5):>7.2f} {r.latency_ms(0.99):>7.2f} "
            f"{r.cpu_us('process'):>10.0f} {r.cpu_us('loop'):>8.0f} {r.cpu_us('backend'):>7.0f} "
            f"{r.rate_range():>14}"
        )
    if not HAVE_ASYNC_DEPS and ({"B", "C"} & set(cfg.variants)):
        print(f"B and C skipped: {INSTALL_HINT}")
    print(
        "(CPU µs/txn: this process, all threads; loop µs: its Trio thread; PG µs: the "
        "database's backend processes)"
    )
    print()
    header = f"{'one round trip (median of per-run means)':<58} {'µs/op':>8}"
    print(header)
    print("-" * len(header))
    for h in hops:
        print(f"{h.name:<58} {h.us:>8.1f}")

    by_key = {(r.workload, r.path, r.concurrency): r for r in rows}
    lines = []
    for workload in cfg.workloads:
        for conc in cfg.concurrencies:
            a = by_key.get((workload, "A", conc))
            for other in ("B", "C", "D"):
                b = by_key.get((workload, other, conc))
                if a and b:
                    lines.append(
                        f"  {workload}, {conc} task(s): A is {a.txn_per_s / b.txn_per_s:.2f}x "
                        f"{other}'s rate, at {a.cpu_us('process') / b.cpu_us('process'):.2f}x "
                        f"its CPU per transaction"
                    )
    if lines:
        print()
        print("Derived:")
        print("\n".join(lines))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "PostgreSQL access paths from Trio: psycopg 3 in one thread hop per transaction "
            "(A, trioserver's) vs asyncpg through trio-asyncio, one await per statement (B) "
            "or per transaction (C); a 5-step write and a one-row read."
        ),
        epilog=f"B and C need bench-only packages: {INSTALL_HINT}",
    )
    parser.add_argument("--count", type=int, default=2000, help="timed transactions per run")
    parser.add_argument("--warmup", type=int, default=200, help="untimed ones before each run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; the median shown")
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 10], help="tasks [1 10]")
    parser.add_argument("--variant", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument(
        "--workload", nargs="+", choices=["persist", "read"], default=["persist", "read"]
    )
    parser.add_argument(
        "--read-rows", type=int, default=10_000, help="events in the read workload's table"
    )
    parser.add_argument(
        "--admin-dsn", default=None, help="where to CREATE DATABASE [$TRIOSERVER_BENCH_POSTGRES "
        "or host=127.0.0.1 port=5432 user=postgres dbname=postgres]",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.count < 1 or args.warmup < 0 or args.repeat < 1 or min(args.concurrency) < 1:
        parser.error("--count, --repeat and --concurrency must be >= 1, --warmup >= 0")
    if args.read_rows < 1:
        parser.error("--read-rows must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    variants = list(dict.fromkeys(args.variant))
    if not HAVE_ASYNC_DEPS and {"B", "C"} & set(variants):
        print(
            f"B and C skipped: {MISSING_DEPS_REASON}; they need {INSTALL_HINT}.",
            file=sys.stderr,
            flush=True,
        )
        variants = [v for v in variants if v in ("A", "D")]
    cfg = Config(
        admin=args.admin_dsn or admin_dsn(),
        workloads=list(dict.fromkeys(args.workload)),
        variants=variants,
        concurrencies=list(dict.fromkeys(args.concurrency)),
        count=args.count,
        warmup=args.warmup,
        repeat=args.repeat,
        read_rows=args.read_rows,
    )
    pg = server_version(cfg.admin)
    rows, hops = trio.run(trio_main, cfg)
    if HAVE_ASYNC_DEPS and {"B", "C"} & set(cfg.variants):
        with fresh_database(cfg.admin, "trioserver_bench_dbaccess") as (_, dsn):
            hops.append(asyncio.run(plain_asyncio_hop(cfg, dsn)))
    print_report(cfg, rows, hops, pg)
    return 0


if __name__ == "__main__":
    sys.exit(main())
