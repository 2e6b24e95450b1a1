"""First-start files: the commented config, the signing key and the database."""

from __future__ import annotations

import os
import secrets
import sqlite3
import ssl
from pathlib import Path

import trio

from trioserver.config import Config, load_config
from trioserver.errors import ConfigError, StartupError
from trioserver.keys import generate_key_file
from trioserver.stores.accounts import AccountStore
from trioserver.stores.database import open_configured_database
from trioserver.stores.meta import check_server_name

CONFIG_FILE_NAME = "trioserver.toml"

_TEMPLATE = """\
# trioserver configuration. Every key has a default; unknown keys are errors.

# The domain in your user ids (@alice:{server_name}). It cannot change once users exist.
server_name = "{server_name}"

# Signing key, database and media live here; relative paths are relative to this file.
data_dir = "."
signing_key_path = "signing.key"

# Self-destructing messages (MSC2228): a message whose content carries an integer
# `org.matrix.self_destruct_after` (or `m.self_destruct_after`) timestamp in milliseconds
# is pruned at that time.
enable_ephemeral_messages = false

# log_level = "INFO"

[http]
bind_addresses = ["127.0.0.1"]
port = 8008
# Serve HTTPS directly (both keys together):
# tls_certificate_path = "/path/to/fullchain.pem"
# tls_private_key_path = "/path/to/privkey.pem"
# The URL clients reach this server at, advertised in /.well-known/matrix/client:
# public_baseurl = "https://matrix.example.org/"
# One line per request (method, path, status, duration, client address) on the
# `trioserver.access` logger:
# log_access = false

[database]
backend = "sqlite"
path = "homeserver.db"
# "full" survives power loss; "normal" is faster but only survives a crash of the process.
synchronous = "full"
# PostgreSQL instead (pip install "trioserver[postgres]"; a C-collated database; move an
# existing server's data with `trioserver port-db`, see the README):
# backend = "postgres"
# dsn = "postgresql://trioserver@127.0.0.1:5432/trioserver"
# min_connections = 1
# max_connections = 10
# connect_timeout_seconds = 10.0

[registration]
# Open registration through POST /_matrix/client/v3/register (m.login.dummy).
enabled = false
# For `trioserver register-user` and Synapse-compatible admin tools
# (POST /_synapse/admin/v1/register). Keep it secret.
shared_secret = "{shared_secret}"
bcrypt_rounds = 12

[ratelimit]
enabled = true
# message = {{ per_second = 0.2, burst_count = 10 }}
# login = {{ per_second = 0.003, burst_count = 5 }}
# registration = {{ per_second = 0.17, burst_count = 3 }}
# media_upload = {{ per_second = 10.0, burst_count = 50 }}

[rooms]
default_room_version = "12"

[media]
# Uploaded files live under data_dir in this directory: back it up with the database.
storage_path = "media"
# 50 MiB; larger uploads are refused with 413.
max_upload_size = 52428800
# Link previews make the server fetch any URL a user names; see the README before enabling.
url_preview_enabled = false

# Other Matrix servers (README "Federation"). They reach this one over TLS, at port 8448 of
# the server name unless /.well-known/matrix/server on the name's host says otherwise.
# [federation]
# enabled = true
# port = 8448                          # a TLS listener for other servers
# bind_addresses = ["0.0.0.0"]
# tls_certificate_path = "/path/to/fullchain.pem"
# tls_private_key_path = "/path/to/privkey.pem"
# serve_well_known = false             # true: serve /.well-known/matrix/server, delegating to
# public_baseurl = "https://matrix.example.org:443"   # this (the TLS listener others use)
# domain_whitelist = ["example.org"]   # only these servers (default: any)
# trusted_key_servers = []             # notaries asked for keys (default: none)

# More than one core: `trioserver run --workers 2` needs nothing here. For a deployment laid
# out by hand (README "Worker processes"), name main's listeners and each worker, and start
# each with `trioserver run --config THIS_FILE --instance NAME`:
# [replication]
# bind = "127.0.0.1"
# port = 9093
# secret = "..."                     # required with more than one instance
# [instance_map.main]
# host = "127.0.0.1"
# port = 9100
# [workers.worker1]
# port = 8009
"""


