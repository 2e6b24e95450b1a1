"""Logging in and out: /login, /logout, /logout/all and /account/whoami."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from trioserver.testing import InProcessServer

from tests.integration.client import V3, Client, assert_error, assert_ok, login


async def test_login_flows_offer_password(http: httpx.AsyncClient) -> None:
    body = assert_ok(await http.get(f"{V3}/login"))
    assert {"type": "m.login.password"} in body["flows"]


@pytest.mark.parametrize("user", ["alice", "@alice:localhost", "ALICE", "@Alice:localhost"])
async def test_login_with_user_identifier(
    alice: Client, http: httpx.AsyncClient, user: str
) -> None:
    body = assert_ok(await login(http, user, "alicepw"))
    assert body["user_id"] == "@alice:localhost"
    assert body["home_server"] == "localhost"
    assert isinstance(body["device_id"], str)
    assert body["device_id"] != alice.device_id
    new = Client(http, body["user_id"], body["access_token"], body["device_id"])
    whoami = assert_ok(await new.get("/account/whoami"))
    assert whoami == {"user_id": "@alice:localhost", "device_id": new.device_id, "is_guest": False}


async def test_login_with_legacy_user_field(alice: Client, http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{V3}/login", json={"type": "m.login.password", "user": "alice", "password": "alicepw"}
    )
    assert assert_ok(response)["user_id"] == "@alice:localhost"


@pytest.mark.parametrize(
    ("user", "password"),
    [("alice", "wrong"), ("nobody", "alicepw"), ("@alice:elsewhere.org", "alicepw"), ("", "x")],
)
async def test_login_with_wrong_credentials_is_forbidden(
    alice: Client, http: httpx.AsyncClient, user: str, password: str
) -> None:
    assert_error(await login(http, user, password), 403, "M_FORBIDDEN")


async def test_login_with_unknown_type(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{V3}/login", json={"type": "m.login.magic", "user": "alice"})
    assert_error(response, 400, "M_UNKNOWN")


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"type": "m.login.password", "user": "alice"}, "M_MISSING_PARAM"),
        ({"type": "m.login.password", "password": "alicepw"}, "M_MISSING_PARAM"),
        ({"password": "alicepw", "user": "alice"}, "M_MISSING_PARAM"),
        ({"type": "m.login.password", "user": "alice", "password": 5}, "M_INVALID_PARAM"),
        ({"type": "m.login.password", "user": 5, "password": "alicepw"}, "M_INVALID_PARAM"),
        ({"type": 1, "user": "alice", "password": "alicepw"}, "M_INVALID_PARAM"),
        (
            {"type": "m.login.password", "identifier": "alice", "password": "alicepw"},
            "M_INVALID_PARAM",
        ),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user"},
                "password": "alicepw",
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "alicepw",
                "device_id": 7,
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": "alice"},
                "password": "alicepw",
                "initial_device_display_name": ["x"],
            },
            "M_INVALID_PARAM",
        ),
        (
            {
                "type": "m.login.password",
                "identifier": {"type": "m.id.unknown", "user": "alice"},
                "password": "alicepw",
            },
            "M_UNKNOWN",
        ),
    ],
)
async def test_login_with_malformed_body(
    alice: Client, http: httpx.AsyncClient, body: dict[str, Any], errcode: str
) -> None:
    assert_error(await http.post(f"{V3}/login", json=body), 400, errcode)


async def test_login_with_third_party_identifier_is_forbidden(
    alice: Client, http: httpx.AsyncClient
) -> None:
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.thirdparty", "medium": "email", "address": "a@b.c"},
        "password": "alicepw",
    }
    assert_error(await http.post(f"{V3}/login", json=body), 403, "M_FORBIDDEN")


async def test_login_reusing_a_device_id_ends_its_old_token(
    alice: Client, http: httpx.AsyncClient
) -> None:
    first = await Client.login(http, "alice", "alicepw", device_id="PHONE")
    assert first.device_id == "PHONE"
    assert await first.is_logged_in()

    second = await Client.login(http, "alice", "alicepw", device_id="PHONE")
    assert second.device_id == "PHONE"
    assert second.token != first.token
    assert await second.is_logged_in()
    assert not await first.is_logged_in()
    # The device itself is kept, once; the other sessions are untouched.
    devices = assert_ok(await second.get("/devices"))["devices"]
    assert sorted(d["device_id"] for d in devices) == sorted([alice.device_id, "PHONE"])
    assert await alice.is_logged_in()


async def test_login_reusing_a_device_id_keeps_its_display_name(
    alice: Client, http: httpx.AsyncClient
) -> None:
    await Client.login(
        http, "alice", "alicepw", device_id="PHONE", initial_device_display_name="My phone"
    )
    again = await Client.login(http, "alice", "alicepw", device_id="PHONE")
    device = assert_ok(await again.get("/devices/PHONE"))
    assert device["display_name"] == "My phone"


async def test_login_device_display_name_shows_in_devices(
    alice: Client, http: httpx.AsyncClient
) -> None:
    new = await Client.login(http, "alice", "alicepw", initial_device_display_name="Laptop")
    devices = assert_ok(await alice.get("/devices"))["devices"]
    by_id = {d["device_id"]: d for d in devices}
    assert by_id[new.device_id]["display_name"] == "Laptop"
    assert isinstance(by_id[new.device_id]["last_seen_ts"], int)
    assert by_id[new.device_id]["last_seen_ip"] == "127.0.0.1"


async def test_login_of_deactivated_user(alice: Client, http: httpx.AsyncClient) -> None:
    response = await alice.with_password_uia("POST", "/account/deactivate", {}, "alicepw")
    assert_ok(response)
    assert_error(await login(http, "alice", "alicepw"), 403, "M_USER_DEACTIVATED")


async def test_whoami_needs_a_valid_token(alice: Client, http: httpx.AsyncClient) -> None:
    assert_error(await http.get(f"{V3}/account/whoami"), 401, "M_MISSING_TOKEN")
    response = await http.get(
        f"{V3}/account/whoami", headers={"Authorization": "Bearer " + alice.token + "x"}
    )
    body = assert_error(response, 401, "M_UNKNOWN_TOKEN")
    assert body["soft_logout"] is False


async def test_logout_ends_only_this_session(alice: Client, http: httpx.AsyncClient) -> None:
    other = await Client.login(http, "alice", "alicepw")
    assert_ok(await other.post("/logout", {}))
    assert_error(await other.get("/account/whoami"), 401, "M_UNKNOWN_TOKEN")
    assert_error(await other.post("/logout", {}), 401, "M_UNKNOWN_TOKEN")
    devices = assert_ok(await alice.get("/devices"))["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]
    assert await alice.is_logged_in()


async def test_logout_without_body(alice: Client, http: httpx.AsyncClient) -> None:
    response = await http.post(f"{V3}/logout", headers=alice.headers)
    assert_ok(response)
    assert not await alice.is_logged_in()


async def test_logout_all_ends_every_session_of_the_user(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    sessions = [alice, *[await Client.login(http, "alice", "alicepw") for _ in range(3)]]
    for session in sessions:
        assert await session.is_logged_in()
    assert_ok(await sessions[1].post("/logout/all", {}))
    for session in sessions:
        assert not await session.is_logged_in()
    assert await bob.is_logged_in()
    # Logging in again works and starts from a clean device list.
    fresh = await Client.login(http, "alice", "alicepw")
    devices = assert_ok(await fresh.get("/devices"))["devices"]
    assert [d["device_id"] for d in devices] == [fresh.device_id]


async def test_registered_user_helper_logs_in(
    hs: InProcessServer, http: httpx.AsyncClient
) -> None:
    await hs.register_user("carol", "carolpw")
    assert_ok(await login(http, "carol", "carolpw"))


async def test_device_ids_are_per_user(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    alices = await Client.login(http, "alice", "alicepw", device_id="SHARED")
    bobs = await Client.login(http, "bob", "bobpw", device_id="SHARED")
    assert await alices.is_logged_in()
    assert await bobs.is_logged_in()
    whoami = assert_ok(await bobs.get("/account/whoami"))
    assert whoami == {"user_id": "@bob:localhost", "device_id": "SHARED", "is_guest": False}
