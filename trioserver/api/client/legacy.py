"""The deprecated (but specified) v1 endpoints that SyTest and older bots still use:
``GET /events`` (also room previews with ``room_id``), ``GET /events/{eventId}``,
``GET /initialSync`` and ``GET /rooms/{roomId}/initialSync``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import query_bool, query_int
from trioserver.errors import MatrixError
from trioserver.handlers.legacy_events import (
    DEFAULT_LIMIT,
    DEFAULT_TIMEOUT_MS,
    EventsRequest,
    client_v1,
)
from trioserver.handlers.legacy_sync import DEFAULT_LIMIT as DEFAULT_MESSAGES
from trioserver.streams import StreamToken

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

# Synapse caps pagination at 1000 events per request.
MAX_LIMIT = 1000


def _from_token(request: Request) -> StreamToken | None:
    raw = request.query_param("from")
    if not raw:
        return None
    try:
        return StreamToken.parse(raw)
    except ValueError:
        raise MatrixError("M_INVALID_PARAM", "Invalid 'from' token") from None


async def get_events(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /events (``from``, ``timeout``, ``room_id``, ``limit``)."""
    return await deps.legacy_events.events(
        EventsRequest(
            requester=request.requester,
            from_token=_from_token(request),
            timeout_ms=query_int(request, "timeout", DEFAULT_TIMEOUT_MS),
            room_id=request.query_param("room_id") or None,
            limit=query_int(request, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT),
        )
    )


async def get_event(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /events/{eventId}: one event, if the user may see it (else 404, as /event)."""
    event_id = request.path_params["event"]
    stored = await deps.events.get_event(event_id)
    if stored is None:
        raise MatrixError("M_NOT_FOUND", "Event not found")
    event = await deps.room_reads.get_event(request.requester, stored.room_id, event_id)
    return client_v1(event)


async def get_initial_sync(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /initialSync (``limit`` messages per room, ``archived`` for rooms left)."""
    return await deps.legacy_sync.initial_sync(
        request.requester,
        limit=query_int(request, "limit", DEFAULT_MESSAGES, maximum=MAX_LIMIT),
        archived=query_bool(request, "archived", False),
    )


async def get_room_initial_sync(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /rooms/{roomId}/initialSync (``limit``: Synapse's extension)."""
    return await deps.legacy_sync.room_initial_sync(
        request.requester,
        request.path_params["room"],
        query_int(request, "limit", DEFAULT_MESSAGES, maximum=MAX_LIMIT),
    )


ROUTES: list[Route[ApiDeps]] = [
    # Guests may stream a room they preview (spec "Guest Access"); the handler refuses the
    # global stream to them.
    route("GET", f"{CLIENT}/events", get_events, auth="required", guest=True),
    route("GET", f"{CLIENT}/events/{{event}}", get_event, auth="required"),
    route("GET", f"{CLIENT}/initialSync", get_initial_sync, auth="required"),
    route(
        "GET",
        f"{CLIENT}/rooms/{{room}}/initialSync",
        get_room_initial_sync,
        auth="required",
        guest=True,
    ),
]
