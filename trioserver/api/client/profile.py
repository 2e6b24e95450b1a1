"""Client-server API routes: profiles (spec "Profiles").

Reading a profile needs no access token (the spec gives ``GET`` no security, and Synapse does
not ask for one by default); changing one does. ``/profile/{userId}/{keyName}`` serves
``displayname`` and ``avatar_url`` as well as the v1.16 generic keys.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def get_profile(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /profile/{userId}."""
    return await deps.profile.get_profile(request.path_params["user"])


async def get_field(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /profile/{userId}/{keyName}."""
    params = request.path_params
    return await deps.profile.get_field(params["user"], params["key"])


async def put_field(deps: ApiDeps, request: Request) -> JsonDict:
    """PUT /profile/{userId}/{keyName} with ``{keyName: value}``."""
    params = request.path_params
    if request.requester.is_guest and params["key"] != "displayname":
        # Spec "Guest Access": of their profile, guests may set only the display name.
        raise MatrixError("M_GUEST_ACCESS_FORBIDDEN", "Guests may only set a display name")
    await deps.profile.set_field(
        request.requester.user_id, params["user"], params["key"], request.json()
    )
    return {}


async def delete_field(deps: ApiDeps, request: Request) -> JsonDict:
    """DELETE /profile/{userId}/{keyName}."""
    params = request.path_params
    await deps.profile.delete_field(request.requester.user_id, params["user"], params["key"])
    return {}


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/profile/{{user}}", get_profile, auth="none"),
    route("GET", f"{CLIENT}/profile/{{user}}/{{key}}", get_field, auth="none"),
    route("PUT", f"{CLIENT}/profile/{{user}}/{{key}}", put_field, auth="required", guest=True),
    route("DELETE", f"{CLIENT}/profile/{{user}}/{{key}}", delete_field, auth="required"),
]
