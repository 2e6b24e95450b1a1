"""trioserver and Synapse side by side: the same workloads on the same machine, in one run.

Each server in turn (trioserver first, then Synapse), on a fresh data dir under the system
temp dir, with open registration, bcrypt cost 4 and no rate limits:

1. start it: start-up time, spawn to the first 200 of ``GET /versions`` (fresh data dir, so
   both create their database schema; after one untimed start and stop, see `warm_up`,
   and a timed restart of that throwaway server on its existing data dir);
2. register one user and stay idle (2 s): idle RSS;
3. run the workloads (`basic_workloads`, `sync_workloads`, `media_workloads`; each sets
   itself up untimed and times one phase), one after the other on the same process, each
   once the server has gone idle (`settle`);
4. peak RSS (VmHWM), the database's size (main file + ``-wal`` + ``-shm``), and the bytes the
   database grew per message while the ``messages`` workload filled its room (used pages,
   ``page_count - freelist_count``, read through a separate SQLite connection before and
   after: WAL-aware, so no checkpoint is needed).

The ``media`` workload times 1 MB upload + download pairs, then sends one 100 MB file with
the server's RSS sampled, for four resource rows shown only when it ran (`bench/media.py`
has the full media picture). Both servers are configured for 100 MB uploads.

Then one table: per workload the headline figure of both servers, their ratio in the
direction that is better ("x faster", "x lower"), the issue's target where there is one,
server CPU per operation and the load generator's own CPU share (one core = 100%; 2 cores
in all), so that one can see it was not the bottleneck.

Synapse (PyPI ``matrix-synapse``, the newest release unless ``--synapse-version``) is
installed on first use into a venv under ``~/.cache/trioserver-bench`` (see `synapse`).

``--backend postgres`` runs both servers on the machine's PostgreSQL instead of SQLite
(`pglib`: 127.0.0.1:5432, trust auth for ``postgres``, or ``$TRIOSERVER_BENCH_POSTGRES``):
trioserver with ``[database] backend = "postgres"``, Synapse with its psycopg2 database
(psycopg2-binary is installed into its venv), each server (the throwaway one of the warm-up
too) on a fresh C-collated database of its own, dropped when it stops. The database rows
are then ``pg_database_size`` (every relation file, dead row versions not yet vacuumed
included), and a column adds the CPU of the PostgreSQL backends serving each server's
database (`pglib.BackendCpu`) per operation: the server's own CPU no longer includes the
database's work.

Run::

    .venv/bin/python bench/compare.py --quick          # smoke run, ~3 min
    .venv/bin/python bench/compare.py                  # full run, ~10-15 min
    .venv/bin/python bench/compare.py --server synapse --only send10 messages
    .venv/bin/python bench/compare.py --backend postgres
"""

from __future__ import annotations

import argparse
import functools
import math
import sqlite3
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

import trio

import trioserver
from pglib import BackendCpu, admin_dsn, database_size_bytes, new_database_name, server_version
from trioserver.stores import postgres_admin

from basic_workloads import (
    back_pagination,
    create_room,
    fill_room,
    join,
    login,
    register,
    run_tag,
    send,
)
from benchlib import (
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    machine_summary,
    print_table,
    write_config,
)
from loadgen import register_user
from media_workloads import (
    MB,
    Series,
    configure_trioserver_media,
    new_client,
    roundtrips,
    series,
)
from synapse import SynapseInstall, SynapseProcess, ensure_postgres_driver, ensure_synapse
from sync_workloads import delivery_latency, fanout, initial_sync
from workload import PhaseResult, TimedPhase

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

SERVERS = ("trioserver", "synapse")
BACKENDS = ("sqlite", "postgres")
DB_SETTLE_S = 1.0
SETTLE_WINDOW_S = 0.5
SETTLE_CPU_SHARE = 0.05
SETTLE_MAX_S = 30.0


@dataclass(frozen=True)
class Sizes:
    """How much each workload does: the full run's or the smoke run's."""

    users: int
    logins: int
    rooms: int
    joins: int
    send_s: float
    history: int
    walks: int
    delivery_samples: int
    fanout_messages: int
    sync_rooms: int
    sync_runs: int
    idle_s: float = 2.0
    media_files: int = 20


