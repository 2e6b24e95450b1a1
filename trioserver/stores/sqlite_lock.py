"""The lock file beside an SQLite database: servers share it, ``trioserver port-db`` excludes them.

Theory of operation
-------------------
``port-db`` copies the SQLite database to PostgreSQL table by table over minutes, and resumes
after an interruption; a server writing to the file meanwhile would leave the copy with rows
from two different moments. So every process that opens the SQLite database through the config
(`stores.database.open_configured_database`: the server for its whole lifetime,
``register-user``, the first-start checks) holds a *shared* `flock` on ``<database>.lock``,
and ``port-db`` holds it *exclusively*. Shared, because main and the workers of a pool (and the
instances of a deployment laid out by hand) use one file at once; both sides ask without
waiting, so a refusal is immediate and says who holds the lock.

`flock` locks belong to the open file and die with the process, so a server killed with
``kill -9`` leaves nothing to clean up: the lock file stays (it holds no data) but no lock
does. The holders' pids are read from ``/proc/locks`` (Linux) for the message only.

Tests and tools that call `stores.database.open_database` directly take no lock.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from typing import TYPE_CHECKING

from trioserver.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

LOCK_SUFFIX = ".lock"


def lock_path(db_path: Path) -> Path:
    """The lock file of the database `db_path` (``homeserver.db`` -> ``homeserver.db.lock``)."""
    return db_path.with_name(db_path.name + LOCK_SUFFIX)


def lock_holders(path: Path) -> list[tuple[int, bool]]:
    """The processes holding a `flock` on `path`: (pid, exclusive), as far as the system tells
    (Linux's ``/proc/locks``; elsewhere, or when it cannot be read, none)."""
    try:
        st = os.stat(path)
        with open("/proc/locks", encoding="ascii") as locks:
            lines = locks.readlines()
    except OSError:
        return []
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    holders = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 1234 fe:00:2148256 0 EOF"; waiters are "1: -> FLOCK ...".
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted:
            holders.append((int(fields[4]), fields[3] == "WRITE"))
    return holders


def _pids_text(holders: list[tuple[int, bool]]) -> str:
    pids = sorted({pid for pid, _ in holders})
    if not pids:
        return ""
    return f" (pid {', '.join(map(str, pids))})"


def _open_lock_file(db_path: Path) -> int:
    # Read-only is enough for flock, and lets a server running as another user than the one
    # who created the file still open it.
    try:
        return os.open(lock_path(db_path), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(
            f"cannot open the database {db_path} (database.path): cannot create its lock file"
            f" {lock_path(db_path)}: {reason[:1].lower() + reason[1:]}"
        ) from None


@contextmanager
def shared_database_lock(db_path: Path) -> Iterator[None]:
    """Hold the shared lock of `db_path` for the block (a server and its tools).

    Raises:
        StartupError: ``port-db`` holds the lock (the message says how to go on).
    """
    fd = _open_lock_file(db_path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = _pids_text(lock_holders(lock_path(db_path)))
            raise StartupError(
                f"the database {db_path} is being copied by trioserver port-db{holders}; wait"
                " for it to finish (or stop it) before starting the server on this database"
            ) from None
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def exclusive_database_lock(db_path: Path) -> Iterator[None]:
    """Hold the exclusive lock of `db_path` for the block (``port-db``).

    Raises:
        StartupError: a server (or another ``port-db``) holds the lock.
    """
    fd = _open_lock_file(db_path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holders = lock_holders(lock_path(db_path))
            if holders and all(exclusive for _, exclusive in holders):
                raise StartupError(
                    f"another trioserver port-db is copying {db_path}{_pids_text(holders)}"
                ) from None
            raise StartupError(
                f"the server is running on {db_path}{_pids_text(holders)}: stop it (every"
                " worker too) before running port-db"
            ) from None
        yield
    finally:
        os.close(fd)
