"""The builders `nursery.build_components` composes: one per part of an instance (no I/O).

Each builder is a plain function that builds one part from the config, the database, the
clock and the parts it depends on (passed explicitly, no globals), and returns a small frozen
record of what it built. A builder that connects its part to an earlier one (a listener on
the persister, on device changes, on receipts, on joins) does so itself, so the order in which
`build_components` calls the builders is the order in which listeners run. A part's
background tasks are in its record's ``subsystems``, and what must run before anything is
served in its ``loaders``.

One module rather than a package: the builders are short, read as one story of what an
instance is made of, and share the records; roles (issue 13) choose which of them to call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

import attrs

from trioserver.api.deps import ApiDeps
from trioserver.config import MAIN_INSTANCE
from trioserver.events import KNOWN_ROOM_VERSIONS
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
from trioserver.handlers.push_rules import PushRulesHandler
from trioserver.handlers.pushers import NoPusherDelivery, PushersHandler
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
from trioserver.internal.client import MainClient
from trioserver.internal.forwarding import Forwarder
from trioserver.listeners import host_port
from trioserver.media.filestore import MediaFileStore
from trioserver.media.preview.handler import PreviewHandler
from trioserver.media.thumbnails import ThumbnailService
from trioserver.repl.caches import EVENTS, CacheInvalidations
from trioserver.repl.client import FollowedWriters, ReplicationClient, ReplicationLink, TcpLink
from trioserver.repl.db_streams import DbWriterStream, EventsFollower
from trioserver.repl.stream_wiring import (
    announce_invalidations,
    apply_invalidations,
    follower_streams,
    writer_streams,
)
from trioserver.repl.streams import CACHES, FollowerStream, UpdatePage, WriterStream
from trioserver.storage.push_evaluation import PushEvaluator
from trioserver.stores.account_data import AccountDataStore
from trioserver.stores.accounts import AccountStore
from trioserver.stores.directory import DirectoryStore
from trioserver.stores.erasure import ErasureStore
from trioserver.stores.event_stream import EventStreamStore
from trioserver.stores.event_timestamps import EventTimestampStore
from trioserver.stores.events import EventCache, EventStore
from trioserver.stores.filters import FilterStore
from trioserver.stores.media import MediaStore
from trioserver.stores.media_thumbnails import MediaThumbnailStore
from trioserver.stores.openid import OpenIdStore
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
from trioserver.stores.stream_updates import StreamUpdateStore
from trioserver.stores.sync import SyncStore
from trioserver.stores.url_previews import UrlPreviewStore
from trioserver.streams import StreamPositions
from trioserver.supervisor import Subsystem

if TYPE_CHECKING:
    from collections.abc import Sequence

    from signedjson.types import SigningKey

    from trioserver.config import Config
    from trioserver.federation.deps import FederationDeps

    # Writer- and pusher-only code, imported by the builders that use it: a worker never loads
    # it (issue 13). The records name these types, but cattrs never structures the records, so
    # their annotations are not needed at run time (TC004 assumes every attrs class is).
    from trioserver.handlers.push_delivery import PusherPool  # noqa: TC004
    from trioserver.internal.app import Invalidate, PresenceSync, SubmitEvents  # noqa: TC004
    from trioserver.storage.expiry import EventExpirer  # noqa: TC004
    from trioserver.storage.intents import EventSubmitter
    from trioserver.storage.persistence import EventPersister  # noqa: TC004
    from trioserver.stores.database import Database
    from trioserver.stores.persist_events import PersistEventStore
    from trioserver.stores.stream_updates import EventRow

Clock = Callable[[], float]
Loader = Callable[[], Awaitable[None]]


@attrs.frozen
class AccountsPart:
    """Accounts, devices, access tokens and where devices were last seen."""

    store: AccountStore
    auth: AuthHandler
    erasure: ErasureStore
    client_ips: ClientIpRecorder
    accounts: AccountsHandler
    subsystems: tuple[Subsystem, ...]


def build_accounts(config: Config, db: Database, clock: Clock) -> AccountsPart:
    """Accounts and authentication."""
    store = AccountStore(db)
    auth = AuthHandler(store, bcrypt_rounds=config.registration.bcrypt_rounds)
    erasure = ErasureStore(db)
    client_ips = ClientIpRecorder(store, clock=clock)
    accounts = AccountsHandler(
        store, auth, erasure, server_name=config.server_name, client_ips=client_ips
    )
    # Issue 10: where devices were last seen is flushed in batches.
    return AccountsPart(store, auth, erasure, client_ips, accounts, subsystems=(client_ips.run,))


@attrs.frozen
class CorePart:
    """What every other part reads: events, state, stream positions and the notifier."""

    events: EventStore
    positions: StreamPositions
    notifier: Notifier
    state: StateStore
    profiles: ProfileStore
    directory: DirectoryStore
    relations: RelationStore
    loaders: tuple[Loader, ...]


def build_core(config: Config, db: Database) -> CorePart:
    """The shared read side of rooms and events."""
    events = EventStore(db, EventCache())
    positions = StreamPositions()
    notifier = Notifier(positions)
    state = StateStore(db, server_name=config.server_name)
    profiles = ProfileStore(db)
    directory = DirectoryStore(db)
    # Issue 11: relations are checked by the writer and bundled into served events.
    relations = RelationStore(db)
    return CorePart(
        events,
        positions,
        notifier,
        state,
        profiles,
        directory,
        relations,
        loaders=(relations.load,),
    )


@attrs.frozen
class PushEvaluationPart:
    """What the send path needs to evaluate push rules (issue 11)."""

    account_data_store: AccountDataStore
    push_actions: PushActionStore
    push_rules: PushRulesHandler
    evaluator: PushEvaluator


def build_push_evaluation(config: Config, db: Database, core: CorePart) -> PushEvaluationPart:
    """Push rules and their evaluation as each event is stored."""
    # One instance: it caches ignore lists, which the account data handler changes.
    account_data_store = AccountDataStore(db)
    # Issue 11: push actions are evaluated by the events writer as it stores each event.
    push_actions = PushActionStore(db)
    # Issue 11: push rules, cached per user; the send path evaluates them.
    push_rules = PushRulesHandler(PushRuleStore(db))
    evaluator = PushEvaluator(
        push_rules, core.events, account_data_store, server_name=config.server_name
    )
    return PushEvaluationPart(account_data_store, push_actions, push_rules, evaluator)


@attrs.frozen
class WriterPart:
    """The events writer's persister (seed 2: only on the events writer)."""

    persister: EventPersister