FULL = Sizes(300, 300, 100, 200, 10.0, 1000, 5, 200, 20, 100, 20)
QUICK = Sizes(50, 50, 20, 50, 2.0, 200, 2, 30, 5, 20, 3, media_files=5)


@dataclass(frozen=True)
class Spec:
    """One workload: how to run it and which figure of its result is the headline.

    `latency` workloads are compared on their median latency (lower is better), the others
    on operations per second (higher is better). `target` is the issue's factor in the
    better direction (5 = "at least 5x faster"), when it sets one.
    """

    name: str
    label: str
    run: Callable[[ServerProcess, Sizes], Awaitable[PhaseResult]]
    latency: bool = False
    target: float | None = None


SPECS = [
    Spec("register", "register (POST /register)", lambda s, z: register(s, users=z.users)),
    Spec("login", "login (POST /login)", lambda s, z: login(s, logins=z.logins)),
    Spec("create_room", "create room (public_chat)", lambda s, z: create_room(s, rooms=z.rooms)),
    Spec("join", "join one room", lambda s, z: join(s, users=z.joins)),
    Spec(
        "send10",
        "send, 10 senders, 10 members",
        lambda s, z: send(s, members=10, duration_s=z.send_s),
        target=5,
    ),
    Spec(
        "send100",
        "send, 10 senders, 100 members",
        lambda s, z: send(s, members=100, duration_s=z.send_s),
        target=5,
    ),
    Spec("messages", "/messages dir=b limit=20 (pages)", lambda s, z: _history(s, z)),
    Spec(
        "delivery",
        "delivery latency (send → long-poll)",
        lambda s, z: delivery_latency(s, samples=z.delivery_samples),
        latency=True,
        target=3,
    ),
    Spec(
        "fanout30",
        "fan-out K=30",
        lambda s, z: fanout(s, receivers=30, messages=z.fanout_messages),
        latency=True,
        target=3,
    ),
    Spec(
        "fanout100",
        "fan-out K=100",
        lambda s, z: fanout(s, receivers=100, messages=z.fanout_messages),
        latency=True,
        target=3,
    ),
    Spec(
        "initial_sync",
        "initial sync",
        lambda s, z: initial_sync(s, rooms=z.sync_rooms, runs=z.sync_runs),
        latency=True,
        target=3,
    ),
    Spec(
        "media",
        "media: upload + download 1 MB (streamed)",
        lambda s, z: _media(s, z),
        latency=True,
    ),
]


@dataclass
class ServerRun:
    """Everything measured on one server."""

    name: str
    version: str = ""
    startup_s: float = math.nan
    restart_s: float = math.nan
    idle_rss_kib: int = 0
    peak_rss_kib: int = 0
    db_bytes: int = 0
    db_bytes_per_message: float = math.nan
    # The `media` workload's 100 MB file (upload and download seconds, RSS growth).
    media_big: Series | None = None
    results: dict[str, PhaseResult] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


# -- Database size -------------------------------------------------------------------------


def database_files_bytes(db_path: Path) -> int:
    """The size on disk of the database: main file, ``-wal`` and ``-shm``."""
    paths = [db_path, db_path.with_name(db_path.name + "-wal")]
    paths.append(db_path.with_name(db_path.name + "-shm"))
    return sum(p.stat().st_size for p in paths if p.exists())


def database_used_bytes(db_path: Path) -> int:
    """The bytes of pages in use, as of the last commit (WAL included), free pages excluded.

    Read through a connection of our own that only reads, so that neither a pending
    checkpoint nor free pages left by deletions blur the growth per message.
    """
    conn = sqlite3.connect(db_path, timeout=30)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    finally:
        conn.close()
    return int((pages - free) * size)


