"""Applying the schema files in `sql/` in order, each exactly once.

Files are named ``NN_name.sql`` and applied by ascending name inside one transaction each;
the names already applied are kept in ``schema_files``. A file, once released, is never
edited: a change to the schema is a new file.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path


def schema_dir() -> Path:
    """Where the schema files are: inside the package when installed, else the source tree."""
    package = Path(__file__).resolve().parent.parent
    installed = package / "sql"
    return installed if installed.is_dir() else package.parent / "sql"


def schema_files() -> list[Path]:
    """The SQLite schema files in the order they apply."""
    return sorted(p for p in schema_dir().glob("*.sql") if not p.name.endswith(".postgres.sql"))


def apply_schema(conn: sqlite3.Connection) -> list[str]:
    """Apply every schema file not yet applied to `conn`.

    Returns:
        The names of the files applied now.
    """
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_files (name TEXT PRIMARY KEY, applied_ts INTEGER)"
    )
    done = {row[0] for row in conn.execute("SELECT name FROM schema_files")}
    applied = []
    for path in schema_files():
        if path.name in done:
            continue
        script = path.read_text(encoding="utf-8")
        # executescript() commits first and runs in autocommit; wrap it ourselves so that a
        # failing file leaves nothing half-applied.
        try:
            conn.executescript(
                "BEGIN IMMEDIATE;\n"
                + script
                + f"\nINSERT INTO schema_files VALUES ('{path.name}', {int(time.time() * 1000)});"
                + "\nCOMMIT;"
            )
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(path.name)
    return applied