def build_writer(
    config: Config,
    db: Database,
    signing_key: SigningKey,
    clock: Clock,
    core: CorePart,
    push: PushEvaluationPart,
    *,
    persist_store: PersistEventStore | None,
) -> WriterPart:
    """The persister; registers the events stream and wakes the notifier on new events."""
    # Seed 2: the write side of event persistence exists only on the events writer. Imported
    # here: a worker never loads the writer's code (issue 13: its idle memory).
    from trioserver.storage.persistence import EventPersister
    from trioserver.storage.relation_checks import RelationChecker
    from trioserver.stores.persist_events import PersistEventStore

    if persist_store is None:
        persist_store = PersistEventStore(db, server_name=config.server_name, is_writer=True)
    persister = EventPersister(
        persist_store,
        core.events,
        db,
        server_name=config.server_name,
        signing_key=signing_key,
        ephemeral_messages=config.enable_ephemeral_messages,
        state_groups=core.state,
        clock=clock,
        relation_checks=RelationChecker(core.events, core.relations),
        push=push.evaluator,
    )
    core.positions.register("events", lambda: persister.stream_position)
    notifier = core.notifier
    persister.add_listener(lambda stored: notify_events(notifier, stored))
    return WriterPart(persister)


@attrs.frozen
class RoomsPart:
    """Joining, sending, creating rooms and reading them."""

    membership: MembershipHandler
    send: SendHandler
    room_read_store: RoomReadStore
    room_reads: RoomReadHandler
    room_creation: RoomCreationHandler


def build_rooms(
    config: Config,
    db: Database,
    core: CorePart,
    accounts: AccountsPart,
    push: PushEvaluationPart,
    submitter: EventSubmitter,
) -> RoomsPart:
    """The room handlers, writing through the persister (`NoEventWriter` on a worker)."""
    name = config.server_name
    membership = MembershipHandler(
        submitter,
        db,
        core.events,
        core.state,
        core.profiles,
        core.directory,
        server_name=name,
    )
    send = SendHandler(
        submitter,
        core.events,
        core.state,
        StateContentChecker(core.directory, server_name=name),
    )
    room_read_store = RoomReadStore(db)
    room_reads = RoomReadHandler(
        core.events,
        core.state,
        room_read_store,
        accounts.erasure,
        server_name=name,
        account_data=push.account_data_store,
        aggregator=Aggregator(core.relations, core.events, push.account_data_store),
    )
    room_creation = RoomCreationHandler(
        submitter, membership, core.directory, core.profiles, server_name=name
    )
    return RoomsPart(membership, send, room_read_store, room_reads, room_creation)


