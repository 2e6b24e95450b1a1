"""The third-party identifier endpoints answer Matrix errors, not 404s."""

from __future__ import annotations

import httpx
import pytest

from tests.integration.client import V3, Client, assert_error, assert_ok

EMAIL = {"client_secret": "secret", "email": "a@example.org", "send_attempt": 1}
PHONE = {
    "client_secret": "secret",
    "country": "GB",
    "phone_number": "07700900000",
    "send_attempt": 1,
}


async def test_a_user_has_no_threepids(alice: Client) -> None:
    assert assert_ok(await alice.get("/account/3pid")) == {"threepids": []}


@pytest.mark.parametrize("flow", ["account/3pid", "register", "account/password"])
async def test_request_token_is_denied(http: httpx.AsyncClient, flow: str) -> None:
    for medium, body in (("email", EMAIL), ("msisdn", PHONE)):
        response = await http.post(f"{V3}/{flow}/{medium}/requestToken", json=body)
        assert_error(response, 403, "M_THREEPID_DENIED")


async def test_adding_and_binding_fail_clearly(alice: Client) -> None:
    session = {"client_secret": "secret", "sid": "1"}
    assert_error(await alice.post("/account/3pid/add", session), 400, "M_THREEPID_AUTH_FAILED")
    legacy = {"three_pid_creds": {**session, "id_server": "id.example.org"}}
    assert_error(await alice.post("/account/3pid", legacy), 400, "M_THREEPID_AUTH_FAILED")
    bind = {**session, "id_server": "id.example.org", "id_access_token": "t"}
    assert_error(await alice.post("/account/3pid/bind", bind), 403, "M_THREEPID_DENIED")


@pytest.mark.parametrize("action", ["delete", "unbind"])
async def test_removing_an_absent_threepid_succeeds(alice: Client, action: str) -> None:
    body = {"medium": "email", "address": "a@example.org"}
    response = assert_ok(await alice.post(f"/account/3pid/{action}", body))
    assert response == {"id_server_unbind_result": "no-support"}
    assert_error(await alice.post(f"/account/3pid/{action}", {}), 400, "M_MISSING_PARAM")


async def test_threepid_changes_need_a_token(http: httpx.AsyncClient) -> None:
    assert_error(await http.get(f"{V3}/account/3pid"), 401, "M_MISSING_TOKEN")
