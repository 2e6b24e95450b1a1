"""Measure start-up time and idle memory of a real `trioserver run` process.

Start-up time is the wall time from spawning ``python -m trioserver run --data-dir DIR --port
P`` to the first 200 answer of ``GET /_matrix/client/versions``, polled every 5 ms. Two cases:

* fresh: an empty data dir holding only ``trioserver.toml``, so the start creates the
  signing key and the SQLite database (schema) before it listens;
* reused: later starts on a data dir that already has them.

Both run with a bytecode cache (``.pyc`` files, as an installed package has; one untimed start
fills it first). A third case restarts without one, as a development checkout run with
``PYTHONDONTWRITEBYTECODE=1`` does, where every trioserver module is compiled at each start.
For each start the server's own CPU time up to readiness is read from ``/proc/<pid>/stat``.
A breakdown follows: a bare ``python -c pass`` (the interpreter's floor), the import time of
trio, hypercorn and trioserver (each in fresh interpreters, median of 5), and the rest.

Idle memory: one server is started, one user registers (``POST /register``), then after
``--idle`` seconds without requests VmRSS and VmHWM are read from ``/proc/<pid>/status``.

The config is the generated one, with open registration, bcrypt cost 4 and rate limiting off
(``[database] synchronous`` stays "full"). Targets (issue 2): start-up <= 0.5 s, idle RSS <=
50 MB; Synapse 1.163 on the same machine: 1.0 s and 116 MB.

Run (about 25 s)::

    .venv/bin/python bench/startup.py
    .venv/bin/python bench/startup.py --runs 20 --fresh-runs 5 --idle 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

import trio

from benchlib import (
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    import_costs,
    machine_summary,
    median,
    print_table,
    write_config,
)
from loadgen import register_user

TARGET_STARTUP_S = 0.5
TARGET_IDLE_RSS_MB = 50.0
SYNAPSE_STARTUP_S = 1.0
SYNAPSE_IDLE_RSS_MB = 116.0
# What `python -m trioserver run` imports, in the order it does (cli first, nursery in `_run`).
IMPORT_STEPS = ["trio", "hypercorn.trio", "trioserver.cli", "trioserver.nursery"]


def interpreter_floor_s(runs: int) -> float:
    """Median wall time of ``python -c pass`` (the cost of starting any Python program)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return median(times)


def one_start(data_dir: Path, env: dict[str, str]) -> tuple[float, float]:
    """Start a server on `data_dir` and stop it; its start-up seconds and CPU seconds."""
    server = ServerProcess(data_dir, env=env)
    try:
        elapsed = server.start()
        cpu = server.cpu().cpu_s
    finally:
        status = server.stop()
    if status != 0:
        raise RuntimeError(f"server exited with status {status}; see {server.log_path}")
    return elapsed, cpu


async def _register_one(base_url: str) -> None:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        await register_user(client, "idle-user")


def idle_memory(data_dir: Path, env: dict[str, str], idle_s: float) -> dict[str, int]:
    """VmRSS/VmHWM (KiB) of a server idle for `idle_s` after one registration."""
    server = ServerProcess(data_dir, env=env)
    try:
        server.start()
        trio.run(_register_one, server.base_url)
        time.sleep(idle_s)
        return server.memory_kib()
    finally:
        server.stop()


def _row(name: str, starts: list[tuple[float, float]]) -> list[str]:
    ms = sorted(t * 1e3 for t, _ in starts)
    return [
        name,
        str(len(starts)),
        f"{median(ms):.0f}",
        f"{ms[0]:.0f}-{ms[-1]:.0f}",
        f"{median([c for _, c in starts]) * 1e3:.0f}",
        f"{TARGET_STARTUP_S * 1e3:.0f}",
        f"{SYNAPSE_STARTUP_S * 1e3:.0f}",
    ]


