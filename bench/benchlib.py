"""Shared helpers for the benchmarks: a real `trioserver run` process and what it costs.

Not a benchmark itself. The benchmark scripts in this directory import it (running
``python bench/x.py`` puts ``bench/`` on ``sys.path``).

* `write_config` writes the ``trioserver.toml`` a first start would write, with the changes a
  benchmark needs (open registration, cheap bcrypt, no rate limiting, a chosen
  ``synchronous``) applied to the generated text.
* `ServerProcess` spawns ``python -m trioserver run``, polls ``/_matrix/client/versions``
  until it answers, and reads the process's CPU time (``/proc/<pid>/stat`` utime + stime)
  and memory (``/proc/<pid>/status`` VmRSS / VmHWM).
* `import_costs`, `BackgroundLoad`, `print_table` and small statistics helpers.

The client side (the h11 load generator, registration) is in `loadgen`.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from trioserver.setup_files import CONFIG_FILE_NAME, render_config

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

CLK_TCK = os.sysconf("SC_CLK_TCK")
VERSIONS_PATH = "/_matrix/client/versions"
CLIENT_V3 = "/_matrix/client/v3"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(
    data_dir: Path,
    *,
    synchronous: str = "full",
    bench: bool = True,
    postgres_dsn: str | None = None,
) -> Path:
    """Write the config a first start would write, adjusted for benchmarking.

    Args:
        data_dir: the server's data dir (created if missing).
        synchronous: the writer's SQLite ``synchronous`` setting, "full" or "normal".
        bench: open registration with bcrypt at cost 4 and no rate limiting; when False the
            generated config is kept as it is (apart from ``synchronous``).
        postgres_dsn: ``[database] backend = "postgres"`` with this ``dsn`` instead of SQLite
            (the pool sizes stay at their defaults).

    Returns:
        The path of the config file.
    """
    text = render_config("localhost")
    text = _replace(text, r'^synchronous = "full"$', f'synchronous = "{synchronous}"')
    if postgres_dsn is not None:
        # A JSON string of ASCII text is a TOML basic string.
        dsn = json.dumps(postgres_dsn, ensure_ascii=True)
        text = _replace(text, r'^backend = "sqlite"$', f'backend = "postgres"\ndsn = {dsn}')
    if bench:
        # The generated file has one `enabled` line per table; change the ones of the
        # [registration] and [ratelimit] tables only.
        text = _replace(text, r"(\[registration\][^\[]*?)enabled = false", r"\1enabled = true")
        text = _replace(text, r"^bcrypt_rounds = 12$", "bcrypt_rounds = 4")
        text = _replace(text, r"(\[ratelimit\][^\[]*?)enabled = true", r"\1enabled = false")
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / CONFIG_FILE_NAME
    path.write_text(text, encoding="utf-8")
    return path


def _replace(text: str, pattern: str, replacement: str) -> str:
    new, count = re.subn(pattern, replacement, text, count=1, flags=re.MULTILINE | re.DOTALL)
    if count != 1:
        raise RuntimeError(f"the generated config no longer matches {pattern!r}")
    return new


@dataclass(frozen=True)
class CpuTimes:
    """CPU seconds (user + system) of a process, with the wall clock when read."""

    cpu_s: float
    wall_s: float


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid`, from ``/proc/<pid>/stat``."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def proc_memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of process `pid` in KiB, from ``/proc/<pid>/status``."""
    result: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            result[key] = int(value.split()[0])
    return result


def self_cpu_s() -> float:
    """User + system CPU seconds of this process (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``, not idle or iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]
    return (sum(fields) - idle) / CLK_TCK


def own_cpu_s() -> float:
    """CPU seconds of this process and of its children that have been waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class BackgroundLoad:
    """How busy *other* processes kept the machine while a benchmark ran.

    The machine's busy time minus this process's and its reaped children's: read `report`
    only once every child (server) has exited. Other work on a 2-core machine slows the
    server, so figures taken under background load are noisy.
    """

    def __init__(self) -> None:
        self._machine = machine_busy_s()
        self._own = own_cpu_s()
        self._wall = time.perf_counter()

    def cores(self) -> float:
        """Average cores' worth of CPU that other processes used since construction."""
        machine = machine_busy_s() - self._machine
        own = own_cpu_s() - self._own
        return max(0.0, machine - own) / (time.perf_counter() - self._wall)

    def report(self) -> str:
        """One line for the output, with a warning when the background was busy."""
        cores = self.cores()
        line = f"background: other processes used {cores * 100:.0f}% of one core on average"
        if cores > 0.1:
            line += " -- the machine was not quiet, figures are noisy; run again when it is"
        return line


