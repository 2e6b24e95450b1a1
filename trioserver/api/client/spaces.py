"""Client-server API routes: spaces and room previews.

``GET /rooms/{roomId}/hierarchy`` (spec "Spaces", v1.2), ``GET /room_summary/{roomIdOrAlias}``
(v1.15, with Synapse's unstable ``im.nheko.summary`` paths; the access token is optional) and
``GET /rooms/{roomId}/timestamp_to_event`` (v1.6).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT_V1, JsonDict, Request, Route, route
from trioserver.api.params import query_bool, query_int
from trioserver.errors import MatrixError
from trioserver.events import is_valid_room_alias, is_valid_room_id
from trioserver.handlers.hierarchy import MAX_LIMIT, HierarchyQuery

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

NHEKO_SUMMARY = "/_matrix/client/unstable/im.nheko.summary"
# Query integers are SQL integers and timestamps; anything larger is not a real value.
_MAX_INT = 2**53


async def get_hierarchy(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/hierarchy."""
    query = HierarchyQuery(
        room_id=request.path_params["room"],
        suggested_only=query_bool(request, "suggested_only", False),
        max_depth=_optional_int(request, "max_depth", minimum=0),
        # Spec: "Must be an integer greater than zero"; larger limits are capped.
        limit=min(_optional_int(request, "limit", minimum=1) or MAX_LIMIT, MAX_LIMIT),
        from_token=request.query_param("from"),
    )
    return await deps.hierarchy.hierarchy(request.requester.user_id, query)


def _optional_int(request: Request, name: str, *, minimum: int) -> int | None:
    if request.query_param(name) is None:
        return None
    return query_int(request, name, minimum, minimum=minimum, maximum=_MAX_INT)


async def get_room_summary(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /room_summary/{roomIdOrAlias}: for anyone when the room is public or
    world-readable, else for users who may see it (``via`` would name servers to ask over
    federation, which this server does not do yet)."""
    room = request.path_params["room"]
    if is_valid_room_alias(room):
        room_id = str((await deps.directory_handler.resolve_alias(room))["room_id"])
    elif is_valid_room_id(room):
        room_id = room
    else:
        raise MatrixError("M_INVALID_PARAM", f"{room} was not legal room ID or room alias")
    requester = request.requester_or_none
    return await deps.room_summary.summary(room_id, requester.user_id if requester else None)


async def get_timestamp_to_event(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/timestamp_to_event?ts=&dir=."""
    raw_ts = request.query_param("ts")
    direction = request.query_param("dir")
    if raw_ts is None:
        raise MatrixError("M_MISSING_PARAM", "Missing integer query parameter 'ts'")
    if direction is None:
        raise MatrixError("M_MISSING_PARAM", "Missing query parameter 'dir'")
    ts = query_int(request, "ts", 0, minimum=0)
    if ts > _MAX_INT:
        raise MatrixError("M_INVALID_PARAM", "Query parameter 'ts' is too large")
    if direction not in ("f", "b"):
        raise MatrixError("M_INVALID_PARAM", "Query parameter 'dir' must be one of ['f', 'b']")
    return await deps.timestamp_lookup.event_near(
        request.requester.user_id, request.path_params["room"], ts, forwards=direction == "f"
    )


ROUTES: list[Route[ApiDeps]] = [
    # Its `from` tokens name pagination sessions kept in memory: main answers every page, so
    # a client's next page finds its session whichever instance it asks (issue 13).
    route(
        "GET",
        f"{CLIENT_V1}/rooms/{{room}}/hierarchy",
        get_hierarchy,
        auth="required",
        guest=True,
        on_main=True,
    ),
    route(
        "GET", f"{CLIENT_V1}/room_summary/{{room}}", get_room_summary, auth="optional", guest=True
    ),
    route(
        "GET",
        f"{NHEKO_SUMMARY}/rooms/{{room}}/summary",
        get_room_summary,
        auth="optional",
        guest=True,
    ),
    route(
        "GET", f"{NHEKO_SUMMARY}/summary/{{room}}", get_room_summary, auth="optional", guest=True
    ),
    route(
        "GET",
        f"{CLIENT_V1}/rooms/{{room}}/timestamp_to_event",
        get_timestamp_to_event,
        auth="required",
    ),
]
