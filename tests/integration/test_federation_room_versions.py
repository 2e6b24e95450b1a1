"""Every room version federates (issue 15): ids in PDUs (v1, v2) and reference hashes, the
state resolution algorithm of the version (v1 for room version 1), knocking where the
version has it (v7+)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

import trio

from trioserver.events import KNOWN_ROOM_VERSIONS

from tests.integration.client import Client, assert_ok
from tests.integration.federation_helpers import federating_servers
from tests.integration.room_helpers import create_room, send_text


async def _wait_for(predicate: Any, what: str, seconds: float = 20.0) -> None:
    with trio.move_on_after(seconds):
        while True:
            if await predicate():
                return
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _texts(client: Client, room_id: str) -> list[str]:
    response = await client.get(f"/rooms/{room_id}/messages", params={"dir": "b", "limit": 50})
    if response.status_code != 200:
        return []
    return [e["content"].get("body") for e in response.json()["chunk"] if "body" in e["content"]]


@pytest.mark.parametrize("version", sorted(KNOWN_ROOM_VERSIONS, key=int))
async def test_a_room_of_each_version_is_shared(version: str) -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat", room_version=version)
        assert_ok(await bob.post(f"/join/{quote(room_id)}", {}, params={"server_name": a.name}))
        await send_text(alice, room_id, f"v{version} from a")
        await send_text(bob, room_id, f"v{version} from b")

        async def both_have_both() -> bool:
            wanted = {f"v{version} from a", f"v{version} from b"}
            seen = [set(await _texts(c, room_id)) for c in (alice, bob)]
            return all(wanted <= texts for texts in seen)

        await _wait_for(both_have_both, "both messages on both servers")
        create = assert_ok(await bob.get(f"/rooms/{room_id}/state/m.room.create"))
        assert create.get("room_version", "1") == version


@pytest.mark.parametrize("version", ["7", "10", "12"])
async def test_knocking_on_a_room_of_another_server(version: str) -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="private_chat", room_version=version)
        assert_ok(
            await alice.put(f"/rooms/{room_id}/state/m.room.join_rules", {"join_rule": "knock"})
        )
        assert_ok(await bob.post(f"/knock/{quote(room_id)}", {}, params={"via": a.name}))

        async def knock_on_a() -> bool:
            member = await alice.get(f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
            return member.status_code == 200 and member.json()["membership"] == "knock"

        await _wait_for(knock_on_a, "the knock on alice's server")
        # Bob sees the room he knocked on; alice lets him in with an invite.
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
        assert room_id in sync["rooms"].get("knock", {})
        assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))

        async def invited() -> bool:
            sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
            return room_id in sync["rooms"].get("invite", {})

        await _wait_for(invited, "the invite after the knock")
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/join", {}))
