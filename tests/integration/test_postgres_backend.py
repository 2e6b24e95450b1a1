"""Configuring the PostgreSQL backend, and what a server refuses to start on (issue 14)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

import trio

from trioserver.config import Config, config_from_mapping
from trioserver.errors import ConfigError, StartupError
from trioserver.setup_files import ensure_data_files
from trioserver.stores.postgres_admin import drop_database, dsn_for_database
from trioserver.testing_postgres import POSTGRES_ENV

ADMIN_DSN = os.environ.get(POSTGRES_ENV) or "postgresql://postgres@127.0.0.1:5432/postgres"


def _config(tmp_path: Path, **database: object) -> Config:
    return config_from_mapping(
        {"server_name": "pg.test", "database": {"backend": "postgres", **database}},
        base_dir=tmp_path,
    )


def test_postgres_needs_a_dsn(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.database\.dsn: required"):
        _config(tmp_path)


def test_pool_sizes_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config\.database\.max_connections"):
        _config(tmp_path, dsn="postgresql://x/y", min_connections=5, max_connections=2)


async def test_an_unreachable_database_is_a_startup_error_naming_the_key(tmp_path: Path) -> None:
    # Nothing listens on port 1.
    config = _config(
        tmp_path, dsn="postgresql://postgres@127.0.0.1:1/nothing", connect_timeout_seconds=2
    )
    with pytest.raises(StartupError, match=r"\(database\.dsn\)"):
        await ensure_data_files(config)


async def test_a_database_that_does_not_collate_as_c_is_refused(tmp_path: Path) -> None:
    import psycopg

    name = f"trioserver_test_collate_{secrets.token_hex(6)}"

    def create() -> None:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(
                f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'"
                " LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
            )

    await trio.to_thread.run_sync(create)
    try:
        config = _config(tmp_path, dsn=dsn_for_database(ADMIN_DSN, name))
        with pytest.raises(StartupError, match="trioserver needs C"):
            await ensure_data_files(config)
    finally:
        await trio.to_thread.run_sync(drop_database, ADMIN_DSN, name)