@dataclass
class Storage:
    """Where one server keeps its data: its SQLite file, or a PostgreSQL database of its own.

    A PostgreSQL database is created with the `Storage` and dropped by `close`; `cpu` then
    reads the CPU of the backends serving it.
    """

    sqlite_path: Path | None = None
    postgres_name: str | None = None
    cpu: BackendCpu | None = None

    @classmethod
    def sqlite(cls, data_dir: Path) -> Storage:
        """Both servers keep their SQLite database as ``homeserver.db`` in the data dir."""
        return cls(sqlite_path=data_dir / "homeserver.db")

    @classmethod
    def postgres(cls) -> tuple[Storage, str]:
        """A fresh C-collated database on the machine's PostgreSQL, and its DSN."""
        name = new_database_name("trioserver_bench_compare")
        dsn = postgres_admin.create_database(admin_dsn(), name)
        return cls(postgres_name=name, cpu=BackendCpu(admin_dsn(), name)), dsn

    def used_bytes(self) -> int:
        """SQLite: pages in use; PostgreSQL: ``pg_database_size``."""
        if self.postgres_name is not None:
            return database_size_bytes(admin_dsn(), self.postgres_name)
        assert self.sqlite_path is not None
        return database_used_bytes(self.sqlite_path)

    def files_bytes(self) -> int:
        """SQLite: main file + ``-wal`` + ``-shm``; PostgreSQL: ``pg_database_size``."""
        if self.postgres_name is not None:
            return database_size_bytes(admin_dsn(), self.postgres_name)
        assert self.sqlite_path is not None
        return database_files_bytes(self.sqlite_path)

    def close(self) -> None:
        """Drop the PostgreSQL database (its server must have stopped)."""
        if self.cpu is not None:
            _backend_cpu_s.append(self.cpu.cpu_s())
            self.cpu.close()
        if self.postgres_name is not None:
            postgres_admin.drop_database(admin_dsn(), self.postgres_name)


# Each running server's storage, by base URL (`_history` gets only the server).
_storages: dict[str, Storage] = {}
# The CPU seconds of each closed storage's PostgreSQL backends: `BackgroundLoad` counts them
# as other processes' load, which they are not.
_backend_cpu_s: list[float] = []


# Database growth per message, by server base URL: the `messages` workload measures it in
# passing, and a `Spec.run` returns only its PhaseResult; `run_server` collects it.
_storage: dict[str, float] = {}


async def _history(server: ServerProcess, sizes: Sizes) -> PhaseResult:
    """Fill a 10-member room (measuring the database's growth per message), then page it."""
    storage = _storages[server.base_url]
    before = storage.used_bytes()
    room = await fill_room(server, messages=sizes.history)
    await trio.sleep(DB_SETTLE_S)  # let background writers (push summaries, stats) catch up
    _storage[server.base_url] = (storage.used_bytes() - before) / room.messages
    return await back_pagination(server, room=room, walks=sizes.walks)


# The `media` workload's 100 MB transfer, by server base URL (collected as `_storage` is).
_media_big: dict[str, Series] = {}


async def _media(server: ServerProcess, sizes: Sizes) -> PhaseResult:
    """Upload and download 1 MB files, timed per pair; then one untimed 100 MB file.

    The pairs are the workload's operations (see `media_workloads`; bench/media.py has the
    full picture). The 100 MB file is sent after the timed phase, with the server's RSS
    sampled, for the resource rows.
    """
    result = PhaseResult("media")
    async with new_client(server.base_url) as client:
        _, token = await register_user(client, "media-" + run_tag())
        with TimedPhase(server, result):
            result.latencies_s = await roundtrips(client, token, size=MB, count=sizes.media_files)
        result.ops = len(result.latencies_s)
        big = await series(client, server, token, size=100 * MB, count=1, sample_rss=True)
    _media_big[server.base_url] = big
    return result


# -- Running one server --------------------------------------------------------------------


async def idle_rss_kib(server: ServerProcess, idle_s: float) -> int:
    """VmRSS after one user registered and `idle_s` seconds without requests."""
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        await register_user(client, "idle-user")
    await trio.sleep(idle_s)
    return server.memory_kib()["VmRSS"]


