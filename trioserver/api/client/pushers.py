"""``GET /pushers`` and ``POST /pushers/set`` (client-server API, "Push Notifications")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def get_pushers(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /pushers: the requester's pushers (another user's are never listed)."""
    return {"pushers": await deps.pushers.pushers(request.requester.user_id)}


async def set_pusher(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /pushers/set: create, update or (``kind: null``) delete a pusher."""
    await deps.pushers.set_pusher(request.requester, request.json())
    return {}


ROUTES: list[Route[ApiDeps]] = [
    route("GET", f"{CLIENT}/pushers", get_pushers, auth="required"),
    route("POST", f"{CLIENT}/pushers/set", set_pusher, auth="required"),
]
