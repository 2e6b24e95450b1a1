"""Measure a small read through a thread hop (`Database.run_read`) and inline (`run_read_inline`).

The figure behind `trioserver.stores.database`'s choice to run small reads on the event loop's
thread: a real trioserver database (WAL, the schema applied) in a temporary directory, with
``--rows`` rows in the ``events`` table's stream index to look one up by; each access path runs
the same one-row indexed ``SELECT`` ``--count`` times back to back from one Trio task, after a
warm-up, and reports wall and CPU microseconds per read (CPU of the whole process: the event
loop and the worker threads).

Run (a few seconds)::

    .venv/bin/python bench/read_path.py
    .venv/bin/python bench/read_path.py --count 20000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from trioserver.stores.database import open_database

from benchlib import machine_summary, print_table

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trioserver.stores.database import Txn

WARMUP = 500


def _fill(txn: Txn, rows: int) -> None:
    txn.executemany(
        "INSERT INTO bench_rows (id, payload) VALUES (?, ?)",
        ((i, f"payload {i}") for i in range(rows)),
    )


def _one_row(txn: Txn, row_id: int) -> object:
    return txn.execute("SELECT payload FROM bench_rows WHERE id = ?", (row_id,)).fetchone()


def _create(txn: Txn) -> None:
    txn.execute("CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, payload TEXT NOT NULL)")


async def _time(
    count: int, rows: int, read: Callable[[int], Awaitable[object]]
) -> tuple[float, float]:
    for i in range(WARMUP):
        await read(i % rows)
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(count):
        await read((i * 7919) % rows)
    return (
        (time.perf_counter() - wall) / count * 1e6,
        (time.process_time() - cpu) / count * 1e6,
    )


async def measure(count: int, rows: int) -> list[list[str]]:
    """Both access paths on one fresh database; table rows."""
    with tempfile.TemporaryDirectory(prefix="trioserver-read-path-") as tmp:
        async with open_database(Path(tmp) / "homeserver.db") as db:
            await db.run_txn("create_bench_rows", _create)
            await db.run_txn("fill_bench_rows", _fill, rows)

            async def hop(row_id: int) -> object:
                return await db.run_read("one_row", _one_row, row_id)

            async def inline(row_id: int) -> object:
                return await db.run_read_inline("one_row", _one_row, row_id)

            results = []
            for name, read in (("run_read (thread hop)", hop), ("run_read_inline", inline)):
                wall_us, cpu_us = await _time(count, rows, read)
                results.append([name, f"{wall_us:.1f}", f"{cpu_us:.1f}"])
            return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=5000, help="reads per access path")
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the table")
    args = parser.parse_args(argv)
    print(f"machine: {machine_summary()}")
    print(f"one-row indexed SELECT, {args.count} reads each, {args.rows} rows")
    print_table(
        ["access path", "wall µs/read", "CPU µs/read"], trio.run(measure, args.count, args.rows)
    )


if __name__ == "__main__":
    main()
