"""Discovery: /versions, /.well-known/matrix/client and /capabilities."""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.api.http import CLIENT, JsonDict, Request, Route, route

if TYPE_CHECKING:
    from trioserver.api.deps import ApiDeps

# Every spec release we serve the endpoints of; clients gate features on these.
SPEC_VERSIONS = [
    "r0.0.1",
    "r0.1.0",
    "r0.2.0",
    "r0.3.0",
    "r0.4.0",
    "r0.5.0",
    "r0.6.0",
    "r0.6.1",
    *(f"v1.{minor}" for minor in range(1, 17)),
]


async def get_versions(deps: ApiDeps, request: Request) -> JsonDict:
    """GET /_matrix/client/versions."""
    return {
        "versions": SPEC_VERSIONS,
        "unstable_features": {
            # MSC2228 as Synapse implements it (absolute expiry timestamps).
            "org.matrix.msc2228": deps.enable_ephemeral_messages,
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
