"""``GET /preview_url``: the client-server v1 route and the legacy media v3/r0 one.

Both need an access token, as in Synapse. When ``media.url_preview_enabled`` is off,
Synapse does not register the endpoint at all, so a request gets 404 ``M_UNRECOGNIZED``;
the same answer is given here (also to a request without a token, as for any unknown path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import JsonDict, Request, Route, route
from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def preview_url(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /preview_url?url=...&ts=...: the OpenGraph data of the page at ``url``."""
    if deps.url_previews is None:
        raise MatrixError("M_UNRECOGNIZED", "Unrecognized request", status=404)
    if request.requester_or_none is None:
        raise MatrixError("M_MISSING_TOKEN", "Missing access token.", status=401)
    url = request.query_param("url")
    if url is None:
        raise MatrixError("M_MISSING_PARAM", "Missing string query parameter 'url'")
    raw_ts = request.query_param("ts")
    ts: int | None = None
    if raw_ts is not None:
        # The spec's ts: ms since the epoch, a non-negative integer.
        if not raw_ts.isdigit() or len(raw_ts) > 16:
            raise MatrixError("M_INVALID_PARAM", "Query parameter 'ts' must be an integer")
        ts = int(raw_ts)
    return await deps.url_previews.preview(url, ts)


ROUTES: list[Route[ApiDeps]] = [
    # auth "optional" so that the disabled endpoint answers like an unknown one (above).
    route("GET", "/_matrix/client/v1/media/preview_url", preview_url, auth="optional"),
    route("GET", "/_matrix/media/(?:v3|r0)/preview_url", preview_url, auth="optional"),
]