@attrs.frozen
class StreamsPart:
    """The handlers of the streams /sync carries besides events (issue 4)."""

    handlers: StreamHandlers
    user_directory: UserDirectoryHandler
    subsystems: tuple[Subsystem, ...]
    loaders: tuple[Loader, ...]


def build_streams(
    config: Config,
    db: Database,
    clock: Clock,
    core: CorePart,
    accounts: AccountsPart,
    push: PushEvaluationPart,
    writer: WriterPart | None,
    rooms: RoomsPart,
    *,
    forward_presence: Callable[[str, str | None, bool], Awaitable[None]] | None = None,
) -> StreamsPart:
    """Typing, receipts, account data, presence, to-device, device lists, user directory.

    Each stream's handler writes only on that stream's writer (main); elsewhere it follows
    the stream from replication, and presence from ``/sync`` goes to main (`forward_presence`).
    """
    name = config.server_name
    writes = config.writes
    account_data = AccountDataHandler(
        push.account_data_store,
        core.notifier,
        core.positions,
        core.state,
        server_name=name,
        writer=writes("account_data"),
    )
    handlers = StreamHandlers(
        typing=TypingHandler(
            db,
            core.notifier,
            core.positions,
            core.state,
            server_name=name,
            writer=writes("typing"),
        ),
        receipts=ReceiptsHandler(
            db,
            core.notifier,
            core.positions,
            core.state,
            server_name=name,
            events=core.events,
            room_reads=rooms.room_reads,
            account_data=account_data,
            clock=clock,
            writer=writes("receipts"),
        ),
        account_data=account_data,
        presence=PresenceHandler(
            db,
            core.notifier,
            core.positions,
            core.state,
            server_name=name,
            clock=clock,
            writer=writes("presence"),
            forward_sync=None if writes("presence") else forward_presence,
        ),
        to_device=ToDeviceHandler(
            db,
            core.notifier,
            core.positions,
            core.state,
            server_name=name,
            clock=clock,
            writer=writes("to_device"),
        ),
        e2e_keys=E2eKeysHandler(
            db,
            core.notifier,
            core.positions,
            core.state,
            server_name=name,
            clock=clock,
            writer=writes("device_lists"),
        ),
    )
    handlers.account_data.serve_push_rules(push.push_rules)
    user_directory = UserDirectoryHandler(
        db, core.notifier, core.positions, core.state, server_name=name
    )
    subsystems: list[Subsystem] = []
    if writes("device_lists"):
        # Issue 4: device changes feed the device_lists stream and drop deleted devices' keys
        # and pending to-device messages. (Devices change only through requests a worker
        # forwards to main.)
        accounts.accounts.add_device_listener(handlers.e2e_keys.on_devices_changed)
        accounts.accounts.add_device_listener(handlers.to_device.on_devices_changed)
    # Issue 4: typing and presence time out; leaving a room stops typing, messages are
    # activity. Main writes typing and presence; when another instance writes events, main
    # follows them instead of listening to a persister (`follow_events_on_main`).
    if writes("typing"):
        if writer is not None:
            writer.persister.add_listener(handlers.typing.on_new_events)
        subsystems.append(handlers.typing.run_timeouts)
    if writes("presence"):
        if writer is not None:
            writer.persister.add_listener(handlers.presence.on_new_events)
        subsystems.append(handlers.presence.run_timeouts)
    else:
        # A follower tells main when its users stop syncing (see PresenceHandler).
        subsystems.append(handlers.presence.run_sync_lingering)
    loaded = (
        handlers.typing,
        handlers.receipts,
        handlers.account_data,
        handlers.presence,
        handlers.to_device,
        handlers.e2e_keys,
        user_directory,
    )
    return StreamsPart(
        handlers,
        user_directory,
        subsystems=tuple(subsystems),
        loaders=tuple(h.load for h in loaded),
    )


@attrs.frozen
class SyncPart:
    """/sync and the legacy /events and /initialSync."""

    sync: SyncHandler
    legacy_events: LegacyEventStream
    legacy_sync: LegacyInitialSync


