"""The `trioserver` command: run | generate-config | register-user | port-db |
rotate-signing-key."""

from __future__ import annotations

import argparse
import getpass
import importlib.metadata
import json
import logging
import os
import signal
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import attrs

import trio

from trioserver.config import MAIN_INSTANCE, Config, load_config, read_config_file
from trioserver.errors import ConfigError, MatrixError, StartupError
from trioserver.pool import (
    STOP_MARGIN_S,
    Pool,
    PoolChild,
    bind_client_sockets,
    plan_pool,
    pool_child_from_environ,
    run_pool,
    wait_parent_gone,
    worker_names,
)
from trioserver.setup_files import (
    CONFIG_FILE_NAME,
    ensure_config,
    ensure_data_files,
    generate,
    has_users,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


logger = logging.getLogger("trioserver")

DEFAULT_DATA_DIR = "./trioserver-data"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trioserver", description="A Matrix homeserver.")
    parser.add_argument(
        "--version",
        action="version",
        version=f"trioserver {importlib.metadata.version('trioserver')}",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the server (creating its files on first start)")
    run.add_argument("--config", type=Path, help="config file (default: DATA_DIR/trioserver.toml)")
    run.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR))
    run.add_argument("--server-name", help="server name for a new config (default: localhost)")
    run.add_argument("--bind", help="listen on this address instead of the config's")
    run.add_argument("--port", type=int, help="listen on this port instead of the config's")
    run.add_argument(
        "--instance", help="run this instance of the config's deployment (default: main)"
    )
    run.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="also run N worker processes sharing the client port (main only)",
    )

    gen = commands.add_parser("generate-config", help="write config, signing key and database")
    gen.add_argument("--data-dir", type=Path, default=Path(DEFAULT_DATA_DIR))
    gen.add_argument("--server-name", required=True)

    reg = commands.add_parser("register-user", help="create a user account")
    reg.add_argument("--config", type=Path, default=Path(DEFAULT_DATA_DIR) / CONFIG_FILE_NAME)
    reg.add_argument("--user", required=True, help="the localpart, e.g. alice")
    reg.add_argument("--password", help="prompted for when not given")
    reg.add_argument("--admin", action="store_true")

    port = commands.add_parser(
        "port-db", help="copy the SQLite database to an empty PostgreSQL database"
    )
    port.add_argument("--config", type=Path, default=Path(DEFAULT_DATA_DIR) / CONFIG_FILE_NAME)
    port.add_argument(
        "--to", required=True, metavar="DSN", help="the target, e.g. postgresql://user@host/db"
    )
    port.add_argument(
        "--batch-size", type=int, default=None, metavar="N", help="rows per transaction"
    )
    port.add_argument(
        "--replace-nul",
        action="store_true",
        help="replace NUL characters in text (PostgreSQL cannot store them) with spaces",
    )
    rotate = commands.add_parser(
        "rotate-signing-key", help="replace the signing key (the old one stays published)"
    )
    rotate.add_argument("--config", type=Path, default=Path(DEFAULT_DATA_DIR) / CONFIG_FILE_NAME)
    return parser


def _check_run_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "port-db" and args.batch_size is not None and args.batch_size < 1:
        parser.error(f"--batch-size {args.batch_size}: must be at least 1")
    if args.command != "run" or args.workers is None:
        return
    if args.workers < 1:
        parser.error(f"--workers {args.workers}: must be at least 1")
    if args.instance is not None:
        parser.error("--workers runs main and its workers; it cannot be used with --instance")


def _config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        config_path: Path = args.config
        return config_path
    config_path = args.data_dir / CONFIG_FILE_NAME
    if ensure_config(config_path, args.server_name or "localhost"):
        print(f"Wrote a new config file to {config_path}")
    return config_path


def _config_for_run(
    args: argparse.Namespace, config_path: Path, overlay: Mapping[str, Any] | None = None
) -> Config:
    config = load_config(config_path, overlay=overlay).for_instance(args.instance or MAIN_INSTANCE)
    if args.server_name is not None and args.server_name != config.server_name:
        raise ConfigError(
            f"--server-name {args.server_name} differs from server_name"
            f" {config.server_name!r} in {config_path}"
        )
    http = config.http
    if args.bind is not None:
        http = attrs.evolve(http, bind_addresses=(args.bind,))
    if args.port is not None:
        if not 0 <= args.port <= 65535:
            raise ConfigError(f"--port {args.port}: must be between 1 and 65535 (http.port)")
        http = attrs.evolve(http, port=args.port)
    return attrs.evolve(config, http=http)


