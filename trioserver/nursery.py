"""The supervisor: one nursery that owns every subsystem of a server instance.

Theory of operation
-------------------
`serve` opens the database, builds the stores and handlers the config asks for, and starts
each subsystem with ``await nursery.start(run_x, ...)``, so that when `serve` reports itself
started (``task_status.started``) every subsystem is ready. Nothing outlives the nursery: no
threads, tasks or global state, so several servers can run in one ``trio.run``.

Shutdown has two forms. Setting the `shutdown` event is graceful: the HTTP listener stops
accepting, in-flight requests get ``http.graceful_shutdown_seconds`` to finish, then the
background subsystems are cancelled and the database closed. Cancelling `serve` from outside
is abrupt, but still safe for data: a transaction already handed to its thread always runs to
COMMIT or ROLLBACK (see `stores.database`).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

import trio

from trioserver import wiring
from trioserver.api.app import create_app
from trioserver.api.deps import ApiDeps
from trioserver.http_edge import EdgeLimits, open_listeners, serve_http
from trioserver.internal.forwarding import PresenceForwarder
from trioserver.keys import key_id, load_key_file
from trioserver.listeners import host_port, hypercorn_config
from trioserver.storage.intents import EventSubmitter, NoEventWriter
from trioserver.stores.database import Database, open_configured_database
from trioserver.stores.meta import check_server_name
from trioserver.supervisor import Subsystem, run_supervised

if TYPE_CHECKING:
    from signedjson.types import SigningKey

    from hypercorn.config import Config as HypercornConfig

    from trioserver.api.http import MatrixApp
    from trioserver.config import Config, HttpConfig
    from trioserver.internal.client import MainClient

    # Writer-only (`wiring.build_writer` imports it): a worker never loads it (issue 13). cattrs
    # never structures `Components`, so its annotations are not needed at run time.
    from trioserver.storage.persistence import EventPersister  # noqa: TC004
    from trioserver.stores.events import EventStore
    from trioserver.stores.persist_events import PersistEventStore

from trioserver.errors import StartupError
from trioserver.repl.caches import CacheInvalidations

logger = logging.getLogger(__name__)


@attrs.frozen
class RunningServer:
    """What `serve` reports once it is ready.

    Attributes:
        base_urls: the client API's listeners.
        replication_port: main's replication listener (None when there is none).
        internal_port: this instance's internal HTTP listener (None when there is none).
    """

    base_urls: tuple[str, ...]
    replication_port: int | None = None
    internal_port: int | None = None
    # The Server-Server API's own TLS listener ([federation] port), when there is one.
    federation_port: int | None = None

    @property
    def port(self) -> int:
        """The port of the first listener (useful when the config asked for port 0)."""
        port = urlsplit(self.base_urls[0]).port
        assert port is not None
        return port


def _bind_strings(http: HttpConfig) -> list[str]:
    return [host_port(addr, http.port) for addr in http.bind_addresses]


def _hypercorn_config(http: HttpConfig, listen_fds: Sequence[int] = ()) -> HypercornConfig:
    # Listening sockets made by someone else (`run --workers`: main binds the client port once
    # and every process of the pool accepts on it); hypercorn adopts a socket from "fd://N".
    hc = hypercorn_config(
        [f"fd://{fd}" for fd in listen_fds] if listen_fds else _bind_strings(http)
    )
    if http.tls_certificate_path is not None:
        hc.certfile = http.tls_certificate_path
        hc.keyfile = http.tls_private_key_path
    hc.graceful_timeout = http.graceful_shutdown_seconds
    return hc


# What a newcomer can do about the usual reasons a listener cannot bind.
_BIND_HINTS = {
    errno.EADDRINUSE: "is another server running on it?",
    errno.EADDRNOTAVAIL: "it is not an address of this machine",
    errno.EACCES: "ports below 1024 need extra privileges",
}


def _listen_error(
    http: HttpConfig, group: BaseExceptionGroup[OSError], section: str
) -> StartupError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, OSError)
    return listen_error(http, exc, section)


def listen_error(http: HttpConfig, exc: OSError, section: str = "http") -> StartupError:
    """The one-line startup error for a listener that cannot bind (`exc`); `section` names
    the config section that set it up (``http``, ``federation``)."""
    reason = exc.strerror or str(exc)
    reason = reason[:1].lower() + reason[1:]
    hint = _BIND_HINTS.get(exc.errno or 0)
    return StartupError(
        f"cannot listen on {', '.join(_bind_strings(http))}"
        f" ({section}.port / {section}.bind_addresses): {reason}" + (f" ({hint})" if hint else "")
    )


async def run_http_api(
    app: MatrixApp[Any],
    http: HttpConfig,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    listen_fds: Sequence[int] = (),
    section: str = "http",
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the client API until `shutdown_trigger` returns, then drain in-flight requests.

    Args:
        listen_fds: listening sockets to accept on instead of binding ``http``'s addresses;
            this call takes ownership of (closes) them.

    Calls ``task_status.started(RunningServer)`` once listening.
    """

    if http.tls_certificate_path is None:
        await _serve_plain_http(app, http, shutdown_trigger, listen_fds, task_status)
        return
    # TLS: hypercorn (the plain-HTTP edge has no TLS), imported only here.
    from hypercorn.trio import serve as hypercorn_serve

    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_serve(
            app,
            _hypercorn_config(http, listen_fds),
            shutdown_trigger=shutdown_trigger,
            task_status=task_status,
            mode="asgi",
        )

    async with trio.open_nursery() as nursery:
        try:
            binds: list[str] = await nursery.start(serve)
        except* OSError as group:
            # Before it is started, hypercorn raises OSError only when binding a socket fails
            # (the TLS files are checked earlier, by `setup_files.ensure_data_files`).
            raise _listen_error(http, group, section) from None
        task_status.started(RunningServer(tuple(binds)))


