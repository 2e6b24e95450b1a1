"""Measure /sync on a real server process: delivery latency, fan-out and initial sync.

Setup: a ``trioserver run`` process on a fresh data dir (generated config with open
registration, bcrypt cost 4, rate limiting off). Each workload (`sync_workloads`) registers
its own users and rooms untimed, then:

* delivery latency: one sender, one receiver long-polling; ``--samples`` messages, one at a
  time, each sent once the receiver's long-poll is parked; latency = send start -> the
  receiver's response.
* fan-out: the same with K receivers long-polling one room (``--fanout``, default 30 and
  100); one sample per receiver and message; server CPU per woken receiver.
* initial sync: a user in ``--rooms`` rooms (10 members, 10 messages each) syncs without
  ``since`` from a fresh login, ``--runs`` times.

Targets (issue 4): <= 1/3 of Synapse 1.163 on this machine: delivery p50 25 ms -> 8 ms;
fan-out per-receiver p50 50 ms (K = 9) and 297 ms (K = 99) -> 17 and 99 ms; initial sync
81 ms (10 rooms of 100 members) -> 27 ms. `bench/compare.py` measures Synapse side by side.

Run (about a minute)::

    .venv/bin/python bench/sync.py
    .venv/bin/python bench/sync.py --fanout 100 --messages 10 --skip-initial
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from benchlib import (
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    machine_summary,
    print_table,
    write_config,
)
from sync_workloads import delivery_latency, fanout, initial_sync

if TYPE_CHECKING:
    from workload import PhaseResult

# Workload name -> (Synapse 1.163 p50 ms on this machine, what that figure was measured on).
SYNAPSE_P50_MS = {
    "delivery latency": (25.0, "1 receiver"),
    "fan-out K=30": (50.0, "K = 9"),
    "fan-out K=100": (297.0, "K = 99"),
    "initial sync, 100 rooms": (81.0, "10 rooms x 100 members"),
}
TARGET_FRACTION = 1 / 3


async def run_all(server: ServerProcess, args: argparse.Namespace) -> list[PhaseResult]:
    """Each requested workload in turn, on one server."""
    results = [await delivery_latency(server, samples=args.samples)]
    for receivers in args.fanout:
        results.append(await fanout(server, receivers=receivers, messages=args.messages))
    if not args.skip_initial:
        results.append(await initial_sync(server, rooms=args.rooms, runs=args.runs))
    return results


def _row(result: PhaseResult) -> list[str]:
    synapse = SYNAPSE_P50_MS.get(result.name)
    return [
        result.name,
        str(len(result.latencies_s)),
        f"{result.latency_ms(0.5):.1f}",
        f"{result.latency_ms(0.9):.1f}",
        f"{result.latency_ms(0.99):.1f}",
        f"{result.server_cpu_ms_per_op:.2f}",
        f"{result.client_cpu_share * 100:.0f}%",
        f"{synapse[0] * TARGET_FRACTION:.0f}" if synapse else "-",
        f"{synapse[0]:g} ({synapse[1]})" if synapse else "-",
    ]


HEADERS = [
    "workload",
    "samples",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "server CPU ms/op",
    "client CPU",
    "target p50 ms",
    "Synapse p50 ms",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=200, help="delivery-latency messages")
    parser.add_argument("--fanout", type=int, nargs="*", default=[30, 100], help="K receivers")
    parser.add_argument("--messages", type=int, default=20, help="messages per fan-out run")
    parser.add_argument("--rooms", type=int, default=100, help="rooms of the initial-sync user")
    parser.add_argument("--runs", type=int, default=20, help="initial syncs to time")
    parser.add_argument("--skip-initial", action="store_true", help="no initial-sync run")
    args = parser.parse_args(argv)

    print(f"machine: {machine_summary()}")
    background = BackgroundLoad()
    with tempfile.TemporaryDirectory(prefix="trioserver-bench-") as tmp:
        data_dir = Path(tmp) / "sync"
        write_config(data_dir)
        server = ServerProcess(data_dir, env=bytecode_cache_env(Path(tmp) / "pycache"))
        server.start()
        try:
            results = trio.run(run_all, server, args)
            print(f"server peak RSS {server.memory_kib()['VmHWM'] / 1024:.1f} MB")
        finally:
            server.stop()
    print()
    print("/sync: latency from the start of the send to the long-poll's response;")
    print("server CPU per op is per woken receiver (fan-out) or per sync (initial sync);")
    print("client CPU is the load generator's share of one core during the timed phases.")
    print_table(HEADERS, [_row(r) for r in results])
    print(background.report())


if __name__ == "__main__":
    main()