async def _run(
    config: Config,
    config_path_hint: str,
    *,
    pool: Pool | None = None,
    child: PoolChild | None = None,
) -> None:
    from trioserver.nursery import serve

    await ensure_data_files(config)
    first_user_hint = child is None and not await has_users(config)
    # Main of a pool accepts no client connection: its workers take them all and forward
    # writes to it, so the one writer is not also serving long-polls (BENCHMARKS.md §11).
    listen_fds: Sequence[int] = child.listen_fds if child is not None else ()
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as server_nursery:

                async def stop_on_signal() -> None:
                    async for signum in signals:
                        if shutdown.is_set():
                            # A second signal: stop waiting for in-flight requests.
                            server_nursery.cancel_scope.cancel()
                            return
                        logger.info("received %s, shutting down", signal.Signals(signum).name)
                        shutdown.set()

                nursery.start_soon(stop_on_signal)
                if child is not None:
                    nursery.start_soon(_stop_when_parent_gone, child.parent_fd, shutdown)
                running = await server_nursery.start(
                    partial(
                        serve,
                        config,
                        shutdown=shutdown,
                        listen_fds=listen_fds,
                        serve_clients=pool is None,
                    )
                )
                if pool is not None:
                    # After main listens: workers connect to its replication listener.
                    await server_nursery.start(run_pool, pool, shutdown)
                scheme = "https" if config.http.tls_certificate_path else "http"
                url = pool.client_url(scheme) if pool is not None else running.base_urls[0]
                _announce(config, url, config_path_hint if first_user_hint else None)
            # serve() has returned: in-flight requests are done. Stop watching for signals.
            nursery.cancel_scope.cancel()
    logger.info("stopped")


def _announce(config: Config, url: str, register_hint: str | None) -> None:
    if not config.is_main:
        # A worker of a pool: main has announced the address; this line tells its pid.
        print(f"trioserver {config.instance_name} is running (pid {os.getpid()})")
    else:
        print(f"trioserver is running for {config.server_name} at {url}")
    if register_hint is not None:
        print(
            "Create the first user with:\n  trioserver register-user"
            f" --config {register_hint} --user alice --admin"
        )
    sys.stdout.flush()


async def _stop_when_parent_gone(parent_fd: int, shutdown: trio.Event) -> None:
    await wait_parent_gone(parent_fd)
    logger.warning("the pool's main process is gone, shutting down")
    shutdown.set()


def _register_user(args: argparse.Namespace) -> None:
    from trioserver.handlers.accounts import AccountsHandler
    from trioserver.handlers.auth import AuthHandler
    from trioserver.stores.accounts import AccountStore
    from trioserver.stores.database import open_configured_database
    from trioserver.stores.erasure import ErasureStore

    config = load_config(args.config)
    password = args.password
    if password is None:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            raise SystemExit("Passwords do not match")
    if not password:
        raise SystemExit("The password may not be empty")

    async def register() -> str:
        async with open_configured_database(config, readers=1) as db:
            store = AccountStore(db)
            auth = AuthHandler(store, bcrypt_rounds=config.registration.bcrypt_rounds)
            handler = AccountsHandler(
                store, auth, ErasureStore(db), server_name=config.server_name
            )
            result = await handler.register(
                args.user.lower(), password, admin=args.admin, login=False
            )
            return result.user_id

    print(f"Created {trio.run(register)}")


def _dispatch(args: argparse.Namespace) -> None:
    if args.command == "run":
        _run_command(args)
    elif args.command == "generate-config":
        config_path, config = trio.run(generate, args.data_dir, args.server_name)
        print(f"Config: {config_path}\nServer name: {config.server_name}")
    elif args.command == "register-user":
        _register_user(args)
    elif args.command == "port-db":
        _port_db(args)
    elif args.command == "rotate-signing-key":
        _rotate_signing_key(args)


def _rotate_signing_key(args: argparse.Namespace) -> None:
    import time

    from trioserver.federation.own_keys import rotate_signing_key

    config = load_config(args.config)
    key_path = config.data_path(config.signing_key_path)
    try:
        rotation = rotate_signing_key(key_path, now_ms=int(time.time() * 1000))
    except OSError as exc:
        raise ConfigError(f"cannot rotate the signing key {key_path}: {exc}") from None
    print(
        f"New signing key {rotation.new_key_id} in {key_path}; {rotation.old_key_id} is kept"
        f" in {rotation.old_keys_path} as an old key, expired now.\nRestart the server (every"
        " instance) to sign with the new key: until then it signs with the old one, whose"
        " signatures on new events other servers may refuse."
    )


