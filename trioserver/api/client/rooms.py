"""Creating rooms and changing memberships (client-server API, "Rooms" and "Room membership")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route
from trioserver.api.params import optional, require
from trioserver.handlers.room_creation import parse_create_room
from trioserver.handlers.state_checks import third_party_invites_unsupported

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps


async def post_create_room(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /createRoom."""
    parsed = parse_create_room(request.json(), deps.default_room_version)
    for invitee in parsed.invite:
        # Before the room exists, so that a refused invite leaves no half-made room.
        deps.membership.check_invitee(invitee)
    room_id, alias = await deps.room_creation.create_room(request.requester.user_id, parsed)
    response: JsonDict = {"room_id": room_id}
    if alias is not None:
        response["room_alias"] = alias
    return response


def _reason(body: JsonDict) -> str | None:
    return optional(body, "reason", str)


async def _join(deps: ApiDeps, request: Request, room_id_or_alias: str) -> JsonDict:
    body = request.json_or_empty()
    room_id, directory_servers = await deps.membership.resolve_room_and_servers(room_id_or_alias)
    # Servers to join through when this server is not in the room (`via`, and the older
    # `server_name`), then those the directory named.
    servers = [*(request.query.get("via") or []), *(request.query.get("server_name") or [])]
    servers += [s for s in directory_servers if s not in servers]
    requester = request.requester
    # Other body keys go into the member event content, as Synapse does (SyTest "POST
    # /join/:room_id can join a room with custom content"); `membership` is always "join" and
    # `third_party_signed` is a join parameter, not content.
    extra = {k: v for k, v in body.items() if k not in ("membership", "third_party_signed")}
    await deps.membership.update_membership(
        requester.user_id,
        room_id,
        requester.user_id,
        "join",
        reason=_reason(body),
        extra_content=extra,
        guest=requester.is_guest,
        servers=servers,
    )
    return {"room_id": room_id}


async def post_join_by_id_or_alias(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /join/{roomIdOrAlias}."""
    return await _join(deps, request, request.path_params["room"])


async def post_room_join(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/join."""
    return await _join(deps, request, request.path_params["room"])


async def post_knock(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /knock/{roomIdOrAlias}."""
    body = request.json_or_empty()
    room_id, directory_servers = await deps.membership.resolve_room_and_servers(
        request.path_params["room"]
    )
    servers = [*(request.query.get("via") or []), *(request.query.get("server_name") or [])]
    servers += [s for s in directory_servers if s not in servers]
    user_id = request.requester.user_id
    await deps.membership.update_membership(
        user_id, room_id, user_id, "knock", reason=_reason(body), servers=servers
    )
    return {"room_id": room_id}


async def post_leave(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/leave."""
    body = request.json_or_empty()
    room_id = await deps.membership.resolve_room(request.path_params["room"])
    requester = request.requester
    await deps.membership.update_membership(
        requester.user_id,
        room_id,
        requester.user_id,
        "leave",
        reason=_reason(body),
        guest=requester.is_guest,
    )
    return {}


async def _act_on_other(deps: ApiDeps, request: Request, membership: str) -> JsonDict:
    body = request.json()
    target = require(body, "user_id", str)
    room_id = await deps.membership.resolve_room(request.path_params["room"])
    sender = request.requester.user_id
    extra = None
    if membership == "invite":
        is_direct = optional(body, "is_direct", bool)
        extra = {"is_direct": True} if is_direct else None
    await deps.membership.update_membership(
        sender, room_id, target, membership, reason=_reason(body), extra_content=extra
    )
    return {}


async def post_invite(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/invite (by user id; third-party invites are not supported)."""
    body = request.json()
    if "user_id" not in body and any(k in body for k in ("id_server", "medium", "address")):
        raise third_party_invites_unsupported()
    deps.membership.check_invitee(require(body, "user_id", str))
    return await _act_on_other(deps, request, "invite")


async def post_kick(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/kick."""
    body = request.json()
    target = require(body, "user_id", str)
    room_id = await deps.membership.resolve_room(request.path_params["room"])
    await deps.membership.kick(request.requester.user_id, room_id, target, _reason(body))
    return {}


async def post_ban(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/ban."""
    return await _act_on_other(deps, request, "ban")


async def post_unban(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/unban."""
    body = request.json()
    target = require(body, "user_id", str)
    room_id = request.path_params["room"]
    await deps.membership.unban(request.requester.user_id, room_id, target, _reason(body))
    return {}


async def post_forget(deps: ApiDeps, request: Request) -> JsonDict:
    """POST /rooms/{roomId}/forget."""
    await deps.membership.forget(request.requester.user_id, request.path_params["room"])
    return {}


ROUTES: list[Route[ApiDeps]] = [
    route("POST", f"{CLIENT}/createRoom", post_create_room, auth="required"),
    route(
        "POST", f"{CLIENT}/join/{{room}}", post_join_by_id_or_alias, auth="required", guest=True
    ),
    route("POST", f"{CLIENT}/knock/{{room}}", post_knock, auth="required"),
    route("POST", f"{CLIENT}/rooms/{{room}}/join", post_room_join, auth="required", guest=True),
    route("POST", f"{CLIENT}/rooms/{{room}}/leave", post_leave, auth="required", guest=True),
    route("POST", f"{CLIENT}/rooms/{{room}}/invite", post_invite, auth="required"),
    route("POST", f"{CLIENT}/rooms/{{room}}/kick", post_kick, auth="required"),
    route("POST", f"{CLIENT}/rooms/{{room}}/ban", post_ban, auth="required"),
    route("POST", f"{CLIENT}/rooms/{{room}}/unban", post_unban, auth="required"),
    route("POST", f"{CLIENT}/rooms/{{room}}/forget", post_forget, auth="required"),
]
