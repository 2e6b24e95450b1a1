"""The user's own account: whoami, password change and deactivation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional, require
from trioserver.errors import MatrixError
from trioserver.handlers.accounts import check_password_shape

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

PASSWORD_FLOWS = [["m.login.password"]]


async def require_password_uia(deps: ApiDeps, request: Request, body: JsonDict) -> None:
    """Demand that the requester re-enters their password (UIA ``m.login.password``)."""
    completed = await deps.uia.check(
        body,
        flows=PASSWORD_FLOWS,
        operation=f"{request.method} {request.path} {request.requester.user_id}",
        checkers={"m.login.password": deps.accounts.password_stage()},
    )
    # A valid password of someone else (a stolen access token) is refused outright.
    if completed["m.login.password"] != request.requester.user_id:
        raise MatrixError("M_FORBIDDEN", "Invalid auth")


async def get_whoami(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /account/whoami."""
    requester = request.requester
    return {"user_id": requester.user_id, "device_id": requester.device_id, "is_guest": False}


async def post_password(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /account/password: change the password after re-authenticating."""
    body = deps.uia.with_stored_params(request.json())
    new_password = check_password_shape(require(body, "new_password", str), "new_password")
    logout_devices = optional(body, "logout_devices", bool, True)
    await require_password_uia(deps, request, body)
    requester = request.requester
    await deps.accounts.change_password(
        requester.user_id,
        new_password,
        logout_other_devices=logout_devices,
        keep=requester.device_id,
    )
    return {}


async def post_deactivate(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /account/deactivate: deactivate the account after re-authenticating."""
    body = deps.uia.with_stored_params(request.json_or_empty())
    erase = optional(body, "erase", bool, False)
    await require_password_uia(deps, request, body)
    # Like Synapse: leave rooms and reject invites first, so that others see the user go.
    await deps.membership.leave_all_rooms(request.requester.user_id)
    await deps.accounts.deactivate(request.requester.user_id, erase=erase)
    # Synapse also drops the account's key backups: nobody can read them any more.
    await deps.room_keys.delete_all(request.requester.user_id)
    await deps.auth.forget_tokens([request.requester.access_token])
    # We bind no third-party identifiers, so there is nothing to unbind at identity servers.
    return {"id_server_unbind_result": "no-support"}


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/account/whoami", get_whoami, auth="required", guest=True),
    route("POST", f"{CLIENT}/account/password", post_password, auth="required"),
    route("POST", f"{CLIENT}/account/deactivate", post_deactivate, auth="required"),
]