def make_server(
    name: str, root: Path, install: SynapseInstall | None, backend: str = "sqlite"
) -> tuple[ServerProcess, Storage]:
    """A not yet started server of kind `name` on a fresh data dir under `root`, with its
    storage (with PostgreSQL: a fresh database, which `Storage.close` drops)."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
    storage, dsn = Storage.sqlite(data_dir), None
    if backend == "postgres":
        storage, dsn = Storage.postgres()
    server: ServerProcess
    try:
        if name == "synapse":
            assert install is not None
            synapse = SynapseProcess(install, data_dir, postgres_database=storage.postgres_name)
            synapse.configure()
            server = synapse
        else:
            configure_trioserver_media(write_config(data_dir, postgres_dsn=dsn))
            server = ServerProcess(data_dir, env=bytecode_cache_env(root / "pycache"))
    except BaseException:
        storage.close()
        raise
    if storage.cpu is not None:
        server.database_cpu = storage.cpu.cpu_s
    return server, storage


def warm_up(name: str, root: Path, install: SynapseInstall | None, backend: str) -> float:
    """Start a throwaway server twice before the measured one; the second start's seconds.

    The first, untimed, start fills trioserver's bytecode cache (an installed package has
    its ``.pyc`` files, as Synapse's venv has) and brings both servers' files into the OS
    page cache, so that neither start-up pays for being the first on the machine. The second
    start reuses the data dir (signing key and schema exist): a restart.
    """
    server, storage = make_server(name, root, install, backend)
    try:
        server.start()
        server.stop()
        try:
            return server.start()
        finally:
            server.stop()
    finally:
        storage.close()


def run_server(
    name: str,
    root: Path,
    install: SynapseInstall | None,
    specs: list[Spec],
    sizes: Sizes,
    backend: str,
) -> ServerRun:
    """Start a fresh server, measure it, run `specs` on it, stop it."""
    run = ServerRun(name, install.version if install else "")
    run.restart_s = warm_up(name, root, install, backend)
    server, storage = make_server(name, root, install, backend)
    try:
        run.startup_s = server.start()
        print(f"{name}: ready in {run.startup_s:.2f} s at {server.base_url}", flush=True)
        _storages[server.base_url] = storage
        run.idle_rss_kib = trio.run(idle_rss_kib, server, sizes.idle_s)
        for spec in specs:
            _run_spec(server, spec, sizes, run)
        run.peak_rss_kib = server.memory_kib()["VmHWM"]
        run.db_bytes = storage.files_bytes()
        run.db_bytes_per_message = _storage.pop(server.base_url, math.nan)
        run.media_big = _media_big.pop(server.base_url, None)
    finally:
        server.database_cpu_s()  # a last reading of its backends while they are connected
        status = server.stop()
        if status not in (0, -15):
            print(f"{name}: exited with status {status}:\n{server.log_tail()}")
        _storages.pop(server.base_url, None)
        storage.close()
    return run


def settle(server: ServerProcess) -> float:
    """Wait until the server is idle (background work of the workload before); seconds.

    Synapse keeps working after a burst of requests (user directory, stats, push
    summaries); without this that work would be charged to whichever workload comes next.
    Idle is under `SETTLE_CPU_SHARE` of a core over `SETTLE_WINDOW_S`, at most
    `SETTLE_MAX_S`.
    """

    def busy_s() -> float:  # with PostgreSQL, its backends' work for the server counts too
        return server.cpu_s() + (server.database_cpu_s() or 0.0)

    started = time.perf_counter()
    while time.perf_counter() - started < SETTLE_MAX_S:
        before = busy_s()
        time.sleep(SETTLE_WINDOW_S)
        if busy_s() - before < SETTLE_CPU_SHARE * SETTLE_WINDOW_S:
            break
    return time.perf_counter() - started


def _run_spec(server: ServerProcess, spec: Spec, sizes: Sizes, run: ServerRun) -> None:
    """Run one workload once the server is idle, keeping going when it fails."""
    waited = settle(server)
    if waited > 2 * SETTLE_WINDOW_S:
        print(f"  ({waited:.1f} s until the server was idle)", flush=True)
    started = time.perf_counter()
    try:
        result = trio.run(functools.partial(spec.run, server, sizes))
    except Exception as error:  # one failed workload must not lose the rest
        run.failures[spec.name] = f"{type(error).__name__}: {error}"[:300]
        print(f"  {spec.name}: FAILED: {run.failures[spec.name]}", flush=True)
        return
    run.results[spec.name] = result
    took = time.perf_counter() - started
    print(f"  {spec.name}: {_headline(spec, result):.1f} ({took:.0f} s with set-up)", flush=True)


# -- The table -----------------------------------------------------------------------------


def _headline(spec: Spec, result: PhaseResult) -> float:
    return result.latency_ms() if spec.latency else result.rate


def ratio_text(ours: float, theirs: float, *, lower_is_better: bool) -> tuple[str, float]:
    """How many times better trioserver is, in words, and as a factor (> 1 is better)."""
    if not (ours > 0 and theirs > 0):
        return "-", math.nan
    factor = theirs / ours if lower_is_better else ours / theirs
    better, worse = ("lower", "higher") if lower_is_better else ("faster", "slower")
    if factor >= 1:
        return f"{factor:.1f}x {better}", factor
    return f"{1 / factor:.1f}x {worse}", factor


# RSS growth below this is allocator noise (freed arenas reused, page granularity): a ratio
# against it would be meaningless, so RSS growth ratios are taken against at least this much.
RSS_FLOOR_MB = 1.0


def rss_growth_ratio_text(ours_mb: float, theirs_mb: float) -> str:
    """`ratio_text` for two RSS growths in MB, each counted as at least `RSS_FLOOR_MB`."""
    if math.isnan(ours_mb) or math.isnan(theirs_mb):
        return "-"
    if max(ours_mb, theirs_mb) < RSS_FLOOR_MB:
        return f"both < {RSS_FLOOR_MB:g} MB"
    ours, theirs = max(ours_mb, RSS_FLOOR_MB), max(theirs_mb, RSS_FLOOR_MB)
    words, _ = ratio_text(ours, theirs, lower_is_better=True)
    return f"≥ {words}" if min(ours_mb, theirs_mb) < RSS_FLOOR_MB else words


def target_text(target: float | None, factor: float, lower_is_better: bool) -> str:
    """The issue's target and whether the factor meets it."""
    if target is None:
        return ""
    words = f"≥ {target:g}x {'lower' if lower_is_better else 'faster'}"
    if target == 1:
        words = "≤ Synapse"
    if math.isnan(factor):
        return words
    return f"{words}: {'met' if factor >= target else 'MISSED'}"


