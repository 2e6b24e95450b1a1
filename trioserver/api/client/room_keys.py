"""``/room_keys/version`` and ``/room_keys/keys`` (client-server API "Server-side key backups").

The three ``/room_keys/keys`` paths address all rooms, one room or one session; a body at a
narrower path is the matching part of the all-rooms body, so each is parsed into the same list
of keys. Every keys request names its backup in the required ``version`` query parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.errors import MatrixError
from trioserver.handlers.room_keys import (
    key_data_json,
    parse_key_data,
    parse_room_sessions,
    parse_rooms,
)

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps
    from trioserver.stores.room_keys import RoomKey


def _version_param(request: Request) -> str:
    version = request.query_param("version")
    if version is None:
        raise MatrixError("M_MISSING_PARAM", "Missing string query parameter 'version'")
    return version


def _room_and_session(request: Request) -> tuple[str | None, str | None]:
    return request.path_params.get("room"), request.path_params.get("session")


async def post_version(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /room_keys/version: create a backup version."""
    return await deps.room_keys.create_version(request.requester.user_id, request.json())


async def get_current_version(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /room_keys/version: the current backup (404 when there is none)."""
    return await deps.room_keys.get_version(request.requester.user_id, None)


async def get_version(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /room_keys/version/{version}."""
    version = request.path_params["version"]
    return await deps.room_keys.get_version(request.requester.user_id, version)


async def put_version(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /room_keys/version/{version}: replace its ``auth_data``."""
    version = request.path_params["version"]
    return await deps.room_keys.update_version(request.requester.user_id, version, request.json())


async def delete_version(deps: ApiDeps, request: Request) -> JsonDict:
    """DELETE /room_keys/version/{version}: the version and its keys."""
    version = request.path_params["version"]
    return await deps.room_keys.delete_version(request.requester.user_id, version)


def _uploaded_keys(request: Request) -> list[RoomKey]:
    body = request.json()
    room_id, session_id = _room_and_session(request)
    if room_id is None:
        return parse_rooms(body)
    if session_id is None:
        return parse_room_sessions(room_id, body)
    return [parse_key_data(room_id, session_id, body)]


async def put_keys(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /room_keys/keys[/{roomId}[/{sessionId}]]: store keys in the current backup."""
    version = _version_param(request)
    keys = _uploaded_keys(request)
    return await deps.room_keys.upload_keys(request.requester.user_id, version, keys)


async def get_keys(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /room_keys/keys[/{roomId}[/{sessionId}]]: keys from a backup.

    A room without keys gives ``{"sessions": {}}`` and a backup without keys
    ``{"rooms": {}}`` (spec); a missing session is 404.
    """
    version = _version_param(request)
    room_id, session_id = _room_and_session(request)
    keys = await deps.room_keys.get_keys(request.requester.user_id, version, room_id, session_id)
    if session_id is not None:
        if not keys:
            raise MatrixError("M_NOT_FOUND", "No room_keys found")
        return key_data_json(keys[0])
    rooms: dict[str, JsonDict] = {}
    for key in keys:
        rooms.setdefault(key.room_id, {}).setdefault("sessions", {})[key.session_id] = (
            key_data_json(key)
        )
    if room_id is not None:
        return rooms.get(room_id, {"sessions": {}})
    return {"rooms": rooms}


async def delete_keys(deps: ApiDeps, request: Request) -> JsonDict:
    """DELETE /room_keys/keys[/{roomId}[/{sessionId}]]: drop keys from a backup."""
    version = _version_param(request)
    room_id, session_id = _room_and_session(request)
    return await deps.room_keys.delete_keys(
        request.requester.user_id, version, room_id, session_id
    )


_KEYS_PATHS = (
    f"{CLIENT}/room_keys/keys",
    f"{CLIENT}/room_keys/keys/{{room}}",
    f"{CLIENT}/room_keys/keys/{{room}}/{{session}}",
)

ROUTES: list[Route[ApiDeps]] = [
    route("POST", f"{CLIENT}/room_keys/version", post_version, auth="required", local=True),
    route("GET", f"{CLIENT}/room_keys/version", get_current_version, auth="required"),
    route("GET", f"{CLIENT}/room_keys/version/{{version}}", get_version, auth="required"),
    route(
        "PUT", f"{CLIENT}/room_keys/version/{{version}}", put_version, auth="required", local=True
    ),
    route(
        "DELETE",
        f"{CLIENT}/room_keys/version/{{version}}",
        delete_version,
        auth="required",
        local=True,
    ),
    *(route("PUT", path, put_keys, auth="required", local=True) for path in _KEYS_PATHS),
    *(route("GET", path, get_keys, auth="required") for path in _KEYS_PATHS),
    *(route("DELETE", path, delete_keys, auth="required", local=True) for path in _KEYS_PATHS),
]
