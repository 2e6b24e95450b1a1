"""Client-server API routes: account data (global and per room) and room tags."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def get_global(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /user/{userId}/account_data/{type}."""
    params = request.path_params
    return await deps.account_data.get(
        request.requester.user_id, params["user"], None, params["type"]
    )


async def put_global(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /user/{userId}/account_data/{type}."""
    params = request.path_params
    requester = request.requester.user_id
    # Spec order (Synapse's too): who, then which type, then the body.
    deps.account_data.check_put(requester, params["user"], None, params["type"])
    await deps.account_data.put(requester, params["user"], None, params["type"], request.json())
    return {}


async def get_room(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /user/{userId}/rooms/{roomId}/account_data/{type}."""
    params = request.path_params
    return await deps.account_data.get(
        request.requester.user_id, params["user"], params["room"], params["type"]
    )


async def put_room(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /user/{userId}/rooms/{roomId}/account_data/{type}."""
    params = request.path_params
    requester = request.requester.user_id
    deps.account_data.check_put(requester, params["user"], params["room"], params["type"])
    await deps.account_data.put(
        requester, params["user"], params["room"], params["type"], request.json()
    )
    return {}


async def get_tags(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /user/{userId}/rooms/{roomId}/tags."""
    params = request.path_params
    return await deps.account_data.get_tags(
        request.requester.user_id, params["user"], params["room"]
    )


async def put_tag(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /user/{userId}/rooms/{roomId}/tags/{tag}."""
    params = request.path_params
    await deps.account_data.put_tag(
        request.requester.user_id, params["user"], params["room"], params["tag"], request.json()
    )
    return {}


async def delete_tag(deps: ApiDeps, request: Request) -> JsonDict:
    """DELETE /user/{userId}/rooms/{roomId}/tags/{tag}."""
    params = request.path_params
    await deps.account_data.delete_tag(
        request.requester.user_id, params["user"], params["room"], params["tag"]
    )
    return {}


_USER = f"{CLIENT}/user/{{user}}"
_ROOM = f"{_USER}/rooms/{{room}}"

ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{_USER}/account_data/{{type}}", get_global, auth="required"),
    route("PUT", f"{_USER}/account_data/{{type}}", put_global, auth="required"),
    route("GET", f"{_ROOM}/account_data/{{type}}", get_room, auth="required"),
    route("PUT", f"{_ROOM}/account_data/{{type}}", put_room, auth="required"),
    route("GET", f"{_ROOM}/tags", get_tags, auth="required"),
    route("PUT", f"{_ROOM}/tags/{{tag}}", put_tag, auth="required"),
    route("DELETE", f"{_ROOM}/tags/{{tag}}", delete_tag, auth="required"),
]
