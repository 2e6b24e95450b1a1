"""Guest accounts over HTTP (spec "Guest Access"; SyTest tests/30rooms/13guestaccess.pl)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import (
    V3,
    Client,
    assert_error,
    assert_ok,
    assert_uia,
    register,
)
from tests.integration.guest_helpers import GUEST_REGISTRATION, register_guest
from tests.integration.room_helpers import create_room, join, send_text, set_state


@pytest.fixture
async def hs() -> AsyncIterator[InProcessServer]:
    async with serve_in_process(registration=GUEST_REGISTRATION) as server:
        yield server


async def set_guest_access(client: Client, room_id: str, value: str) -> str:
    return await set_state(client, room_id, "m.room.guest_access", {"guest_access": value})


async def membership_of(client: Client, room_id: str, user_id: str) -> str | None:
    response = await client.get(f"/rooms/{room_id}/state/m.room.member/{user_id}")
    if response.status_code == 404:
        return None
    return str(assert_ok(response)["membership"])


async def test_guest_registration_gives_numeric_user_and_token(
    http: httpx.AsyncClient,
) -> None:
    first = await register_guest(http)
    second = await register_guest(http)
    for guest in (first, second):
        localpart = guest.user_id[1:].split(":")[0]
        assert localpart.isdigit(), guest.user_id
        assert guest.device_id
        whoami = assert_ok(await guest.get("/account/whoami"))
        assert whoami["user_id"] == guest.user_id
    assert first.user_id != second.user_id


async def test_guest_registration_is_off_by_default(http: httpx.AsyncClient) -> None:
    async with (
        serve_in_process() as server,
        httpx.AsyncClient(base_url=server.base_url) as other,
    ):
        response = await other.post(f"{V3}/register", params={"kind": "guest"}, json={})
        assert_error(response, 403, "M_GUEST_ACCESS_FORBIDDEN")


async def test_guests_are_refused_endpoints_outside_the_module(
    http: httpx.AsyncClient,
) -> None:
    guest = await register_guest(http)
    assert_error(await guest.post("/createRoom", {}), 403, "M_GUEST_ACCESS_FORBIDDEN")
    assert_error(
        await guest.get(f"/user/{guest.user_id}/account_data/m.x"), 403, "M_GUEST_ACCESS_FORBIDDEN"
    )
    assert_error(
        await guest.put(f"/profile/{guest.user_id}/avatar_url", {"avatar_url": "mxc://a/b"}),
        403,
        "M_GUEST_ACCESS_FORBIDDEN",
    )
    assert_ok(await guest.get("/sync"))


async def test_guests_may_only_join_and_leave(alice: Client, http: httpx.AsyncClient) -> None:
    guest = await register_guest(http)
    room_id = await create_room(alice, preset="public_chat")
    await set_guest_access(alice, room_id, "can_join")
    await join(guest, room_id)
    invite = {"user_id": alice.user_id}
    assert_error(
        await guest.post(f"/rooms/{room_id}/invite", invite), 403, "M_GUEST_ACCESS_FORBIDDEN"
    )
    path = f"/rooms/{room_id}/state/m.room.member/{alice.user_id}"
    response = await guest.put(path, {"membership": "ban"})
    assert_error(response, 403, "M_GUEST_ACCESS_FORBIDDEN")
    assert_ok(await guest.post(f"/rooms/{room_id}/leave", {}))
    assert await membership_of(alice, room_id, guest.user_id) == "leave"


async def test_guest_joins_only_can_join_rooms_and_sends(
    alice: Client, http: httpx.AsyncClient
) -> None:
    guest = await register_guest(http)
    room_id = await create_room(alice, preset="public_chat")
    assert_error(await guest.post(f"/join/{room_id}", {}), 403, "M_FORBIDDEN")
    await set_guest_access(alice, room_id, "can_join")
    assert_ok(await guest.post(f"/join/{room_id}", {}))
    member = assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.member/{guest.user_id}"))
    assert member["membership"] == "join"
    assert member["kind"] == "guest"
    await send_text(guest, room_id, "sup")
    chunk = assert_ok(await alice.get(f"/rooms/{room_id}/messages", params={"dir": "b"}))["chunk"]
    assert chunk[0]["sender"] == guest.user_id
    assert chunk[0]["content"]["body"] == "sup"
    # Guests may set their display name (spec: account maintenance).
    path = f"/profile/{guest.user_id}/displayname"
    assert_ok(await guest.put(path, {"displayname": "creeper"}))
    assert assert_ok(await guest.get(path))["displayname"] == "creeper"
    member = assert_ok(await guest.get(f"/rooms/{room_id}/state/m.room.member/{guest.user_id}"))
    assert member["displayname"] == "creeper"


async def test_guests_leave_when_guest_access_is_revoked(
    alice: Client, http: httpx.AsyncClient
) -> None:
    guest = await register_guest(http)
    upgraded = await register_guest(http)
    room_id = await create_room(alice, preset="public_chat")
    await set_guest_access(alice, room_id, "can_join")
    await join(guest, room_id)
    await join(upgraded, room_id)
    assert await membership_of(alice, room_id, guest.user_id) == "join"
    localpart = upgraded.user_id[1:].split(":")[0]
    body = {"username": localpart, "password": "pw", "guest_access_token": upgraded.token}
    assert_ok(await register(http, body))
    await set_guest_access(alice, room_id, "forbidden")
    assert await membership_of(alice, room_id, guest.user_id) == "leave"
    # Only guests leave: the creator, and a guest that became a full account, stay.
    assert await membership_of(alice, room_id, alice.user_id) == "join"
    assert await membership_of(alice, room_id, upgraded.user_id) == "join"


async def test_guest_upgrades_to_a_full_account(alice: Client, http: httpx.AsyncClient) -> None:
    guest = await register_guest(http)
    localpart = guest.user_id[1:].split(":")[0]
    body = {"username": localpart, "password": "pw", "guest_access_token": guest.token}
    session = assert_uia(await http.post(f"{V3}/register", json=body), ["m.login.dummy"])
    auth = {"type": "m.login.dummy", "session": session["session"]}
    upgraded = assert_ok(await http.post(f"{V3}/register", json={**body, "auth": auth}))
    assert upgraded["user_id"] == guest.user_id
    full = Client(http, upgraded["user_id"], upgraded["access_token"], upgraded["device_id"])
    # A full account may join rooms without guest access, and create rooms.
    room_id = await create_room(alice, preset="public_chat")
    await join(full, room_id)
    assert_ok(await full.post("/createRoom", {}))
    # The old guest token now belongs to a full account too.
    assert_ok(await guest.post("/createRoom", {}))
    login = await http.post(
        f"{V3}/login",
        json={"type": "m.login.password", "user": localpart, "password": "pw"},
    )
    assert_ok(login)


async def test_guest_cannot_upgrade_another_guest(http: httpx.AsyncClient) -> None:
    first = await register_guest(http)
    second = await register_guest(http)
    localpart = first.user_id[1:].split(":")[0]
    body = {"username": localpart, "password": "pw", "guest_access_token": second.token}
    assert_error(await http.post(f"{V3}/register", json=body), 403, "M_FORBIDDEN")
    # A numeric username without a guest token stays reserved.
    response = await http.post(f"{V3}/register", json={"username": localpart, "password": "pw"})
    assert response.status_code == 400