async def _serve_plain_http(
    app: MatrixApp[Any],
    http: HttpConfig,
    shutdown_trigger: Callable[[], Awaitable[None]],
    listen_fds: Sequence[int],
    task_status: trio.TaskStatus[RunningServer],
) -> None:
    try:
        listeners = await open_listeners(http.bind_addresses, http.port, listen_fds)
    except OSError as exc:
        raise listen_error(http, exc) from None
    limits = EdgeLimits(graceful_timeout_s=http.graceful_shutdown_seconds)
    async with trio.open_nursery() as nursery:
        urls: list[str] = await nursery.start(
            partial(serve_http, app, listeners, limits=limits, shutdown_trigger=shutdown_trigger)
        )
        task_status.started(RunningServer(tuple(urls)))


@attrs.frozen
class Components:
    """Everything one instance runs, wired together.

    Attributes:
        deps: what the HTTP API uses.
        persister: the events writer's controller (None on other instances).
        replication: how this instance talks to the others (issue 13).
        caches: the caches stream (main writes it, workers apply it).
        loaders: run once, in order, before anything is served (e.g. reading stream
            positions).
        subsystems: background tasks, each ``run_x(*, task_status)`` (STYLE S1).
    """

    deps: ApiDeps
    persister: EventPersister | None
    replication: wiring.ReplicationPart
    caches: CacheInvalidations
    loaders: tuple[Callable[[], Awaitable[None]], ...] = ()
    subsystems: tuple[Subsystem, ...] = ()


