"""Creating and dropping PostgreSQL databases for trioserver (tests, benchmarks, port-db).

A trioserver database must use the ``C`` collation: text is ordered by code point, as SQLite
orders it, so that every paginated read returns the same order on both backends (Synapse asks
the same of its databases). `create_database` makes one so; `check_collation` is how a server
or ``port-db`` finds a database made otherwise.

These are synchronous: call them in a thread from trio.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _admin_connect(dsn: str) -> Any:
    import psycopg

    return psycopg.connect(dsn, autocommit=True, connect_timeout=10)


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a plain database name: {name!r}")
    return name


def dsn_for_database(dsn: str, name: str) -> str:
    """`dsn` (a URL or key=value string) with its database name replaced by `name`."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo("", **params)


def database_exists(admin_dsn: str, name: str) -> bool:
    """Whether the database `name` exists on the server of `admin_dsn`."""
    with _admin_connect(admin_dsn) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        return row is not None


def create_database(admin_dsn: str, name: str, *, template: str = "template0") -> str:
    """Create the empty database `name` (C collation, UTF-8) and return its DSN."""
    with _admin_connect(admin_dsn) as conn:
        conn.execute(
            f"CREATE DATABASE {_checked(name)} TEMPLATE {_checked(template)}"
            " ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
        )
    return dsn_for_database(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    """Drop the database `name` if it exists, closing its connections first."""
    with _admin_connect(admin_dsn) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_checked(name)} WITH (FORCE)")


def check_collation(conn: Any) -> str | None:
    """None when the connected database collates as trioserver needs, else why not."""
    row = conn.execute(
        "SELECT datcollate, datctype FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    collate, ctype = row
    if collate not in ("C", "POSIX") or ctype not in ("C", "POSIX"):
        return (
            f"the database's collation is {collate}/{ctype}; trioserver needs C (create it"
            " with: CREATE DATABASE name ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C'"
            " TEMPLATE template0)"
        )
    return None


def schema_template_name(prefix: str) -> str:
    """A database name that changes whenever a schema file does: `prefix` + a digest."""
    from trioserver.stores.schema import postgres_script, schema_files

    digest = hashlib.sha256()
    for path in schema_files():
        digest.update(path.name.encode() + b"\0" + postgres_script(path).encode() + b"\0")
    return f"{prefix}{digest.hexdigest()[:12]}"


def ensure_schema_template(admin_dsn: str, prefix: str) -> str:
    """A database holding the current schema and nothing else, to copy databases from
    (``CREATE DATABASE ... TEMPLATE``): much quicker than applying every file each time."""
    import psycopg

    from trioserver.stores.schema import apply_postgres_schema

    name = schema_template_name(prefix)
    if database_exists(admin_dsn, name):
        return name
    building = f"{name}_building"
    drop_database(admin_dsn, building)
    create_database(admin_dsn, building)
    with psycopg.connect(dsn_for_database(admin_dsn, building), autocommit=True) as conn:
        apply_postgres_schema(conn)
    with _admin_connect(admin_dsn) as conn:
        conn.execute(f"ALTER DATABASE {_checked(building)} RENAME TO {_checked(name)}")
        # Templates of older schemas are no use any more.
        stale = conn.execute(
            "SELECT datname FROM pg_database WHERE starts_with(datname, %s) AND datname != %s",
            (prefix, name),
        ).fetchall()
    for (old,) in stale:
        if _NAME.match(old) and not old.endswith("_building"):
            drop_database(admin_dsn, old)
    return name
