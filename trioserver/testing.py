"""A real trioserver inside your test: `serve_in_process` and the `homeserver` pytest fixture.

    async with serve_in_process() as hs:
        user = await hs.register_user("alice")
        # talk to hs.base_url with any HTTP client, as user.access_token

The server runs in the caller's trio run on a free loopback port, with a temporary data dir
(a real SQLite file) that is deleted afterwards. Registration is open, rate limiting is off and
bcrypt is at its cheapest cost, which suits tests; pass overrides to change any of it.

Code that is not on trio (plain tests, asyncio bots) uses `serve_in_thread` instead: the same
server, run by its own ``trio.run`` in a background thread.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import tempfile
import threading
from concurrent.futures import Future
from contextlib import asynccontextmanager, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver import testing_postgres
from trioserver.config import Config, config_from_mapping, merge_config
from trioserver.handlers.shared_secret import registration_mac
from trioserver.nursery import RunningServer, serve
from trioserver.pool import free_loopback_port, worker_names
from trioserver.setup_files import ensure_data_files

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping

_TEST_DEFAULTS: dict[str, Any] = {
    "server_name": "localhost",
    "http": {"bind_addresses": ["127.0.0.1"], "port": 0},
    "registration": {"enabled": True, "bcrypt_rounds": 4, "shared_secret": "test-secret"},
    "ratelimit": {"enabled": False},
    "database": {"synchronous": "normal"},
}


@attrs.frozen
class RegisteredUser:
    """A user created through the server's own API."""

    user_id: str
    access_token: str
    device_id: str
    password: str


