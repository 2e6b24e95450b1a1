"""Two (and three) trioservers sharing rooms over federation, over real TLS on loopback
(issue 15): joins, messages both ways, invites, leaves and rejoins."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import trio

from tests.integration.client import Client, assert_ok
from tests.integration.federation_helpers import federating_servers
from tests.integration.room_helpers import create_room, send_text


async def _wait_for(predicate: Any, what: str, seconds: float = 20.0) -> Any:
    with trio.move_on_after(seconds):
        while True:
            result = await predicate()
            if result:
                return result
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _joined_members(client: Client, room_id: str) -> set[str]:
    response = await client.get(f"/rooms/{room_id}/joined_members")
    if response.status_code != 200:
        return set()
    return set(response.json()["joined"])


async def _texts(client: Client, room_id: str) -> list[str]:
    response = await client.get(f"/rooms/{room_id}/messages", params={"dir": "b", "limit": 50})
    if response.status_code != 200:
        return []
    return [
        e["content"].get("body")
        for e in reversed(response.json()["chunk"])
        if e["type"] == "m.room.message"
    ]


async def test_a_user_joins_a_room_on_another_server() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat", name="Over there")
        await send_text(alice, room_id, "before bob")
        joined = assert_ok(
            await bob.post(f"/join/{quote(room_id)}", {}, params={"server_name": a.name})
        )
        assert joined["room_id"] == room_id
        # Bob's server holds the room now: its state, and bob is a member on both sides.
        name = assert_ok(await bob.get(f"/rooms/{room_id}/state/m.room.name"))
        assert name == {"name": "Over there"}
        assert await _joined_members(bob, room_id) == {alice.user_id, bob.user_id}
        assert await _wait_for(
            lambda: _joined_members_has(alice, room_id, bob.user_id), "bob on alice's server"
        )


async def _joined_members_has(client: Client, room_id: str, user_id: str) -> bool:
    return user_id in await _joined_members(client, room_id)


async def test_joining_through_a_server_that_is_not_in_the_room_fails_cleanly() -> None:
    async with federating_servers(2) as (a, b):
        await a.user("alice")
        bob = await b.user("bob")
        response = await bob.post(
            f"/join/{quote('!nope:' + a.name)}", {}, params={"server_name": a.name}
        )
        assert response.status_code in (403, 404, 502), response.text
        assert isinstance(response.json().get("errcode"), str)
