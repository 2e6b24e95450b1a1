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
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from trioserver.api.app import create_app
from trioserver.api.deps import ApiDeps
from trioserver.handlers.account_data import AccountDataHandler
from trioserver.handlers.accounts import AccountsHandler
from trioserver.handlers.aggregations import Aggregator
from trioserver.handlers.auth import AuthHandler
from trioserver.handlers.client_ips import ClientIpRecorder
from trioserver.handlers.directory import DirectoryHandler
from trioserver.handlers.e2e_keys import E2eKeysHandler
from trioserver.handlers.hierarchy import HierarchyHandler
from trioserver.handlers.legacy_events import LegacyEventStream
from trioserver.handlers.legacy_sync import LegacyInitialSync
from trioserver.handlers.media import MediaRepository
from trioserver.handlers.membership import MembershipHandler
from trioserver.handlers.notifications import NotificationsHandler
from trioserver.handlers.notifier import Notifier, notify_events
from trioserver.handlers.openid import OpenIdHandler
from trioserver.handlers.presence import PresenceHandler
from trioserver.handlers.profile import ProfileHandler
from trioserver.handlers.push_delivery import PusherPool
from trioserver.handlers.push_notification import NotificationBuilder
from trioserver.handlers.push_rules import PushRulesHandler
from trioserver.handlers.pushers import PushersHandler
from trioserver.handlers.ratelimit import Ratelimiters
from trioserver.handlers.receipts import ReceiptsHandler
from trioserver.handlers.relations import RelationsHandler
from trioserver.handlers.reports import ReportsHandler
from trioserver.handlers.room_creation import RoomCreationHandler
from trioserver.handlers.room_keys import RoomKeysHandler
from trioserver.handlers.room_reads import RoomReadHandler
from trioserver.handlers.room_summary import RoomSummaryHandler
from trioserver.handlers.room_upgrade import RoomUpgradeHandler
from trioserver.handlers.search import SearchHandler
from trioserver.handlers.send import SendHandler
from trioserver.handlers.shared_secret import SharedSecretRegistration
from trioserver.handlers.state_checks import StateContentChecker
from trioserver.handlers.sync import SyncHandler
from trioserver.handlers.sync_rooms import RoomSyncBuilder
from trioserver.handlers.sync_streams import StreamHandlers, SyncStreams
from trioserver.handlers.timestamp_lookup import TimestampLookup
from trioserver.handlers.to_device import ToDeviceHandler
from trioserver.handlers.typing import TypingHandler
from trioserver.handlers.uia import InteractiveAuth
from trioserver.handlers.user_directory import UserDirectoryHandler
from trioserver.handlers.voip import VoipHandler
from trioserver.keys import key_id, load_key_file
from trioserver.media.filestore import MediaFileStore
from trioserver.media.preview.handler import PreviewHandler
from trioserver.media.thumbnails import ThumbnailService
from trioserver.storage.expiry import EventExpirer
from trioserver.storage.persistence import EventPersister
from trioserver.storage.push_evaluation import PushEvaluator
from trioserver.storage.relation_checks import RelationChecker
from trioserver.stores.account_data import AccountDataStore
from trioserver.stores.accounts import AccountStore
from trioserver.stores.censor_events import CensorEventsStore
from trioserver.stores.database import Database, open_database
from trioserver.stores.directory import DirectoryStore
from trioserver.stores.erasure import ErasureStore
from trioserver.stores.event_stream import EventStreamStore
from trioserver.stores.event_timestamps import EventTimestampStore
from trioserver.stores.events import EventCache, EventStore
from trioserver.stores.filters import FilterStore
from trioserver.stores.media import MediaStore
from trioserver.stores.media_thumbnails import MediaThumbnailStore
from trioserver.stores.meta import check_server_name
from trioserver.stores.openid import OpenIdStore
from trioserver.stores.persist_events import PersistEventStore
from trioserver.stores.profiles import ProfileStore
from trioserver.stores.push_actions import PushActionStore
from trioserver.stores.push_rules import PushRuleStore
from trioserver.stores.pushers import PusherStore
from trioserver.stores.relations import RelationStore
from trioserver.stores.reports import ReportStore
from trioserver.stores.room_keys import RoomKeyStore
from trioserver.stores.room_reads import RoomReadStore
from trioserver.stores.room_summary import RoomSummaryStore
from trioserver.stores.search import SearchStore
from trioserver.stores.state import StateStore
from trioserver.stores.sync import SyncStore
from trioserver.stores.url_previews import UrlPreviewStore
from trioserver.streams import StreamPositions
from trioserver.supervisor import run_supervised

