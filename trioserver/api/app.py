"""Assembling the ASGI application from the route tables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.client import (
    account,
    account_data,
    admin,
    devices,
    directory,
    discovery,
    e2ee,
    ephemeral,
    filters,
    legacy,
    login,
    media,
    media_preview,
    notifications,
    openid,
    profile,
    push_rules,
    pushers,
    register,
    relations,
    reports,
    room_keys,
    room_reads,
    room_send,
    room_upgrade,
    rooms,
    search,
    spaces,
    sync,
    threepid,
    user_directory,
    voip,
    whois,
)
from trioserver.api.federation import keys as federation_keys, server_api as federation_server_api
from trioserver.api.http import MatrixApp, Request, Route

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps
    from trioserver.handlers.auth import Requester
    from trioserver.internal.forwarding import Forwarder

ROUTE_TABLES: list[list[Route[ApiDeps]]] = [
    discovery.ROUTES,
    login.ROUTES,
    register.ROUTES,
    account.ROUTES,
    devices.ROUTES,
    filters.ROUTES,
    admin.ROUTES,
    rooms.ROUTES,
    room_send.ROUTES,
    room_reads.ROUTES,
    room_upgrade.ROUTES,
    profile.ROUTES,
    directory.ROUTES,
    sync.ROUTES,
    ephemeral.ROUTES,
    account_data.ROUTES,
    e2ee.ROUTES,
    user_directory.ROUTES,
    legacy.ROUTES,
    openid.ROUTES,
    whois.ROUTES,
    threepid.ROUTES,
    room_keys.ROUTES,
    spaces.ROUTES,
    reports.ROUTES,
    voip.ROUTES,
    search.ROUTES,
    notifications.ROUTES,
    push_rules.ROUTES,
    relations.ROUTES,
    pushers.ROUTES,
    # Issue 12: the media repository.
    media.ROUTES,
    media_preview.ROUTES,
    # Issue 15: the Server-Server API, on the same listener.
    federation_keys.ROUTES,
    federation_server_api.ROUTES,
]


def create_app(
    deps: ApiDeps, *, forwarder: Forwarder | None = None, instance_name: str | None = None
) -> MatrixApp[ApiDeps]:
    """The client-server API (and Synapse admin registration) as an ASGI app.

    Args:
        forwarder: on a worker, takes the writes it does not make itself to main (issue 13).
        instance_name: named in an ``X-Trioserver-Instance`` header on every response.
    """
    routes = [r for table in ROUTE_TABLES for r in table]

    def seen(requester: Requester, request: Request) -> None:
        deps.accounts.seen_nowait(requester, request.client_ip, request.headers.get("user-agent"))

    return MatrixApp(
        deps,
        routes,
        authenticate=deps.auth.requester_for_token,
        max_body_size=deps.http.max_request_body_size,
        log_access=deps.http.log_access,
        on_authenticated=seen,
        forwarder=forwarder,
        instance_name=instance_name,
        authenticate_server=(
            deps.federation.authenticator if deps.federation is not None else None
        ),
    )
