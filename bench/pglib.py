"""Shared helpers for the benchmarks that run on the machine's PostgreSQL.

Not a benchmark itself. `bench/db_access_postgres.py` and ``bench/compare.py --backend
postgres`` import it.

* `fresh_database` creates an empty database with the C collation trioserver (and Synapse)
  need, through `trioserver.stores.postgres_admin`, and drops it afterwards, also when the
  benchmark fails.
* `BackendCpu` adds up the CPU time of the PostgreSQL backend processes serving one
  database (``pg_stat_activity`` for their pids, ``/proc/<pid>/stat`` for their CPU): with
  PostgreSQL part of a server's work runs in those processes, and a figure that left them
  out would flatter whichever server sends the database more of it.
* `database_size_bytes` is ``pg_database_size``: every relation file of the database.

The default server is the one on 127.0.0.1:5432 with trust auth for user ``postgres``
(``--admin-dsn`` or ``$TRIOSERVER_BENCH_POSTGRES`` to use another).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg

from trioserver.stores import postgres_admin

from benchlib import proc_cpu_s

if TYPE_CHECKING:
    from collections.abc import Iterator

ADMIN_DSN_ENV = "TRIOSERVER_BENCH_POSTGRES"
DEFAULT_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


def admin_dsn() -> str:
    """The DSN of a database to run CREATE / DROP DATABASE from."""
    return os.environ.get(ADMIN_DSN_ENV, DEFAULT_ADMIN_DSN)


def new_database_name(prefix: str) -> str:
    """A database name nothing else uses: `prefix`, the pid and a random suffix."""
    return f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"


@contextmanager
def fresh_database(admin: str, prefix: str) -> Iterator[tuple[str, str]]:
    """An empty C-collated database for the block: (its name, its DSN); dropped after."""
    name = new_database_name(prefix)
    dsn = postgres_admin.create_database(admin, name)
    try:
        yield name, dsn
    finally:
        postgres_admin.drop_database(admin, name)


def server_version(admin: str) -> str:
    """The server's version and its durability settings, for the report."""
    with psycopg.connect(admin, autocommit=True) as conn:
        settings = {}
        for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
            row = conn.execute(f"SHOW {name}").fetchone()
            settings[name] = row[0] if row else "?"
    return (
        f"PostgreSQL {settings['server_version']} (fsync {settings['fsync']}, "
        f"synchronous_commit {settings['synchronous_commit']}, "
        f"shared_buffers {settings['shared_buffers']})"
    )


def database_size_bytes(admin: str, name: str) -> int:
    """``pg_database_size``: the size of every relation file of database `name`."""
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(%s)", (name,)).fetchone()
    return int(row[0]) if row else 0


class BackendCpu:
    """CPU seconds of the backend processes connected to one database, so far.

    Each call asks ``pg_stat_activity`` which backends serve the database (not counting
    the connection this object keeps, which is to the admin database) and reads their CPU
    from ``/proc``. A backend's last reading is kept after it disconnects, so the total
    never goes down; what a backend spent between its last reading and its exit is lost
    (servers keep pooled connections open, so that is rare). PostgreSQL's own background
    processes (WAL writer, checkpointer, autovacuum) are not counted.
    """

    def __init__(self, admin: str, database: str) -> None:
        self._conn: psycopg.Connection[Any] = psycopg.connect(admin, autocommit=True)
        self._database = database
        self._seen: dict[int, float] = {}

    def cpu_s(self) -> float:
        """Total CPU seconds of every backend of the database seen so far."""
        rows = self._conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self._database,)
        ).fetchall()
        for (pid,) in rows:
            # A backend gone between the query and the read keeps its last reading.
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                self._seen[pid] = proc_cpu_s(pid)
        return sum(self._seen.values())

    def close(self) -> None:
        """Close the connection to the admin database."""
        self._conn.close()
