"""``GET /admin/whois/{userId}`` (client-server API, "Server Administration")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps
    from trioserver.stores.accounts import DeviceRow


def _connection(device: DeviceRow) -> JsonDict:
    # Devices remember where and with what they last logged in; Synapse gives "" for an
    # unknown user agent.
    connection: JsonDict = {"user_agent": device.last_seen_user_agent or ""}
    if device.last_seen_ip is not None:
        connection["ip"] = device.last_seen_ip
    if device.last_seen_ts is not None:
        connection["last_seen"] = device.last_seen_ts
    return connection


def _device_info(device: DeviceRow) -> JsonDict:
    # One device is one session here: a new login on a device ends its old token.
    seen = device.last_seen_ts is not None or device.last_seen_ip is not None
    return {"sessions": [{"connections": [_connection(device)] if seen else []}]}


async def get_whois(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /admin/whois/{userId}: for the user themself and for server admins (spec: "may be
    restricted to only be called by the user being looked up, or by a server admin").

    Raises:
        MatrixError: 403 for anyone else, 400 for a user of another server (Synapse).
    """
    user_id = request.path_params["user"]
    requester = request.requester.user_id
    if requester != user_id and not await deps.accounts.is_admin(requester):
        raise MatrixError("M_FORBIDDEN", "You are not a server admin")
    if not user_id.endswith(":" + deps.server_name):
        raise MatrixError("M_UNKNOWN", "Can only whois a local user", status=400)
    devices = await deps.accounts.devices(user_id)
    return {"user_id": user_id, "devices": {d.device_id: _device_info(d) for d in devices}}


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/admin/whois/{{user}}", get_whois, auth="required"),
]