if TYPE_CHECKING:
    from signedjson.types import SigningKey

    from trioserver.api.http import MatrixApp
    from trioserver.config import Config, HttpConfig

from trioserver.errors import ConfigError, StartupError
from trioserver.events import KNOWN_ROOM_VERSIONS

logger = logging.getLogger(__name__)


@attrs.frozen
class RunningServer:
    """What `serve` reports once it is ready."""

    base_urls: tuple[str, ...]

    @property
    def port(self) -> int:
        """The port of the first listener (useful when the config asked for port 0)."""
        port = urlsplit(self.base_urls[0]).port
        assert port is not None
        return port


def _bind_strings(http: HttpConfig) -> list[str]:
    return [
        f"[{addr}]:{http.port}" if ":" in addr else f"{addr}:{http.port}"
        for addr in http.bind_addresses
    ]


KEEP_ALIVE_TIMEOUT_S = 75.0


def _hypercorn_config(http: HttpConfig) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = _bind_strings(http)
    if http.tls_certificate_path is not None:
        hc.certfile = http.tls_certificate_path
        hc.keyfile = http.tls_private_key_path
    hc.graceful_timeout = http.graceful_shutdown_seconds
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    hc.include_server_header = False
    # hypercorn closes idle connections after 5 s; a client that reuses one just as it closes
    # sees "connection closed" (SyTest lost tests to this). Keep them as long as nginx does.
    hc.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S
    return hc


# What a newcomer can do about the usual reasons a listener cannot bind.
_BIND_HINTS = {
    errno.EADDRINUSE: "is another server running on it?",
    errno.EADDRNOTAVAIL: "it is not an address of this machine",
    errno.EACCES: "ports below 1024 need extra privileges",
}


def _listen_error(http: HttpConfig, group: BaseExceptionGroup[OSError]) -> StartupError:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    assert isinstance(exc, OSError)
    reason = exc.strerror or str(exc)
    reason = reason[:1].lower() + reason[1:]
    hint = _BIND_HINTS.get(exc.errno or 0)
    return StartupError(
        f"cannot listen on {', '.join(_bind_strings(http))} (http.port / http.bind_addresses):"
        f" {reason}" + (f" ({hint})" if hint else "")
    )