@dataclass
class Results:
    """Start-up samples (seconds, server CPU seconds) per case, and the idle memory."""

    fresh: list[tuple[float, float]] = field(default_factory=list)
    reused: list[tuple[float, float]] = field(default_factory=list)
    reused_no_pyc: list[tuple[float, float]] = field(default_factory=list)
    memory: dict[str, int] = field(default_factory=dict)
    imports: list[tuple[str, float, float]] = field(default_factory=list)


def measure(tmp: Path, runs: int, fresh_runs: int, idle_s: float) -> Results:
    """Run every start of the benchmark in temporary directories under `tmp`."""
    cached = bytecode_cache_env(tmp / "pycache")
    no_pyc = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    no_pyc.pop("PYTHONPYCACHEPREFIX", None)
    results = Results()
    # An untimed start fills the bytecode cache, as installing the package would.
    write_config(tmp / "warmup")
    one_start(tmp / "warmup", cached)
    for i in range(fresh_runs):
        write_config(tmp / f"fresh{i}")
        results.fresh.append(one_start(tmp / f"fresh{i}", cached))
    # The first fresh data dir now has its key and database: reuse it. The two reused cases
    # alternate so that load from other processes on the machine affects both alike.
    for _ in range(runs):
        results.reused.append(one_start(tmp / "fresh0", cached))
        results.reused_no_pyc.append(one_start(tmp / "fresh0", no_pyc))
    results.memory = idle_memory(tmp / "fresh0", cached, idle_s)
    results.imports = import_costs(IMPORT_STEPS, 5, cached)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="starts on a reused data dir")
    parser.add_argument("--fresh-runs", type=int, default=3, help="starts on a fresh data dir")
    parser.add_argument("--idle", type=float, default=2.0, help="idle seconds before reading RSS")
    args = parser.parse_args(argv)

    print(f"machine: {machine_summary()}")
    background = BackgroundLoad()
    floor = interpreter_floor_s(5)
    with tempfile.TemporaryDirectory(prefix="trioserver-bench-") as tmp:
        results = measure(Path(tmp), args.runs, args.fresh_runs, args.idle)

    print()
    print("Start-up: spawn -> first 200 from GET /_matrix/client/versions (5 ms polling)")
    print_table(
        ["data dir", "runs", "median ms", "range ms", "server CPU ms", "target ms", "Synapse ms"],
        [
            _row("fresh (creates key + db)", results.fresh),
            _row("reused", results.reused),
            _row("reused, no .pyc (dev checkout)", results.reused_no_pyc),
        ],
    )
    print()
    print("Where a reused start goes (imports: fresh interpreters, each step on top of the last)")
    rows = [["python -c pass", f"{floor * 1e3:.0f}", ""]]
    rows += [[f"import {m}", f"{t * 1e3:.0f}", f"{mb:.1f}"] for m, t, mb in results.imports]
    rest = median([t for t, _ in results.reused]) - floor - sum(t for _, t, _ in results.imports)
    # A difference of medians from separate processes: below ~30 ms it is within the noise.
    rest_ms = f"{rest * 1e3:.0f}" if rest > 0.03 else "< 30 (within noise)"
    rows.append(["the rest (key, database, listening, first answer)", rest_ms, ""])
    print_table(["step", "ms", "RSS growth MB"], rows)
    print()
    print(f"Idle memory: after {args.idle:g} s idle with one registered user")
    rss_mb = results.memory["VmRSS"] / 1024
    hwm_mb = results.memory["VmHWM"] / 1024
    print_table(
        ["VmRSS MB", "VmHWM MB", "target MB", "Synapse MB"],
        [
            [
                f"{rss_mb:.1f}",
                f"{hwm_mb:.1f}",
                f"{TARGET_IDLE_RSS_MB:.0f}",
                f"{SYNAPSE_IDLE_RSS_MB:.0f}",
            ]
        ],
    )
    print(background.report())


if __name__ == "__main__":
    main()
