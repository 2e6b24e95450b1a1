"""GET /admin/whois/{userId} over real HTTP (SyTest tests/48admin.pl "/whois")."""

from __future__ import annotations

from pathlib import Path

import httpx

import trio
from trio.testing import MockClock

from trioserver.handlers.auth import Requester
from trioserver.handlers.client_ips import FLUSH_INTERVAL
from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.writer_env import trio_wall_clock, writer_env


async def test_whois_of_oneself_shows_the_login_connection(
    hs: InProcessServer, http: httpx.AsyncClient
) -> None:
    await hs.register_user("carol", "pw")
    carol = await Client.login(http, "carol", "pw", device_id="PHONE")
    body = assert_ok(await carol.get(f"/admin/whois/{carol.user_id}"))
    assert body["user_id"] == carol.user_id
    session = body["devices"]["PHONE"]["sessions"][0]
    (connection,) = session["connections"]
    assert connection["ip"] == "127.0.0.1"
    assert isinstance(connection["last_seen"], int)
    assert connection["user_agent"].startswith("python-httpx/")
    # Logging in again from another client updates what the device was seen with.
    again = await http.post(
        "/_matrix/client/v3/login",
        json={"type": "m.login.password", "user": "carol", "password": "pw", "device_id": "PHONE"},
        headers={"User-Agent": "Tester/2.0"},
    )
    token = assert_ok(again)["access_token"]
    carol = Client(http, carol.user_id, token, "PHONE")
    body = assert_ok(await carol.get(f"/admin/whois/{carol.user_id}"))
    (connection,) = body["devices"]["PHONE"]["sessions"][0]["connections"]
    assert connection["user_agent"] == "Tester/2.0"


async def test_whois_is_for_oneself_and_admins(
    hs: InProcessServer, http: httpx.AsyncClient, alice: Client, bob: Client
) -> None:
    assert_error(await bob.get(f"/admin/whois/{alice.user_id}"), 403, "M_FORBIDDEN")
    admin = await hs.register_user("root", "pw", admin=True)
    root = Client(http, admin.user_id, admin.access_token, admin.device_id)
    body = assert_ok(await root.get(f"/admin/whois/{alice.user_id}"))
    assert set(body["devices"]) == {alice.device_id}
    remote = await root.get("/admin/whois/@someone:elsewhere.org")
    assert_error(remote, 400, "M_UNKNOWN")


async def test_requests_update_where_a_device_was_last_seen(
    hs: InProcessServer, http: httpx.AsyncClient, alice: Client
) -> None:
    admin = await hs.register_user("root", "pw", admin=True)
    root = Client(http, admin.user_id, admin.access_token, admin.device_id)
    headers = {**alice.headers, "User-Agent": "Later/3.0"}
    assert_ok(await http.get("/_matrix/client/v3/account/whoami", headers=headers))
    body = assert_ok(await root.get(f"/admin/whois/{alice.user_id}"))
    (connection,) = body["devices"][alice.device_id]["sessions"][0]["connections"]
    assert connection["user_agent"] == "Later/3.0"
    assert connection["ip"] == "127.0.0.1"


async def test_last_seen_is_flushed_to_the_database(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        accounts = env.components.deps.accounts
        result = await accounts.register("dora", "pw")
        assert result.device_id is not None
        assert result.access_token is not None
        dora = Requester(result.user_id, result.device_id, result.access_token)
        seen_ms = int(trio_wall_clock() * 1000)
        accounts.seen_nowait(dora, "10.0.0.7", "Client/1.0")
        await trio.sleep(FLUSH_INTERVAL + 1)
        rows = env.query(
            "SELECT last_seen_ip, last_seen_user_agent, last_seen_ts FROM devices"
            " WHERE user_id = ?",
            (result.user_id,),
        )
        assert rows == [("10.0.0.7", "Client/1.0", seen_ms)]


async def test_last_seen_is_flushed_at_shutdown(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        accounts = env.components.deps.accounts
        result = await accounts.register("erin", "pw")
        assert result.device_id is not None
        assert result.access_token is not None
        erin = Requester(result.user_id, result.device_id, result.access_token)
        accounts.seen_nowait(erin, "10.0.0.8", "Client/2.0")
    rows = env.query("SELECT last_seen_ip, last_seen_user_agent FROM devices")
    assert rows == [("10.0.0.8", "Client/2.0")]