async def run_http_api(
    app: MatrixApp[Any],
    http: HttpConfig,
    shutdown_trigger: Callable[[], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the client API until `shutdown_trigger` returns, then drain in-flight requests.

    Calls ``task_status.started(RunningServer)`` once listening.
    """

    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_serve(
            app,
            _hypercorn_config(http),
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
            raise _listen_error(http, group) from None
        task_status.started(RunningServer(tuple(binds)))


Subsystem = Callable[..., Awaitable[None]]


@attrs.frozen
class Components:
    """Everything one instance runs, wired together.

    Attributes:
        deps: what the HTTP API uses.
        persister: the events writer's controller (None on other instances).
        loaders: run once, in order, before anything is served (e.g. reading stream
            positions).
        subsystems: background tasks, each ``run_x(*, task_status)`` (STYLE S1).
    """

    deps: ApiDeps
    persister: EventPersister | None
    loaders: tuple[Callable[[], Awaitable[None]], ...] = ()
    subsystems: tuple[Subsystem, ...] = ()


def _stream_handlers(
    config: Config,
    db: Database,
    notifier: Notifier,
    positions: StreamPositions,
    state: StateStore,
    events: EventStore,
    room_reads: RoomReadHandler,
    clock: Callable[[], float],
    account_data_store: AccountDataStore,
) -> StreamHandlers:
    """The handlers of the streams /sync carries besides events (issue 4)."""
    name = config.server_name
    account_data = AccountDataHandler(
        account_data_store, notifier, positions, state, server_name=name
    )
    return StreamHandlers(
        typing=TypingHandler(db, notifier, positions, state, server_name=name),
        receipts=ReceiptsHandler(
            db,
            notifier,
            positions,
            state,
            server_name=name,
            events=events,
            room_reads=room_reads,
            account_data=account_data,
            clock=clock,
        ),
        account_data=account_data,
        presence=PresenceHandler(db, notifier, positions, state, server_name=name, clock=clock),
        to_device=ToDeviceHandler(db, notifier, positions, state, server_name=name, clock=clock),
        e2e_keys=E2eKeysHandler(db, notifier, positions, state, server_name=name, clock=clock),
    )


def build_components(
    config: Config,
    db: Database,
    signing_key: SigningKey,
    *,
    persist_store: PersistEventStore | None = None,
    clock: Callable[[], float] = time.time,
) -> Components:
    """The stores, handlers and (on the events writer) the persister, wired together (no I/O).

    Args:
        persist_store: the writer store to use (tests pass an instrumented one).
        clock: wall-clock time in seconds (tests tie it to trio's MockClock).

    Raises:
        ConfigError: this instance is not the events writer; forwarding events to another
            instance comes with worker processes (a later issue).
    """
    account_store = AccountStore(db)
    auth = AuthHandler(account_store, bcrypt_rounds=config.registration.bcrypt_rounds)
    erasure = ErasureStore(db)
    client_ips = ClientIpRecorder(account_store, clock=clock)
    accounts = AccountsHandler(
        account_store, auth, erasure, server_name=config.server_name, client_ips=client_ips
    )
    events = EventStore(db, EventCache())
    positions = StreamPositions()
    notifier = Notifier(positions)
    state = StateStore(db, server_name=config.server_name)
    profiles = ProfileStore(db)
    directory = DirectoryStore(db)
    # Issue 11: relations are checked by the writer and bundled into served events.
    relation_store = RelationStore(db)
    if not config.is_events_writer:
        raise ConfigError(
            f"instance {config.instance_name!r} is not the events writer"
            f" ({config.stream_writers.events!r}); worker instances are not supported yet"
        )
    # Seed 2: the write side of event persistence exists only on the events writer.
    if persist_store is None:
        persist_store = PersistEventStore(db, server_name=config.server_name, is_writer=True)
    # One instance: it caches ignore lists, which the account data handler changes.
    account_data_store = AccountDataStore(db)
    # Issue 11: push actions are evaluated by the events writer as it stores each event.
    push_actions = PushActionStore(db)
    # Issue 11: push rules, cached per user; the send path evaluates them.
    push_rules = PushRulesHandler(PushRuleStore(db))
    push_evaluator = PushEvaluator(
        push_rules, events, account_data_store, server_name=config.server_name
    )
    persister = EventPersister(
        persist_store,
        events,
        db,
        server_name=config.server_name,
        signing_key=signing_key,
        ephemeral_messages=config.enable_ephemeral_messages,
        state_groups=state,
        clock=clock,
        relation_checks=RelationChecker(events, relation_store),
        push=push_evaluator,
    )
    positions.register("events", lambda: persister.stream_position)
    persister.add_listener(lambda stored: notify_events(notifier, stored))
    membership = MembershipHandler(
        persister, db, events, state, profiles, directory, server_name=config.server_name
    )
    send = SendHandler(
        persister, events, state, StateContentChecker(directory, server_name=config.server_name)
    )
    room_read_store = RoomReadStore(db)
    room_reads = RoomReadHandler(
        events,
        state,
        room_read_store,
        erasure,
        server_name=config.server_name,
        account_data=account_data_store,
        aggregator=Aggregator(relation_store, events, account_data_store),
    )
    room_sync = RoomSyncBuilder(
        events,
        state,
        SyncStore(db),
        room_read_store,
        room_reads.visibility,
        room_reads.serializer,
    )
    streams = _stream_handlers(
        config,
        db,
        notifier,
        positions,
        state,
        events,
        room_reads,
        clock,
        account_data_store,
    )
    streams.account_data.serve_push_rules(push_rules)
    sync_store = SyncStore(db)
    sync = SyncHandler(
        notifier, room_sync, SyncStreams(streams), streams.presence, sync_store, push_actions
    )
    legacy_events = LegacyEventStream(
        notifier, events, EventStreamStore(db), sync_store, room_reads, streams
    )
    legacy_sync = LegacyInitialSync(
        notifier, sync, sync_store, events, directory, room_reads, streams
    )
    room_creation = RoomCreationHandler(
        persister, membership, directory, profiles, server_name=config.server_name
    )
    # Issue 11: room summaries serve /room_summary and the space hierarchy.
    room_summary = RoomSummaryHandler(RoomSummaryStore(db), events)
    # Issue 11: pushers, delivered by their own subsystem (one chosen instance, later).
    pusher_store = PusherStore(db)
    notifications = NotificationBuilder(events, state, include_content=config.push.include_content)
    pusher_pool = PusherPool(pusher_store, events, notifications, config.push, clock=clock)
    # Issue 12: the media repository; files under data_dir/media, metadata in local_media.
    media_root = config.data_path(config.media.storage_path)
    media = MediaRepository(
        MediaStore(db),
        MediaFileStore(media_root),
        config.media,
        server_name=config.server_name,
        thumbnails=ThumbnailService(
            MediaThumbnailStore(db), media_root, config.media, clock=clock
        ),
        clock=clock,
    )
    # Issue 12: URL previews, only when enabled (they fetch any URL a user names).
    url_previews = None
    if config.media.url_preview_enabled:
        # A page's og:image is kept as local media, uploaded in the server's own name.
        url_previews = PreviewHandler(
            UrlPreviewStore(db),
            config.media,
            store_image=partial(media.store_preview_image, f"@preview:{config.server_name}"),
            clock=clock,
        )
    deps = ApiDeps(
        server_name=config.server_name,
        http=config.http,
        registration=config.registration,
        default_room_version=config.rooms.default_room_version,
        room_versions=dict.fromkeys(KNOWN_ROOM_VERSIONS, "stable"),
        enable_ephemeral_messages=config.enable_ephemeral_messages,
        auth=auth,
        accounts=accounts,
        uia=InteractiveAuth(),
        ratelimits=Ratelimiters.from_config(config.ratelimit),
        shared_secret=SharedSecretRegistration(config.registration.shared_secret, accounts),
        filters=FilterStore(db),
        events=events,
        state=state,
        profiles=profiles,
        directory=directory,
        membership=membership,
        room_creation=room_creation,
        send=send,
        profile=ProfileHandler(
            profiles, membership, state, events, server_name=config.server_name
        ),
        directory_handler=DirectoryHandler(
            directory, state, events, send, server_name=config.server_name
        ),
        room_reads=room_reads,
        notifier=notifier,
        sync=sync,
        legacy_events=legacy_events,
        legacy_sync=legacy_sync,
        typing=streams.typing,
        receipts=streams.receipts,
        account_data=streams.account_data,
        presence=streams.presence,
        to_device=streams.to_device,
        e2e_keys=streams.e2e_keys,
        user_directory=UserDirectoryHandler(
            db, notifier, positions, state, server_name=config.server_name
        ),
        room_upgrade=RoomUpgradeHandler(
            state,
            events,
            send,
            room_creation,
            directory,
            streams.account_data,
            server_name=config.server_name,
            push_rules=push_rules,
        ),
        openid=OpenIdHandler(OpenIdStore(db), server_name=config.server_name, clock=clock),
        room_keys=RoomKeysHandler(RoomKeyStore(db)),
        room_summary=room_summary,
        hierarchy=HierarchyHandler(room_summary, clock=clock),
        timestamp_lookup=TimestampLookup(EventTimestampStore(db), events, room_reads),
        reports=ReportsHandler(
            ReportStore(db), room_reads, events, server_name=config.server_name, clock=clock
        ),
        voip=VoipHandler(config.voip, clock=clock),
        search=SearchHandler(SearchStore(db), room_reads, events, state),
        notifications=NotificationsHandler(push_actions, events, room_reads),
        push_rules=push_rules,
        relations=RelationsHandler(room_reads, relation_store, events),
        pushers=PushersHandler(pusher_store, pusher_pool, clock=clock),
        media=media,
        url_previews=url_previews,
    )
    # Issue 11: joining an upgraded room later copies the user's data for its predecessor.
    membership.add_join_listener(deps.room_upgrade.on_join)
    stream_handlers = (
        deps.typing,
        deps.receipts,
        deps.account_data,
        deps.presence,
        deps.to_device,
        deps.e2e_keys,
        deps.user_directory,
    )
    # Issue 10: where devices were last seen is flushed in batches.
    subsystems: list[Subsystem] = [client_ips.run]
    # Issue 4: device changes feed the device_lists stream and drop deleted devices' keys
    # and pending to-device messages.
    accounts.add_device_listener(deps.e2e_keys.on_devices_changed)
    accounts.add_device_listener(deps.to_device.on_devices_changed)
    # Issue 4: typing and presence time out; leaving a room stops typing, messages are activity.
    persister.add_listener(deps.typing.on_new_events)
    persister.add_listener(deps.presence.on_new_events)
    subsystems += [deps.typing.run_timeouts, deps.presence.run_timeouts]
    # Issue 11: new events and read receipts wake the pushers; deleted devices lose theirs.
    persister.add_listener(pusher_pool.on_persisted)
    streams.receipts.add_receipt_listener(pusher_pool.on_receipt)
    accounts.add_device_listener(deps.pushers.on_devices_changed)
    subsystems.append(pusher_pool.run_pushers)
    # Issue 12: unused media ids expire; completed uploads get their thumbnails.
    subsystems += [media.run_expiry, media.run_thumbnails]
    if url_previews is not None:
        subsystems.append(url_previews.run_expiry)
    if config.enable_ephemeral_messages:
        # Issue 5: self-destructing messages are pruned by the events writer only.
        expirer = EventExpirer(CensorEventsStore(db), events.cache, wall_clock=clock)
        persister.add_listener(expirer.on_persisted)
        subsystems.append(expirer.run)
    return Components(
        deps,
        persister,
        loaders=(
            *(h.load for h in stream_handlers),
            relation_store.load,
            # Issue 12: the media directories exist and stale temporary files are gone.
            media.load,
        ),
        subsystems=tuple(subsystems),
    )


async def serve(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[RunningServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one server instance until `shutdown` is set (graceful) or it is cancelled.

    Args:
        config: the instance's configuration (data files must exist: see `cli`).
        shutdown: set it to stop gracefully.

    Calls ``task_status.started(RunningServer)`` when every subsystem is ready.
    """
    if shutdown is None:
        shutdown = trio.Event()
    signing_key = load_key_file(config.data_path(config.signing_key_path))
    logger.info("server %s, signing key %s", config.server_name, key_id(signing_key))
    async with open_database(
        config.data_path(config.database.path),
        synchronous=config.database.synchronous,
        readers=config.database.reader_connections,
    ) as db:
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
            for subsystem in components.subsystems:
                await background.start(run_supervised, subsystem)
            notifier = components.deps.notifier

            async def stop_serving() -> None:
                await shutdown.wait()
                # Answer long-polls (/sync) now: the drain would otherwise wait for their
                # timeouts, up to http.graceful_shutdown_seconds.
                notifier.shut_down()

            async with trio.open_nursery() as http_nursery:
                running = await http_nursery.start(
                    run_http_api, create_app(components.deps), config.http, stop_serving
                )
                task_status.started(running)
            # The HTTP API has drained; nothing can start new work any more.
            background.cancel_scope.cancel()
