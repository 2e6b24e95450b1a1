"""Device management (client-server API, "Device Management")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.client.account import require_password_uia
from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional, require
from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps
    from trioserver.stores.accounts import DeviceRow


def _device_json(device: DeviceRow) -> JsonDict:
    # Spec "Device Management": only device_id is required; an unknown value is left out
    # (Synapse does the same), never sent as null.
    optional_fields = {
        "display_name": device.display_name,
        "last_seen_ip": device.last_seen_ip,
        "last_seen_ts": device.last_seen_ts,
    }
    return {
        "device_id": device.device_id,
        **{k: v for k, v in optional_fields.items() if v is not None},
    }


async def get_devices(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /devices: all of the user's devices."""
    devices = await deps.accounts.devices(request.requester.user_id)
    return {"devices": [_device_json(d) for d in devices]}


async def get_device(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /devices/{deviceId}."""
    device = await deps.accounts.device(request.requester.user_id, request.path_params["device"])
    if device is None:
        raise MatrixError("M_NOT_FOUND", "No device found")
    return _device_json(device)


async def put_device(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /devices/{deviceId}: rename a device."""
    body = request.json()
    display_name = optional(body, "display_name", str)
    user_id, device_id = request.requester.user_id, request.path_params["device"]
    if display_name is None:
        found = await deps.accounts.device(user_id, device_id) is not None
    else:
        found = await deps.accounts.rename_device(user_id, device_id, display_name)
    if not found:
        raise MatrixError("M_NOT_FOUND", "No device found")
    return {}


async def delete_device(deps: ApiDeps, request: Request) -> JsonDict:
    """DELETE /devices/{deviceId} (UIA)."""
    body = deps.uia.with_stored_params(request.json_or_empty())
    await require_password_uia(deps, request, body)
    await deps.accounts.delete_devices(request.requester.user_id, [request.path_params["device"]])
    return {}


async def post_delete_devices(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /delete_devices (UIA)."""
    body = deps.uia.with_stored_params(request.json())
    device_ids = require(body, "devices", list)
    if not all(isinstance(d, str) for d in device_ids):
        raise MatrixError("M_INVALID_PARAM", "'devices' must be an array of strings")
    await require_password_uia(deps, request, body)
    await deps.accounts.delete_devices(request.requester.user_id, device_ids)
    return {}


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/devices", get_devices, auth="required", guest=True),
    route("GET", f"{CLIENT}/devices/{{device}}", get_device, auth="required", guest=True),
    route("PUT", f"{CLIENT}/devices/{{device}}", put_device, auth="required", guest=True),
    route("DELETE", f"{CLIENT}/devices/{{device}}", delete_device, auth="required"),
    route("POST", f"{CLIENT}/delete_devices", post_delete_devices, auth="required"),
]
