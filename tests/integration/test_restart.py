"""What a server stores survives a restart on the same data directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from trioserver.testing import serve_in_process

from tests.integration.client import V3, Client, assert_error, assert_ok, login, register


def _without_times(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "last_seen_ts"} for d in devices]


async def test_accounts_devices_and_filters_survive_a_restart(tmp_path: Path) -> None:
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        result = assert_ok(
            await register(
                http,
                {
                    "username": "nora",
                    "password": "norapw",
                    "device_id": "NORAPHONE",
                    "initial_device_display_name": "Nora's phone",
                },
            )
        )
        nora = Client(http, result["user_id"], result["access_token"], result["device_id"])
        laptop = await Client.login(
            http, "nora", "norapw", initial_device_display_name="Nora's laptop"
        )
        gone = await Client.login(http, "nora", "norapw")
        assert_ok(await gone.post("/logout", {}))
        filter_body = {"room": {"timeline": {"limit": 7}}}
        filter_id = assert_ok(await nora.post(f"/user/{nora.user_id}/filter", filter_body))[
            "filter_id"
        ]
        devices_before = assert_ok(await nora.get("/devices"))["devices"]
        numbered = assert_ok(await register(http, {"password": "pw"}))["user_id"]

    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        nora.http = http
        laptop.http = http
        gone.http = http
        whoami = assert_ok(await nora.get("/account/whoami"))
        assert whoami == {
            "user_id": "@nora:localhost",
            "device_id": "NORAPHONE",
            "is_guest": False,
        }
        assert await laptop.is_logged_in()
        assert not await gone.is_logged_in()
        devices_after = assert_ok(await nora.get("/devices"))["devices"]
        # Requests since the restart moved last_seen_ts on; everything else is as it was.
        assert _without_times(devices_after) == _without_times(devices_before)
        times_before = {d["device_id"]: d["last_seen_ts"] for d in devices_before}
        assert all(d["last_seen_ts"] >= times_before[d["device_id"]] for d in devices_after)
        device = assert_ok(await nora.get("/devices/NORAPHONE"))
        assert device["display_name"] == "Nora's phone"
        stored = assert_ok(await nora.get(f"/user/{nora.user_id}/filter/{filter_id}"))
        assert stored == filter_body
        # New filters do not reuse the old id.
        new_id = assert_ok(await nora.post(f"/user/{nora.user_id}/filter", {}))["filter_id"]
        assert new_id != filter_id

        assert_ok(await login(http, "nora", "norapw"))
        assert_error(await login(http, "nora", "wrong"), 403, "M_FORBIDDEN")
        response = await http.get(f"{V3}/register/available", params={"username": "nora"})
        assert_error(response, 400, "M_USER_IN_USE")
        # Generated user ids keep counting up.
        assert assert_ok(await register(http, {"password": "pw"}))["user_id"] != numbered


async def test_password_change_and_deactivation_survive_a_restart(tmp_path: Path) -> None:
    async with serve_in_process(data_dir=tmp_path) as hs:
        await hs.register_user("olga", "olgapw")
        await hs.register_user("pete", "petepw")
        async with httpx.AsyncClient(base_url=hs.base_url) as http:
            olga = await Client.login(http, "olga", "olgapw")
            body = {"new_password": "newpw"}
            assert_ok(await olga.with_password_uia("POST", "/account/password", body, "olgapw"))
            pete = await Client.login(http, "pete", "petepw")
            assert_ok(await pete.with_password_uia("POST", "/account/deactivate", {}, "petepw"))

    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        olga.http = http
        assert await olga.is_logged_in()
        assert_error(await login(http, "olga", "olgapw"), 403, "M_FORBIDDEN")
        assert_ok(await login(http, "olga", "newpw"))
        pete.http = http
        assert not await pete.is_logged_in()
        assert_error(await login(http, "pete", "petepw"), 403, "M_USER_DEACTIVATED")
