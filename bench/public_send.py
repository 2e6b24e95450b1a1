"""The public send benchmark (BridgerB/matrix-server-performance), against trioserver and Synapse.

The workload, as that harness runs it against every server it compares (issue 16):

1. register a user (``m.login.dummy``), log in with the password, create a room with
   ``preset: private_chat``;
2. sequential: ``--messages`` sends (``PUT /rooms/{roomId}/send/m.room.message/{txnId}``, a
   random transaction id, body ``{"msgtype": "m.text", "body": "seq msg N"}``), one after
   the other;
3. concurrent: ``--messages`` more sends from ``--concurrency`` workers, each sending its
   share back to back, all as the same user into the same room.

Each send's latency is timed from before the request to its whole answer; msg/s is messages
over the phase's wall time; percentiles are taken as the harness takes them (the value at
index floor(n * p) of the sorted latencies). Each client keeps one keep-alive connection (the
harness's fetch keeps connections alive too). trioserver runs with the benchmark config
(`benchlib.write_config`: open registration, bcrypt cost 4, no rate limits, SQLite
``synchronous = full``); Synapse as `bench/synapse.py` sets it up (installed from PyPI on first
use), on SQLite and on the machine's PostgreSQL (``synapse-postgres``: a fresh database per
run, ``psql -h 127.0.0.1 -U postgres`` with trust auth, dropped afterwards; psycopg2-binary is
installed into Synapse's venv). The harness's published figures are printed beside.

Run (about a minute, plus Synapse's install on the first run)::

    .venv/bin/python bench/public_send.py
    .venv/bin/python bench/public_send.py --servers trioserver --runs 3
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

import trio

from benchlib import (
    CLIENT_V3,
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    machine_summary,
    print_table,
    proc_cpu_s,
    write_config,
)
from loadgen import H11Client
from synapse import (
    SynapseProcess,
    create_postgres_database,
    drop_postgres_database,
    ensure_postgres_driver,
    ensure_synapse,
)

PASSWORD = "benchmarkpassword123"
# The harness's published figures on a 2-CPU box: (sequential, concurrent) msg/s.
PUBLISHED = {
    "Conduit": (1177, 2498),
    "tuwunel": (869, 1826),
    "continuwuity": (845, 1456),
    "Synapse (PostgreSQL)": (52, 108),
}


@dataclass
class Phase:
    """One phase's latencies (seconds) and wall time, with the server's CPU over it."""

    latencies: list[float]
    wall_s: float
    server_cpu_s: float

    @property
    def per_s(self) -> float:
        """Messages per second of wall time."""
        return len(self.latencies) / self.wall_s

    def percentile_ms(self, fraction: float) -> float:
        """The harness's percentile: the sorted value at floor(n * fraction)."""
        ordered = sorted(self.latencies)
        return ordered[min(math.floor(len(ordered) * fraction), len(ordered) - 1)] * 1000


async def _json(
    connection: H11Client, method: str, path: str, body: object, token: str | None
) -> dict[str, Any]:
    status, raw = await connection.request(method, path, orjson.dumps(body), token)
    if status != 200:
        raise RuntimeError(f"{method} {path} answered {status}: {raw[:300]!r}")
    answer: dict[str, Any] = orjson.loads(raw)
    return answer


async def _send(connection: H11Client, token: str, room_id: str, text: str) -> float:
    path = f"{CLIENT_V3}/rooms/{quote(room_id)}/send/m.room.message/{uuid.uuid4()}"
    body = orjson.dumps({"msgtype": "m.text", "body": text})
    started = time.perf_counter()
    status, raw = await connection.request("PUT", path, body, token)
    elapsed = time.perf_counter() - started
    if status != 200:
        raise RuntimeError(f"send answered {status}: {raw[:300]!r}")
    return elapsed


async def run_workload(server: ServerProcess, messages: int, concurrency: int) -> list[Phase]:
    """Register, log in, create the room, then the two phases; their outcomes."""
    username = f"bench_{uuid.uuid4().hex[:8]}"
    setup = await H11Client.connect(server.base_url)
    try:
        register = {"username": username, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
        await _json(setup, "POST", f"{CLIENT_V3}/register", register, None)
        login = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": username},
            "password": PASSWORD,
        }
        token = str(
            (await _json(setup, "POST", f"{CLIENT_V3}/login", login, None))["access_token"]
        )
        created = await _json(
            setup, "POST", f"{CLIENT_V3}/createRoom", {"preset": "private_chat"}, token
        )
        room_id = str(created["room_id"])
        phases = [await _sequential(server, setup, token, room_id, messages)]
    finally:
        await setup.aclose()
    phases.append(await _concurrent(server, token, room_id, messages, concurrency))
    return phases