class ServerProcess:
    """A ``python -m trioserver run`` child process on a free loopback port."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_name: str = "server.log",
    ) -> None:
        """`extra_args` go after ``run`` (``--workers 2``, ``--instance NAME``); two processes
        of one data dir need their own `log_name`."""
        self.data_dir = data_dir
        self.env = env
        self.port = port if port is not None else free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.extra_args = tuple(extra_args)
        self.log_path = data_dir / log_name
        self._proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        # The CPU seconds of the server's database processes so far, when they are others
        # than the server's own (PostgreSQL backends: `pglib.BackendCpu`).
        self.database_cpu: Callable[[], float] | None = None

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._proc is not None, "not started"
        return self._proc.pid

    def spawn(self) -> None:
        """Start the process; `spawned_at` is the perf_counter just before the fork."""
        cmd = [sys.executable, "-m", "trioserver", "run"]
        cmd += ["--data-dir", str(self.data_dir), "--port", str(self.port), *self.extra_args]
        log = self.log_path.open("ab")
        self.spawned_at = time.perf_counter()
        # Run from the data dir: `python -m` puts the working directory first on sys.path, and
        # the server must import the trioserver that PYTHONPATH or the venv names, not a
        # checkout that happens to be the caller's working directory.
        self._proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.data_dir
        )
        log.close()

    def wait_ready(self, *, poll_s: float = 0.005, timeout_s: float = 30.0) -> float:
        """Poll ``GET /versions`` until it answers 200; seconds since `spawn`.

        Raises:
            RuntimeError: the process exited or did not answer within `timeout_s`.
        """
        assert self._proc is not None, "not started"
        deadline = self.spawned_at + timeout_s
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while True:
                try:
                    if client.get(VERSIONS_PATH).status_code == 200:
                        return time.perf_counter() - self.spawned_at
                except httpx.TransportError:
                    pass
                if self._proc.poll() is not None:
                    raise RuntimeError(f"server exited:\n{self.log_tail()}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"server not ready after {timeout_s} s")
                time.sleep(poll_s)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the server printed."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def start(self) -> float:
        """Spawn and wait until ready; the start-up time in seconds."""
        self.spawn()
        return self.wait_ready()

    def cpu(self) -> CpuTimes:
        """The server's CPU seconds so far, with the wall clock."""
        return CpuTimes(proc_cpu_s(self.pid), time.perf_counter())

    def cpu_s(self) -> float:
        """The server's CPU seconds so far (the `workload.BenchServer` protocol)."""
        return proc_cpu_s(self.pid)

    def database_cpu_s(self) -> float | None:
        """The CPU seconds of its database's own processes so far; None with SQLite."""
        return self.database_cpu() if self.database_cpu is not None else None

    def memory_kib(self) -> dict[str, int]:
        """The server's VmRSS and VmHWM in KiB."""
        return proc_memory_kib(self.pid)

    def stop(self, *, timeout_s: float = 15.0) -> int:
        """SIGTERM (graceful stop), then SIGKILL if it does not exit; the exit status."""
        if self._proc is None:
            return 0
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        return self._proc.returncode


def bytecode_cache_env(cache_dir: Path) -> dict[str, str]:
    """The environment with Python's bytecode cache on, kept in `cache_dir`.

    An installed trioserver has its ``.pyc`` files (pip compiles them at install time); a
    development checkout run with ``PYTHONDONTWRITEBYTECODE=1`` recompiles every module of
    the package at each start. Benchmarks run the server with a cache, in a directory of
    their own so that the checkout is left as it was.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache_dir)
    return env


_IMPORT_PROBE = """
import sys, time
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
for module in sys.argv[1:]:
    t0, r0 = time.perf_counter(), rss()
    __import__(module)
    print(time.perf_counter() - t0, rss() - r0)
"""


def import_costs(
    modules: list[str], runs: int, env: dict[str, str]
) -> list[tuple[str, float, float]]:
    """What importing each of `modules`, in order, adds in a fresh interpreter.

    Each run is a new ``python -c`` process that imports the modules one after the other;
    a module's cost is what it adds on top of the ones before it (shared dependencies are
    paid by the first that needs them).

    Returns:
        (module, median seconds, median VmRSS growth in MB) per module.
    """
    samples: list[list[tuple[float, float]]] = [[] for _ in modules]
    for _ in range(runs):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT_PROBE, *modules],
            env=env,
            cwd=tempfile.gettempdir(),  # not a checkout: see ServerProcess.spawn
            check=True,
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        for i, line in enumerate(out):
            seconds, kib = line.split()
            samples[i].append((float(seconds), int(kib) / 1024))
    return [
        (m, median([t for t, _ in ss]), median([mb for _, mb in ss]))
        for m, ss in zip(modules, samples, strict=True)
    ]


def percentile(sorted_values: list[float], fraction: float) -> float:
    """The `fraction` quantile of already sorted values (nearest rank)."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index]


def median(values: list[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


def machine_summary() -> str:
    """One line: cores, CPU model, Python and SQLite versions."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return (
        f"{os.cpu_count()} cores, {model}, Python {platform.python_version()},"
        f" SQLite {sqlite3.sqlite_version}"
    )


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Print a Markdown table with the columns padded to equal widths."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(headers))
    print("| " + " | ".join("-" * w for w in widths) + " |")
    for row in rows:
        print(line(row))
