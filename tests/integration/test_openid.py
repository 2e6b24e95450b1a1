"""OpenID tokens over real HTTP (SyTest tests/45openid.pl), and their expiry."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from trioserver.errors import MatrixError
from trioserver.handlers.openid import OpenIdHandler
from trioserver.stores.openid import OpenIdStore

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.writer_env import writer_env

USERINFO = "/_matrix/federation/v1/openid/userinfo"


async def test_a_token_is_exchanged_for_the_user_id(
    alice: Client, http: httpx.AsyncClient
) -> None:
    body = assert_ok(await alice.post(f"/user/{alice.user_id}/openid/request_token", {}))
    assert body["token_type"] == "Bearer"
    assert body["matrix_server_name"] == "localhost"
    assert body["expires_in"] == 3600
    info = assert_ok(await http.get(USERINFO, params={"access_token": body["access_token"]}))
    assert info == {"sub": alice.user_id}
    # It is no access token for the client API.
    whoami = await http.get(
        "/_matrix/client/v3/account/whoami",
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert_error(whoami, 401, "M_UNKNOWN_TOKEN")


async def test_bad_or_missing_tokens_are_rejected(http: httpx.AsyncClient) -> None:
    assert_error(
        await http.get(USERINFO, params={"access_token": "an/invalid/token"}),
        401,
        "M_UNKNOWN_TOKEN",
    )
    assert_error(await http.get(USERINFO), 401, "M_UNKNOWN_TOKEN")


async def test_tokens_only_for_oneself(alice: Client, bob: Client) -> None:
    response = await alice.post(f"/user/{bob.user_id}/openid/request_token", {})
    assert_error(response, 403, "M_FORBIDDEN")


async def test_a_token_expires_after_an_hour(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        now = [1_800_000_000.0]
        # The real store on a real database, with a clock the test moves.
        openid = OpenIdHandler(OpenIdStore(env.db), server_name="blue", clock=lambda: now[0])
        alice = await env.user("alice")
        token = (await openid.request_token(alice, alice))["access_token"]
        now[0] += 3599.999
        assert await openid.user_info(token) == {"sub": alice}
        now[0] += 0.001
        with pytest.raises(MatrixError) as expired:
            await openid.user_info(token)
        assert expired.value.status == 401