async def _sequential(
    server: ServerProcess, connection: H11Client, token: str, room_id: str, messages: int
) -> Phase:
    cpu, started = proc_cpu_s(server.pid), time.perf_counter()
    latencies = [await _send(connection, token, room_id, f"seq msg {n}") for n in range(messages)]
    return Phase(latencies, time.perf_counter() - started, proc_cpu_s(server.pid) - cpu)


async def _concurrent(
    server: ServerProcess, token: str, room_id: str, messages: int, concurrency: int
) -> Phase:
    connections = [await H11Client.connect(server.base_url) for _ in range(concurrency)]
    latencies: list[float] = []

    async def worker(index: int) -> None:
        share = messages // concurrency + (index < messages % concurrency)
        for n in range(share):
            text = f"conc msg {index}-{n}"
            latencies.append(await _send(connections[index], token, room_id, text))

    try:
        cpu, started = proc_cpu_s(server.pid), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(concurrency):
                nursery.start_soon(worker, index)
        return Phase(latencies, time.perf_counter() - started, proc_cpu_s(server.pid) - cpu)
    finally:
        for connection in connections:
            await connection.aclose()


SERVERS = ("trioserver", "synapse", "synapse-postgres")


def _server(name: str, root: Path, database: str) -> ServerProcess:
    data_dir = root / name
    if name == "synapse":
        return SynapseProcess(ensure_synapse(), data_dir)
    if name == "synapse-postgres":
        install = ensure_synapse()
        ensure_postgres_driver(install)
        return SynapseProcess(install, data_dir, postgres_database=database)
    write_config(data_dir)
    return ServerProcess(data_dir, env=bytecode_cache_env(root / "pycache"))


def _row(name: str, phases: list[Phase]) -> list[str]:
    row = [name]
    for phase in phases:
        cpu_ms = phase.server_cpu_s / len(phase.latencies) * 1000
        row += [
            f"{phase.per_s:.0f}",
            " / ".join(f"{phase.percentile_ms(p):.1f}" for p in (0.5, 0.95, 0.99)),
            f"{cpu_ms:.2f}",
        ]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--servers", nargs="*", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--messages", type=int, default=500, help="sends per phase")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1, help="runs per server (fresh each)")
    args = parser.parse_args()
    print(f"machine: {machine_summary()}")
    background = BackgroundLoad()
    results: dict[str, list[list[Phase]]] = {}
    with tempfile.TemporaryDirectory(prefix="trioserver-bench-public-send-") as tmp:
        for name in args.servers:
            for run in range(args.runs):
                database = f"trioserver_bench_synapse_{uuid.uuid4().hex[:8]}"
                if name == "synapse-postgres":
                    create_postgres_database(database)
                server = _server(name, Path(tmp) / f"run{run}", database)
                try:
                    server.start()
                    phases = trio.run(run_workload, server, args.messages, args.concurrency)
                finally:
                    server.stop()
                    if name == "synapse-postgres":
                        drop_postgres_database(database)
                results.setdefault(name, []).append(phases)
    headers = ["server", "sequential msg/s", "p50 / p95 / p99 ms", "server CPU ms/msg"]
    headers += [
        f"concurrent ({args.concurrency}) msg/s",
        "p50 / p95 / p99 ms",
        "server CPU ms/msg",
    ]
    rows = [_row(name, phases) for name, runs in results.items() for phases in runs]
    print(f"{args.messages} sends per phase, one user, one private_chat room.")
    print_table(headers, rows)
    _print_ratios(results)
    print()
    print("Published figures of the harness (2-CPU box, msg/s):")
    print_table(
        ["server", "sequential", "concurrent", "trioserver here / published (seq, conc)"],
        _published_rows(results.get("trioserver")),
    )
    print(background.report())


def _best(runs: list[list[Phase]], phase: int) -> float:
    return max(run[phase].per_s for run in runs)


def _print_ratios(results: dict[str, list[list[Phase]]]) -> None:
    ours = results.get("trioserver")
    for name, label in (("synapse", "SQLite"), ("synapse-postgres", "PostgreSQL")):
        theirs = results.get(name)
        if ours is None or theirs is None:
            continue
        seq = _best(ours, 0) / _best(theirs, 0)
        conc = _best(ours, 1) / _best(theirs, 1)
        print(
            f"trioserver / Synapse ({label}), best runs: sequential {seq:.1f}x,"
            f" concurrent {conc:.1f}x"
        )


def _published_rows(ours: list[list[Phase]] | None) -> list[list[str]]:
    rows = []
    for name, (seq, conc) in PUBLISHED.items():
        ratio = "-"
        if ours:
            ratio = f"{_best(ours, 0) / seq:.2f}x, {_best(ours, 1) / conc:.2f}x"
        rows.append([name, str(seq), str(conc), ratio])
    return rows


if __name__ == "__main__":
    main()