def build_sync(
    db: Database,
    core: CorePart,
    push: PushEvaluationPart,
    rooms: RoomsPart,
    streams: StreamsPart,
) -> SyncPart:
    """The sync handlers, woken by the notifier."""
    room_reads = rooms.room_reads
    room_sync = RoomSyncBuilder(
        core.events,
        core.state,
        SyncStore(db),
        rooms.room_read_store,
        room_reads.visibility,
        room_reads.serializer,
    )
    handlers = streams.handlers
    sync_store = SyncStore(db)
    sync = SyncHandler(
        core.notifier,
        room_sync,
        SyncStreams(handlers),
        handlers.presence,
        sync_store,
        push.push_actions,
    )
    legacy_events = LegacyEventStream(
        core.notifier, core.events, EventStreamStore(db), sync_store, room_reads, handlers
    )
    legacy_sync = LegacyInitialSync(
        core.notifier, sync, sync_store, core.events, core.directory, room_reads, handlers
    )
    return SyncPart(sync, legacy_events, legacy_sync)


@attrs.frozen
class PushersPart:
    """Pushers and their delivery (issue 11); the pool only on the pushers instance."""

    pool: PusherPool | None
    pushers: PushersHandler
    subsystems: tuple[Subsystem, ...]


def build_pushers(
    config: Config,
    db: Database,
    clock: Clock,
    core: CorePart,
    accounts: AccountsPart,
    writer: WriterPart | None,
    streams: StreamsPart,
) -> PushersPart:
    """Pushers and the pool that delivers to them."""
    # Issue 11: pushers, delivered by their own subsystem.
    pusher_store = PusherStore(db)
    if not config.runs_role("pushers"):
        # Issue 13: pushers are delivered by one instance, main (where receipts and devices
        # change: config validation says so); others only read the pusher table.
        pushers = PushersHandler(pusher_store, NoPusherDelivery(), clock=clock)
        return PushersPart(None, pushers, subsystems=())
    # Imported here: only the pushers instance loads delivery (and httpx, issue 13).
    from trioserver.handlers.push_delivery import PusherPool
    from trioserver.handlers.push_notification import NotificationBuilder

    notifications = NotificationBuilder(
        core.events, core.state, include_content=config.push.include_content
    )
    pool = PusherPool(pusher_store, core.events, notifications, config.push, clock=clock)
    pushers = PushersHandler(pusher_store, pool, clock=clock)
    # Issue 11: new events and read receipts wake the pushers; deleted devices lose theirs.
    # When another instance writes events, their replication wakes the pool instead
    # (`follow_events_on_main`).
    if writer is not None:
        writer.persister.add_listener(pool.on_persisted)
    streams.handlers.receipts.add_receipt_listener(pool.on_receipt)
    accounts.accounts.add_device_listener(pushers.on_devices_changed)
    return PushersPart(pool, pushers, subsystems=(pool.run_pushers,))


@attrs.frozen
class MediaPart:
    """The media repository and URL previews (issue 12)."""

    media: MediaRepository
    url_previews: PreviewHandler | None
    subsystems: tuple[Subsystem, ...]
    loaders: tuple[Loader, ...]


def build_media(config: Config, db: Database, clock: Clock) -> MediaPart:
    # Issue 13: every instance stores uploads and makes their thumbnails; one deletes unused
    # ids and expired previews (`[roles] media_expiry`).
    """The media repository, its thumbnails and (when enabled) URL previews."""
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
    # Issue 12: unused media ids expire; completed uploads get their thumbnails.
    expires = config.runs_role("media_expiry")
    subsystems: list[Subsystem] = [media.run_thumbnails]
    if expires:
        subsystems.append(media.run_expiry)
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
        if expires:
            subsystems.append(url_previews.run_expiry)
    return MediaPart(
        media,
        url_previews,
        subsystems=tuple(subsystems),
        # Issue 12: the media directories exist and stale temporary files are gone.
        loaders=(media.load,),
    )


@attrs.frozen
class UpgradesPart:
    """Room upgrades (issue 11)."""

    room_upgrade: RoomUpgradeHandler


