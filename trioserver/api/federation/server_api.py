"""Server-Server API routes for rooms and events (issue 15): transactions, event-graph reads,
membership handshakes, queries and the public room directory."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

from trioserver.api.federation import FEDERATION
from trioserver.api.http import JsonDict, Request, Route, route
from trioserver.errors import MatrixError
from trioserver.events import get_server_name, is_valid_room_alias, is_valid_user_id
from trioserver.handlers.directory import MAX_PUBLIC_ROOMS, PublicRoomsQuery

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps
    from trioserver.federation.deps import FederationDeps

V1 = f"{FEDERATION}/v1"
V2 = f"{FEDERATION}/v2"


def _fed(deps: ApiDeps) -> FederationDeps:
    if deps.federation is None:
        raise MatrixError("M_UNRECOGNIZED", "Federation is disabled", status=404)
    return deps.federation


def _writer(deps: ApiDeps) -> FederationDeps:
    fed = _fed(deps)
    if fed.inbound is None or fed.membership is None:
        # Only the events writer judges and stores events from other servers.
        raise MatrixError("M_UNRECOGNIZED", "Not served by this instance", status=404)
    return fed


def _int_param(request: Request, name: str, default: int) -> int:
    raw = request.query_param(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise MatrixError("M_INVALID_PARAM", f"{name} must be an integer") from None


def _required_param(request: Request, name: str) -> str:
    value = request.query_param(name)
    if not value:
        raise MatrixError("M_MISSING_PARAM", f"Missing {name} parameter")
    return value


async def get_well_known_server(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /.well-known/matrix/server: where other servers find this one (when delegated)."""
    del request
    if deps.federation is None or deps.federation.well_known_server is None:
        raise MatrixError("M_NOT_FOUND", "No server delegation is published")
    return {"m.server": deps.federation.well_known_server}


