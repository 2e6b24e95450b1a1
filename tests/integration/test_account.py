"""The user's own account: /account/password and /account/deactivate (UIA m.login.password)."""

from __future__ import annotations

import httpx

from tests.integration.client import (
    V3,
    Client,
    assert_error,
    assert_ok,
    assert_uia,
    login,
    password_auth,
)


async def test_password_change_needs_the_current_password(alice: Client) -> None:
    body = {"new_password": "newpw"}
    first = await alice.post("/account/password", body)
    uia = assert_uia(first, ["m.login.password"])
    assert uia["completed"] == []
    assert "errcode" not in uia

    wrong = await alice.post(
        "/account/password",
        {**body, "auth": password_auth(alice.user_id, "wrong", uia["session"])},
    )
    failed = assert_uia(wrong, ["m.login.password"])
    assert failed["errcode"] == "M_FORBIDDEN"
    assert isinstance(failed["error"], str)
    assert failed["completed"] == []
    assert failed["session"] == uia["session"]
    # Nothing changed.
    assert_ok(await login(alice.http, "alice", "alicepw"))

    right = await alice.post(
        "/account/password",
        {**body, "auth": password_auth(alice.user_id, "alicepw", uia["session"])},
    )
    assert assert_ok(right) == {}
    assert_error(await login(alice.http, "alice", "alicepw"), 403, "M_FORBIDDEN")
    assert_ok(await login(alice.http, "alice", "newpw"))


async def test_password_change_logs_out_other_devices(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    others = [await Client.login(http, "alice", "alicepw") for _ in range(2)]
    assert_ok(
        await alice.with_password_uia(
            "POST", "/account/password", {"new_password": "newpw"}, "alicepw"
        )
    )
    for other in others:
        assert not await other.is_logged_in()
    assert await alice.is_logged_in()
    assert await bob.is_logged_in()
    devices = assert_ok(await alice.get("/devices"))["devices"]
    assert [d["device_id"] for d in devices] == [alice.device_id]


async def test_password_change_can_keep_other_devices(
    alice: Client, http: httpx.AsyncClient
) -> None:
    other = await Client.login(http, "alice", "alicepw")
    body = {"new_password": "newpw", "logout_devices": False}
    assert_ok(await alice.with_password_uia("POST", "/account/password", body, "alicepw"))
    assert await other.is_logged_in()
    assert await alice.is_logged_in()
    assert_ok(await login(http, "alice", "newpw"))


async def test_password_change_later_step_may_send_only_auth(alice: Client) -> None:
    first = await alice.post("/account/password", {"new_password": "newpw"})
    session = assert_uia(first, ["m.login.password"])["session"]
    response = await alice.post(
        "/account/password", {"auth": password_auth("alice", "alicepw", session)}
    )
    assert_ok(response)
    assert_ok(await login(alice.http, "alice", "newpw"))


async def test_password_change_with_another_users_credentials_fails(
    alice: Client, bob: Client
) -> None:
    first = await alice.post("/account/password", {"new_password": "newpw"})
    session = assert_uia(first, ["m.login.password"])["session"]
    response = await alice.post(
        "/account/password",
        {"new_password": "newpw", "auth": password_auth(bob.user_id, "bobpw", session)},
    )
    # Another user's valid password is a plain 403, as Synapse answers.
    assert_error(response, 403, "M_FORBIDDEN")
    assert_ok(await login(alice.http, "alice", "alicepw"))
    assert_ok(await login(alice.http, "bob", "bobpw"))


async def test_password_change_session_cannot_be_used_by_another_user(
    alice: Client, bob: Client
) -> None:
    first = await alice.post("/account/password", {"new_password": "newpw"})
    session = assert_uia(first, ["m.login.password"])["session"]
    response = await bob.post(
        "/account/password",
        {"new_password": "evil", "auth": password_auth(bob.user_id, "bobpw", session)},
    )
    assert_error(response, 403, "M_FORBIDDEN")
    assert_ok(await login(alice.http, "bob", "bobpw"))
    assert_ok(await login(alice.http, "alice", "alicepw"))


async def test_password_change_with_bad_body(alice: Client) -> None:
    assert_error(
        await alice.post("/account/password", {"new_password": 5}), 400, "M_INVALID_PARAM"
    )
    response = await alice.post("/account/password", {"new_password": "x", "logout_devices": 1})
    assert_error(response, 400, "M_INVALID_PARAM")
    response = await alice.post(
        "/account/password",
        {"new_password": "x", "auth": {"type": "m.login.password", "session": "unknown"}},
    )
    assert_error(response, 400, "M_UNKNOWN")


async def test_password_change_needs_a_token(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{V3}/account/password", json={"new_password": "x"})
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_deactivate(alice: Client, bob: Client, http: httpx.AsyncClient) -> None:
    other = await Client.login(http, "alice", "alicepw")
    first = await alice.post("/account/deactivate", {})
    session = assert_uia(first, ["m.login.password"])["session"]
    wrong = await alice.post(
        "/account/deactivate", {"auth": password_auth("alice", "nope", session)}
    )
    assert assert_uia(wrong, ["m.login.password"])["errcode"] == "M_FORBIDDEN"
    assert await alice.is_logged_in()

    response = await alice.post(
        "/account/deactivate", {"auth": password_auth("alice", "alicepw", session)}
    )
    body = assert_ok(response)
    assert body["id_server_unbind_result"] in ("success", "no-support")

    assert not await alice.is_logged_in()
    assert not await other.is_logged_in()
    assert await bob.is_logged_in()
    assert_error(await login(http, "alice", "alicepw"), 403, "M_USER_DEACTIVATED")
    # The name stays taken.
    response = await http.get(f"{V3}/register/available", params={"username": "alice"})
    assert_error(response, 400, "M_USER_IN_USE")


async def test_deactivate_without_body_starts_uia(alice: Client, http: httpx.AsyncClient) -> None:
    response = await http.post(f"{V3}/account/deactivate", headers=alice.headers)
    assert_uia(response, ["m.login.password"])
    assert await alice.is_logged_in()


async def test_deactivate_with_bad_erase(alice: Client) -> None:
    response = await alice.post("/account/deactivate", {"erase": "yes"})
    assert_error(response, 400, "M_INVALID_PARAM")
    assert await alice.is_logged_in()


async def test_password_uia_accepts_the_legacy_user_field(alice: Client) -> None:
    first = await alice.post("/account/password", {"new_password": "newpw"})
    session = assert_uia(first, ["m.login.password"])["session"]
    auth = {"type": "m.login.password", "user": "alice", "password": "alicepw", "session": session}
    assert_ok(await alice.post("/account/password", {"new_password": "newpw", "auth": auth}))
    assert_ok(await login(alice.http, "alice", "newpw"))