def build_components(
    config: Config,
    db: Database,
    signing_key: SigningKey,
    *,
    persist_store: PersistEventStore | None = None,
    clock: Callable[[], float] = time.time,
) -> Components:
    """What this instance runs, wired together from the builders of `trioserver.wiring` (no
    I/O); which builders run reads from the config's roles.

    Every instance answers the whole client API from the shared database. The events writer
    (main, issue 13) also has the persister, the expiry of self-destructing messages and the
    pushers, writes every stream and, in a multi-instance deployment, serves them to the
    others over replication. A worker follows those streams and forwards its writes to main.
    The order of the calls is the order in which listeners are registered (on the persister,
    receipts, devices and joins).

    Args:
        persist_store: the writer store to use (tests pass an instrumented one).
        clock: wall-clock time in seconds (tests tie it to trio's MockClock).
    """
    accounts = wiring.build_accounts(config, db, clock)
    core = wiring.build_core(config, db)
    push = wiring.build_push_evaluation(config, db, core)
    # Seed 2: only the events writer builds the persister (and its PersistEventStore).
    writer = None
    remote_events = None
    writer_client = None
    submitter: EventSubmitter
    if config.is_events_writer:
        writer = wiring.build_writer(
            config, db, signing_key, clock, core, push, persist_store=persist_store
        )
        submitter = writer.persister
    elif config.is_main:
        # Main's handlers send events through the events writer instance (issue 13).
        from trioserver.internal.remote_events import RemoteEventSubmitter

        writer_client = wiring.internal_client_for(config, config.stream_writers.events)
        remote_events = RemoteEventSubmitter(writer_client, core.events)
        submitter = remote_events
    else:
        submitter = NoEventWriter()
    rooms = wiring.build_rooms(config, db, core, accounts, push, submitter)
    main_client = None if config.is_main else wiring.main_client_for(config)
    presence_forwarder = PresenceForwarder(main_client) if main_client is not None else None
    streams = wiring.build_streams(
        config,
        db,
        clock,
        core,
        accounts,
        push,
        writer,
        rooms,
        forward_presence=presence_forwarder,
    )
    sync = wiring.build_sync(db, core, push, rooms, streams)
    pushers = wiring.build_pushers(config, db, clock, core, accounts, writer, streams)
    media = wiring.build_media(config, db, clock)
    upgrades = wiring.build_upgrades(config, core, push, rooms, streams)
    federation = None
    if config.federation.enabled:
        from trioserver.federation.wiring import build_federation

        federation = build_federation(
            config,
            db,
            signing_key,
            events=core.events,
            state=core.state,
            persister=writer.persister if writer is not None else None,
            erasure=accounts.erasure,
        )
        if federation.deps.remote is not None:
            rooms.membership.use_federation(federation.deps.remote)
        if federation.deps.backfiller is not None:
            rooms.room_reads.backfill = federation.deps.backfiller.backfill
        elif main_client is not None:
            rooms.room_reads.backfill = partial(_backfill_on_main, main_client, core.events)
    deps = wiring.build_api_deps(
        config,
        db,
        clock,
        accounts,
        core,
        push,
        rooms,
        streams,
        sync,
        pushers,
        media,
        upgrades,
        federation.deps if federation is not None else None,
    )
    if federation is not None:
        from trioserver.federation.queries import query_profile

        deps.profile.remote_profile = partial(query_profile, federation.deps.client)
    # Issue 5: self-destructing messages are pruned by the events writer only.
    expiry = None
    if writer is not None and config.enable_ephemeral_messages:
        expiry = wiring.build_expiry(db, clock, core, writer)
        if main_client is not None:
            wiring.announce_remote_expiry(expiry, main_client)
    caches = wiring.build_caches(config, db, core, accounts, push, expiry)
    followers = None
    if not (config.is_main and config.is_events_writer):
        followers = wiring.build_followers(config, core, streams, caches, main_client)
    if config.is_main:
        if writer is not None:
            persister = writer.persister
            events_position: Callable[[], int] = lambda: persister.stream_position  # noqa: E731
        else:
            assert followers is not None
            assert followers.events is not None
            assert remote_events is not None
            events_position = followers.events.position
            wiring.follow_events_on_main(followers.events, streams, pushers)
        replication = wiring.build_main_streams(
            config,
            core,
            events_position,
            streams,
            caches,
            followers.followed if followers is not None else None,
            writer_client,
        )
        if remote_events is not None:
            assert followers is not None
            remote_events.connect(followers.followed.wait_for_positions, replication.positions)
    else:
        assert main_client is not None  # not main: config validation names main's address
        assert presence_forwarder is not None
        assert followers is not None
        replication = wiring.build_worker_replication(
            config, core, caches, followers, main_client, writer
        )
        presence_forwarder.wait_for_positions = followers.followed.wait_for_positions
    follower_loaders = followers.loaders if followers is not None else ()
    return Components(
        deps,
        writer.persister if writer is not None else None,
        replication,
        caches.caches,
        loaders=(
            *streams.loaders,
            *core.loaders,
            *media.loaders,
            *caches.loaders,
            *follower_loaders,
        ),
        subsystems=(
            *accounts.subsystems,
            *streams.subsystems,
            *pushers.subsystems,
            *media.subsystems,
            *caches.subsystems,
            *(expiry.subsystems if expiry is not None else ()),
            *(federation.subsystems if federation is not None else ()),
        ),
    )


async def _backfill_on_main(
    main: MainClient, events: EventStore, room_id: str, limit: int
) -> list[str]:
    """A worker's backfill: main fetches and stores the history; this instance forgets what
    it cached of those events (some were outliers until now)."""
    try:
        event_ids = await main.backfill(room_id, limit)
    except Exception as err:  # main unreachable: the page is what this instance holds
        logger.warning("backfill of %s through main failed: %s", room_id, err)
        return []
    events.cache.invalidate(event_ids)
    return event_ids


