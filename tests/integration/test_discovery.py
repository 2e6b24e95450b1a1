"""Discovery: /versions, /.well-known/matrix/client and /capabilities."""

from __future__ import annotations

import httpx

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import V3, Client, assert_error, assert_ok, bearer

# The endpoints spec versions added (one each): a server that advertises a version must route
# the probes of it and of every version before it (any answer but M_UNRECOGNIZED).
VERSION_PROBES: dict[str, tuple[str, str]] = {
    "v1.1": ("POST", f"{V3}/knock/!nowhere:localhost"),
    "v1.2": ("GET", "/_matrix/client/v1/rooms/!nowhere:localhost/hierarchy"),
    "v1.3": ("GET", "/_matrix/client/v1/rooms/!nowhere:localhost/relations/$nothing"),
    "v1.4": ("GET", "/_matrix/client/v1/rooms/!nowhere:localhost/threads"),
    "v1.6": ("GET", "/_matrix/client/v1/rooms/!nowhere:localhost/timestamp_to_event"),
    "v1.7": ("POST", "/_matrix/media/v1/create"),
    "v1.11": ("GET", "/_matrix/client/v1/media/config"),
    "v1.13": ("POST", f"{V3}/rooms/!nowhere:localhost/report"),
    "v1.14": ("POST", f"{V3}/users/@nobody:localhost/report"),
    "v1.15": ("GET", "/_matrix/client/v1/room_summary/!nowhere:localhost"),
}


async def test_versions_lists_what_clients_need_and_only_what_is_served(
    http: httpx.AsyncClient, alice: Client
) -> None:
    body = assert_ok(await http.get("/_matrix/client/versions"))
    versions = body["versions"]
    assert all(isinstance(v, str) for v in versions)
    # matrix-js-sdk and matrix-dart-sdk need one of v1.1 and later; older clients look for r0.
    assert "v1.1" in versions
    assert "r0.6.1" in versions
    # Issue 11 serves spaces, relations, threads with their counts and jump to date; issue 12
    # the media repository, so v1.11 (authenticated media, what Element switches on by).
    assert {f"v1.{minor}" for minor in range(2, 16)} <= set(versions)
    for version in versions:
        if version.startswith("r0."):
            continue
        for earlier, (method, path) in VERSION_PROBES.items():
            if _minor(earlier) <= _minor(version):
                response = await http.request(method, path, headers=alice.headers)
                assert response.json().get("errcode") != "M_UNRECOGNIZED", (version, path)
    assert isinstance(body["unstable_features"], dict)
    assert all(isinstance(v, bool) for v in body["unstable_features"].values())
    # Private read receipts also under the flag older clients look for.
    assert body["unstable_features"]["org.matrix.msc2285.stable"] is True


def _minor(version: str) -> int:
    return int(version.removeprefix("v1."))


async def test_versions_needs_no_token_and_ignores_a_bad_one(http: httpx.AsyncClient) -> None:
    response = await http.get("/_matrix/client/versions", headers=bearer("nonsense"))
    assert_ok(response)


async def test_well_known_points_at_the_server(
    hs: InProcessServer, http: httpx.AsyncClient
) -> None:
    body = assert_ok(await http.get("/.well-known/matrix/client"))
    assert body == {"m.homeserver": {"base_url": hs.base_url + "/"}}


async def test_well_known_uses_public_baseurl() -> None:
    async with (
        serve_in_process(http={"public_baseurl": "https://matrix.example.org"}) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        body = assert_ok(await http.get("/.well-known/matrix/client"))
    assert body["m.homeserver"]["base_url"] == "https://matrix.example.org/"


async def test_capabilities(alice: Client) -> None:
    body = assert_ok(await alice.get("/capabilities"))
    capabilities = body["capabilities"]
    assert capabilities["m.change_password"] == {"enabled": True}
    room_versions = capabilities["m.room_versions"]
    assert room_versions["default"] == "12"
    assert room_versions["available"]["12"] == "stable"
    assert room_versions["available"]["1"] == "stable"
    assert set(room_versions["available"]) == {str(n) for n in range(1, 13)}
    assert capabilities["m.set_displayname"] == {"enabled": True}
    assert capabilities["m.set_avatar_url"] == {"enabled": True}
    # No 3PIDs are kept and /login/get_token is not served.
    assert capabilities["m.3pid_changes"] == {"enabled": False}
    assert capabilities["m.get_login_token"] == {"enabled": False}
    assert capabilities["m.profile_fields"] == {
        "enabled": True,
        "allowed": ["displayname", "avatar_url"],
    }


async def test_capabilities_needs_a_token(http: httpx.AsyncClient) -> None:
    assert_error(await http.get(f"{V3}/capabilities"), 401, "M_MISSING_TOKEN")
    response = await http.get(f"{V3}/capabilities", headers=bearer("nonsense"))
    assert_error(response, 401, "M_UNKNOWN_TOKEN")
