"""Reading rooms: events, state, members and history (client-server API, "Rooms").

The rules about who may read what live in `handlers.room_reads`; this module parses the query
parameters (a bad one is 400 ``M_INVALID_PARAM``; a bad ``filter`` 400 ``M_NOT_JSON`` or
``M_BAD_JSON``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from trioserver.api.http import CLIENT, JsonDict, Request, Response, Route, route
from trioserver.api.params import query_int
from trioserver.errors import MatrixError
from trioserver.handlers.event_filter import (
    RoomEventFilter,
    parse_event_format,
    parse_json_param,
    parse_room_event_filter,
)
from trioserver.handlers.room_reads import MEMBERSHIPS, MessagesQuery
from trioserver.handlers.serialize import SerializeOptions

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

# Synapse caps /messages at 1000 events per request; /context gets the same cap.
MAX_LIMIT = 1000


def _choice(request: Request, name: str, choices: tuple[str, ...]) -> str | None:
    value = request.query_param(name)
    if value is not None and value not in choices:
        raise MatrixError(
            "M_INVALID_PARAM", f"Query parameter '{name}' must be one of {', '.join(choices)}"
        )
    return value


def _filter(request: Request) -> tuple[RoomEventFilter, SerializeOptions]:
    requester = request.requester
    options = SerializeOptions(user_id=requester.user_id, device_id=requester.device_id)
    raw = request.query_param("filter")
    if raw is None or not raw.strip():
        return RoomEventFilter(), options
    body = parse_json_param(raw)
    # Synapse also honours `event_format` (and we `event_fields`) inside a RoomEventFilter.
    event_format, event_fields = parse_event_format(body)
    # The room is named by the path: `rooms` and `not_rooms` do not apply here.
    room_filter = attrs.evolve(parse_room_event_filter(body), rooms=None, not_rooms=())
    return room_filter, SerializeOptions(
        user_id=requester.user_id,
        device_id=requester.device_id,
        event_format=event_format,
        event_fields=event_fields,
    )


async def get_event(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/event/{eventId}."""
    params = request.path_params
    return await deps.room_reads.get_event(request.requester, params["room"], params["event"])


async def get_state(deps: ApiDeps, request: Request) -> Response:
    """GET /rooms/{roomId}/state (a JSON array)."""
    events = await deps.room_reads.get_state(request.requester, request.path_params["room"])
    return Response(events)


async def get_state_event(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/state/{eventType}/{stateKey} (``?format=content|event``)."""
    params = request.path_params
    event_format = _choice(request, "format", ("content", "event")) or "content"
    return await deps.room_reads.get_state_event(
        request.requester,
        params["room"],
        params["type"],
        params.get("key", ""),
        as_event=event_format == "event",
    )


async def get_members(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/members (``at``, ``membership``, ``not_membership``)."""
    return await deps.room_reads.get_members(
        request.requester,
        request.path_params["room"],
        at=request.query_param("at"),
        membership=_choice(request, "membership", MEMBERSHIPS),
        not_membership=_choice(request, "not_membership", MEMBERSHIPS),
    )


async def get_joined_members(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/joined_members."""
    return await deps.room_reads.get_joined_members(request.requester, request.path_params["room"])


async def get_joined_rooms(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /joined_rooms."""
    return {"joined_rooms": await deps.room_reads.joined_rooms(request.requester.user_id)}


async def get_messages(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/messages."""
    # The spec requires `dir`; Synapse pages forwards without it, and so do we.
    direction = _choice(request, "dir", ("b", "f")) or "f"
    event_filter, options = _filter(request)
    query = MessagesQuery(
        backwards=direction == "b",
        from_token=request.query_param("from") or None,
        to_token=request.query_param("to") or None,
        limit=query_int(request, "limit", 10, maximum=MAX_LIMIT),
        event_filter=event_filter,
        options=options,
    )
    return await deps.room_reads.get_messages(
        request.requester, request.path_params["room"], query
    )


async def get_context(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/context/{eventId}."""
    params = request.path_params
    event_filter, options = _filter(request)
    return await deps.room_reads.get_context(
        request.requester,
        params["room"],
        params["event"],
        limit=query_int(request, "limit", 10, maximum=MAX_LIMIT),
        event_filter=event_filter,
        options=options,
    )


ROUTES: list[Route[ApiDeps]] = [
    route(
        "GET", f"{CLIENT}/rooms/{{room}}/event/{{event}}", get_event, auth="required", guest=True
    ),
    route("GET", f"{CLIENT}/rooms/{{room}}/state", get_state, auth="required", guest=True),
    route(
        "GET",
        f"{CLIENT}/rooms/{{room}}/state/{{type}}/{{key:opt}}",
        get_state_event,
        auth="required",
        guest=True,
    ),
    route(
        "GET",
        f"{CLIENT}/rooms/{{room}}/state/{{type}}",
        get_state_event,
        auth="required",
        guest=True,
    ),
    route("GET", f"{CLIENT}/rooms/{{room}}/members", get_members, auth="required", guest=True),
    route("GET", f"{CLIENT}/rooms/{{room}}/joined_members", get_joined_members, auth="required"),
    route("GET", f"{CLIENT}/joined_rooms", get_joined_rooms, auth="required", guest=True),
    route("GET", f"{CLIENT}/rooms/{{room}}/messages", get_messages, auth="required", guest=True),
    route(
        "GET",
        f"{CLIENT}/rooms/{{room}}/context/{{event}}",
        get_context,
        auth="required",
        guest=True,
    ),
]
