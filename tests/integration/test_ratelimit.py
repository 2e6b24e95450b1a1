"""Rate limiting of logins and registrations per client IP."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import V3, assert_error, assert_ok, assert_uia, login, register

STRICT = {"per_second": 0.001, "burst_count": 2}


@pytest.fixture
async def limited() -> AsyncIterator[tuple[InProcessServer, httpx.AsyncClient]]:
    async with (
        serve_in_process(
            ratelimit={"enabled": True, "login": STRICT, "registration": STRICT}
        ) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        yield hs, http


def assert_limited(response: httpx.Response) -> None:
    body = assert_error(response, 429, "M_LIMIT_EXCEEDED")
    retry_after_ms = body["retry_after_ms"]
    assert isinstance(retry_after_ms, int)
    assert not isinstance(retry_after_ms, bool)
    # One token comes back after about 1000 s at 0.001/s.
    assert 900_000 < retry_after_ms <= 1_000_000
    assert int(response.headers["retry-after"]) * 1000 >= retry_after_ms


async def test_third_login_is_limited(limited: tuple[InProcessServer, httpx.AsyncClient]) -> None:
    hs, http = limited
    await hs.register_user("alice", "alicepw")
    assert_ok(await login(http, "alice", "alicepw"))
    assert_error(await login(http, "alice", "wrong"), 403, "M_FORBIDDEN")
    assert_limited(await login(http, "alice", "alicepw"))
    # Other users from the same address are limited too: the limit is per IP.
    await hs.register_user("bob", "bobpw")
    assert_limited(await login(http, "bob", "bobpw"))


async def test_limited_login_does_not_affect_other_endpoints(
    limited: tuple[InProcessServer, httpx.AsyncClient],
) -> None:
    hs, http = limited
    alice = await hs.register_user("alice", "alicepw")
    for _ in range(2):
        assert_ok(await login(http, "alice", "alicepw"))
    assert_limited(await login(http, "alice", "alicepw"))
    response = await http.get(
        f"{V3}/account/whoami", headers={"Authorization": f"Bearer {alice.access_token}"}
    )
    assert_ok(response)


async def test_third_registration_is_limited(
    limited: tuple[InProcessServer, httpx.AsyncClient],
) -> None:
    _, http = limited
    assert_ok(await register(http, {"username": "u1", "password": "pw"}))
    assert_ok(await register(http, {"username": "u2", "password": "pw"}))
    # Refused at the first step, before the client goes through the auth stages (as Synapse).
    body = {"username": "u3", "password": "pw"}
    assert_limited(await http.post(f"{V3}/register", json=body))
    assert_error(await login(http, "u3", "pw"), 403, "M_FORBIDDEN")


async def test_registration_limited_at_the_last_step(
    limited: tuple[InProcessServer, httpx.AsyncClient],
) -> None:
    # Three clients start registering while under the limit; the third to finish is refused.
    _, http = limited
    sessions = []
    for n in range(3):
        body = {"username": f"x{n}", "password": "pw"}
        sessions.append(
            assert_uia(await http.post(f"{V3}/register", json=body), ["m.login.dummy"])
        )
    for n in range(2):
        auth = {"type": "m.login.dummy", "session": sessions[n]["session"]}
        assert_ok(await http.post(f"{V3}/register", json={"auth": auth}))
    auth = {"type": "m.login.dummy", "session": sessions[2]["session"]}
    assert_limited(await http.post(f"{V3}/register", json={"auth": auth}))
    assert_error(await login(http, "x2", "pw"), 403, "M_FORBIDDEN")


async def test_auth_steps_do_not_count_as_registrations(
    limited: tuple[InProcessServer, httpx.AsyncClient],
) -> None:
    # Two registrations, each two requests, fit a burst of two.
    _, http = limited
    for n in range(2):
        body = {"username": f"v{n}", "password": "pw"}
        assert_uia(await http.post(f"{V3}/register", json=body), ["m.login.dummy"])
    for n in range(2):
        assert_ok(await register(http, {"username": f"w{n}", "password": "pw"}))


async def test_without_rate_limiting_many_logins_succeed(
    hs: InProcessServer, http: httpx.AsyncClient
) -> None:
    await hs.register_user("alice", "alicepw")
    for _ in range(15):
        assert_ok(await login(http, "alice", "alicepw"))
    for n in range(8):
        assert_ok(await register(http, {"username": f"user{n}", "password": "pw"}))