async def get_version(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /version (no authentication)."""
    del deps, request
    return {"server": {"name": "trioserver", "version": importlib.metadata.version("trioserver")}}


async def put_send(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /send/{txnId}."""
    fed = _writer(deps)
    assert fed.inbound is not None
    body = request.json()
    result: JsonDict = await fed.inbound.on_transaction(
        request.origin, request.path_params["txn"], body
    )
    return result


async def get_event(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /event/{eventId}."""
    return await _fed(deps).events.get_event(request.origin, request.path_params["event"])


async def get_state(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /state/{roomId}?event_id=."""
    return await _fed(deps).events.state(
        request.origin, request.path_params["room"], _required_param(request, "event_id")
    )


async def get_state_ids(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /state_ids/{roomId}?event_id=."""
    return await _fed(deps).events.state_ids(
        request.origin, request.path_params["room"], _required_param(request, "event_id")
    )


async def get_event_auth(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /event_auth/{roomId}/{eventId}."""
    return await _fed(deps).events.event_auth(
        request.origin, request.path_params["room"], request.path_params["event"]
    )


async def get_backfill(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /backfill/{roomId}?v=...&limit=."""
    from_ids = request.query.get("v") or []
    if not from_ids:
        raise MatrixError("M_MISSING_PARAM", "Missing v parameter")
    return await _fed(deps).events.backfill(
        request.origin, request.path_params["room"], from_ids, _int_param(request, "limit", 10)
    )


def _id_list(body: JsonDict, key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MatrixError("M_BAD_JSON", f"{key} must be a list of event ids")
    return value


async def post_missing_events(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /get_missing_events/{roomId}."""
    body = request.json()
    limit = body.get("limit", 10)
    min_depth = body.get("min_depth", 0)
    if not isinstance(limit, int) or not isinstance(min_depth, int):
        raise MatrixError("M_BAD_JSON", "limit and min_depth must be integers")
    return await _fed(deps).events.missing_events(
        request.origin,
        request.path_params["room"],
        _id_list(body, "earliest_events"),
        _id_list(body, "latest_events"),
        limit,
        min_depth,
    )


def _make(membership: str) -> Any:
    async def handler(deps: ApiDeps, request: Request) -> JsonDict:
        fed = _writer(deps)
        assert fed.membership is not None
        versions = request.query.get("ver") or ["1"]
        return await fed.membership.make_membership(
            request.origin,
            request.path_params["room"],
            request.path_params["user"],
            membership,
            versions,
        )

    handler.__doc__ = f"GET /make_{membership}/{{roomId}}/{{userId}}."
    handler.__name__ = handler.__qualname__ = f"get_make_{membership}"
    return handler


def _send(membership: str, *, v1: bool = False) -> Any:
    async def handler(deps: ApiDeps, request: Request) -> Any:
        fed = _writer(deps)
        assert fed.membership is not None
        event, _version = await fed.membership.send_membership(
            request.origin,
            request.path_params["room"],
            request.path_params["event"],
            request.json(),
            membership,
        )
        if membership == "join":
            answer: Any = await fed.membership.join_answer(event)
        elif membership == "knock":
            answer = await fed.membership.knock_answer(event)
        else:
            answer = {}
        # v1 wraps the answer as [200, answer] (deprecated; SyTest and old servers use it).
        return [200, answer] if v1 else answer

    handler.__doc__ = f"PUT /send_{membership}/{{roomId}}/{{eventId}}."
    handler.__name__ = handler.__qualname__ = f"put_send_{membership}" + ("_v1" if v1 else "")
    return handler


async def put_invite(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /v2/invite/{roomId}/{eventId}."""
    fed = _writer(deps)
    assert fed.membership is not None
    return await fed.membership.on_invite(
        request.origin, request.path_params["room"], request.path_params["event"], request.json()
    )


async def put_invite_v1(deps: ApiDeps, request: Request) -> Any:
    """PUT /v1/invite/{roomId}/{eventId}: the event alone as the body (room versions 1, 2)."""
    fed = _writer(deps)
    assert fed.membership is not None
    event = request.json()
    body = {
        "room_version": "1",
        "event": event,
        "invite_room_state": (event.get("unsigned") or {}).get("invite_room_state", [])
        if isinstance(event.get("unsigned"), dict)
        else [],
    }
    answer = await fed.membership.on_invite(
        request.origin, request.path_params["room"], request.path_params["event"], body
    )
    return [200, answer]


async def get_query_directory(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /query/directory?room_alias=."""
    fed = _fed(deps)
    alias = _required_param(request, "room_alias")
    if not is_valid_room_alias(alias):
        raise MatrixError("M_INVALID_PARAM", "Invalid room alias")
    if get_server_name(alias) != deps.server_name:
        raise MatrixError("M_NOT_FOUND", "Room alias not found")
    row = await deps.directory.get_alias(alias)
    if row is None:
        raise MatrixError("M_NOT_FOUND", "Room alias not found")
    servers = await fed.events.servers_in_room(row.room_id)
    return {"room_id": row.room_id, "servers": servers}


async def get_query_profile(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /query/profile?user_id=&field=."""
    _fed(deps)
    user_id = _required_param(request, "user_id")
    field = request.query_param("field")
    if not is_valid_user_id(user_id, historical=True):
        raise MatrixError("M_INVALID_PARAM", "Invalid user id")
    if get_server_name(user_id) != deps.server_name:
        raise MatrixError("M_INVALID_PARAM", "The user is not of this server")
    if field is not None and field not in ("displayname", "avatar_url"):
        raise MatrixError("M_INVALID_PARAM", "field must be displayname or avatar_url")
    profile = await deps.profiles.get_profile(user_id)
    if profile is None:
        raise MatrixError("M_NOT_FOUND", "Profile not found")
    answer: JsonDict = {}
    if profile.displayname is not None:
        answer["displayname"] = profile.displayname
    if profile.avatar_url is not None:
        answer["avatar_url"] = profile.avatar_url
    if field is not None:
        return {field: answer[field]} if field in answer else {}
    return answer


async def get_public_rooms(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /publicRooms (limit, since)."""
    _fed(deps)
    limit = _int_param(request, "limit", 0)
    query = PublicRoomsQuery(
        limit=MAX_PUBLIC_ROOMS if limit <= 0 else min(limit, MAX_PUBLIC_ROOMS),
        since=request.query_param("since"),
    )
    return await deps.directory_handler.public_rooms(query)


async def post_public_rooms(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /publicRooms (limit, since, filter)."""
    _fed(deps)
    body = request.json_or_empty()
    limit = body.get("limit", 0)
    search_filter = body.get("filter") or {}
    if not isinstance(limit, int) or not isinstance(search_filter, dict):
        raise MatrixError("M_BAD_JSON", "limit must be an integer and filter an object")
    term = search_filter.get("generic_search_term")
    since = body.get("since")
    query = PublicRoomsQuery(
        limit=MAX_PUBLIC_ROOMS if limit <= 0 else min(limit, MAX_PUBLIC_ROOMS),
        since=since if isinstance(since, str) else None,
        search_term=term if isinstance(term, str) else None,
    )
    return await deps.directory_handler.public_rooms(query)


ROUTES: list[Route[ApiDeps]] = [
    route("GET", "/.well-known/matrix/server", get_well_known_server, auth="none"),
    route("GET", f"{V1}/version", get_version, auth="none"),
    route("PUT", f"{V1}/send/{{txn}}", put_send, auth="federation"),
    route("GET", f"{V1}/event/{{event}}", get_event, auth="federation"),
    route("GET", f"{V1}/state/{{room}}", get_state, auth="federation"),
    route("GET", f"{V1}/state_ids/{{room}}", get_state_ids, auth="federation"),
    route("GET", f"{V1}/event_auth/{{room}}/{{event}}", get_event_auth, auth="federation"),
    route("GET", f"{V1}/backfill/{{room}}", get_backfill, auth="federation"),
    route(
        "POST",
        f"{V1}/get_missing_events/{{room}}",
        post_missing_events,
        auth="federation",
        local=True,
    ),
    route(
        "GET", f"{V1}/make_join/{{room}}/{{user}}", _make("join"), auth="federation", on_main=True
    ),
    route(
        "GET",
        f"{V1}/make_leave/{{room}}/{{user}}",
        _make("leave"),
        auth="federation",
        on_main=True,
    ),
    route(
        "GET",
        f"{V1}/make_knock/{{room}}/{{user}}",
        _make("knock"),
        auth="federation",
        on_main=True,
    ),
    route("PUT", f"{V2}/send_join/{{room}}/{{event}}", _send("join"), auth="federation"),
    route("PUT", f"{V1}/send_join/{{room}}/{{event}}", _send("join", v1=True), auth="federation"),
    route("PUT", f"{V2}/send_leave/{{room}}/{{event}}", _send("leave"), auth="federation"),
    route(
        "PUT", f"{V1}/send_leave/{{room}}/{{event}}", _send("leave", v1=True), auth="federation"
    ),
    route("PUT", f"{V1}/send_knock/{{room}}/{{event}}", _send("knock"), auth="federation"),
    route("PUT", f"{V2}/invite/{{room}}/{{event}}", put_invite, auth="federation"),
    route("PUT", f"{V1}/invite/{{room}}/{{event}}", put_invite_v1, auth="federation"),
    route("GET", f"{V1}/query/directory", get_query_directory, auth="federation"),
    route("GET", f"{V1}/query/profile", get_query_profile, auth="federation"),
    route("GET", f"{V1}/publicRooms", get_public_rooms, auth="federation"),
    route("POST", f"{V1}/publicRooms", post_public_rooms, auth="federation", local=True),
]