def build_upgrades(
    config: Config,
    core: CorePart,
    push: PushEvaluationPart,
    rooms: RoomsPart,
    streams: StreamsPart,
) -> UpgradesPart:
    """The upgrade handler; joining an upgraded room copies the user's data over."""
    room_upgrade = RoomUpgradeHandler(
        core.state,
        core.events,
        rooms.send,
        rooms.room_creation,
        core.directory,
        streams.handlers.account_data,
        server_name=config.server_name,
        push_rules=push.push_rules,
    )
    # Issue 11: joining an upgraded room later copies the user's data for its predecessor.
    rooms.membership.add_join_listener(room_upgrade.on_join)
    return UpgradesPart(room_upgrade)


def build_api_deps(
    config: Config,
    db: Database,
    clock: Clock,
    accounts: AccountsPart,
    core: CorePart,
    push: PushEvaluationPart,
    rooms: RoomsPart,
    streams: StreamsPart,
    sync: SyncPart,
    pushers: PushersPart,
    media: MediaPart,
    upgrades: UpgradesPart,
    federation: FederationDeps | None = None,
) -> ApiDeps:
    """What the HTTP API uses, with the handlers only the API needs."""
    name = config.server_name
    events = core.events
    state = core.state
    room_reads = rooms.room_reads
    handlers = streams.handlers
    # Issue 11: room summaries serve /room_summary and the space hierarchy.
    room_summary = RoomSummaryHandler(RoomSummaryStore(db), events)
    return ApiDeps(
        server_name=name,
        http=config.http,
        registration=config.registration,
        default_room_version=config.rooms.default_room_version,
        room_versions=dict.fromkeys(KNOWN_ROOM_VERSIONS, "stable"),
        enable_ephemeral_messages=config.enable_ephemeral_messages,
        auth=accounts.auth,
        accounts=accounts.accounts,
        uia=InteractiveAuth(),
        ratelimits=Ratelimiters.from_config(config.ratelimit),
        shared_secret=SharedSecretRegistration(
            config.registration.shared_secret, accounts.accounts
        ),
        filters=FilterStore(db),
        events=events,
        state=state,
        profiles=core.profiles,
        directory=core.directory,
        membership=rooms.membership,
        room_creation=rooms.room_creation,
        send=rooms.send,
        profile=ProfileHandler(core.profiles, rooms.membership, state, events, server_name=name),
        directory_handler=DirectoryHandler(
            core.directory, state, events, rooms.send, server_name=name
        ),
        room_reads=room_reads,
        notifier=core.notifier,
        sync=sync.sync,
        legacy_events=sync.legacy_events,
        legacy_sync=sync.legacy_sync,
        typing=handlers.typing,
        receipts=handlers.receipts,
        account_data=handlers.account_data,
        presence=handlers.presence,
        to_device=handlers.to_device,
        e2e_keys=handlers.e2e_keys,
        user_directory=streams.user_directory,
        room_upgrade=upgrades.room_upgrade,
        openid=OpenIdHandler(OpenIdStore(db), server_name=name, clock=clock),
        room_keys=RoomKeysHandler(RoomKeyStore(db)),
        room_summary=room_summary,
        hierarchy=HierarchyHandler(room_summary, clock=clock),
        timestamp_lookup=TimestampLookup(EventTimestampStore(db), events, room_reads),
        reports=ReportsHandler(ReportStore(db), room_reads, events, server_name=name, clock=clock),
        voip=VoipHandler(config.voip, clock=clock),
        search=SearchHandler(SearchStore(db), room_reads, events, state),
        notifications=NotificationsHandler(push.push_actions, events, room_reads),
        push_rules=push.push_rules,
        relations=RelationsHandler(room_reads, core.relations, events),
        pushers=pushers.pushers,
        media=media.media,
        url_previews=media.url_previews,
        federation=federation,
    )


@attrs.frozen
class ExpiryPart:
    """The pruning of self-destructing messages (issue 5)."""

    expirer: EventExpirer
    subsystems: tuple[Subsystem, ...]


def build_expiry(db: Database, clock: Clock, core: CorePart, writer: WriterPart) -> ExpiryPart:
    """Self-destructing messages are pruned by the events writer only."""
    # Imported here: a worker never loads the writer's code (issue 13: its idle memory).
    from trioserver.storage.expiry import EventExpirer
    from trioserver.stores.censor_events import CensorEventsStore

    expirer = EventExpirer(CensorEventsStore(db), core.events.cache, wall_clock=clock)
    writer.persister.add_listener(expirer.on_persisted)
    return ExpiryPart(expirer, subsystems=(expirer.run,))


