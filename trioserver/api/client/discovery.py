"""Discovery: /versions, /.well-known/matrix/client and /capabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

# The spec releases advertised. Clients do not just check that one they know is listed: they
# turn features on by version, and then call endpoints we would answer with 404. So list a
# version only when what it added exists here, except for the floor clients need to connect.
#
# - r0.0.1-r0.6.1 and v1.1: the floor. matrix-js-sdk (Element Web, Cinny) and
#   matrix-dart-sdk (FluffyChat) refuse a server listing none of v1.1 and later; v1.1 is the
#   oldest they accept, and older bots and clients look for r0.x. What v1.1 added (the v3
#   prefix, knocking, stable cross-signing) is served.
# - v1.2 (/rooms/{roomId}/hierarchy, spaces), v1.3 (/relations), v1.4 (/threads, threaded
#   read receipts and `unread_thread_notifications`, private read receipts), v1.5 (no new
#   endpoints) and v1.6 (/timestamp_to_event, Element's "jump to date"): served (issue 11).
# - v1.7 (asynchronous media upload, intentional mentions, per-device transaction ids),
#   v1.8 (room version 11), v1.9 (.m.rule.suppress_edits), v1.10 (recursive /relations,
#   `erase` on deactivation), v1.11 (authenticated media under /_matrix/client/v1/media, the
#   legacy /_matrix/media/v3 downloads frozen), v1.12 (guests may download media), v1.13 and
#   v1.14 (room and user reports), v1.15 (/room_summary): served (issue 12 for the media).
#   v1.11 matters most: Element and matrix-js-sdk use authenticated media only when a server
#   lists it, and the legacy endpoints do not serve new media.
# - v1.16 needs `use_state_after` on /sync, which is not served yet.
# Add a version here together with the endpoints it requires.
SPEC_VERSIONS = [
    "r0.0.1",
    "r0.1.0",
    "r0.2.0",
    "r0.3.0",
    "r0.4.0",
    "r0.5.0",
    "r0.6.0",
    "r0.6.1",
    "v1.1",
    "v1.2",
    "v1.3",
    "v1.4",
    "v1.5",
    "v1.6",
    "v1.7",
    "v1.8",
    "v1.9",
    "v1.10",
    "v1.11",
    "v1.12",
    "v1.13",
    "v1.14",
    "v1.15",
]


async def get_versions(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /_matrix/client/versions."""
    return {
        "versions": SPEC_VERSIONS,
        "unstable_features": {
            # MSC2228 as Synapse implements it (absolute expiry timestamps).
            "org.matrix.msc2228": deps.enable_ephemeral_messages,
            # MSC2285 private read receipts (`m.read.private`), stable since v1.4; older
            # clients look for this flag instead of the version.
            "org.matrix.msc2285.stable": True,
        },
    }


async def get_wellknown_client(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /.well-known/matrix/client: where clients find this server."""
    base_url = deps.http.public_baseurl or f"{request.scheme}://{request.host}"
    return {"m.homeserver": {"base_url": base_url.rstrip("/") + "/"}}


async def get_capabilities(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /capabilities."""
    return {
        "capabilities": {
            "m.change_password": {"enabled": True},
            "m.room_versions": {
                "default": deps.default_room_version,
                "available": dict(deps.room_versions),
            },
            "m.set_displayname": {"enabled": True},
            "m.set_avatar_url": {"enabled": True},
            "m.3pid_changes": {"enabled": False},
            "m.get_login_token": {"enabled": False},
            # v1.16: only the two classic profile fields are stored.
            "m.profile_fields": {"enabled": True, "allowed": ["displayname", "avatar_url"]},
        }
    }


ROUTES: list[Route[ApiDeps]] = [
    route("GET", "/_matrix/client/versions", get_versions, auth="none"),
    route("GET", "/.well-known/matrix/client", get_wellknown_client, auth="none"),
    route("GET", f"{CLIENT}/capabilities", get_capabilities, auth="required", guest=True),
]
