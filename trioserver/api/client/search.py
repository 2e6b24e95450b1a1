"""``POST /search`` (client-server API "Server Side Search").

The body is checked by `handlers.search_request`; the rules of what a user can find are in
`handlers.search`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def post_search(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /search (``?next_batch=`` pages on)."""
    return await deps.search.search(
        request.requester, request.json(), request.query_param("next_batch")
    )


ROUTES: list[Route[ApiDeps]] = [
    route("POST", f"{CLIENT}/search", post_search, auth="required", local=True),
]