class StreamPublisher(Protocol):
    """What serves an instance's writer streams to the others: the TCP replication listener
    (`trioserver.repl.server`) or the Redis publisher (`trioserver.repl.redis_server`)."""

    def poke(self) -> None: ...

    def add_disconnect_listener(self, callback: Callable[[str], None]) -> None: ...


@attrs.frozen
class ReplicationPart:
    """How this instance talks to the other instances of its deployment (issue 13).

    Main of a multi-instance deployment has the `server` (the replication listener of the
    streams it writes) and serves the internal endpoints (`writer_streams`, `presence_sync`,
    and `invalidate` when another instance writes events). An events writer that is not main
    has a `server` for the events stream and serves `submit_events`. Every instance that
    follows a stream written elsewhere has `followed` (one replication client per writer);
    every instance but main has the `main_client` it forwards writes with and the `forwarder`
    its client API uses. A single instance has none of them.
    """

    positions: Callable[[], dict[str, int]]
    server: StreamPublisher | None = None
    # Runs `server` (``task_status.started(port)``: the TCP listener's, None over Redis).
    run_server: Subsystem | None = None
    writer_streams: tuple[WriterStream, ...] = ()
    presence_sync: PresenceSync | None = None
    invalidate: Invalidate | None = None
    submit_events: SubmitEvents | None = None
    followed: FollowedWriters | None = None
    main_client: MainClient | None = None
    forwarder: Forwarder | None = None
    # Main's client to an events writer elsewhere (`RemoteEventSubmitter`).
    writer_client: MainClient | None = None

    @property
    def internal_clients(self) -> tuple[MainClient, ...]:
        """The internal HTTP clients to close when the instance stops."""
        return tuple(c for c in (self.main_client, self.writer_client) if c is not None)


def build_replication_server(
    config: Config, core: CorePart, writer_streams: tuple[WriterStream, ...]
) -> tuple[StreamPublisher, Subsystem]:
    """What serves this instance's writer streams, poked on every advance, and the subsystem
    that runs it: main's replication listener (an events writer elsewhere: the one of its
    ``instance_map`` ``replication_port``), or with ``[replication] redis`` the publisher on
    this instance's Redis channels (issue 14)."""
    replication = config.replication
    server: StreamPublisher
    if replication.redis is not None:
        # Imported here: an instance on TCP replication never loads the Redis client.
        from trioserver.repl.redis_channels import writer_channels
        from trioserver.repl.redis_server import RedisReplicationServer  # writers only
        from trioserver.repl.resp import parse_redis_url

        redis = RedisReplicationServer(
            writer_streams,
            address=parse_redis_url(replication.redis),
            channels=writer_channels(
                replication.redis_channel_prefix, config.server_name, config.instance_name
            ),
            server_name=config.server_name,
            instance_name=config.instance_name,
            channel_prefix=replication.redis_channel_prefix,
        )
        server, run = redis, redis.run
    else:
        from trioserver.repl.server import ReplicationServer  # writers only

        secret = replication.secret
        assert secret is not None  # config validation
        port = replication.port
        if not config.is_main:
            writer_port = config.instance_map[config.instance_name].replication_port
            assert writer_port is not None  # config validation
            port = writer_port
        tcp = ReplicationServer(
            writer_streams,
            server_name=config.server_name,
            instance_name=config.instance_name,
            secret=secret,
        )
        server, run = tcp, partial(tcp.run, replication.bind, port)
    # Every stream advance ends in a notify (that is how /sync waiters learn of it).
    core.notifier.add_wake_listener(server.poke)
    return server, run


def internal_client_for(config: Config, instance: str) -> MainClient:
    """The HTTP client this instance reaches `instance`'s internal listener with."""
    secret = config.replication.secret
    assert secret is not None  # config validation
    location = config.instance_map[instance]
    return MainClient(
        f"http://{host_port(location.host, location.port)}",
        secret=secret,
        instance_name=config.instance_name,
    )


def main_client_for(config: Config) -> MainClient:
    """The HTTP client a worker reaches main's internal listener with."""
    return internal_client_for(config, MAIN_INSTANCE)


def _positions(core: CorePart, caches_position: Callable[[], int]) -> dict[str, int]:
    # What a forwarded write's answer carries: read after the write, so it covers it.
    return {**attrs.asdict(core.notifier.current_token()), CACHES: caches_position()}


