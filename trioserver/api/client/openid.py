"""OpenID: issuing tokens (client-server API) and the userinfo lookup (server-server API).

The lookup belongs to the federation API but is served here, on the client listener, like
Synapse's ``openid`` resource: third parties reach it at the client URL (SyTest does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def post_request_token(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /user/{userId}/openid/request_token."""
    request.json_or_empty()  # "An empty object. Reserved for future expansion."
    return await deps.openid.request_token(request.requester.user_id, request.path_params["user"])


async def get_user_info(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /_matrix/federation/v1/openid/userinfo?access_token=..."""
    return await deps.openid.user_info(request.query_param("access_token"))


ROUTES: list[Route[ApiDeps]] = [
    route(
        "POST",
        f"{CLIENT}/user/{{user}}/openid/request_token",
        post_request_token,
        auth="required",
        local=True,
    ),
    route("GET", "/_matrix/federation/v1/openid/userinfo", get_user_info, auth="none"),
]
