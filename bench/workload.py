"""The shape every comparable workload shares: a server to aim at and a timed phase's result.

Not a benchmark itself. A workload is an ``async def`` taking a `BenchServer` (ours or
Synapse: anything with a base URL and a readable CPU clock) and returning a `PhaseResult`
for its timed phase only; set-up (registering users, creating rooms) happens before the
phase starts and is not counted. `bench/compare.py` runs the same workloads against both
servers and prints them side by side; the single-server scripts print them alone.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from benchlib import median, percentile, self_cpu_s


class BenchServer(Protocol):
    """A running homeserver process on loopback."""

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        ...

    def cpu_s(self) -> float:
        """The server process's user + system CPU seconds so far."""
        ...


@runtime_checkable
class SeparateDatabase(Protocol):
    """A server whose database runs in processes of its own (PostgreSQL)."""

    def database_cpu_s(self) -> float | None:
        """Those processes' CPU seconds so far (None: the server has no such database)."""
        ...


@dataclass
class PhaseResult:
    """One timed phase: how many operations, how long each took, and what they cost.

    `latencies_s` has one entry per measured operation (for fan-out: per receiver and
    message). `ops` is what the CPU figures are divided by.
    """

    name: str
    ops: int = 0
    wall_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    # The database's own processes (PostgreSQL backends), when the server has them.
    database_cpu_s: float | None = None
    errors: int = 0

    @property
    def rate(self) -> float:
        """Operations per second of wall time."""
        return self.ops / self.wall_s if self.wall_s else float("nan")

    @property
    def server_cpu_ms_per_op(self) -> float:
        """Server CPU milliseconds per operation."""
        return self.server_cpu_s / self.ops * 1e3 if self.ops else float("nan")

    @property
    def database_cpu_ms_per_op(self) -> float:
        """Database-process CPU milliseconds per operation (NaN without such processes)."""
        if self.database_cpu_s is None or not self.ops:
            return float("nan")
        return self.database_cpu_s / self.ops * 1e3

    @property
    def client_cpu_share(self) -> float:
        """The load generator's CPU as a share of one core over the phase."""
        return self.client_cpu_s / self.wall_s if self.wall_s else float("nan")

    def latency_ms(self, fraction: float = 0.5) -> float:
        """A latency quantile in milliseconds (0.5 is the median)."""
        if fraction == 0.5:
            return median(self.latencies_s) * 1e3
        return percentile(sorted(self.latencies_s), fraction) * 1e3


class TimedPhase:
    """Measure wall time and server and client CPU around a ``with`` block into `result`
    (and the CPU of the server's database processes, when it has them)."""

    def __init__(self, server: BenchServer, result: PhaseResult) -> None:
        self._server = server
        self._result = result
        self._wall = self._server_cpu = self._client_cpu = 0.0
        self._database_cpu: float | None = None

    def _database_cpu_s(self) -> float | None:
        if isinstance(self._server, SeparateDatabase):
            return self._server.database_cpu_s()
        return None

    def __enter__(self) -> PhaseResult:
        self._database_cpu = self._database_cpu_s()
        self._server_cpu = self._server.cpu_s()
        self._client_cpu = self_cpu_s()
        self._wall = time.perf_counter()
        return self._result

    def __exit__(self, *exc_info: object) -> None:
        self._result.wall_s += time.perf_counter() - self._wall
        self._result.server_cpu_s += self._server.cpu_s() - self._server_cpu
        self._result.client_cpu_s += self_cpu_s() - self._client_cpu
        database_cpu = self._database_cpu_s()
        if database_cpu is not None and self._database_cpu is not None:
            spent = database_cpu - self._database_cpu
            self._result.database_cpu_s = (self._result.database_cpu_s or 0.0) + spent
