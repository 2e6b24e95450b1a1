"""Client-server API routes: typing, receipts, read markers and presence."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional, require
from trioserver.errors import MatrixError
from trioserver.handlers.receipts import FULLY_READ, READ, READ_PRIVATE
from trioserver.handlers.typing import DEFAULT_TIMEOUT_MS

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def put_typing(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /rooms/{roomId}/typing/{userId}."""
    body = request.json()
    typing = require(body, "typing", bool)
    timeout = optional(body, "timeout", int, DEFAULT_TIMEOUT_MS)
    if timeout < 0:
        raise MatrixError("M_INVALID_PARAM", "'timeout' must not be negative")
    user_id = request.requester.user_id
    params = request.path_params
    await deps.typing.set_typing(user_id, params["room"], params["user"], typing, timeout)
    await deps.presence.bump_active(user_id)
    return {}


async def post_receipt(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/receipt/{receiptType}/{eventId}."""
    body = request.json_or_empty()
    thread_id = None
    if "thread_id" in body:
        thread_id = body["thread_id"]
        # Spec: 400 when the thread_id "is not a string" or "is empty".
        if not isinstance(thread_id, str) or not thread_id:
            raise MatrixError("M_INVALID_PARAM", "thread_id field must be a non-empty string")
    user_id = request.requester.user_id
    params = request.path_params
    await deps.receipts.post_receipt(
        user_id, params["room"], params["type"], params["event"], thread_id
    )
    await deps.presence.bump_active(user_id)
    return {}


async def post_read_markers(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/read_markers."""
    body = request.json()
    markers: dict[str, str] = {}
    # Unknown keys are ignored (Synapse: receipt types must stay extensible).
    for key in (FULLY_READ, READ, READ_PRIVATE):
        value = body.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise MatrixError("M_INVALID_PARAM", f"'{key}' must be an event ID")
        markers[key] = value
    user_id = request.requester.user_id
    await deps.receipts.set_read_markers(user_id, request.path_params["room"], markers)
    await deps.presence.bump_active(user_id)
    return {}


async def get_presence(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /presence/{userId}/status."""
    return await deps.presence.get_presence(request.requester.user_id, request.path_params["user"])


async def put_presence(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /presence/{userId}/status."""
    body = request.json()
    presence = require(body, "presence", str)
    status_msg = None
    if "status_msg" in body:
        # Synapse refuses anything but a string here, null included.
        status_msg = body["status_msg"]
        if not isinstance(status_msg, str):
            raise MatrixError("M_INVALID_PARAM", "status_msg must be a string.")
    await deps.presence.set_presence(
        request.requester.user_id, request.path_params["user"], presence, status_msg
    )
    return {}


ROUTES: list[Route[ApiDeps]] = [
    route("PUT", f"{CLIENT}/rooms/{{room}}/typing/{{user}}", put_typing, auth="required"),
    route(
        "POST",
        f"{CLIENT}/rooms/{{room}}/receipt/{{type}}/{{event}}",
        post_receipt,
        auth="required",
    ),
    route("POST", f"{CLIENT}/rooms/{{room}}/read_markers", post_read_markers, auth="required"),
    route("GET", f"{CLIENT}/presence/{{user}}/status", get_presence, auth="required"),
    route("PUT", f"{CLIENT}/presence/{{user}}/status", put_presence, auth="required"),
]
