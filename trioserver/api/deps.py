"""Everything the HTTP API needs, handed to `create_app` as one frozen object (STYLE S9)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from trioserver.config import HttpConfig, RegistrationConfig
from trioserver.federation.deps import FederationDeps
from trioserver.handlers.account_data import AccountDataHandler
from trioserver.handlers.accounts import AccountsHandler
from trioserver.handlers.auth import AuthHandler
from trioserver.handlers.directory import DirectoryHandler
from trioserver.handlers.e2e_keys import E2eKeysHandler
from trioserver.handlers.hierarchy import HierarchyHandler
from trioserver.handlers.legacy_events import LegacyEventStream
from trioserver.handlers.legacy_sync import LegacyInitialSync
from trioserver.handlers.media import MediaRepository
from trioserver.handlers.membership import MembershipHandler
from trioserver.handlers.notifications import NotificationsHandler
from trioserver.handlers.notifier import Notifier
from trioserver.handlers.openid import OpenIdHandler
from trioserver.handlers.presence import PresenceHandler
from trioserver.handlers.profile import ProfileHandler
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
from trioserver.handlers.sync import SyncHandler
from trioserver.handlers.timestamp_lookup import TimestampLookup
from trioserver.handlers.to_device import ToDeviceHandler
from trioserver.handlers.typing import TypingHandler
from trioserver.handlers.uia import InteractiveAuth
from trioserver.handlers.user_directory import UserDirectoryHandler
from trioserver.handlers.voip import VoipHandler
from trioserver.media.preview.handler import PreviewHandler
from trioserver.stores.directory import DirectoryStore
from trioserver.stores.events import EventStore
from trioserver.stores.filters import FilterStore
from trioserver.stores.profiles import ProfileStore
from trioserver.stores.state import StateStore


@attrs.frozen
class ApiDeps:
    """The handlers and settings the client-server API uses."""

    server_name: str
    http: HttpConfig
    registration: RegistrationConfig
    default_room_version: str
    room_versions: Mapping[str, str]
    enable_ephemeral_messages: bool
    auth: AuthHandler
    accounts: AccountsHandler
    uia: InteractiveAuth
    ratelimits: Ratelimiters
    shared_secret: SharedSecretRegistration
    filters: FilterStore
    events: EventStore
    state: StateStore
    profiles: ProfileStore
    directory: DirectoryStore
    membership: MembershipHandler
    room_creation: RoomCreationHandler
    send: SendHandler
    profile: ProfileHandler
    directory_handler: DirectoryHandler
    room_reads: RoomReadHandler
    notifier: Notifier
    typing: TypingHandler
    receipts: ReceiptsHandler
    account_data: AccountDataHandler
    presence: PresenceHandler
    to_device: ToDeviceHandler
    e2e_keys: E2eKeysHandler
    user_directory: UserDirectoryHandler
    sync: SyncHandler
    # The deprecated v1 endpoints (GET /events, /initialSync).
    legacy_events: LegacyEventStream
    legacy_sync: LegacyInitialSync
    room_upgrade: RoomUpgradeHandler
    openid: OpenIdHandler
    # Server-side key backups (issue 11).
    room_keys: RoomKeysHandler
    # Issue 11 (spaces): room summaries, the space hierarchy, jump to date, reports, TURN.
    room_summary: RoomSummaryHandler
    hierarchy: HierarchyHandler
    timestamp_lookup: TimestampLookup
    reports: ReportsHandler
    voip: VoipHandler
    # Issue 11: POST /search.
    search: SearchHandler
    notifications: NotificationsHandler
    push_rules: PushRulesHandler
    relations: RelationsHandler
    pushers: PushersHandler
    # Issue 12: the media repository.
    media: MediaRepository
    # Issue 12: GET /preview_url; None when media.url_preview_enabled is off.
    url_previews: PreviewHandler | None
    # Issue 15: the Server-Server API; None when federation.enabled is off.
    federation: FederationDeps | None = None
