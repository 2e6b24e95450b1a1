"""Every room version federates (issue 15): ids in PDUs (v1, v2) and reference hashes, the
state resolution algorithm of the version (v1 for room version 1), knocking where the
version has it (v7+)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from trioserver.events import KNOWN_ROOM_VERSIONS

from tests.integration.client import assert_ok
from tests.integration.federation_helpers import (
    federating_servers,
    texts,
    wait_for,
)
from tests.integration.room_helpers import create_room, send_text


def _number(version: object) -> int:
    return int(str(version))


# Every room version this server knows, in order.
VERSIONS = sorted((str(v) for v in KNOWN_ROOM_VERSIONS), key=_number)


@pytest.mark.parametrize("version", VERSIONS)
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
            seen = [set(await texts(c, room_id)) for c in (alice, bob)]
            return all(wanted <= texts for texts in seen)

        await wait_for(both_have_both, "both messages on both servers")
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

        await wait_for(knock_on_a, "the knock on alice's server")
        # Bob sees the room he knocked on; alice lets him in with an invite.
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
        assert room_id in sync["rooms"].get("knock", {})
        assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))

        async def invited() -> bool:
            sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
            return room_id in sync["rooms"].get("invite", {})

        await wait_for(invited, "the invite after the knock")
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/join", {}))
