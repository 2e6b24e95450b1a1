"""Client-server API routes: reporting content (spec "Reporting content").

``POST /rooms/{roomId}/report/{eventId}``, ``POST /rooms/{roomId}/report`` (v1.13) and
``POST /users/{userId}/report`` (v1.14); each answers ``{}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, CLIENT_V3, JsonDict, Request, Route, route
from trioserver.api.params import optional, require
from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

# Spec (until v1.18 dropped it): "The score to rate this content as where -100 is most
# offensive and 0 is inoffensive."
MIN_SCORE, MAX_SCORE = -100, 0


async def post_event_report(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/report/{eventId} (``reason`` and ``score`` optional)."""
    body = request.json()
    reason = optional(body, "reason", str)
    score = optional(body, "score", int)
    if score is not None and not MIN_SCORE <= score <= MAX_SCORE:
        raise MatrixError(
            "M_INVALID_PARAM", f"'score' must be an integer between {MIN_SCORE} and {MAX_SCORE}"
        )
    # Only the keys the spec defines are kept: a report is no place to store arbitrary data.
    content = {key: body[key] for key in ("reason", "score") if body.get(key) is not None}
    params = request.path_params
    await deps.reports.report_event(
        request.requester, params["room"], params["event"], reason, content
    )
    return {}


async def post_room_report(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/report (``reason`` required, may be blank)."""
    reason = require(request.json(), "reason", str)
    await deps.reports.report_room(request.requester, request.path_params["room"], reason)
    return {}


async def post_user_report(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /users/{userId}/report (``reason`` required, may be blank)."""
    reason = require(request.json(), "reason", str)
    await deps.reports.report_user(request.requester, request.path_params["user"], reason)
    return {}


ROUTES: list[Route[ApiDeps]] = [
    route(
        "POST",
        f"{CLIENT}/rooms/{{room}}/report/{{event}}",
        post_event_report,
        auth="required",
        local=True,
    ),
    # Newer endpoints: v3 only, as Synapse serves them.
    route(
        "POST", f"{CLIENT_V3}/rooms/{{room}}/report", post_room_report, auth="required", local=True
    ),
    route(
        "POST", f"{CLIENT_V3}/users/{{user}}/report", post_user_report, auth="required", local=True
    ),
]
