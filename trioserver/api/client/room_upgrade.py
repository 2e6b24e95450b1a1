"""Room upgrades (client-server API, "Room Upgrades")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import require
from trioserver.errors import MatrixError
from trioserver.events import KNOWN_ROOM_VERSIONS
from trioserver.handlers.room_upgrade_state import parse_additional_creators

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def post_upgrade(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/upgrade: ``{"replacement_room": ...}``."""
    body = request.json()
    version = KNOWN_ROOM_VERSIONS.get(require(body, "new_version", str))
    if version is None:
        raise MatrixError(
            "M_UNSUPPORTED_ROOM_VERSION", "Your homeserver does not support this room version"
        )
    # MSC4289: only versions with privileged creators take additional creators.
    additional = None
    if version.privileged_creators:
        additional = parse_additional_creators(body.get("additional_creators"))
    new_room_id = await deps.room_upgrade.upgrade_room(
        request.requester, request.path_params["room"], version, additional
    )
    return {"replacement_room": new_room_id}


ROUTES: list[Route[ApiDeps]] = [
    route("POST", f"{CLIENT}/rooms/{{room}}/upgrade", post_upgrade, auth="required"),
]
