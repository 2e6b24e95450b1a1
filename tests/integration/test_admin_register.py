"""Synapse's shared-secret registration: GET/POST /_synapse/admin/v1/register."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import httpx
import pytest

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok, bearer, login

PATH = "/_synapse/admin/v1/register"
SECRET = b"test-secret"


def mac(
    nonce: str,
    username: str,
    password: str,
    admin: bool,
    user_type: str | None = None,
    secret: bytes = SECRET,
) -> str:
    digest = hmac.new(secret, digestmod=hashlib.sha1)
    digest.update(nonce.encode() + b"\0" + username.encode() + b"\0" + password.encode())
    digest.update(b"\0admin" if admin else b"\0notadmin")
    if user_type is not None:
        digest.update(b"\0" + user_type.encode())
    return digest.hexdigest()


async def nonce(http: httpx.AsyncClient) -> str:
    body = assert_ok(await http.get(PATH))
    assert isinstance(body["nonce"], str)
    assert body["nonce"]
    return str(body["nonce"])


def signed(nonce: str, username: str, password: str, admin: bool = False) -> dict[str, Any]:
    return {
        "nonce": nonce,
        "username": username,
        "password": password,
        "admin": admin,
        "mac": mac(nonce, username, password, admin),
    }


async def test_nonces_are_fresh(http: httpx.AsyncClient) -> None:
    assert await nonce(http) != await nonce(http)


@pytest.mark.parametrize("admin", [False, True])
async def test_register_with_shared_secret(http: httpx.AsyncClient, admin: bool) -> None:
    response = await http.post(PATH, json=signed(await nonce(http), "mallory", "pw", admin))
    body = assert_ok(response)
    assert body["user_id"] == "@mallory:localhost"
    assert body["home_server"] == "localhost"
    whoami = assert_ok(
        await http.get("/_matrix/client/v3/account/whoami", headers=bearer(body["access_token"]))
    )
    assert whoami["user_id"] == "@mallory:localhost"
    assert whoami["device_id"] == body["device_id"]
    assert_ok(await login(http, "mallory", "pw"))


async def test_register_with_user_type(http: httpx.AsyncClient) -> None:
    n = await nonce(http)
    body = {
        "nonce": n,
        "username": "botty",
        "password": "pw",
        "admin": False,
        "user_type": "bot",
        "mac": mac(n, "botty", "pw", False, "bot"),
    }
    assert assert_ok(await http.post(PATH, json=body))["user_id"] == "@botty:localhost"
    # The user type is part of the MAC.
    n = await nonce(http)
    body = {**body, "nonce": n, "username": "botty2", "mac": mac(n, "botty2", "pw", False)}
    assert_error(await http.post(PATH, json=body), 403, "M_FORBIDDEN")


async def test_wrong_mac_is_forbidden(http: httpx.AsyncClient) -> None:
    n = await nonce(http)
    body = signed(n, "mallory", "pw")
    assert_error(await http.post(PATH, json={**body, "mac": "0" * 40}), 403, "M_FORBIDDEN")
    # A MAC made with another secret, or for other values, is wrong too.
    n = await nonce(http)
    body = {**signed(n, "mallory", "pw"), "mac": mac(n, "mallory", "pw", False, secret=b"x")}
    assert_error(await http.post(PATH, json=body), 403, "M_FORBIDDEN")
    n = await nonce(http)
    body = {**signed(n, "mallory", "pw"), "admin": True}
    assert_error(await http.post(PATH, json=body), 403, "M_FORBIDDEN")
    assert_error(await login(http, "mallory", "pw"), 403, "M_FORBIDDEN")


async def test_nonce_is_single_use(http: httpx.AsyncClient) -> None:
    n = await nonce(http)
    assert_ok(await http.post(PATH, json=signed(n, "mallory", "pw")))
    response = await http.post(PATH, json=signed(n, "mallory2", "pw"))
    assert response.status_code == 400, response.text
    assert_error(await login(http, "mallory2", "pw"), 403, "M_FORBIDDEN")


async def test_nonce_is_spent_by_a_failed_attempt(http: httpx.AsyncClient) -> None:
    n = await nonce(http)
    assert_error(
        await http.post(PATH, json={**signed(n, "m", "pw"), "mac": "00"}), 403, "M_FORBIDDEN"
    )
    assert (await http.post(PATH, json=signed(n, "m", "pw"))).status_code == 400


async def test_unknown_nonce(http: httpx.AsyncClient) -> None:
    response = await http.post(PATH, json=signed("made-up", "mallory", "pw"))
    assert response.status_code == 400, response.text


@pytest.mark.parametrize("missing", ["nonce", "username", "password", "mac"])
async def test_missing_fields(http: httpx.AsyncClient, missing: str) -> None:
    body = signed(await nonce(http), "mallory", "pw")
    del body[missing]
    response = await http.post(PATH, json=body)
    assert response.status_code == 400, response.text
    assert isinstance(response.json()["errcode"], str)


@pytest.mark.parametrize(
    "change",
    [
        {"username": 5},
        {"password": None},
        {"password": "x" * 513},
        {"username": "a\0b"},
        {"user_type": "wizard"},
        {"user_type": ["bot"]},
        {"user_type": {"bot": True}},
        {"displayname": 5},
        {"mac": 5},
    ],
)
async def test_invalid_fields(http: httpx.AsyncClient, change: dict[str, Any]) -> None:
    body = {**signed(await nonce(http), "mallory", "pw"), **change}
    response = await http.post(PATH, json=body)
    assert response.status_code == 400, response.text
    assert_error(await login(http, "mallory", "pw"), 403, "M_FORBIDDEN")


@pytest.mark.parametrize("bad_nonce", [["x"], {"a": 1}, 5, None])
async def test_nonce_of_the_wrong_type(http: httpx.AsyncClient, bad_nonce: Any) -> None:
    await nonce(http)
    body = {**signed("x", "mallory", "pw"), "nonce": bad_nonce}
    response = await http.post(PATH, json=body)
    assert response.status_code == 400, response.text


async def test_taken_username(alice: Client, http: httpx.AsyncClient) -> None:
    response = await http.post(PATH, json=signed(await nonce(http), "alice", "other"))
    assert_error(response, 400, "M_USER_IN_USE")
    assert_ok(await login(http, "alice", "alicepw"))


async def test_invalid_username(http: httpx.AsyncClient) -> None:
    response = await http.post(PATH, json=signed(await nonce(http), "bad name", "pw"))
    assert_error(response, 400, "M_INVALID_USERNAME")


async def test_disabled_without_a_shared_secret() -> None:
    async with (
        serve_in_process(registration={"shared_secret": None}) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        n = await nonce(http)
        response = await http.post(PATH, json={**signed(n, "mallory", "pw"), "mac": "x"})
        assert response.status_code == 400, response.text
        assert_error(await login(http, "mallory", "pw"), 403, "M_FORBIDDEN")


async def test_username_is_lower_cased_after_the_mac_check(http: httpx.AsyncClient) -> None:
    response = await http.post(PATH, json=signed(await nonce(http), "MixedCase", "pw"))
    assert assert_ok(response)["user_id"] == "@mixedcase:localhost"
    assert_ok(await login(http, "mixedcase", "pw"))
