"""Registration: POST /register (UIA m.login.dummy) and GET /register/available."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

import trio

from trioserver.testing import serve_in_process

from tests.integration.client import (
    V3,
    Client,
    assert_error,
    assert_ok,
    assert_uia,
    bearer,
    login,
    register,
)


async def test_register_with_dummy_auth(http: httpx.AsyncClient) -> None:
    first = await http.post(f"{V3}/register", json={"username": "dave", "password": "davepw"})
    body = assert_uia(first, ["m.login.dummy"])
    assert body["completed"] == []
    second = await http.post(
        f"{V3}/register",
        json={
            "username": "dave",
            "password": "davepw",
            "auth": {"type": "m.login.dummy", "session": body["session"]},
        },
    )
    result = assert_ok(second)
    assert result["user_id"] == "@dave:localhost"
    assert result["home_server"] == "localhost"
    assert isinstance(result["device_id"], str)
    whoami = assert_ok(
        await http.get(f"{V3}/account/whoami", headers=bearer(result["access_token"]))
    )
    assert whoami["user_id"] == "@dave:localhost"
    assert whoami["device_id"] == result["device_id"]


async def test_registered_user_can_log_in(http: httpx.AsyncClient) -> None:
    assert_ok(await register(http, {"username": "dave", "password": "davepw"}))
    assert assert_ok(await login(http, "dave", "davepw"))["user_id"] == "@dave:localhost"
    assert_error(await login(http, "dave", "wrong"), 403, "M_FORBIDDEN")


async def test_register_later_steps_may_send_only_auth(http: httpx.AsyncClient) -> None:
    params = {
        "username": "erin",
        "password": "erinpw",
        "device_id": "ERINDEV",
        "initial_device_display_name": "Erin's phone",
    }
    session = assert_uia(await http.post(f"{V3}/register", json=params), ["m.login.dummy"])
    auth = {"type": "m.login.dummy", "session": session["session"]}
    result = assert_ok(await http.post(f"{V3}/register", json={"auth": auth}))
    assert result["user_id"] == "@erin:localhost"
    assert result["device_id"] == "ERINDEV"
    erin = Client(http, result["user_id"], result["access_token"], result["device_id"])
    assert assert_ok(await erin.get("/devices/ERINDEV"))["display_name"] == "Erin's phone"
    assert_ok(await login(http, "erin", "erinpw"))


async def test_register_replayed_session_returns_the_same_user(http: httpx.AsyncClient) -> None:
    # SyTest 11register "registration is idempotent": a completed session answers again for
    # the user it registered (with a new login, as Synapse does), whatever else is sent.
    params = {"username": "frank", "password": "frankpw"}
    session = assert_uia(await http.post(f"{V3}/register", json=params), ["m.login.dummy"])
    auth = {"type": "m.login.dummy", "session": session["session"]}
    first = assert_ok(await http.post(f"{V3}/register", json={**params, "auth": auth}))
    again = assert_ok(await http.post(f"{V3}/register", json={**params, "auth": auth}))
    assert again["user_id"] == first["user_id"] == "@frank:localhost"
    whoami = await http.get(f"{V3}/account/whoami", headers=bearer(again["access_token"]))
    assert assert_ok(whoami)["user_id"] == "@frank:localhost"
    other = await http.post(f"{V3}/register", json={"username": "frank2", "auth": auth})
    assert assert_ok(other)["user_id"] == "@frank:localhost"
    assert_error(await login(http, "frank2", "frankpw"), 403, "M_FORBIDDEN")


async def test_register_replayed_session_without_username(http: httpx.AsyncClient) -> None:
    first_step = await http.post(f"{V3}/register", json={"password": "pw"})
    session = assert_uia(first_step, ["m.login.dummy"])
    auth = {"type": "m.login.dummy", "session": session["session"]}
    first = assert_ok(await http.post(f"{V3}/register", json={"password": "pw", "auth": auth}))
    again = assert_ok(await http.post(f"{V3}/register", json={"password": "pw", "auth": auth}))
    assert again["user_id"] == first["user_id"]
    assert again["device_id"] != first["device_id"]


async def test_register_with_inhibit_login(http: httpx.AsyncClient) -> None:
    result = assert_ok(
        await register(http, {"username": "gina", "password": "ginapw", "inhibit_login": True})
    )
    assert result["user_id"] == "@gina:localhost"
    assert "access_token" not in result
    assert "device_id" not in result
    # The account exists and has no devices until its first login.
    gina = await Client.login(http, "gina", "ginapw")
    devices = assert_ok(await gina.get("/devices"))["devices"]
    assert [d["device_id"] for d in devices] == [gina.device_id]


async def test_register_with_device_display_name(http: httpx.AsyncClient) -> None:
    result = assert_ok(
        await register(
            http,
            {"username": "hank", "password": "hankpw", "initial_device_display_name": "Web"},
        )
    )
    hank = Client(http, result["user_id"], result["access_token"], result["device_id"])
    devices = assert_ok(await hank.get("/devices"))["devices"]
    assert devices == [
        {
            "device_id": hank.device_id,
            "display_name": "Web",
            "last_seen_ip": "127.0.0.1",
            "last_seen_ts": devices[0]["last_seen_ts"],
        }
    ]


async def test_register_without_username_generates_a_numeric_one(
    http: httpx.AsyncClient,
) -> None:
    first = assert_ok(await register(http, {"password": "pw1"}))
    second = assert_ok(await register(http, {"password": "pw2"}))
    ids = [first["user_id"], second["user_id"]]
    for user_id in ids:
        assert re.fullmatch(r"@[0-9]+:localhost", user_id), user_id
    assert ids[0] != ids[1]
    localpart = ids[1][1:].split(":")[0]
    assert_ok(await login(http, localpart, "pw2"))


async def test_concurrent_registrations_without_username_all_succeed(
    http: httpx.AsyncClient,
) -> None:
    results: list[httpx.Response] = []

    async def one(n: int) -> None:
        results.append(await register(http, {"password": f"pw{n}"}))

    async with trio.open_nursery() as nursery:
        for n in range(6):
            nursery.start_soon(one, n)
    user_ids = [assert_ok(r)["user_id"] for r in results]
    assert len(set(user_ids)) == 6


async def test_register_lower_cases_the_username(http: httpx.AsyncClient) -> None:
    result = assert_ok(await register(http, {"username": "IvY", "password": "ivypw"}))
    assert result["user_id"] == "@ivy:localhost"
    assert assert_ok(await login(http, "IVY", "ivypw"))["user_id"] == "@ivy:localhost"
    assert_error(
        await http.post(f"{V3}/register", json={"username": "ivy", "password": "x"}),
        400,
        "M_USER_IN_USE",
    )


@pytest.mark.parametrize(
    "username",
    [
        "",
        "has space",
        "colon:name",
        "at@sign",
        "émile",
        "quote'",
        "_underscore",
        "12345",
        "a" * 250,
        "trailing\n",
        "new\nline",
        "\n",
    ],
)
async def test_register_refuses_invalid_usernames(http: httpx.AsyncClient, username: str) -> None:
    # Refused on the first request, before any auth stage.
    response = await http.post(f"{V3}/register", json={"username": username, "password": "pw"})
    assert_error(response, 400, "M_INVALID_USERNAME")


@pytest.mark.parametrize("username", ["a.b_c=d-e/f+g", "x", "a1", "1a"])
async def test_register_accepts_every_allowed_character(
    http: httpx.AsyncClient, username: str
) -> None:
    result = assert_ok(await register(http, {"username": username, "password": "pw"}))
    assert result["user_id"] == f"@{username}:localhost"


async def test_register_accepts_the_longest_user_id(http: httpx.AsyncClient) -> None:
    # "@" + localpart + ":localhost" is at most 255 characters.
    username = "l" * (255 - len("@:localhost"))
    result = assert_ok(await register(http, {"username": username, "password": "pw"}))
    assert len(result["user_id"]) == 255
    too_long = {"username": username + "l", "password": "pw"}
    assert_error(await http.post(f"{V3}/register", json=too_long), 400, "M_INVALID_USERNAME")


async def test_register_taken_username_is_refused_before_auth(
    alice: Client, http: httpx.AsyncClient
) -> None:
    for username in ("alice", "Alice"):
        response = await http.post(f"{V3}/register", json={"username": username, "password": "pw"})
        assert_error(response, 400, "M_USER_IN_USE")


async def test_register_name_taken_during_auth(http: httpx.AsyncClient) -> None:
    params = {"username": "jack", "password": "pw"}
    session = assert_uia(await http.post(f"{V3}/register", json=params), ["m.login.dummy"])
    assert_ok(await register(http, params))
    auth = {"type": "m.login.dummy", "session": session["session"]}
    response = await http.post(f"{V3}/register", json={**params, "auth": auth})
    assert_error(response, 400, "M_USER_IN_USE")


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({"username": 5}, "M_INVALID_PARAM"),
        ({"username": "kim", "password": 5}, "M_INVALID_PARAM"),
        ({"username": "kim", "password": "x" * 513}, "M_INVALID_PARAM"),
        ({"username": "kim", "inhibit_login": "yes"}, "M_INVALID_PARAM"),
        ({"username": "kim", "auth": "dummy"}, "M_INVALID_PARAM"),
        ({"username": "kim", "auth": {"type": "m.login.password"}}, "M_INVALID_PARAM"),
    ],
)
async def test_register_with_malformed_body(
    http: httpx.AsyncClient, body: dict[str, Any], errcode: str
) -> None:
    assert_error(await http.post(f"{V3}/register", json=body), 400, errcode)


async def test_register_with_unknown_session(http: httpx.AsyncClient) -> None:
    response = await http.post(
        f"{V3}/register",
        json={"username": "kim", "auth": {"type": "m.login.dummy", "session": "nope"}},
    )
    assert_error(response, 400, "M_UNKNOWN")


async def test_register_session_of_another_operation_is_refused(alice: Client) -> None:
    # A session opened for a password change cannot complete a registration.
    first = await alice.post("/account/password", {"new_password": "x"})
    session = assert_uia(first, ["m.login.password"])["session"]
    response = await alice.http.post(
        f"{V3}/register",
        json={"username": "kim", "auth": {"type": "m.login.dummy", "session": session}},
    )
    assert_error(response, 403, "M_FORBIDDEN")
    assert_error(await login(alice.http, "kim", "x"), 403, "M_FORBIDDEN")


async def test_register_as_guest_is_forbidden(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{V3}/register", params={"kind": "guest"}, json={})
    assert response.status_code == 403, response.text


async def test_register_unknown_kind(http: httpx.AsyncClient) -> None:
    response = await http.post(f"{V3}/register", params={"kind": "robot"}, json={})
    assert response.status_code == 400, response.text


async def test_register_when_disabled() -> None:
    async with (
        serve_in_process(registration={"enabled": False, "shared_secret": "s"}) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        body = {"username": "lena", "password": "pw"}
        assert_error(await http.post(f"{V3}/register", json=body), 403, "M_FORBIDDEN")
        auth = {"type": "m.login.dummy", "session": "x"}
        response = await http.post(f"{V3}/register", json={**body, "auth": auth})
        assert_error(response, 403, "M_FORBIDDEN")
        response = await http.get(f"{V3}/register/available", params={"username": "lena"})
        assert_error(response, 403, "M_FORBIDDEN")
        # The body is parsed before the registration switch is looked at.
        bad = await http.post(f"{V3}/register", content=b"{not json")
        assert_error(bad, 400, "M_NOT_JSON")
        # Admins can still create accounts.
        await hs.register_user("lena", "pw")
        assert_ok(await login(http, "lena", "pw"))


async def test_register_available(alice: Client, http: httpx.AsyncClient) -> None:
    async def available(username: str) -> httpx.Response:
        return await http.get(f"{V3}/register/available", params={"username": username})

    assert assert_ok(await available("zoe")) == {"available": True}
    assert_error(await available("alice"), 400, "M_USER_IN_USE")
    assert_error(await available("has space"), 400, "M_INVALID_USERNAME")
    assert_error(await available("_bot"), 400, "M_INVALID_USERNAME")
    assert_error(await available("42"), 400, "M_INVALID_USERNAME")
    assert_error(await http.get(f"{V3}/register/available"), 400, "M_MISSING_PARAM")
    # Checking does not reserve the name.
    assert_ok(await register(http, {"username": "zoe", "password": "pw"}))
    assert_error(await available("zoe"), 400, "M_USER_IN_USE")
