"""GET /admin/whois/{userId} over real HTTP (SyTest tests/48admin.pl "/whois")."""

from __future__ import annotations

import httpx

from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_error, assert_ok


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
