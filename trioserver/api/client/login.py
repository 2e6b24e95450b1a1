"""Logging in and out (client-server API, "Login")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional, require
from trioserver.errors import MatrixError
from trioserver.handlers.accounts import LoginResult, check_password_shape

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def get_login_flows(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /login: the login types we accept."""
    return {"flows": [{"type": "m.login.password"}]}


def _login_user(body: JsonDict) -> str:
    """The user named by a login body: ``identifier`` or the legacy top-level ``user``."""
    identifier: Any = body.get("identifier")
    if identifier is None:
        if "user" in body:
            return require(body, "user", str)
        raise MatrixError("M_MISSING_PARAM", "Missing param: 'identifier'")
    if not isinstance(identifier, dict):
        raise MatrixError("M_INVALID_PARAM", "'identifier' must be an object")
    id_type = identifier.get("type")
    if id_type == "m.id.user":
        user = identifier.get("user")
        if not isinstance(user, str):
            raise MatrixError("M_INVALID_PARAM", "User identifier is missing 'user' key")
        return user
    if id_type in ("m.id.thirdparty", "m.id.phone"):
        # We keep no third-party identifiers, so none can match.
        raise MatrixError("M_FORBIDDEN", "Invalid username or password")
    raise MatrixError("M_UNKNOWN", "Unknown login identifier type")


def login_response(deps: ApiDeps, result: LoginResult) -> JsonDict:
    """The body for a successful login/registration."""
    response: JsonDict = {"user_id": result.user_id, "home_server": deps.server_name}
    if result.access_token is not None:
        response["access_token"] = result.access_token
        response["device_id"] = result.device_id
    return response


async def post_login(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /login with m.login.password."""
    body = request.json()
    login_type = require(body, "type", str)
    if login_type != "m.login.password":
        raise MatrixError("M_UNKNOWN", f"Unknown login type {login_type}")
    deps.ratelimits.login.check(request.client_ip or "unknown")
    user = _login_user(body)
    password = check_password_shape(require(body, "password", str))
    result = await deps.accounts.login_with_password(
        user,
        password,
        device_id=optional(body, "device_id", str),
        device_display_name=optional(body, "initial_device_display_name", str),
        ip=request.client_ip,
        user_agent=request.headers.get("user-agent"),
    )
    return login_response(deps, result)


async def post_logout(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /logout: end this session and delete its device."""
    await deps.accounts.logout(request.requester)
    return {}


async def post_logout_all(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /logout/all: end every session of the user."""
    await deps.accounts.delete_devices(request.requester.user_id, None)
    await deps.auth.forget_tokens([request.requester.access_token])
    return {}


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/login", get_login_flows, auth="none"),
    route("POST", f"{CLIENT}/login", post_login, auth="none"),
    route("POST", f"{CLIENT}/logout", post_logout, auth="required"),
    route("POST", f"{CLIENT}/logout/all", post_logout_all, auth="required"),
]
