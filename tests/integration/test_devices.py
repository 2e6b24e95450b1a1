"""Device management: /devices, /devices/{deviceId} and /delete_devices."""

from __future__ import annotations

from urllib.parse import quote

import httpx

from tests.integration.client import Client, assert_error, assert_ok, assert_uia, password_auth


async def test_list_devices(alice: Client, http: httpx.AsyncClient) -> None:
    laptop = await Client.login(http, "alice", "alicepw", initial_device_display_name="Laptop")
    devices = assert_ok(await alice.get("/devices"))["devices"]
    assert sorted(d["device_id"] for d in devices) == sorted([alice.device_id, laptop.device_id])
    for device in devices:
        assert set(device) >= {"device_id", "last_seen_ip", "last_seen_ts"}
        # An absent optional field is left out, not null (the spec's Device schema).
        assert None not in device.values()
    named = [d for d in devices if d["device_id"] == laptop.device_id]
    assert named[0]["display_name"] == "Laptop"
    # Both sessions see the same list (each request moves its own device's last_seen_ts).
    seen_by_laptop = assert_ok(await laptop.get("/devices"))["devices"]

    def without_times(listed: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{k: v for k, v in d.items() if k != "last_seen_ts"} for d in listed]

    assert without_times(seen_by_laptop) == without_times(devices)


async def test_get_one_device(alice: Client, http: httpx.AsyncClient) -> None:
    laptop = await Client.login(http, "alice", "alicepw", initial_device_display_name="Laptop")
    device = assert_ok(await alice.get(f"/devices/{laptop.device_id}"))
    assert device["device_id"] == laptop.device_id
    assert device["display_name"] == "Laptop"
    assert device["last_seen_ip"] == "127.0.0.1"
    assert isinstance(device["last_seen_ts"], int)


async def test_a_device_without_a_name_leaves_the_field_out(alice: Client) -> None:
    # alice's device was made by the admin registration API, without a display name.
    device = assert_ok(await alice.get(f"/devices/{alice.device_id}"))
    assert "display_name" not in device
    assert None not in device.values()


async def test_get_unknown_device(alice: Client) -> None:
    assert_error(await alice.get("/devices/NOSUCHDEVICE"), 404, "M_NOT_FOUND")


async def test_device_ids_are_percent_decoded(alice: Client, http: httpx.AsyncClient) -> None:
    odd = await Client.login(http, "alice", "alicepw", device_id="a/b c")
    device = assert_ok(await alice.get(f"/devices/{quote(odd.device_id, safe='')}"))
    assert device["device_id"] == "a/b c"


async def test_rename_device(alice: Client) -> None:
    assert_ok(await alice.put(f"/devices/{alice.device_id}", {"display_name": "Renamed"}))
    device = assert_ok(await alice.get(f"/devices/{alice.device_id}"))
    assert device["display_name"] == "Renamed"
    # An empty body changes nothing.
    assert_ok(await alice.put(f"/devices/{alice.device_id}", {}))
    device = assert_ok(await alice.get(f"/devices/{alice.device_id}"))
    assert device["display_name"] == "Renamed"


async def test_rename_unknown_device(alice: Client) -> None:
    response = await alice.put("/devices/NOSUCHDEVICE", {"display_name": "x"})
    assert_error(response, 404, "M_NOT_FOUND")
    assert_error(await alice.put("/devices/NOSUCHDEVICE", {}), 404, "M_NOT_FOUND")


async def test_rename_device_with_bad_name(alice: Client) -> None:
    response = await alice.put(f"/devices/{alice.device_id}", {"display_name": 5})
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_other_users_devices_are_invisible(alice: Client, bob: Client) -> None:
    devices = assert_ok(await bob.get("/devices"))["devices"]
    assert [d["device_id"] for d in devices] == [bob.device_id]
    assert_error(await bob.get(f"/devices/{alice.device_id}"), 404, "M_NOT_FOUND")
    response = await bob.put(f"/devices/{alice.device_id}", {"display_name": "pwned"})
    assert_error(response, 404, "M_NOT_FOUND")
    device = assert_ok(await alice.get(f"/devices/{alice.device_id}"))
    assert device.get("display_name") != "pwned"


async def test_delete_device_with_uia(alice: Client, http: httpx.AsyncClient) -> None:
    laptop = await Client.login(http, "alice", "alicepw")
    first = await alice.delete(f"/devices/{laptop.device_id}", {})
    session = assert_uia(first, ["m.login.password"])["session"]
    assert await laptop.is_logged_in()

    wrong = await alice.delete(
        f"/devices/{laptop.device_id}", {"auth": password_auth("alice", "wrong", session)}
    )
    assert assert_uia(wrong, ["m.login.password"])["errcode"] == "M_FORBIDDEN"
    assert await laptop.is_logged_in()

    response = await alice.delete(
        f"/devices/{laptop.device_id}", {"auth": password_auth("alice", "alicepw", session)}
    )
    assert assert_ok(response) == {}
    assert not await laptop.is_logged_in()
    assert_error(await alice.get(f"/devices/{laptop.device_id}"), 404, "M_NOT_FOUND")
    assert await alice.is_logged_in()