def _pair(runs: dict[str, ServerRun], value: Callable[[ServerRun], str]) -> str:
    return " / ".join(value(runs[n]) if n in runs else "-" for n in SERVERS)


def workload_row(spec: Spec, runs: dict[str, ServerRun], backend: str = "sqlite") -> list[str]:
    """One row: headline of each server, ratio, target, p50, CPU per op (with PostgreSQL:
    and its backends' CPU per op), load-gen CPU."""
    results = {n: r.results.get(spec.name) for n, r in runs.items()}

    def figure(name: str) -> str:
        if name not in runs:
            return "-"
        if spec.name in runs[name].failures:
            return "failed"
        result = results[name]
        return f"{_headline(spec, result):.1f}" if result else "-"

    ours, theirs = (results.get(n) for n in SERVERS)
    ratio, factor = "-", math.nan
    if ours and theirs:
        ratio, factor = ratio_text(
            _headline(spec, ours), _headline(spec, theirs), lower_is_better=spec.latency
        )

    def per(fmt: Callable[[PhaseResult], str]) -> Callable[[ServerRun], str]:
        return lambda run: fmt(run.results[spec.name]) if spec.name in run.results else "-"

    unit = "p50 ms" if spec.latency else "ops/s"
    database_cpu = []
    if backend == "postgres":
        database_cpu = [_pair(runs, per(lambda r: f"{r.database_cpu_ms_per_op:.2f}"))]
    return [
        f"{spec.label}, {unit}",
        figure("trioserver"),
        figure("synapse"),
        ratio,
        target_text(spec.target, factor, spec.latency),
        _pair(runs, per(lambda r: f"{r.latency_ms(0.5):.1f}")),
        _pair(runs, per(lambda r: f"{r.latency_ms(0.99):.1f}")),
        _pair(runs, per(lambda r: f"{r.server_cpu_ms_per_op:.2f}")),
        *database_cpu,
        _pair(runs, per(lambda r: f"{r.client_cpu_share * 100:.0f}%")),
        _pair(runs, per(lambda r: f"{r.ops}")),
        _pair(runs, per(lambda r: f"{r.errors}")),
    ]


