"""Fresh PostgreSQL databases for test servers (``TRIOSERVER_TEST_POSTGRES``).

Theory of operation
-------------------
Every test server gets a database of its own, so tests never see each other's rows. Making one
is cheap: ``CREATE DATABASE ... TEMPLATE`` copies a template that already holds the schema
(`postgres_admin.ensure_schema_template`, rebuilt whenever a schema file changes), 35-90 ms on
the 2-core machine. Dropping one is not (0.6-1.7 s: PostgreSQL checkpoints), and a test run
starts over a thousand servers. So a database whose data dir was a temporary one of the test
helpers is *recycled* once that server has stopped: a background thread empties it
(``TRUNCATE`` of every table, identities restarted, and the rows the schema files insert put
back, such as the to-device stream's position row: what a new copy of the template holds) and
puts it back in the pool that the next server takes from. Databases of a data dir that a test
passed in itself (to restart a server on it) are recycled when the test ends
(`release_all`, called by the test suite's conftest after each test); when the process
exits every database made here is dropped.

The data dir remembers its database in a small file, so a server restarted on the same dir
finds its rows again.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import queue
import secrets
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

POSTGRES_ENV = "TRIOSERVER_TEST_POSTGRES"
_DB_FILE = "test-postgres-database"
_PREFIX = "trioserver_test_"


class _TestDatabases:
    def __init__(self, admin_dsn: str) -> None:
        self._admin_dsn = admin_dsn
        self._lock = threading.Lock()
        self._created: list[str] = []
        self._clean: list[str] = []
        self._in_use: set[str] = set()
        self._dirty: queue.Queue[str | None] = queue.Queue()
        self._template: str | None = None
        self._tables: list[str] = []
        # The rows the schema files insert (table -> rows), restored after each TRUNCATE.
        self._seed_rows: dict[str, list[tuple[object, ...]]] = {}
        self._cleaner = threading.Thread(target=self._clean_loop, name="test-db-cleaner")
        self._cleaner.daemon = True
        self._cleaner.start()
        atexit.register(self.close)

    def acquire(self, directory: Path) -> str:
        """The DSN of `directory`'s database, taken from the pool or created."""
        from trioserver.stores.postgres_admin import create_database, dsn_for_database

        marker = directory / _DB_FILE
        if marker.is_file():
            name = marker.read_text().strip()
            with self._lock:
                self._in_use.add(name)
            return dsn_for_database(self._admin_dsn, name)
        with self._lock:
            recycled = self._clean.pop() if self._clean else None
        if recycled is not None:
            name = recycled
        else:
            template = self._ensure_template()
            name = f"{_PREFIX}{os.getpid()}_{secrets.token_hex(6)}"
            with self._lock:
                self._created.append(name)
            create_database(self._admin_dsn, name, template=template)
        with self._lock:
            self._in_use.add(name)
        directory.mkdir(parents=True, exist_ok=True)
        marker.write_text(name)
        return dsn_for_database(self._admin_dsn, name)

    def release(self, directory: Path) -> None:
        """`directory`'s server has stopped for good: empty its database for reuse."""
        marker = directory / _DB_FILE
        if marker.is_file():
            self._release(marker.read_text().strip())
            # A later server on this dir (if any) starts on a fresh database.
            marker.unlink()

    def release_all(self) -> None:
        """Every database in use is done with (a test has ended)."""
        with self._lock:
            names = list(self._in_use)
        for name in names:
            self._release(name)

    def _release(self, name: str) -> None:
        with self._lock:
            if name not in self._in_use:
                return
            self._in_use.discard(name)
        self._dirty.put(name)

    def _ensure_template(self) -> str:
        from trioserver.stores.postgres_admin import dsn_for_database, ensure_schema_template

        with self._lock:
            if self._template is not None:
                return self._template
            import psycopg

            template = ensure_schema_template(self._admin_dsn, f"{_PREFIX}template_")
            with psycopg.connect(dsn_for_database(self._admin_dsn, template)) as conn:
                rows = conn.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    " AND tablename != 'schema_files'"
                ).fetchall()
                self._tables = sorted(row[0] for row in rows)
                for table in self._tables:
                    seeded = conn.execute(f"SELECT * FROM {table}").fetchall()
                    if seeded:
                        self._seed_rows[table] = seeded
            self._template = template
            return template

    def _clean_loop(self) -> None:
        import psycopg

        from trioserver.stores.postgres_admin import dsn_for_database

        while (name := self._dirty.get()) is not None:
            try:
                with (
                    psycopg.connect(
                        dsn_for_database(self._admin_dsn, name), autocommit=True
                    ) as conn,
                    conn.transaction(),
                ):
                    conn.execute(f"TRUNCATE {', '.join(self._tables)} RESTART IDENTITY")
                    for table, seeded in self._seed_rows.items():
                        marks = ", ".join(["%s"] * len(seeded[0]))
                        conn.cursor().executemany(f"INSERT INTO {table} VALUES ({marks})", seeded)
            except Exception:
                logger.exception("could not empty the test database %s; leaving it", name)
                continue
            with self._lock:
                self._clean.append(name)

    def close(self) -> None:
        from trioserver.stores.postgres_admin import drop_database

        self._dirty.put(None)
        self._cleaner.join(timeout=30)
        with self._lock:
            names, self._created = self._created, []
        for name in names:
            with contextlib.suppress(Exception):
                drop_database(self._admin_dsn, name)


_databases: _TestDatabases | None = None
_databases_lock = threading.Lock()


def _pool() -> _TestDatabases:
    global _databases
    with _databases_lock:
        if _databases is None:
            _databases = _TestDatabases(os.environ[POSTGRES_ENV])
        return _databases


def database_dsn_for(directory: Path) -> str | None:
    """The DSN of `directory`'s test database, or None when tests run on SQLite."""
    if not os.environ.get(POSTGRES_ENV):
        return None
    return _pool().acquire(directory)


def release_test_database(directory: Path) -> None:
    """Recycle `directory`'s test database (its server stopped; the dir is going away)."""
    if _databases is not None:
        _databases.release(directory)


def release_all() -> None:
    """Recycle every test database in use: call once a test's servers have all stopped."""
    if _databases is not None:
        _databases.release_all()
