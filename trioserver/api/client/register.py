"""Registration (client-server API, "Account registration") with m.login.dummy UIA."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

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
    """POST /register (``kind=user``, or ``kind=guest`` for a guest account)."""
    kind = request.query_param("kind") or "user"
    if kind == "guest":
        return await _register_guest(deps, request)
    if kind != "user":
        raise MatrixError("M_UNKNOWN", "Invalid kind")
    # The body is parsed first: a malformed one is a 400 even when registration is off.
    raw_body = request.json()
    _check_enabled(deps)
    # Refuse a rate-limited client before it goes through UIA; the token is taken at the end.
    client_key = request.client_ip or "unknown"
    deps.ratelimits.registration.check(client_key, update=False)
    body = deps.uia.with_stored_params(raw_body)
    operation = f"POST {request.path}"
    login = _LoginParams.from_body(body)
    registered = deps.uia.remembered_result(body, operation)
    if registered is not None:
        return await _replayed_registration(deps, request, registered, login)
    username = optional(body, "username", str)
    password = body.get("password")
    if password is not None:
        password = check_password_shape(password)
    guest_token = optional(body, "guest_access_token", str)
    if username is not None:
        username = username.lower()
        if guest_token is not None:
            # Spec "Guest Access": a guest upgrades by naming its own localpart and token.
            await deps.accounts.check_guest_upgrade(username, guest_token)
        elif not await deps.accounts.is_available(username):
            # Checked before UIA so that clients learn of a taken name at once (as Synapse).
            raise MatrixError("M_USER_IN_USE", "User ID already taken.")
    await deps.uia.check(
        body, flows=REGISTER_FLOWS, operation=operation, checkers={"m.login.dummy": _dummy_stage}
    )
    deps.ratelimits.registration.check(client_key)
    if username is not None and guest_token is not None:
        result = await deps.accounts.upgrade_guest(
            username,
            guest_token,
            password,
            login=login.login,
            device_id=login.device_id,
            device_display_name=login.display_name,
            ip=request.client_ip,
            user_agent=request.headers.get("user-agent"),
        )
    else:
        result = await deps.accounts.register(
            username,
            password,
            login=login.login,
            device_id=login.device_id,
            device_display_name=login.display_name,
            ip=request.client_ip,
            user_agent=request.headers.get("user-agent"),
        )
    deps.uia.remember_result(body, operation, result.user_id)
    return login_response(deps, result)


async def _replayed_registration(
    deps: ApiDeps, request: Request, user_id: str, login: _LoginParams
) -> JsonDict:
    # A replay of a completed registration session answers for the same user (SyTest
    # "registration is idempotent"), with a new login as Synapse gives.
    replayed = LoginResult(user_id)
    if login.login:
        replayed = await deps.accounts.login_again(
            user_id,
            device_id=login.device_id,
            device_display_name=login.display_name,
            ip=request.client_ip,
            user_agent=request.headers.get("user-agent"),
        )
    return login_response(deps, replayed)


@attrs.frozen
class _LoginParams:
    login: bool
    device_id: str | None
    display_name: str | None

    @classmethod
    def from_body(cls, body: JsonDict) -> _LoginParams:
        return cls(
            login=not optional(body, "inhibit_login", bool, False),
            device_id=optional(body, "device_id", str),
            display_name=optional(body, "initial_device_display_name", str),
        )


async def _register_guest(deps: ApiDeps, request: Request) -> JsonDict:
    # Spec "Guest Access": no user-interactive auth; the server picks a numeric user id.
    if not deps.registration.allow_guest_access:
        raise MatrixError("M_GUEST_ACCESS_FORBIDDEN", "Guest access is disabled")
    client_key = request.client_ip or "unknown"
    deps.ratelimits.registration.check(client_key)
    body = request.json_or_empty()
    result = await deps.accounts.register(
        None,
        None,
        guest=True,
        device_display_name=optional(body, "initial_device_display_name", str),
        ip=request.client_ip,
        user_agent=request.headers.get("user-agent"),
    )
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
