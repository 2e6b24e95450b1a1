"""Client-server API routes: room aliases and the published room directory.

Spec "Room aliases" (``/directory/room``, ``/rooms/{roomId}/aliases``) and "Published room
directory" (``/directory/list/room``, ``/publicRooms``). Reading an alias, a room's directory
visibility and ``GET /publicRooms`` need no access token (the spec gives them no security).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional, query_int, require
from trioserver.errors import MatrixError
from trioserver.events import get_server_name, is_valid_room_alias, is_valid_server_name
from trioserver.federation.queries import query_alias
from trioserver.handlers.directory import MAX_PUBLIC_ROOMS, PublicRoomsQuery

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def get_alias(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /directory/room/{roomAlias} (another server's alias: asked over federation)."""
    alias = request.path_params["alias"]
    remote = is_valid_room_alias(alias) and get_server_name(alias) != deps.server_name
    if deps.federation is not None and remote:
        room_id, servers = await query_alias(deps.federation.client, alias)
        return {"room_id": room_id, "servers": servers}
    return await deps.directory_handler.resolve_alias(alias)


async def put_alias(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /directory/room/{roomAlias}."""
    alias = request.path_params["alias"]
    deps.directory_handler.check_alias(alias, local=True)
    room_id = require(request.json(), "room_id", str)
    await deps.directory_handler.create_alias(request.requester.user_id, alias, room_id)
    return {}


async def delete_alias(deps: ApiDeps, request: Request) -> JsonDict:
    """DELETE /directory/room/{roomAlias}."""
    await deps.directory_handler.delete_alias(request.requester, request.path_params["alias"])
    return {}


async def get_room_aliases(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/aliases."""
    aliases = await deps.directory_handler.local_aliases(
        request.requester.user_id, request.path_params["room"]
    )
    return {"aliases": aliases}


async def get_visibility(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /directory/list/room/{roomId}."""
    visibility = await deps.directory_handler.get_visibility(request.path_params["room"])
    return {"visibility": visibility}


async def put_visibility(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /directory/list/room/{roomId} (``visibility`` defaults to public)."""
    visibility = optional(request.json_or_empty(), "visibility", str, "public")
    if visibility not in ("public", "private"):
        raise MatrixError("M_INVALID_PARAM", "'visibility' must be public or private")
    await deps.directory_handler.set_visibility(
        request.requester.user_id, request.path_params["room"], visibility
    )
    return {}


def _remote_server(deps: ApiDeps, server: str | None) -> str | None:
    """`server` when it names another server whose directory is asked over federation."""
    if server is None or server == deps.server_name:
        return None
    if not is_valid_server_name(server):
        raise MatrixError("M_INVALID_PARAM", f"Invalid server name: {server}")
    if deps.federation is None:
        raise MatrixError("M_NOT_FOUND", f"Cannot fetch the room directory of {server}")
    return server


async def _remote_public_rooms(
    deps: ApiDeps, server: str, method: str, query: dict[str, str], body: JsonDict | None
) -> JsonDict:
    assert deps.federation is not None
    client = deps.federation.client
    path = "/_matrix/federation/v1/publicRooms"
    try:
        if method == "GET":
            answer = await client.get_json(server, path, query=query)
        else:
            answer = await client.post_json(server, path, body or {})
    except Exception as err:  # the remote server's failure, said as one
        status = getattr(err, "status", None)
        if status is not None and 400 <= status < 500:
            raise MatrixError("M_NOT_FOUND", f"{server} refused: {err}") from None
        raise MatrixError(
            "M_UNKNOWN", f"Could not fetch the room directory of {server}", status=502
        ) from None
    if not isinstance(answer, dict) or not isinstance(answer.get("chunk"), list):
        raise MatrixError("M_UNKNOWN", f"{server} sent no room directory", status=502)
    return answer


def _limit(value: int) -> int:
    # 0 means "no limit" (Synapse); every page is capped anyway.
    return MAX_PUBLIC_ROOMS if value == 0 else min(value, MAX_PUBLIC_ROOMS)


async def get_public_rooms(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /publicRooms (``limit``, ``since``, ``server``)."""
    server = _remote_server(deps, request.query_param("server"))
    if server is not None:
        remote_query = {k: v for k in ("limit", "since") if (v := request.query_param(k))}
        return await _remote_public_rooms(deps, server, "GET", remote_query, None)
    query = PublicRoomsQuery(
        limit=_limit(query_int(request, "limit", 0)), since=request.query_param("since")
    )
    return await deps.directory_handler.public_rooms(query)


def _room_types(search_filter: JsonDict) -> frozenset[str | None] | None:
    raw: Any = search_filter.get("room_types")
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(t is None or isinstance(t, str) for t in raw):
        raise MatrixError("M_INVALID_PARAM", "'room_types' must be a list of strings or nulls")
    # Synapse: an empty list does not filter.
    return frozenset(raw) or None


async def post_public_rooms(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /publicRooms (``limit``, ``since``, ``filter``, networks; ``?server=``)."""
    server = _remote_server(deps, request.query_param("server"))
    body = request.json_or_empty()
    if server is not None:
        return await _remote_public_rooms(deps, server, "POST", {}, body)
    limit = optional(body, "limit", int, MAX_PUBLIC_ROOMS)
    if limit < 0:
        raise MatrixError("M_INVALID_PARAM", "'limit' must not be negative")
    search_filter = optional(body, "filter", dict, {})
    all_networks = optional(body, "include_all_networks", bool, False)
    network = optional(body, "third_party_instance_id", str)
    if all_networks and network is not None:
        raise MatrixError(
            "M_INVALID_PARAM", "Can't use include_all_networks with an explicit network"
        )
    query = PublicRoomsQuery(
        limit=_limit(limit),
        since=optional(body, "since", str),
        search_term=optional(search_filter, "generic_search_term", str),
        room_types=_room_types(search_filter),
        third_party_network=network,
    )
    return await deps.directory_handler.public_rooms(query)


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/directory/room/{{alias}}", get_alias, auth="none"),
    route("PUT", f"{CLIENT}/directory/room/{{alias}}", put_alias, auth="required"),
    route("DELETE", f"{CLIENT}/directory/room/{{alias}}", delete_alias, auth="required"),
    route("GET", f"{CLIENT}/rooms/{{room}}/aliases", get_room_aliases, auth="required"),
    route("GET", f"{CLIENT}/directory/list/room/{{room}}", get_visibility, auth="none"),
    route("PUT", f"{CLIENT}/directory/list/room/{{room}}", put_visibility, auth="required"),
    route("GET", f"{CLIENT}/publicRooms", get_public_rooms, auth="optional", guest=True),
    route(
        "POST", f"{CLIENT}/publicRooms", post_public_rooms, auth="required", guest=True, local=True
    ),
]