def _post_json(base_url: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    # A blocking stdlib client, run in a thread: the helper must not depend on an async HTTP
    # library of the caller's choosing.
    host_port = base_url.split("://", 1)[1]
    conn = http.client.HTTPConnection(host_port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        method = "GET" if body is None else "POST"
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data: dict[str, Any] = json.loads(response.read() or b"{}")
        if response.status != 200:
            raise RuntimeError(f"{method} {path} failed with {response.status}: {data}")
        return data
    finally:
        conn.close()


@attrs.frozen
class InProcessServer:
    """A running in-process server."""

    config: Config
    running: RunningServer

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:43123``."""
        return self.running.base_urls[0]

    @property
    def server_name(self) -> str:
        """The server name in user ids."""
        return self.config.server_name

    async def register_user(
        self, localpart: str, password: str = "password", *, admin: bool = False
    ) -> RegisteredUser:
        """Create a user (with the shared-secret admin API) and log them in."""
        register = partial(_register_user, self.config, self.base_url, localpart, password, admin)
        return await trio.to_thread.run_sync(register)


def _register_user(
    config: Config, base_url: str, localpart: str, password: str, admin: bool
) -> RegisteredUser:
    # Blocking; never call it from the server's own thread.
    secret = config.registration.shared_secret
    if secret is None:
        raise RuntimeError("register_user needs registration.shared_secret to be set")
    path = "/_synapse/admin/v1/register"
    nonce = _post_json(base_url, path, None)["nonce"]
    body = {
        "nonce": nonce,
        "username": localpart,
        "password": password,
        "admin": admin,
        "mac": registration_mac(secret, nonce, localpart, password, admin, None),
    }
    result = _post_json(base_url, path, body)
    return RegisteredUser(result["user_id"], result["access_token"], result["device_id"], password)


# Set to 1 to run every `serve_in_process` server as main plus one worker, answering through
# the worker: a test suite then checks that a multi-process deployment serves it the same.
# Set to "events-writer" for main plus two workers, worker1 writing events, answering through
# worker2 (its writes go to main, which sends events through worker1).
VIA_WORKER_ENV = "TRIOSERVER_TEST_VIA_WORKER"
EVENTS_WRITER_MODE = "events-writer"
# TRIOSERVER_TEST_POSTGRES set to a PostgreSQL DSN (postgresql://postgres@127.0.0.1:5432/
# postgres: where to CREATE DATABASE) runs every test server on PostgreSQL, each data dir on a
# fresh database of its own (trioserver.testing_postgres).
POSTGRES_ENV = testing_postgres.POSTGRES_ENV


async def _with_test_backend(raw: dict[str, Any], directory: Path) -> dict[str, Any]:
    """`raw` with the database of `POSTGRES_ENV` when that is set and the test did not name
    a backend itself."""
    if not os.environ.get(POSTGRES_ENV) or "backend" in raw.get("database", {}):
        return raw
    dsn = await trio.to_thread.run_sync(testing_postgres.database_dsn_for, directory)
    return merge_config(raw, {"database": {"backend": "postgres", "dsn": dsn}})


@contextmanager
def _temporary_data_dir() -> Iterator[str]:
    """A temporary dir for a test server's data; its test database, if any, is recycled
    when the block ends (the server has stopped by then)."""
    with tempfile.TemporaryDirectory(prefix="trioserver-test-") as tmp:
        try:
            yield tmp
        finally:
            testing_postgres.release_test_database(Path(tmp))


@asynccontextmanager
async def serve_in_process(
    data_dir: str | Path | None = None,
    *,
    via_worker: bool | None = None,
    events_on_worker: bool | None = None,
    **overrides: Any,
) -> AsyncIterator[InProcessServer]:
    """Run a full trioserver in this trio run for the duration of the block.

    Args:
        data_dir: where to keep the data (default: a temporary dir removed afterwards).
            Reuse a directory to test what survives a restart.
        via_worker: run main and one worker instance (issue 13) and answer through the
            worker, which forwards writes to main and follows main's streams. Default: the
            ``TRIOSERVER_TEST_VIA_WORKER`` environment variable (``1``), else no.
        events_on_worker: run main and two workers, worker1 writing events
            (``[stream_writers] events``), and answer through worker2. Default: the same
            variable set to ``events-writer``.
        overrides: config keys, as in the TOML file (nested tables as dicts), e.g.
            ``enable_ephemeral_messages=True`` or ``registration={"enabled": False}``.

    Yields:
        An `InProcessServer` with `base_url`, `server_name` and `register_user`.
    """
    mode = os.environ.get(VIA_WORKER_ENV, "")
    if events_on_worker is None:
        events_on_worker = mode == EVENTS_WRITER_MODE
    if events_on_worker:
        async with serve_deployment_in_process(
            data_dir, workers=2, events_writer="worker1", **overrides
        ) as deployment:
            yield deployment.workers[1]
        return
    if via_worker is None:
        via_worker = mode == "1"
    if via_worker:
        async with serve_deployment_in_process(data_dir, workers=1, **overrides) as deployment:
            yield deployment.workers[0]
        return
    with _temporary_data_dir() as tmp:
        directory = Path(data_dir) if data_dir is not None else Path(tmp)
        raw = await _with_test_backend(merge_config(_TEST_DEFAULTS, overrides), directory)
        config = config_from_mapping(raw, base_dir=directory)
        await ensure_data_files(config)
        async with trio.open_nursery() as nursery:
            running: RunningServer = await nursery.start(serve, config)
            try:
                yield InProcessServer(config, running)
            finally:
                nursery.cancel_scope.cancel()


@attrs.frozen
class InProcessDeployment:
    """Main and its workers, running in one trio run on one data dir (see
    `serve_deployment_in_process`)."""

    main: InProcessServer
    workers: tuple[InProcessServer, ...]


DEPLOYMENT_SECRET = "test-replication-secret"
# Set to "redis" to carry the replication of every deployment `serve_deployment_in_process`
# runs (and so of TRIOSERVER_TEST_VIA_WORKER) over Redis pub/sub at TRIOSERVER_TEST_REDIS
# (default redis://127.0.0.1:6379/0), each deployment on channels of its own; "tcp" (the
# default) uses main's replication listener.
REPLICATION_ENV = "TRIOSERVER_TEST_REPLICATION"
TEST_REDIS_ENV = "TRIOSERVER_TEST_REDIS"


def redis_url_for_tests() -> str:
    """The Redis that tests use (``TRIOSERVER_TEST_REDIS``)."""
    return os.environ.get(TEST_REDIS_ENV, "redis://127.0.0.1:6379/0")


def _with_test_replication(raw: Mapping[str, Any]) -> dict[str, Any]:
    """`raw` with Redis replication when `REPLICATION_ENV` asks for it and the test did not
    choose a transport itself (the test's keys win)."""
    mode = os.environ.get(REPLICATION_ENV, "tcp")
    if mode not in ("tcp", "redis"):
        raise ValueError(f'{REPLICATION_ENV} must be "tcp" or "redis", not {mode!r}')
    if mode == "tcp":
        return dict(raw)
    prefix = f"trioserver-test-{secrets.token_hex(6)}"
    redis = {"redis": redis_url_for_tests(), "redis_channel_prefix": prefix}
    return merge_config({"replication": redis}, raw)


def _deployment_raw(
    raw: Mapping[str, Any],
    main_ports: tuple[int, int],
    workers: int,
    events_writer: tuple[str, int, int] | None = None,
) -> dict[str, Any]:
    replication_port, internal_port = main_ports
    instance_map: dict[str, Any] = {"main": {"host": "127.0.0.1", "port": internal_port}}
    extra: dict[str, Any] = {}
    if events_writer is not None:
        name, writer_internal, writer_replication = events_writer
        instance_map[name] = {
            "host": "127.0.0.1",
            "port": writer_internal,
            "replication_port": writer_replication,
        }
        extra["stream_writers"] = {"events": name}
    names = worker_names(workers)
    return merge_config(
        raw,
        {
            "replication": {
                "bind": "127.0.0.1",
                "port": replication_port,
                "secret": DEPLOYMENT_SECRET,
            },
            "instance_map": instance_map,
            "workers": {name: {"port": 0} for name in names},
            **extra,
        },
    )


@asynccontextmanager
async def serve_deployment_in_process(
    data_dir: str | Path | None = None,
    *,
    workers: int = 1,
    replication_port_for_workers: Callable[[int], int] | None = None,
    events_writer: str | None = None,
    worker_overrides: Mapping[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[InProcessDeployment]:
    """Run main and `workers` worker instances in this trio run, sharing one data dir.

    The instances talk as separate processes would: over main's replication listener and its
    internal HTTP listener on loopback, with one SQLite file. Arguments as for
    `serve_in_process`, and:

    Args:
        replication_port_for_workers: given main's replication port once it listens, the port
            the workers connect to instead (e.g. a test's proxy in front of main's).
        events_writer: a worker name (``worker1``) to write events instead of main. Main and
            that worker follow each other, so every port is picked up front and all the
            instances start together.
        worker_overrides: config keys laid over the workers' config only (e.g. a
            ``replication.redis`` URL through a test's proxy).

    With ``TRIOSERVER_TEST_REPLICATION=redis`` the instances replicate over Redis, unless
    the test routes replication through a proxy of its own (`replication_port_for_workers`).
    """
    with _temporary_data_dir() as tmp:
        directory = Path(data_dir) if data_dir is not None else Path(tmp)
        raw = await _with_test_backend(merge_config(_TEST_DEFAULTS, overrides), directory)
        if replication_port_for_workers is None:
            raw = _with_test_replication(raw)
        if events_writer is not None:
            assert replication_port_for_workers is None
            assert worker_overrides is None
            async with _deployment_started_together(
                raw, directory, workers, events_writer
            ) as together:
                yield together
            return
        # Main first, on free ports; the workers are configured with the ports it got.
        main_config = config_from_mapping(
            _deployment_raw(raw, (0, 0), workers), base_dir=directory
        )
        await ensure_data_files(main_config)
        async with trio.open_nursery() as nursery:
            main_running: RunningServer = await nursery.start(serve, main_config)
            assert main_running.internal_port is not None
            # None over Redis: there is no replication listener then.
            replication_port = main_running.replication_port or 0
            if replication_port_for_workers is not None:
                replication_port = replication_port_for_workers(replication_port)
            ports = (replication_port, main_running.internal_port)
            workers_raw = _deployment_raw(raw, ports, workers)
            if worker_overrides is not None:
                workers_raw = merge_config(workers_raw, worker_overrides)
            deployment = config_from_mapping(workers_raw, base_dir=directory)
            started = []
            for name in sorted(deployment.workers):
                config = deployment.for_instance(name)
                running: RunningServer = await nursery.start(serve, config)
                started.append(InProcessServer(config, running))
            try:
                yield InProcessDeployment(
                    InProcessServer(main_config, main_running), tuple(started)
                )
            finally:
                nursery.cancel_scope.cancel()


@asynccontextmanager
async def _deployment_started_together(
    raw: Mapping[str, Any], directory: Path, workers: int, events_writer: str
) -> AsyncIterator[InProcessDeployment]:
    ports = [free_loopback_port() for _ in range(4)]
    deployment = config_from_mapping(
        _deployment_raw(raw, (ports[0], ports[1]), workers, (events_writer, ports[2], ports[3])),
        base_dir=directory,
    )
    await ensure_data_files(deployment)
    names = ("main", *sorted(deployment.workers))
    running: dict[str, RunningServer] = {}
    async with trio.open_nursery() as nursery:

        async def start(name: str) -> None:
            running[name] = await nursery.start(serve, deployment.for_instance(name))

        # Each waits (up to its start timeout) for the other's replication listener.
        async with trio.open_nursery() as starting:
            for name in names:
                starting.start_soon(start, name)
        servers = {
            name: InProcessServer(deployment.for_instance(name), running[name]) for name in names
        }
        try:
            yield InProcessDeployment(servers["main"], tuple(servers[name] for name in names[1:]))
        finally:
            nursery.cancel_scope.cancel()


@attrs.frozen
class ThreadedServer:
    """A server running in a background thread (see `serve_in_thread`)."""

    config: Config
    base_url: str

    @property
    def server_name(self) -> str:
        """The server name in user ids."""
        return self.config.server_name

    def register_user(
        self, localpart: str, password: str = "password", *, admin: bool = False
    ) -> RegisteredUser:
        """Create a user and log them in. Blocks for a few milliseconds (also in asyncio)."""
        return _register_user(self.config, self.base_url, localpart, password, admin)


_Ready = tuple[ThreadedServer, trio.lowlevel.TrioToken, trio.Event]


async def _serve_until_stopped(
    ready: Future[_Ready], data_dir: str | Path | None, overrides: dict[str, Any]
) -> None:
    async with serve_in_process(data_dir, **overrides) as hs:
        stop = trio.Event()
        token = trio.lowlevel.current_trio_token()
        ready.set_result((ThreadedServer(hs.config, hs.base_url), token, stop))
        await stop.wait()


@contextmanager
def serve_in_thread(
    data_dir: str | Path | None = None, **overrides: Any
) -> Iterator[ThreadedServer]:
    """Run a full trioserver in a background thread for the duration of the block.

    For code that does not run on trio: plain synchronous tests, and asyncio bots and clients
    (matrix-nio, mautrix), which can use it inside their event loop. The server runs
    `serve_in_process` under its own ``trio.run`` in a thread; entering waits until it
    answers, leaving stops it and waits for the thread.

    Args:
        data_dir, overrides: as for `serve_in_process`.

    Yields:
        A `ThreadedServer` with `base_url`, `server_name` and a blocking `register_user`.

    Raises:
        Whatever stopped the server from starting (e.g. `ConfigError`), on entry; whatever
        made it fail while running, on exit.
    """
    ready: Future[_Ready] = Future()
    failures: list[BaseException] = []

    def run() -> None:
        try:
            trio.run(_serve_until_stopped, ready, data_dir, overrides)
        except BaseException as exc:  # handed to the caller's thread below
            if ready.done():
                failures.append(exc)
            else:
                ready.set_exception(exc)

    thread = threading.Thread(target=run, name="trioserver", daemon=True)
    thread.start()
    server, token, stop = ready.result()
    try:
        yield server
    finally:
        # The run may already be over if the server failed; then there is nothing to stop.
        with suppress(trio.RunFinishedError):
            trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join()
    if failures:
        raise failures[0]
