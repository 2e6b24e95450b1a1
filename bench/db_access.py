"""Measure the database access path: one thread hop per transaction vs aiosqlite via trio-asyncio.

This repeats the measurement behind the design decision "a transaction is a plain synchronous
function over a DB-API cursor, run in one thread hop". It times a realistic "persist an event"
transaction against a real SQLite file (WAL mode) in a fresh temporary directory:

    BEGIN IMMEDIATE
      1. INSERT INTO events                      (event_id, room_id, type, stream_ordering, ...)
      2. INSERT INTO event_json                  (event_id, ~500 bytes of JSON text)
      3. INSERT INTO event_edges                 (event_id -> prev_event_id)
      4. DELETE + INSERT event_forward_extremities (replace the room's extremity)
      5. INSERT ... ON CONFLICT DO UPDATE current_state_events (upsert the state row)
    COMMIT

That is 5 steps, 6 DML statements, 8 statements with BEGIN/COMMIT.

Access paths:

* A: stdlib ``sqlite3`` (``check_same_thread=False``, ``isolation_level=None``); the whole
  transaction is one plain function run by ``await trio.to_thread.run_sync(fn)``.
* B: ``aiosqlite`` called from Trio through ``trio-asyncio`` (``trio_asyncio.open_loop()``,
  ``trio_asyncio.aio_as_trio``), one await per statement (8 per transaction).

Both share one writer connection between N Trio tasks, serialised by a ``trio.Lock``, and each is
run with ``PRAGMA synchronous=FULL`` and ``=NORMAL``. Every measurement uses a fresh database,
persists ``--warmup`` transactions untimed, then times ``--count`` transactions; it is repeated
``--repeat`` times and the median run is reported (with the min-max range). The cost of a single
hop is measured in isolation too: an empty ``trio.to_thread.run_sync`` round trip and a no-op
``SELECT 1`` through aiosqlite + trio-asyncio (plus reference points that split those costs up).

Variant B needs packages that are not runtime dependencies of the server; without them the
script says how to install them and runs variant A only::

    .venv/bin/pip install aiosqlite trio-asyncio

Run (default: 3,000 transactions per measurement, 3 repeats; about 3 minutes on 2 cores)::

    .venv/bin/python bench/db_access.py
    .venv/bin/python bench/db_access.py --count 1000 --repeat 1 --sync NORMAL --concurrency 1
    .venv/bin/python bench/db_access.py --help
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

try:
    import aiosqlite

    # trio-asyncio ships no py.typed marker and typeshed has no stubs for it, so mypy sees it
    # as untyped; its wrappers are used as Any in the few places below.
    import trio_asyncio  # type: ignore[import-untyped]
except ImportError as _exc:
    HAVE_ASYNC_DEPS = False
    MISSING_DEPS_REASON = str(_exc)
else:
    HAVE_ASYNC_DEPS = True
    MISSING_DEPS_REASON = ""

INSTALL_HINT = "pip install aiosqlite trio-asyncio"

# A statement and its parameters.
Statement = tuple[str, tuple[object, ...]]
# Runs one event-persist transaction (the 6 DML statements) however the access path does it.
Txn = Callable[[Sequence[Statement]], Awaitable[None]]

SCHEMA = """
CREATE TABLE events (
    stream_ordering INTEGER PRIMARY KEY,
    topological_ordering INTEGER NOT NULL,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    origin_server_ts INTEGER NOT NULL,
    received_ts INTEGER NOT NULL,
    outlier INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE TABLE event_json (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    format_version INTEGER NOT NULL,
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

INSERT_EVENT = (
    "INSERT INTO events (stream_ordering, topological_ordering, event_id, room_id, type,"
    " state_key, sender, origin_server_ts, received_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_EVENT_JSON = (
    "INSERT INTO event_json (event_id, room_id, format_version, json) VALUES (?, ?, ?, ?)"
)
INSERT_EVENT_EDGE = "INSERT INTO event_edges (event_id, prev_event_id, room_id) VALUES (?, ?, ?)"
DELETE_EXTREMITY = "DELETE FROM event_forward_extremities WHERE room_id = ? AND event_id = ?"
INSERT_EXTREMITY = "INSERT INTO event_forward_extremities (room_id, event_id) VALUES (?, ?)"
UPSERT_CURRENT_STATE = (
    "INSERT INTO current_state_events (room_id, type, state_key, event_id, membership)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (room_id, type, state_key)"
    " DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership"
)
STATEMENTS_PER_TXN = 8  # BEGIN IMMEDIATE + 6 DML + COMMIT

ROOMS = 20
USERS_PER_ROOM = 50


class EventSource:
    """Deterministic stream of event-persist transactions (parameters built before timing)."""

    def __init__(self) -> None:
        self._stream = 0
        self._depth = dict.fromkeys(range(ROOMS), 0)
        self._last_event: dict[int, str] = {}

    def take(self, n: int) -> list[list[Statement]]:
        return [self._next() for _ in range(n)]

    def _next(self) -> list[Statement]:
        self._stream += 1
        stream = self._stream
        room = stream % ROOMS
        room_id = f"!room{room:04d}:bench.example.org"
        self._depth[room] += 1
        depth = self._depth[room]
        event_id = f"$ev{stream:010d}-bench-event-id-padding-abcdefgh"
        prev_event_id = self._last_event.get(room, f"$create-{room}")
        self._last_event[room] = event_id
        user = f"@user{stream % USERS_PER_ROOM:03d}:bench.example.org"
        ts = 1_700_000_000_000 + stream
        event = {
            "auth_events": [f"$create-{room}", f"$power-levels-{room}", prev_event_id],
            "content": {"membership": "join", "displayname": f"Bench User {user[5:8]}"},
            "depth": depth,
            "hashes": {"sha256": "x" * 43},
            "origin_server_ts": ts,
            "prev_events": [prev_event_id],
            "room_id": room_id,
            "sender": user,
            "signatures": {"bench.example.org": {"ed25519:a_bench": "s" * 86}},
            "state_key": user,
            "type": "m.room.member",
            "unsigned": {"age_ts": ts},
        }
        event_json = json.dumps(event, separators=(",", ":"), sort_keys=True)
        return [
            (
                INSERT_EVENT,
                (stream, depth, event_id, room_id, "m.room.member", user, user, ts, ts + 5),
            ),
            (INSERT_EVENT_JSON, (event_id, room_id, 10, event_json)),
            (INSERT_EVENT_EDGE, (event_id, prev_event_id, room_id)),
            (DELETE_EXTREMITY, (room_id, prev_event_id)),
            (INSERT_EXTREMITY, (room_id, event_id)),
            (UPSERT_CURRENT_STATE, (room_id, "m.room.member", user, event_id, "join")),
        ]


def sample_json_size() -> int:
    return len(str(EventSource().take(1)[0][1][1][3]))


# ---------------------------------------------------------------------------------------------
# Database files and variant A (stdlib sqlite3, one thread hop per transaction)
# ---------------------------------------------------------------------------------------------


def create_database(path: Path) -> None:
    """Create a fresh WAL-mode database with the schema (WAL mode persists in the file)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise RuntimeError(f"could not enable WAL mode on {path}: got {mode!r}")
        conn.executescript(SCHEMA)
    finally:
        conn.close()


def open_writer(path: Path, sync: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute(f"PRAGMA synchronous={sync}")
    return conn


def persist_event_sync(conn: sqlite3.Connection, statements: Sequence[Statement]) -> None:
    """The whole transaction as a plain synchronous function over a DB-API cursor."""
    cur = conn.cursor()
    try:
        cur.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in statements:
                cur.execute(sql, params)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    finally:
        cur.close()


def thread_hop_txn(conn: sqlite3.Connection) -> Txn:
    async def txn(statements: Sequence[Statement]) -> None:
        await trio.to_thread.run_sync(persist_event_sync, conn, statements)

    return txn


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def check_persisted(path: Path, expected: int) -> None:
    conn = sqlite3.connect(path)
    try:
        (n,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
        (m,) = conn.execute("SELECT COUNT(*) FROM event_forward_extremities").fetchone()
    finally:
        conn.close()
    if n != expected or m != ROOMS:
        raise RuntimeError(f"{path}: {n} events (expected {expected}), {m} extremities")


# ---------------------------------------------------------------------------------------------
# Variant B (aiosqlite through trio-asyncio, one await per statement)
# ---------------------------------------------------------------------------------------------

# These run on the asyncio side of trio-asyncio; Trio code calls them via aio_as_trio.


async def _aio_connect(path: Path, sync: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    await conn.execute(f"PRAGMA synchronous={sync}")
    return conn


async def _aio_execute(conn: aiosqlite.Connection, sql: str, params: tuple[object, ...]) -> None:
    # One aiosqlite round trip: the cursor is not closed (closing it would be another hop).
    await conn.execute(sql, params)


async def _aio_close(conn: aiosqlite.Connection) -> None:
    await conn.close()


async def _aio_noop() -> None:
    return None


async def aio_connect(path: Path, sync: str) -> aiosqlite.Connection:
    conn: aiosqlite.Connection = await trio_asyncio.aio_as_trio(_aio_connect)(path, sync)
    return conn


async def aio_close(conn: aiosqlite.Connection) -> None:
    await trio_asyncio.aio_as_trio(_aio_close)(conn)


def aiosqlite_txn(conn: aiosqlite.Connection) -> Txn:
    execute = trio_asyncio.aio_as_trio(_aio_execute)

    async def txn(statements: Sequence[Statement]) -> None:
        await execute(conn, "BEGIN IMMEDIATE", ())
        try:
            for sql, params in statements:
                await execute(conn, sql, params)
            await execute(conn, "COMMIT", ())
        except BaseException:
            with trio.CancelScope(shield=True):
                await execute(conn, "ROLLBACK", ())
            raise

    return txn


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


@dataclass
class TxnResult:
    path: str
    sync: str
    concurrency: int
    count: int
    elapsed: list[float] = field(default_factory=list)

    def rates(self) -> list[float]:
        return [self.count / e for e in self.elapsed]

    @property
    def txn_per_s(self) -> float:
        return statistics.median(self.rates())

    @property
    def us_per_txn(self) -> float:
        return 1e6 / self.txn_per_s


@dataclass
class HopResult:
    name: str
    per_op_s: list[float] = field(default_factory=list)

    @property
    def ms(self) -> float:
        return statistics.median(self.per_op_s) * 1e3


async def run_tasks(concurrency: int, batch: list[list[Statement]], txn: Txn) -> float:
    """Persist every transaction in `batch` from `concurrency` tasks sharing one writer."""
    lock = trio.Lock()
    todo: Iterator[list[Statement]] = iter(batch)

    async def worker() -> None:
        for statements in todo:  # shared iterator: each transaction is taken by one task
            async with lock:
                await txn(statements)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return time.perf_counter() - start


@dataclass
class Config:
    count: int
    warmup: int
    repeat: int
    syncs: list[str]
    concurrencies: list[int]
    variants: list[str]
    tmpdir: Path


async def measure_txns(cfg: Config, variant: str, sync: str, concurrency: int) -> TxnResult:
    result = TxnResult(variant, sync, concurrency, cfg.count)
    for rep in range(cfg.repeat):
        path = cfg.tmpdir / f"{variant}-{sync}-c{concurrency}-r{rep}.db"
        await trio.to_thread.run_sync(create_database, path)
        source = EventSource()
        warm, timed = source.take(cfg.warmup), source.take(cfg.count)
        if variant == "A":
            conn = await trio.to_thread.run_sync(open_writer, path, sync)
            try:
                txn = thread_hop_txn(conn)
                await run_tasks(concurrency, warm, txn)
                result.elapsed.append(await run_tasks(concurrency, timed, txn))
            finally:
                conn.close()
        else:
            aconn = await aio_connect(path, sync)
            try:
                txn = aiosqlite_txn(aconn)
                await run_tasks(concurrency, warm, txn)
                result.elapsed.append(await run_tasks(concurrency, timed, txn))
            finally:
                await aio_close(aconn)
        await trio.to_thread.run_sync(check_persisted, path, cfg.warmup + cfg.count)
        await trio.to_thread.run_sync(remove_database, path)
    rate = result.txn_per_s
    print(f"  {variant} sync={sync:<6} tasks={concurrency:<3} {rate:9,.0f} txn/s", flush=True)
    return result


async def time_hops(n: int, warmup: int, op: Callable[[], Awaitable[object]]) -> float:
    for _ in range(warmup):
        await op()
    start = time.perf_counter()
    for _ in range(n):
        await op()
    return (time.perf_counter() - start) / n


async def measure_thread_hops(cfg: Config) -> list[HopResult]:
    path = cfg.tmpdir / "hops-thread.db"
    await trio.to_thread.run_sync(create_database, path)
    conn = await trio.to_thread.run_sync(open_writer, path, "NORMAL")

    def noop() -> None:
        return None

    def select_one() -> None:
        conn.execute("SELECT 1").close()

    async def empty_hop() -> None:
        await trio.to_thread.run_sync(noop)

    async def select_hop() -> None:
        await trio.to_thread.run_sync(select_one)

    async def select_inline() -> None:
        select_one()  # deliberately blocking: the no-hop reference point

    cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("trio.to_thread.run_sync(lambda: None) round trip", empty_hop),
        ("sqlite3 SELECT 1 in trio.to_thread.run_sync", select_hop),
        ("sqlite3 SELECT 1 inline, no hop (reference)", select_inline),
    ]
    results = [HopResult(name) for name, _ in cases]
    try:
        for _ in range(cfg.repeat):
            for res, (_, op) in zip(results, cases, strict=True):
                res.per_op_s.append(await time_hops(cfg.count, cfg.warmup, op))
    finally:
        conn.close()
    return results


async def measure_aio_hops(cfg: Config) -> list[HopResult]:
    path = cfg.tmpdir / "hops-aio.db"
    await trio.to_thread.run_sync(create_database, path)
    conn = await aio_connect(path, "NORMAL")
    execute = trio_asyncio.aio_as_trio(_aio_execute)
    noop = trio_asyncio.aio_as_trio(_aio_noop)

    async def select_hop() -> None:
        await execute(conn, "SELECT 1", ())

    async def boundary_hop() -> None:
        await noop()

    cases: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("aiosqlite SELECT 1 through trio-asyncio", select_hop),
        ("trio-asyncio aio_as_trio(no-op coroutine) only", boundary_hop),
    ]
    results = [HopResult(name) for name, _ in cases]
    try:
        for _ in range(cfg.repeat):
            for res, (_, op) in zip(results, cases, strict=True):
                res.per_op_s.append(await time_hops(cfg.count, cfg.warmup, op))
    finally:
        await aio_close(conn)
    return results


async def measure_plain_asyncio_hop(cfg: Config) -> HopResult:
    """aiosqlite SELECT 1 on a plain asyncio loop: aiosqlite's own cost without trio-asyncio."""
    path = cfg.tmpdir / "hops-asyncio.db"
    create_database(path)
    conn = await _aio_connect(path, "NORMAL")
    result = HopResult("aiosqlite SELECT 1, plain asyncio (reference)")

    async def op() -> None:
        await _aio_execute(conn, "SELECT 1", ())

    try:
        for _ in range(cfg.repeat):
            for _ in range(cfg.warmup):
                await op()
            start = time.perf_counter()
            for _ in range(cfg.count):
                await op()
            result.per_op_s.append((time.perf_counter() - start) / cfg.count)
    finally:
        await conn.close()
    return result


async def trio_main(cfg: Config) -> tuple[list[TxnResult], list[HopResult]]:
    txns: list[TxnResult] = []
    hops: list[HopResult] = []
    if "A" in cfg.variants:
        print("A: stdlib sqlite3, whole transaction in one to_thread.run_sync hop", flush=True)
        for sync in cfg.syncs:
            for conc in cfg.concurrencies:
                txns.append(await measure_txns(cfg, "A", sync, conc))
        hops += await measure_thread_hops(cfg)
    if "B" in cfg.variants and HAVE_ASYNC_DEPS:
        print("B: aiosqlite through trio-asyncio, one await per statement", flush=True)
        async with trio_asyncio.open_loop():
            for sync in cfg.syncs:
                for conc in cfg.concurrencies:
                    txns.append(await measure_txns(cfg, "B", sync, conc))
            hops += await measure_aio_hops(cfg)
    return txns, hops


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

PATH_NAMES = {
    "A": "A sqlite3, 1 thread hop/txn",
    "B": "B aiosqlite+trio-asyncio, 1 await/stmt",
}


def version_of(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def print_report(cfg: Config, txns: list[TxnResult], hops: list[HopResult]) -> None:
    print()
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"trio {version_of('trio')}, aiosqlite {version_of('aiosqlite')}, "
        f"trio-asyncio {version_of('trio-asyncio')}; {os.cpu_count()} CPUs; "
        f"{platform.system()} {platform.release()}"
    )
    print(
        f"Transaction: BEGIN IMMEDIATE + 5 steps (6 DML statements) + COMMIT = "
        f"{STATEMENTS_PER_TXN} statements; event JSON {sample_json_size()} bytes; WAL mode; "
        f"db in {cfg.tmpdir}"
    )
    print(
        f"Each row: median of {cfg.repeat} run(s) of {cfg.count:,} transactions after "
        f"{cfg.warmup:,} warm-up, fresh database per run; N tasks share one writer via trio.Lock"
    )
    print()
    header = (
        f"{'access path':<41} {'synchronous':<11} {'tasks':>5} {'txn/s':>9} "
        f"{'µs/txn':>8} {'txn/s min-max':>17}"
    )
    print(header)
    print("-" * len(header))
    for r in txns:
        rates = r.rates()
        spread = f"{min(rates):,.0f}-{max(rates):,.0f}"
        print(
            f"{PATH_NAMES[r.path]:<41} {r.sync:<11} {r.concurrency:>5} {r.txn_per_s:>9,.0f} "
            f"{r.us_per_txn:>8.1f} {spread:>17}"
        )
    if "B" in cfg.variants and not HAVE_ASYNC_DEPS:
        print(f"{PATH_NAMES['B']:<41} skipped: {INSTALL_HINT}")

    print()
    header = f"{'per-hop cost (median of per-run means)':<52} {'ms/op':>8} {'µs/op':>8}"
    print(header)
    print("-" * len(header))
    for h in hops:
        print(f"{h.name:<52} {h.ms:>8.4f} {h.ms * 1e3:>8.1f}")

    by_key = {(r.path, r.sync, r.concurrency): r for r in txns}
    lines: list[str] = []
    for sync in cfg.syncs:
        for conc in cfg.concurrencies:
            a, b = by_key.get(("A", sync, conc)), by_key.get(("B", sync, conc))
            if a and b:
                per_stmt_ms = (b.us_per_txn - a.us_per_txn) / STATEMENTS_PER_TXN / 1e3
                lines.append(
                    f"  synchronous={sync}, {conc} task(s): A is {a.txn_per_s / b.txn_per_s:.1f}x "
                    f"B; B's extra cost is {per_stmt_ms:.3f} ms per statement"
                )
    for path in ("A", "B"):
        for conc in cfg.concurrencies:
            full, normal = by_key.get((path, "FULL", conc)), by_key.get((path, "NORMAL", conc))
            if full and normal:
                extra_us = full.us_per_txn - normal.us_per_txn
                lines.append(
                    f"  {path}, {conc} task(s): FULL costs {extra_us:+.1f} µs/txn over NORMAL"
                    f" (NORMAL is {normal.txn_per_s / full.txn_per_s:.2f}x FULL's rate)"
                )
    if lines:
        print()
        print("Derived:")
        print("\n".join(lines))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Time a 5-step event-persist SQLite (WAL) transaction: stdlib sqlite3 in one "
            "trio.to_thread.run_sync hop (A) vs aiosqlite through trio-asyncio with one await "
            "per statement (B), under synchronous=FULL and NORMAL, plus per-hop costs."
        ),
        epilog=f"Variant B needs bench-only packages: {INSTALL_HINT}",
    )
    parser.add_argument(
        "--count", type=int, default=3000, help="timed transactions (and hops) per run [3000]"
    )
    parser.add_argument(
        "--warmup", type=int, default=300, help="untimed transactions before each run [300]"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs per measurement; the median is shown [3]"
    )
    parser.add_argument(
        "--sync",
        nargs="+",
        choices=["FULL", "NORMAL", "OFF", "EXTRA"],
        default=["FULL", "NORMAL"],
        help="PRAGMA synchronous modes to measure [FULL NORMAL]",
    )
    parser.add_argument(
        "--concurrency",
        nargs="+",
        type=int,
        default=[1, 10],
        help="numbers of trio tasks sharing the writer connection [1 10]",
    )
    parser.add_argument(
        "--variant",
        nargs="+",
        choices=["A", "B"],
        default=["A", "B"],
        help="access paths to measure [A B]",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="directory in which to create the temporary database directory [system temp dir]",
    )
    args = parser.parse_args(argv)
    if args.count < 1 or args.warmup < 0 or args.repeat < 1 or min(args.concurrency) < 1:
        parser.error("--count, --repeat and --concurrency must be >= 1, --warmup >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if "B" in args.variant and not HAVE_ASYNC_DEPS:
        print(
            f"Variant B skipped: {MISSING_DEPS_REASON}. It needs the bench-only packages "
            f"aiosqlite and trio-asyncio:\n    {INSTALL_HINT}\n(into the venv: "
            f".venv/bin/pip install aiosqlite trio-asyncio). Running variant A only.\n",
            file=sys.stderr,
            flush=True,
        )
    with tempfile.TemporaryDirectory(prefix="trioserver-db-bench-", dir=args.dir) as tmp:
        cfg = Config(
            count=args.count,
            warmup=args.warmup,
            repeat=args.repeat,
            syncs=list(dict.fromkeys(args.sync)),
            concurrencies=list(dict.fromkeys(args.concurrency)),
            variants=list(dict.fromkeys(args.variant)),
            tmpdir=Path(tmp),
        )
        txns, hops = trio.run(trio_main, cfg)
        if "B" in cfg.variants and HAVE_ASYNC_DEPS:
            hops.append(asyncio.run(measure_plain_asyncio_hop(cfg)))
        print_report(cfg, txns, hops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