async def test_delete_device_without_body_starts_uia(
    alice: Client, http: httpx.AsyncClient
) -> None:
    response = await http.request(
        "DELETE", f"/_matrix/client/v3/devices/{alice.device_id}", headers=alice.headers
    )
    assert_uia(response, ["m.login.password"])
    assert await alice.is_logged_in()


async def test_delete_own_current_device(alice: Client) -> None:
    response = await alice.with_password_uia(
        "DELETE", f"/devices/{alice.device_id}", {}, "alicepw"
    )
    assert_ok(response)
    assert not await alice.is_logged_in()


async def test_delete_devices_with_uia(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    phones = [await Client.login(http, "alice", "alicepw") for _ in range(3)]
    doomed = [phones[0].device_id, phones[1].device_id, "NOSUCHDEVICE", bob.device_id]
    first = await alice.post("/delete_devices", {"devices": doomed})
    session = assert_uia(first, ["m.login.password"])["session"]
    # Later steps may carry only `auth`: the device list is remembered.
    response = await alice.post(
        "/delete_devices", {"auth": password_auth(alice.user_id, "alicepw", session)}
    )
    assert assert_ok(response) == {}
    assert not await phones[0].is_logged_in()
    assert not await phones[1].is_logged_in()
    assert await phones[2].is_logged_in()
    assert await alice.is_logged_in()
    # Naming another user's device does nothing to it.
    assert await bob.is_logged_in()
    devices = assert_ok(await alice.get("/devices"))["devices"]
    assert sorted(d["device_id"] for d in devices) == sorted(
        [alice.device_id, phones[2].device_id]
    )


async def test_delete_devices_with_bad_body(alice: Client) -> None:
    assert_error(await alice.post("/delete_devices", {}), 400, "M_MISSING_PARAM")
    response = await alice.post("/delete_devices", {"devices": "ABC"})
    assert_error(response, 400, "M_INVALID_PARAM")
    response = await alice.post("/delete_devices", {"devices": [1, 2]})
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_uia_with_another_users_credentials_fails(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    laptop = await Client.login(http, "alice", "alicepw")
    first = await alice.delete(f"/devices/{laptop.device_id}", {})
    session = assert_uia(first, ["m.login.password"])["session"]
    response = await alice.delete(
        f"/devices/{laptop.device_id}", {"auth": password_auth(bob.user_id, "bobpw", session)}
    )
    # SyTest "DELETE /device/{deviceId} requires UI auth user to match device owner": another
    # user's valid password is a plain 403 (a wrong password is a failed stage, 401).
    assert_error(response, 403, "M_FORBIDDEN")
    assert await laptop.is_logged_in()
    response = await alice.delete(
        f"/devices/{laptop.device_id}", {"auth": password_auth(bob.user_id, "nope", None)}
    )
    assert assert_uia(response, ["m.login.password"])["errcode"] == "M_FORBIDDEN"
    assert await laptop.is_logged_in()

    first = await alice.post("/delete_devices", {"devices": [laptop.device_id]})
    session = assert_uia(first, ["m.login.password"])["session"]
    response = await alice.post(
        "/delete_devices",
        {"devices": [laptop.device_id], "auth": password_auth("bob", "bobpw", session)},
    )
    assert_error(response, 403, "M_FORBIDDEN")
    assert await laptop.is_logged_in()
    response = await alice.delete(
        f"/devices/{laptop.device_id}", {"auth": password_auth(alice.user_id, "alicepw", None)}
    )
    assert_ok(response)
    assert not await laptop.is_logged_in()


async def test_uia_session_is_bound_to_the_device(alice: Client, http: httpx.AsyncClient) -> None:
    # A session opened to delete one device cannot delete another.
    laptop = await Client.login(http, "alice", "alicepw")
    phone = await Client.login(http, "alice", "alicepw")
    first = await alice.delete(f"/devices/{laptop.device_id}", {})
    session = assert_uia(first, ["m.login.password"])["session"]
    response = await alice.delete(
        f"/devices/{phone.device_id}", {"auth": password_auth("alice", "alicepw", session)}
    )
    assert_error(response, 403, "M_FORBIDDEN")
    assert await phone.is_logged_in()
    assert await laptop.is_logged_in()


async def test_devices_need_a_token(http: httpx.AsyncClient) -> None:
    assert_error(await http.get("/_matrix/client/v3/devices"), 401, "M_MISSING_TOKEN")
    response = await http.post("/_matrix/client/v3/delete_devices", json={"devices": []})
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_delete_unknown_device_succeeds_after_uia(alice: Client) -> None:
    response = await alice.with_password_uia("DELETE", "/devices/NOSUCHDEVICE", {}, "alicepw")
    assert assert_ok(response) == {}
    assert await alice.is_logged_in()
