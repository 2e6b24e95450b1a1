"""Synapse's shared-secret registration endpoint (``/_synapse/admin/v1/register``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.client.login import login_response
from trioserver.api.http import JsonDict, Request, Route, route

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

ADMIN_V1 = "/_synapse/admin/v1"


async def get_nonce(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /_synapse/admin/v1/register: a single-use nonce."""
    return {"nonce": deps.shared_secret.new_nonce()}


async def post_register(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /_synapse/admin/v1/register: create a user with an HMAC over the shared secret."""
    result = await deps.shared_secret.register(request.json(), request.client_ip)
    return login_response(deps, result)


ROUTES: list[Route[ApiDeps]] = [
    # The nonce is kept in main's memory, where the POST that uses it is forwarded.
    route("GET", f"{ADMIN_V1}/register", get_nonce, auth="none", on_main=True),
    route("POST", f"{ADMIN_V1}/register", post_register, auth="none"),
]
