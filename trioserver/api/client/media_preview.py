"""``GET /preview_url``: the client-server v1 route and the legacy media v3/r0 one.

Both need an access token, as in Synapse (which checks it first, also when previews are
off). When ``media.url_preview_enabled`` is off the answer is 404 ``M_UNRECOGNIZED``, as
Synapse's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import JsonDict, Request, Route, route
from trioserver.api.params import query_int
from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def preview_url(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /preview_url?url=...&ts=...: the OpenGraph data of the page at ``url``."""
    if deps.url_previews is None:
        raise MatrixError("M_UNRECOGNIZED", "Unrecognized request", status=404)
    # A preview fetches a page and may keep its image as local media: counted with uploads.
    deps.ratelimits.media_upload.check(request.requester.user_id)
    url = request.query_param("url")
    if url is None:
        raise MatrixError("M_MISSING_PARAM", "Missing string query parameter 'url'")
    # The spec's ts: ms since the epoch, a non-negative integer.
    ts = None if request.query_param("ts") is None else query_int(request, "ts", 0, minimum=0)
    return await deps.url_previews.preview(url, ts)


ROUTES: list[Route[ApiDeps]] = [
    route("GET", "/_matrix/client/v1/media/preview_url", preview_url, auth="required"),
    route("GET", "/_matrix/media/(?:v3|r0|v1)/preview_url", preview_url, auth="required"),
]
