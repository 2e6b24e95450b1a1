"""Client-server API routes: ``GET /voip/turnServer`` (spec "Voice over IP") and the
third-party network lookups (spec "Application Services"), which answer as Synapse does with
no application services registered."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.api.http import CLIENT, JsonDict, Request, Response, Route, route
from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def get_turn_server(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /voip/turnServer: ``{}`` when no TURN server is configured (Synapse)."""
    requester = request.requester
    return deps.voip.turn_server(requester.user_id, is_guest=requester.is_guest)


async def get_protocols(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /thirdparty/protocols: no bridges, no protocols."""
    return {}


async def get_protocol(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /thirdparty/protocol/{protocol}: every protocol is unknown."""
    raise MatrixError("M_NOT_FOUND", "Unknown protocol")


async def get_empty_list(deps: ApiDeps, request: Request) -> Response:
    """GET /thirdparty/location[/{protocol}] and /thirdparty/user[/{protocol}]: nothing."""
    empty: list[Any] = []
    return Response(empty)


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/voip/turnServer", get_turn_server, auth="required", guest=True),
    route("GET", f"{CLIENT}/thirdparty/protocols", get_protocols, auth="required", guest=True),
    route(
        "GET",
        f"{CLIENT}/thirdparty/protocol/{{protocol}}",
        get_protocol,
        auth="required",
        guest=True,
    ),
    route("GET", f"{CLIENT}/thirdparty/location", get_empty_list, auth="required", guest=True),
    route(
        "GET",
        f"{CLIENT}/thirdparty/location/{{protocol}}",
        get_empty_list,
        auth="required",
        guest=True,
    ),
    route("GET", f"{CLIENT}/thirdparty/user", get_empty_list, auth="required", guest=True),
    route(
        "GET",
        f"{CLIENT}/thirdparty/user/{{protocol}}",
        get_empty_list,
        auth="required",
        guest=True,
    ),
]
