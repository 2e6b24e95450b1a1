"""Discovery: /versions, /.well-known/matrix/client and /capabilities."""

from __future__ import annotations

import httpx

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import V3, Client, assert_error, assert_ok, bearer


async def test_versions_lists_every_release_up_to_v1_16(http: httpx.AsyncClient) -> None:
    body = assert_ok(await http.get("/_matrix/client/versions"))
    versions = body["versions"]
    assert all(isinstance(v, str) for v in versions)
    for minor in range(1, 17):
        assert f"v1.{minor}" in versions
    assert "r0.6.1" in versions
    assert isinstance(body["unstable_features"], dict)
    assert all(isinstance(v, bool) for v in body["unstable_features"].values())


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


async def test_capabilities_needs_a_token(http: httpx.AsyncClient) -> None:
    assert_error(await http.get(f"{V3}/capabilities"), 401, "M_MISSING_TOKEN")
    response = await http.get(f"{V3}/capabilities", headers=bearer("nonsense"))
    assert_error(response, 401, "M_UNKNOWN_TOKEN")
