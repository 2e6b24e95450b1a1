"""Client-server API routes: the user directory (``POST /user_directory/search``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional, require

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

DEFAULT_LIMIT = 10
# Synapse caps the limit at 50.
MAX_LIMIT = 50


async def post_user_directory_search(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /user_directory/search."""
    body = request.json()
    term = require(body, "search_term", str)
    limit = max(0, min(optional(body, "limit", int, DEFAULT_LIMIT), MAX_LIMIT))
    return await deps.user_directory.search(request.requester.user_id, term, limit)


ROUTES: list[Route[ApiDeps]] = [
    route(
        "POST",
        f"{CLIENT}/user_directory/search",
        post_user_directory_search,
        auth="required",
        local=True,
    ),
]