@attrs.frozen
class CachesPart:
    """The caches stream: main writes an invalidation wherever it changes a cached fact,
    the other instances apply them to their caches (issue 13)."""

    caches: CacheInvalidations
    store: StreamUpdateStore
    subsystems: tuple[Subsystem, ...]
    loaders: tuple[Loader, ...]


def build_caches(
    config: Config,
    db: Database,
    core: CorePart,
    accounts: AccountsPart,
    push: PushEvaluationPart,
    expiry: ExpiryPart | None,
) -> CachesPart:
    """The caches stream, announcing (main) or applying (a worker) invalidations."""
    store = StreamUpdateStore(db)
    caches = CacheInvalidations(store, core.notifier, writer=config.is_main)
    if config.is_main:
        announce_invalidations(
            caches,
            auth=accounts.auth,
            push_rules=push.push_rules,
            erasure=accounts.erasure,
            expirer=expiry.expirer if expiry is not None else None,
        )
        return CachesPart(caches, store, subsystems=(caches.run_pruning,), loaders=(caches.load,))
    apply_invalidations(
        caches,
        auth=accounts.auth,
        push_rules=push.push_rules,
        erasure=accounts.erasure,
        event_cache=core.events.cache,
    )
    return CachesPart(caches, store, subsystems=(), loaders=(caches.load,))


def build_main_streams(
    config: Config,
    core: CorePart,
    events_position: Callable[[], int],
    streams: StreamsPart,
    caches: CachesPart,
    followed: FollowedWriters | None,
    writer_client: MainClient | None,
) -> ReplicationPart:
    """Main's side of replication: the streams it writes behind its replication listener
    (`events_position`: the persister's, or what main applied when another instance writes
    events, which main then `followed` and sends its events to with `writer_client`)."""
    handlers = streams.handlers
    positions = partial(_positions, core, caches.caches.position)
    if not config.is_multi_instance:
        return ReplicationPart(positions)
    served = tuple(
        stream
        for stream in writer_streams(
            caches.store,
            events_position=events_position,
            typing=handlers.typing,
            receipts=handlers.receipts,
            account_data=handlers.account_data,
            presence=handlers.presence,
            to_device=handlers.to_device,
            e2e_keys=handlers.e2e_keys,
            caches=caches.caches,
        )
        if stream.name == CACHES or config.writes(stream.name)
    )
    server, run_server = build_replication_server(config, core, served)
    server.add_disconnect_listener(handlers.presence.remote_instance_gone_nowait)
    invalidations = caches.caches

    async def invalidate(cache: str, keys: list[str]) -> None:
        await invalidations.invalidate(cache, keys)

    return ReplicationPart(
        positions,
        server=server,
        run_server=run_server,
        writer_streams=served,
        presence_sync=handlers.presence.remote_user_sync,
        invalidate=None if config.events_writer_is_main else invalidate,
        followed=followed,
        writer_client=writer_client,
    )


@attrs.frozen
class FollowerPart:
    """What this instance follows from the writers of the streams it does not write."""

    followed: FollowedWriters
    # The events stream's position here, when another instance writes it.
    events: EventsFollower | None
    loaders: tuple[Loader, ...]


def build_followers(
    config: Config,
    core: CorePart,
    streams: StreamsPart,
    caches: CachesPart,
    main_client: MainClient | None,
) -> FollowerPart:
    """A replication client per writer instance of the streams this instance does not write:
    main (every stream but events, applied from main's listener) and the events writer."""
    handlers = streams.handlers
    events = None
    if not config.is_events_writer:
        events = EventsFollower(core.events.cache, core.relations, core.notifier, 0)
        # Seed 2: no persister here; the events position is what replication has applied.
        core.positions.register("events", events.position)
    followers = follower_streams(
        caches.store,
        fetch=main_client.stream_updates if main_client is not None else _no_fetch,
        events=events,
        typing=handlers.typing,
        receipts=handlers.receipts,
        account_data=handlers.account_data,
        presence=handlers.presence,
        to_device=handlers.to_device,
        e2e_keys=handlers.e2e_keys,
        caches=caches.caches,
    )
    by_writer: dict[str, list[FollowerStream]] = {}
    for stream in followers:
        writer = config.stream_writers.writer_of(stream.name)
        if writer != config.instance_name:
            by_writer.setdefault(writer, []).append(stream)
    clients = [_replication_client(config, writer, group) for writer, group in by_writer.items()]
    for writer, client in zip(by_writer, clients, strict=True):
        if writer == MAIN_INSTANCE:
            client.add_connection_listener(partial(_main_connection_changed, handlers))
    loaders: tuple[Loader, ...] = ()
    if events is not None:
        loaders = (partial(events.load, caches.store),)
    return FollowerPart(FollowedWriters(clients), events, loaders)


