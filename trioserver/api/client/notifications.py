"""``GET /notifications`` (client-server API, "Listing Notifications")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import query_int
from trioserver.errors import MatrixError
from trioserver.handlers.notifications import DEFAULT_LIMIT, MAX_LIMIT, NotificationsQuery

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def get_notifications(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /notifications?from=&limit=&only=highlight.

    Raises:
        MatrixError: 400 for a bad ``from``, ``limit`` or ``only``.
    """
    only = request.query_param("only")
    if only not in (None, "highlight"):
        raise MatrixError("M_INVALID_PARAM", "Query parameter 'only' must be 'highlight'")
    query = NotificationsQuery(
        from_token=request.query_param("from"),
        limit=query_int(request, "limit", DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT),
        only_highlight=only == "highlight",
    )
    return await deps.notifications.notifications(request.requester, query)


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/notifications", get_notifications, auth="required"),
]