RESOURCES: list[tuple[str, Callable[[ServerRun], float], str, float | None]] = [
    ("start-up, fresh data dir, s", lambda r: r.startup_s, "{:.2f}", None),
    ("start-up, reused data dir, s", lambda r: r.restart_s, "{:.2f}", None),
    ("idle RSS, MB", lambda r: r.idle_rss_kib / 1024, "{:.1f}", 2),
    ("peak RSS (VmHWM), MB", lambda r: r.peak_rss_kib / 1024, "{:.1f}", None),
    ("database at the end (db + wal + shm), MB", lambda r: r.db_bytes / 1e6, "{:.1f}", None),
    ("database growth per message, bytes", lambda r: r.db_bytes_per_message, "{:.0f}", 1),
]


def _media_figure(value: Callable[[Series], float]) -> Callable[[ServerRun], float]:
    return lambda run: value(run.media_big) if run.media_big else math.nan


def _kib_mb(kib: int | None) -> float:
    return kib * 1024 / MB if kib is not None else math.nan


# Only when the `media` workload ran. RSS growth is over the RSS just before the transfer,
# sampled every 10 ms; the target (< 20 MB) is absolute, not a ratio.
MEDIA_RESOURCES: list[tuple[str, Callable[[ServerRun], float], str, float | None]] = [
    ("media: 100 MB upload, s", _media_figure(lambda s: s.upload_s[0]), "{:.2f}", None),
    ("media: 100 MB download, s", _media_figure(lambda s: s.download_s[0]), "{:.2f}", None),
    (
        "media: 100 MB upload, RSS growth, MB (< 20)",
        _media_figure(lambda s: _kib_mb(s.upload_rss_kib)),
        "{:.1f}",
        None,
    ),
    (
        "media: 100 MB download, RSS growth, MB (< 20)",
        _media_figure(lambda s: _kib_mb(s.download_rss_kib)),
        "{:.1f}",
        None,
    ),
]


def _format(fmt: str, value: float) -> str:
    return "-" if math.isnan(value) else fmt.format(value)


POSTGRES_LABELS = {
    "database at the end (db + wal + shm), MB": "database at the end (pg_database_size), MB",
    "database growth per message, bytes": "database growth per message (pg_database_size), bytes",
}


def resource_rows(runs: dict[str, ServerRun], backend: str = "sqlite") -> list[list[str]]:
    """Rows for start-up, memory and storage (lower is better for all)."""
    rows = []
    resources = RESOURCES
    if any(run.media_big for run in runs.values()):
        resources = RESOURCES + MEDIA_RESOURCES
    blanks = len(headers(backend)) - 5
    for label, value, fmt, target in resources:
        if backend == "postgres":
            label = POSTGRES_LABELS.get(label, label)
        figures = [_format(fmt, value(runs[n])) if n in runs else "-" for n in SERVERS]
        ratio, factor = "-", math.nan
        if all(n in runs for n in SERVERS):
            ratio, factor = ratio_text(*(value(runs[n]) for n in SERVERS), lower_is_better=True)
            if "RSS growth" in label:
                ratio = rss_growth_ratio_text(*(value(runs[n]) for n in SERVERS))
        target_words = target_text(target, factor, True)
        rows.append([label, *figures, ratio, target_words, *["" for _ in range(blanks)]])
    return rows


HEADERS = [
    "measure",
    "trioserver",
    "Synapse",
    "trioserver vs Synapse",
    "target (issue)",
    "p50 ms (t / S)",
    "p99 ms (t / S)",
    "server CPU ms/op (t / S)",
    "load-gen CPU (t / S)",
    "ops (t / S)",
    "errors (t / S)",
]
DATABASE_CPU_HEADER = "PostgreSQL CPU ms/op (t / S)"


def headers(backend: str) -> list[str]:
    """The table's columns; with PostgreSQL, its backends' CPU after the server's."""
    if backend != "postgres":
        return HEADERS
    at = HEADERS.index("server CPU ms/op (t / S)") + 1
    return [*HEADERS[:at], DATABASE_CPU_HEADER, *HEADERS[at:]]


