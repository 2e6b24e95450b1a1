"""Registration (client-server API, "Account registration") with m.login.dummy UIA."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.client.login import login_response
from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional
from trioserver.errors import MatrixError
from trioserver.handlers.accounts import LoginResult, check_password_shape

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

REGISTER_FLOWS = [["m.login.dummy"]]


async def _dummy_stage(auth: JsonDict) -> str:
    return ""


def _check_enabled(deps: ApiDeps) -> None:
    if not deps.registration.enabled:
        raise MatrixError("M_FORBIDDEN", "Registration has been disabled")


async def post_register(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /register."""
    # The body is parsed first: a malformed one is a 400 even when registration is off.
    raw_body = request.json()
    kind = request.query_param("kind") or "user"
    if kind == "guest":
        raise MatrixError("M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
    if kind != "user":
        raise MatrixError("M_UNKNOWN", "Invalid kind")
    _check_enabled(deps)
    # Refuse a rate-limited client before it goes through UIA; the token is taken at the end.
    client_key = request.client_ip or "unknown"
    deps.ratelimits.registration.check(client_key, update=False)
    body = deps.uia.with_stored_params(raw_body)
    operation = f"POST {request.path}"
    inhibit_login = optional(body, "inhibit_login", bool, False)
    device_id = optional(body, "device_id", str)
    display_name = optional(body, "initial_device_display_name", str)
    registered = deps.uia.remembered_result(body, operation)
    if registered is not None:
        # A replay of a completed registration session answers for the same user (SyTest
        # "registration is idempotent"), with a new login as Synapse gives.
        replayed = LoginResult(registered)
        if not inhibit_login:
            replayed = await deps.accounts.login_again(
                registered,
                device_id=device_id,
                device_display_name=display_name,
                ip=request.client_ip,
                user_agent=request.headers.get("user-agent"),
            )
        return login_response(deps, replayed)
    username = optional(body, "username", str)
    password = body.get("password")
    if password is not None:
        password = check_password_shape(password)
    if username is not None:
        # Checked before UIA so that clients learn of a taken name at once (as Synapse does).
        username = username.lower()
        if not await deps.accounts.is_available(username):
            raise MatrixError("M_USER_IN_USE", "User ID already taken.")
    await deps.uia.check(
        body, flows=REGISTER_FLOWS, operation=operation, checkers={"m.login.dummy": _dummy_stage}
    )
    deps.ratelimits.registration.check(client_key)
    result = await deps.accounts.register(
        username,
        password,
        login=not inhibit_login,
        device_id=device_id,
        device_display_name=display_name,
        ip=request.client_ip,
        user_agent=request.headers.get("user-agent"),
    )
    deps.uia.remember_result(body, operation, result.user_id)
    return login_response(deps, result)


async def get_register_available(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /register/available?username=..."""
    _check_enabled(deps)
    username = request.query_param("username")
    if username is None:
        raise MatrixError("M_MISSING_PARAM", "Missing string query param: username")
    if not await deps.accounts.is_available(username.lower()):
        raise MatrixError("M_USER_IN_USE", "User ID already taken.")
    return {"available": True}


ROUTES: list[Route[ApiDeps]] = [
    route("POST", f"{CLIENT}/register", post_register, auth="none"),
    route("GET", f"{CLIENT}/register/available", get_register_available, auth="none"),
]