async def serve(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    listen_fds: Sequence[int] = (),
    serve_clients: bool = True,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one server instance until `shutdown` is set (graceful) or it is cancelled.

    Args:
        config: the instance's configuration (data files must exist: see `cli`).
        shutdown: set it to stop gracefully.
        listen_fds: already listening client sockets to serve on instead of binding
            ``config.http`` (``run --workers``: see `trioserver.pool`); serve owns (closes) them.
        serve_clients: run the client API listener; main of a ``run --workers`` pool does
            not (its workers accept every client connection, main writes).

    Calls ``task_status.started(RunningServer)`` when every subsystem is ready.
    """
    if shutdown is None:
        shutdown = trio.Event()
    signing_key = load_key_file(config.data_path(config.signing_key_path))
    logger.info("server %s, signing key %s", config.server_name, key_id(signing_key))
    async with open_configured_database(config) as db:
        await check_server_name(db, config.server_name)
        components = build_components(config, db, signing_key)
        for load in components.loaders:
            await load()
        async with trio.open_nursery() as background:
            # Supervised: a subsystem that fails is logged and restarted with backoff while
            # the API goes on serving (the events writer included: see EventPersister.run).
            if components.persister is not None:
                await background.start(
                    partial(run_supervised, components.persister.run, name="events writer")
                )
            replication = components.replication
            client_app = create_app(
                components.deps,
                forwarder=replication.forwarder,
                instance_name=config.instance_name,
            )
            # Listening before following: main and an events writer elsewhere follow each
            # other, and each would otherwise wait for the other's listener first.
            federation = components.deps.federation
            ports = await _start_replication_listeners(
                background,
                config,
                replication,
                client_app,
                backfill=(
                    federation.backfiller.backfill
                    if federation is not None and federation.backfiller is not None
                    else None
                ),
            )
            clients = replication.followed.clients if replication.followed is not None else ()
            for client in clients:
                # Started once caught up with its writer (or after its start timeout), so
                # that the first requests already see the writer's rows.
                await background.start(
                    partial(run_supervised, client.run, name="replication client")
                )
            for subsystem in components.subsystems:
                await background.start(run_supervised, subsystem)
            notifier = components.deps.notifier

            async def stop_serving() -> None:
                await shutdown.wait()
                # Answer long-polls (/sync) now: the drain would otherwise wait for their
                # timeouts, up to http.graceful_shutdown_seconds.
                notifier.shut_down()

            try:
                async with trio.open_nursery() as http_nursery:
                    running = RunningServer(())
                    if serve_clients:
                        running = await http_nursery.start(
                            partial(
                                run_http_api,
                                client_app,
                                config.http,
                                stop_serving,
                                listen_fds=listen_fds,
                            )
                        )
                    # The federation listener of its own ([federation] port) is main's: the
                    # one instance of a deployment that binds it.
                    federation_http = config.federation.listener(config.http)
                    if config.is_main and config.federation.enabled and federation_http:
                        federation = await http_nursery.start(
                            partial(
                                run_http_api,
                                client_app,
                                federation_http,
                                stop_serving,
                                section="federation",
                            )
                        )
                        ports["federation_port"] = federation.port
                    task_status.started(RunningServer(running.base_urls, **ports))
                    if not serve_clients and not ports.get("federation_port"):
                        await stop_serving()
            finally:
                for internal_client in replication.internal_clients:
                    with trio.CancelScope(shield=True):  # closing sockets only
                        await internal_client.aclose()
            # The HTTP API has drained; nothing can start new work any more.
            background.cancel_scope.cancel()


async def _start_replication_listeners(
    nursery: trio.Nursery,
    config: Config,
    replication: wiring.ReplicationPart,
    client_app: MatrixApp[Any],
    *,
    backfill: Callable[[str, int], Awaitable[list[str]]] | None = None,
) -> dict[str, int]:
    """This instance's replication and internal listeners (main of a multi-instance
    deployment, and an events writer that is not main); their bound ports (no replication
    port over Redis: the publisher takes its place)."""
    if replication.run_server is None:
        return {}
    # Imported here: an instance without these listeners (a worker) never loads them.
    from trioserver.internal.app import create_internal_app
    from trioserver.internal.serve import run_internal_http

    assert config.replication.secret is not None
    location = config.instance_map[config.instance_name]
    if config.is_main:
        internal_app = create_internal_app(
            secret=config.replication.secret,
            positions=replication.positions,
            client_app=client_app,
            writer_streams={stream.name: stream for stream in replication.writer_streams},
            presence_sync=replication.presence_sync,
            invalidate=replication.invalidate,
            backfill=backfill,
        )
    else:
        # The events writer's listener (issue 13): its events stream, and main's submissions.
        internal_app = create_internal_app(
            secret=config.replication.secret,
            positions=replication.positions,
            submit_events=replication.submit_events,
        )
    replication_port: int | None = await nursery.start(
        partial(run_supervised, replication.run_server, name="replication listener")
    )
    internal_port: int = await nursery.start(
        partial(
            run_supervised,
            partial(run_internal_http, internal_app, location.host, location.port),
            name="internal listener",
        )
    )
    ports = {"internal_port": internal_port}
    if replication_port is not None:
        ports["replication_port"] = replication_port
    return ports