def build_worker_replication(
    config: Config,
    core: CorePart,
    caches: CachesPart,
    followers: FollowerPart,
    main_client: MainClient,
    writer: WriterPart | None,
) -> ReplicationPart:
    """A worker's replication clients and the forwarding of its writes to main; an events
    writer that is not main also serves its events stream and ``submit_events``."""
    followed = followers.followed
    forwarder = Forwarder(
        main_client,
        is_connected=lambda: followed.connected,
        wait_for_positions=followed.wait_for_positions,
    )
    positions = partial(_positions, core, caches.caches.position)
    if writer is None:
        return ReplicationPart(
            positions, followed=followed, main_client=main_client, forwarder=forwarder
        )
    from trioserver.internal.remote_events import SubmissionHandler  # the events writer only

    persister = writer.persister
    events_stream = DbWriterStream("events", caches.store, lambda: persister.stream_position)
    server, run_server = build_replication_server(config, core, (events_stream,))
    return ReplicationPart(
        positions,
        server=server,
        run_server=run_server,
        writer_streams=(events_stream,),
        submit_events=SubmissionHandler(
            persister, lambda: persister.stream_position, followed.wait_for_positions
        ),
        followed=followed,
        main_client=main_client,
        forwarder=forwarder,
    )


def follow_events_on_main(
    events: EventsFollower, streams: StreamsPart, pushers: PushersPart
) -> None:
    """Main, when another instance writes events: what the persister's listeners do on the
    writer (typing, presence activity, pushers) follows the replicated events instead."""
    typing, presence, pool = streams.handlers.typing, streams.handlers.presence, pushers.pool

    def on_events(token: int, rows: Sequence[EventRow]) -> None:
        typing.on_replicated_events(rows)
        presence.on_replicated_events(rows)
        if pool is not None:  # main runs the pushers (config validation)
            pool.on_events_position(token)

    events.add_listener(on_events)


def announce_remote_expiry(expiry: ExpiryPart, main_client: MainClient) -> None:
    """An events writer that is not main: main writes the caches stream, so the expiry of an
    event is announced through main's internal ``invalidate``."""

    async def expired(event_id: str) -> None:
        await main_client.invalidate(EVENTS, [event_id])

    expiry.expirer.add_expiry_listener(expired)


def _replication_client(
    config: Config, writer: str, streams: Sequence[FollowerStream]
) -> ReplicationClient:
    replication = config.replication
    link: ReplicationLink
    if replication.redis is not None:
        from trioserver.repl.redis_channels import writer_channels
        from trioserver.repl.redis_link import RedisLink
        from trioserver.repl.resp import parse_redis_url

        prefix = replication.redis_channel_prefix
        link = RedisLink(
            address=parse_redis_url(replication.redis),
            channels=writer_channels(prefix, config.server_name, writer),
            instance_name=config.instance_name,
            server_name=config.server_name,
            channel_prefix=prefix,
        )
        return ReplicationClient(streams, link)
    secret = replication.secret
    assert secret is not None  # config validation
    location = config.instance_map[writer]
    port = replication.port if writer == MAIN_INSTANCE else location.replication_port
    assert port is not None  # config validation
    link = TcpLink(
        host=location.host,
        port=port,
        secret=secret,
        instance_name=config.instance_name,
        server_name=config.server_name,
    )
    return ReplicationClient(streams, link)


def _main_connection_changed(handlers: StreamHandlers, connected: bool) -> None:
    # Typing lives in main's memory: an instance cut off cannot tell whether main restarted
    # (its typing stream back at 0) and went past our position again. Start over: the next
    # connection catches up from 0, which gives every room's current typists.
    if not connected:
        handlers.typing.reset(0)
        # Main ends a departed instance's presence syncs: announce them again.
        handlers.presence.forget_announced_nowait()


async def _no_fetch(stream: str, from_token: int, upto_token: int) -> UpdatePage:
    # Main fetches nothing over HTTP: it writes typing itself.
    raise AssertionError(f"main does not fetch {stream}")
