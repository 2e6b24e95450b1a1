"""``GET /sync`` (client-server API, "Syncing")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import query_bool, query_int
from trioserver.errors import MatrixError
from trioserver.handlers.event_filter import FilterDefinition, load_filter
from trioserver.handlers.serialize import SerializeOptions
from trioserver.handlers.sync import SyncRequest
from trioserver.streams import StreamToken

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

PRESENCE_STATES = ("online", "offline", "unavailable")


async def get_sync(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /sync."""
    requester = request.requester
    since = None
    raw_since = request.query_param("since")
    if raw_since:
        try:
            since = StreamToken.parse(raw_since)
        except ValueError:
            raise MatrixError("M_INVALID_PARAM", "Invalid 'since' token") from None
    set_presence = request.query_param("set_presence")
    if set_presence is not None and set_presence not in PRESENCE_STATES:
        raise MatrixError(
            "M_INVALID_PARAM", "'set_presence' must be online, offline or unavailable"
        )
    raw_filter = request.query_param("filter")
    definition = (
        await load_filter(deps.filters, requester.user_id, raw_filter)
        if raw_filter
        else FilterDefinition()
    )
    options = SerializeOptions(
        user_id=requester.user_id,
        device_id=requester.device_id,
        event_format=definition.event_format,
        event_fields=definition.event_fields,
        include_room_id=False,
    )
    return await deps.sync.sync(
        SyncRequest(
            user_id=requester.user_id,
            device_id=requester.device_id,
            since=since,
            timeout_ms=query_int(request, "timeout", 0),
            full_state=query_bool(request, "full_state", False),
            filter=definition,
            options=options,
            set_presence=set_presence,
        )
    )


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/sync", get_sync, auth="required", guest=True),
]
