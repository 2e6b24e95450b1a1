"""Everything the HTTP API needs, handed to `create_app` as one frozen object (STYLE S9)."""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from trioserver.config import HttpConfig, RegistrationConfig
from trioserver.handlers.accounts import AccountsHandler
from trioserver.handlers.auth import AuthHandler
from trioserver.handlers.ratelimit import Ratelimiters
from trioserver.handlers.shared_secret import SharedSecretRegistration
from trioserver.handlers.uia import InteractiveAuth
from trioserver.stores.filters import FilterStore


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