def target_lines(runs: dict[str, ServerRun], specs: list[Spec]) -> list[str]:
    """The issue's ratio targets, each beside the figures it was measured from."""
    lines = []
    for spec in specs:
        if spec.target is None or not all(n in runs for n in SERVERS):
            continue
        ours, theirs = (runs[n].results.get(spec.name) for n in SERVERS)
        if ours is None or theirs is None:
            lines.append(f"  {spec.label}: not measured")
            continue
        a, b = _headline(spec, ours), _headline(spec, theirs)
        if spec.latency:
            factor = b / a if a > 0 else math.nan
            wanted = f"p50 ≤ 1/{spec.target:g} of Synapse's"
            measured = f"1/{factor:.1f} ({a:.1f} ms against {b:.1f} ms)"
        else:
            factor = a / b if b > 0 else math.nan
            wanted = f"≥ {spec.target:g}x Synapse's rate"
            measured = f"{factor:.1f}x ({a:.1f} against {b:.1f} ops/s)"
        verdict = "met" if factor >= spec.target else "NOT MET"
        lines.append(f"  {spec.label}: target {wanted}; measured {measured}: {verdict}")
    return lines


def print_report(runs: dict[str, ServerRun], specs: list[Spec], backend: str = "sqlite") -> None:
    """The comparison table, the issue's targets, then any failures."""
    print()
    rows = [workload_row(spec, runs, backend) for spec in specs] + resource_rows(runs, backend)
    print_table(headers(backend), rows)
    targets = target_lines(runs, specs)
    if targets:
        print()
        print(f"The issue's targets (both servers on {backend}):")
        print("\n".join(targets))
    for run in runs.values():
        for name, reason in run.failures.items():
            print(f"{run.name} {name} failed: {reason}")


# -- Command line --------------------------------------------------------------------------


def trioserver_revision() -> str:
    """The commit of the checkout trioserver is imported from, and whether its code differs."""
    package = Path(trioserver.__file__).parent
    git = ["git", "-C", str(package)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return f"{package} (not a git checkout)"
    dirty = subprocess.run([*git, "status", "--porcelain", "."], capture_output=True, text=True)
    state = " + uncommitted changes in trioserver/" if dirty.stdout.strip() else ""
    return f"commit {head.stdout.strip()}{state} ({package})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--server", choices=[*SERVERS, "both"], default="both")
    parser.add_argument(
        "--only", nargs="+", choices=[s.name for s in SPECS], help="run only these workloads"
    )
    parser.add_argument("--send-duration", type=float, help="seconds of each send phase")
    parser.add_argument("--synapse-version", help="matrix-synapse release (default: newest)")
    parser.add_argument(
        "--synapse-venv", type=Path, help="venv to use or create instead of the cache"
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="sqlite",
        help="both servers' database: SQLite files, or fresh databases on the machine's "
        "PostgreSQL (see the module docstring) [sqlite]",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run the selected workloads on each selected server and print the comparison."""
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.send_duration is not None:
        sizes = Sizes(**{**sizes.__dict__, "send_s": args.send_duration})
    specs = [s for s in SPECS if args.only is None or s.name in args.only]
    names = SERVERS if args.server == "both" else (args.server,)
    install = None
    if "synapse" in names:
        install = ensure_synapse(args.synapse_version, args.synapse_venv)
        if args.backend == "postgres":
            ensure_postgres_driver(install)
    print(f"machine: {machine_summary()}")
    print(f"trioserver: {trioserver_revision()}")
    if install is not None:
        print(f"Synapse: {install.version} ({install.python})")
    if args.backend == "postgres":
        print(f"database: {server_version(admin_dsn())}, a fresh database per server")
    print(f"sizes: {'quick' if args.quick else 'full'} {sizes}")
    background = BackgroundLoad()
    started = time.perf_counter()
    runs: dict[str, ServerRun] = {}
    with tempfile.TemporaryDirectory(prefix="trioserver-compare-") as tmp:
        for name in names:
            runs[name] = run_server(name, Path(tmp), install, specs, sizes, args.backend)
    print_report(runs, specs, args.backend)
    elapsed = time.perf_counter() - started
    print(f"total {elapsed:.0f} s")
    print(background.report())
    if _backend_cpu_s:
        share = sum(_backend_cpu_s) / elapsed
        print(
            f"  of which the PostgreSQL backends serving this run's databases: {share * 100:.0f}%"
            " of one core (PostgreSQL's own background processes are not told apart)"
        )


if __name__ == "__main__":
    main()
