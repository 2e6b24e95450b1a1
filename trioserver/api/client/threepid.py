"""Third-party identifiers (client-server API, "Adding Account Administrative Contact
Information" and the ``requestToken`` endpoints).

This server keeps no email addresses or phone numbers and talks to no identity server, so a
user never has a 3PID. The endpoints still answer, with the spec's own words for "not here",
so clients show a clear message instead of failing on a 404:

- listing gives ``{"threepids": []}``;
- asking for a validation token is 403 ``M_THREEPID_DENIED`` (the spec's answer for a
  homeserver that "does not permit the third-party identifier as a contact option");
- adding one is 400 ``M_THREEPID_AUTH_FAILED``, because no validation session can exist
  (Synapse's answer for an unknown session); binding one at an identity server is
  ``M_THREEPID_DENIED`` too;
- deleting or unbinding one the user does not have succeeds with
  ``id_server_unbind_result: "no-support"``, as in Synapse: there is nothing to remove and no
  identity server to ask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import require
from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

NOT_SUPPORTED = "Third-party identifiers are not supported on this server"


async def get_threepids(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /account/3pid."""
    return {"threepids": []}


async def post_request_token(deps: ApiDeps, request: Request) -> JsonDict:
    """POST .../{email,msisdn}/requestToken (registration, password reset, adding a 3PID)."""
    request.json()
    raise MatrixError("M_THREEPID_DENIED", NOT_SUPPORTED, status=403)


async def post_add(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /account/3pid/add and the deprecated POST /account/3pid."""
    request.json()
    raise MatrixError("M_THREEPID_AUTH_FAILED", "No validated 3pid session found", status=400)


async def post_bind(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /account/3pid/bind."""
    request.json()
    raise MatrixError("M_THREEPID_DENIED", NOT_SUPPORTED, status=403)


async def post_remove(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /account/3pid/delete and /account/3pid/unbind."""
    body = request.json()
    require(body, "medium", str)
    require(body, "address", str)
    return {"id_server_unbind_result": "no-support"}


_REQUEST_TOKEN_PATHS = [
    *(f"/account/3pid/{medium}/requestToken" for medium in ("email", "msisdn")),
    *(f"/register/{medium}/requestToken" for medium in ("email", "msisdn")),
    *(f"/account/password/{medium}/requestToken" for medium in ("email", "msisdn")),
]

ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/account/3pid", get_threepids, auth="required"),
    route("POST", f"{CLIENT}/account/3pid", post_add, auth="required", local=True),
    route("POST", f"{CLIENT}/account/3pid/add", post_add, auth="required", local=True),
    route("POST", f"{CLIENT}/account/3pid/bind", post_bind, auth="required", local=True),
    route("POST", f"{CLIENT}/account/3pid/delete", post_remove, auth="required", local=True),
    route("POST", f"{CLIENT}/account/3pid/unbind", post_remove, auth="required", local=True),
    # Registration and password reset happen before the user has a token.
    *(
        route("POST", f"{CLIENT}{path}", post_request_token, auth="none", local=True)
        for path in _REQUEST_TOKEN_PATHS
    ),
]