def render_config(server_name: str) -> str:
    """A commented config file for a new server, with a fresh shared secret."""
    return _TEMPLATE.format(server_name=server_name, shared_secret=secrets.token_urlsafe(32))


def ensure_config(config_path: Path, server_name: str) -> bool:
    """Write a new config file at `config_path` unless one exists; True when written.

    Raises:
        StartupError: the file (or its directory) cannot be created.
    """
    if config_path.exists():
        return False
    try:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only, like the signing key: the file holds the registration shared secret.
        fd = os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(render_config(server_name))
    except OSError as exc:
        raise StartupError(
            f"cannot write the config file {config_path} (--data-dir): {_reason(exc)}"
        ) from None
    return True


def _reason(exc: OSError | sqlite3.Error) -> str:
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return text[:1].lower() + text[1:]


def _ensure_dir_and_key(config: Config) -> None:
    try:
        Path(config.data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create the data directory {config.data_dir} (data_dir): {_reason(exc)}"
        ) from None
    key_path = config.data_path(config.signing_key_path)
    if not key_path.exists():
        try:
            generate_key_file(key_path)
        except OSError as exc:
            raise StartupError(
                f"cannot write the signing key {key_path} (signing_key_path): {_reason(exc)}"
            ) from None


def _check_tls_files(config: Config) -> None:
    # hypercorn loads these only after binding, where its errors look like bind errors; load
    # them once here so that a missing or bad file is reported as what it is.
    cert, key = config.http.tls_certificate_path, config.http.tls_private_key_path
    if cert is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except OSError as exc:  # ssl.SSLError is an OSError too
        raise StartupError(
            f"cannot load the TLS certificate {cert} or key {key}"
            f" (http.tls_certificate_path / http.tls_private_key_path): {_reason(exc)}"
        ) from None


async def ensure_data_files(config: Config) -> None:
    """Create the data dir, signing key and database if missing (idempotent).

    Raises:
        StartupError: one of them cannot be created or opened, or the TLS files cannot be
            loaded (the message names the file and its config key).
        ConfigError: the database belongs to another server name.
    """
    await trio.to_thread.run_sync(_ensure_dir_and_key, config)
    await trio.to_thread.run_sync(_check_tls_files, config)
    if config.database.backend == "postgres":
        await _check_postgres(config)
        return
    path = config.data_path(config.database.path)
    try:
        async with open_configured_database(config, readers=1) as db:
            await check_server_name(db, config.server_name)
    except sqlite3.Error as exc:
        raise StartupError(
            f"cannot open the database {path} (database.path): {_reason(exc)}"
        ) from None


async def _check_postgres(config: Config) -> None:
    try:
        import psycopg
    except ImportError:
        raise StartupError(
            'database.backend = "postgres" needs psycopg: pip install "trioserver[postgres]"'
        ) from None
    try:
        async with open_configured_database(config, readers=1) as db:
            await check_server_name(db, config.server_name)
    except (psycopg.Error, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StartupError(
            f"cannot open the PostgreSQL database (database.dsn): {first_line}"
        ) from None


async def has_users(config: Config) -> bool:
    """Whether any account exists yet (the first start prints how to create one)."""
    async with open_configured_database(config, readers=1) as db:
        return await AccountStore(db).count_users() > 0


async def generate(data_dir: Path, server_name: str) -> tuple[Path, Config]:
    """Everything `trioserver generate-config` writes; returns the config path and config.

    Raises:
        ConfigError: the config exists with another server name, or is invalid.
    """
    config_path = data_dir / CONFIG_FILE_NAME
    ensure_config(config_path, server_name)
    config = load_config(config_path)
    if config.server_name != server_name:
        # An existing config is kept; do not let the caller believe it names another server.
        raise ConfigError(
            f"{config_path} already exists with server_name {config.server_name!r},"
            f" not {server_name!r}"
        )
    await ensure_data_files(config)
    return config_path, config