def _port_db(args: argparse.Namespace) -> None:
    from trioserver.port_db import DEFAULT_BATCH_SIZE, port_database
    from trioserver.port_db.progress import Progress

    config = load_config(args.config)
    progress = Progress(sys.stderr)
    try:
        result = port_database(
            config,
            args.to,
            progress=progress,
            batch_size=args.batch_size or DEFAULT_BATCH_SIZE,
            replace_nul=args.replace_nul,
        )
    except KeyboardInterrupt:
        progress.interrupted()
        # Every batch committed so far is recorded with its progress: nothing is lost.
        print("interrupted: run the same command again to continue", file=sys.stderr)
        raise SystemExit(130) from None
    for table, count in result.replaced_nul.items():
        print(f"{table}: replaced NUL characters in {count} values")
    positions = ", ".join(f"{name} {pos}" for name, pos in result.positions.items())
    print(
        f"{'Finished' if result.resumed else 'Copied'} {result.tables} tables"
        f" ({result.rows} rows with the search index) in {result.seconds:.1f} s."
        f"\nVerified: every table has as many rows on PostgreSQL as on SQLite, and the"
        f" stream positions are equal ({positions})."
        f"\n\nTo run the server on PostgreSQL, change the [database] table of {args.config}"
        f' to:\n\n[database]\nbackend = "postgres"\ndsn = {_toml_string(args.to)}\n'
        f"\nThe SQLite database {result.source} is left untouched: keep it as a backup until"
        " the server runs well on PostgreSQL."
    )


def _toml_string(text: str) -> str:
    # A JSON string is a TOML basic string (the same escapes), whatever the DSN holds.
    return json.dumps(text)


def _run_command(args: argparse.Namespace) -> None:
    child = pool_child_from_environ()
    overlay = None
    if child is not None:
        # A worker of `run --workers` (see trioserver.pool): its instance and the pool's
        # config overlay come from main, never from the command line.
        config = load_config(_config_path(args), overlay=child.overlay).for_instance(
            child.instance
        )
    else:
        config_path = _config_path(args)
        if args.workers is not None:
            overlay = plan_pool(read_config_file(config_path), args.workers)
        config = _config_for_run(args, config_path, overlay)
        if overlay is not None and not config.events_writer_is_main:
            # A pool's workers are interchangeable children of main; an events writer is an
            # instance with listeners of its own, started with --instance.
            raise ConfigError(
                f"config.stream_writers.events: {config.stream_writers.events!r} is not"
                " possible with --workers (a pool keeps events on main); start each instance"
                " with --instance instead"
            )
    _configure_logging(config)
    hint = str(args.config or args.data_dir / CONFIG_FILE_NAME)
    pool = None
    if overlay is not None:
        pool = Pool(
            config_path.resolve(),
            overlay,
            worker_names(args.workers),
            bind_client_sockets(config.http, args.workers),
            stop_timeout=config.http.graceful_shutdown_seconds + STOP_MARGIN_S,
        )
    try:
        trio.run(partial(_run, config, hint, pool=pool, child=child))
    finally:
        if pool is not None:
            pool.close()


def _configure_logging(config: Config) -> None:
    # The processes of a pool share one stdout/stderr: each line names its instance.
    instance = f" [{config.instance_name}]" if config.is_multi_instance else ""
    logging.basicConfig(
        level=config.log_level,
        format=f"%(asctime)s %(levelname)s{instance} %(name)s: %(message)s",
    )


def _exit_with(group: BaseExceptionGroup[Exception]) -> NoReturn:
    # The errors a user can act on: one line each (a config error lists every bad key), no
    # traceback. They may arrive wrapped in the groups of the nurseries they passed through.
    for exc in _leaves(group):
        text = exc.message if isinstance(exc, MatrixError) else str(exc)
        print(f"error: {text}", file=sys.stderr)
    raise SystemExit(1)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `trioserver` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    _check_run_args(parser, args)
    try:
        _dispatch(args)
    except* (ConfigError, StartupError, MatrixError) as group:
        _exit_with(group)
