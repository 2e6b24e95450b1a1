"""Two (and three) trioservers sharing rooms over federation, over real TLS on loopback
(issue 15): joins, messages both ways, invites, leaves and rejoins."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import trio

from tests.integration.client import Client, assert_error, assert_ok
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


async def _join_via(client: Client, room: str, server: str) -> None:
    assert_ok(await client.post(f"/join/{quote(room)}", {}, params={"server_name": server}))


async def _not_joined(client: Client, room_id: str, user_id: str) -> bool:
    return user_id not in await _joined_members(client, room_id)


async def test_messages_flow_both_ways() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat")
        await _join_via(bob, room_id, a.name)
        await send_text(alice, room_id, "hello from a")
        await _wait_for(
            lambda: _has_text(bob, room_id, "hello from a"), "alice's message on bob's server"
        )
        await send_text(bob, room_id, "hello from b")
        await _wait_for(
            lambda: _has_text(alice, room_id, "hello from b"), "bob's message on alice's server"
        )
        # Both servers hold the same conversation, in the same order.
        assert await _texts(alice, room_id) == await _texts(bob, room_id)


async def _has_text(client: Client, room_id: str, body: str) -> bool:
    return body in await _texts(client, room_id)


async def test_a_remote_user_is_invited_and_accepts() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="private_chat", name="Private")
        assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))

        async def invited() -> bool:
            sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
            return room_id in sync["rooms"].get("invite", {})

        await _wait_for(invited, "the invite in bob's sync")
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
        events = sync["rooms"]["invite"][room_id]["invite_state"]["events"]
        assert {"type": "m.room.name", "state_key": "", "content": {"name": "Private"}} in [
            {k: e[k] for k in ("type", "state_key", "content")} for e in events
        ]
        # The room is private: only the invite lets bob in, through alice's server.
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/join", {}))
        assert await _joined_members(bob, room_id) == {alice.user_id, bob.user_id}
        await _wait_for(
            lambda: _joined_members_has(alice, room_id, bob.user_id), "bob joined on a"
        )


async def test_a_remote_invite_is_rejected() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="private_chat")
        assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))

        async def invited() -> bool:
            sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
            return room_id in sync["rooms"].get("invite", {})

        await _wait_for(invited, "the invite")
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/leave", {}))

        async def bob_left_on_a() -> bool:
            member = await alice.get(f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
            return member.status_code == 200 and member.json()["membership"] == "leave"

        await _wait_for(bob_left_on_a, "bob's rejection on alice's server")
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
        assert room_id not in sync["rooms"].get("invite", {})


async def test_leave_and_rejoin_after_the_server_left_the_room() -> None:
    # Seeds 4 and 6 over federation: the last local user leaving drops the room's current
    # state on that server, keeps the user's membership, and the user can come back.
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat")
        await _join_via(bob, room_id, a.name)
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/leave", {}))
        await _wait_for(
            lambda: _not_joined(alice, room_id, bob.user_id), "bob's leave on alice's server"
        )
        # Bob's server is out of the room: it receives nothing from it any more, and it no
        # longer answers for it (a join through it fails: it has no current state).
        await send_text(alice, room_id, "while bob is away")
        carol = await b.user("carol")
        response = await carol.post(f"/join/{quote(room_id)}", {}, params={"server_name": b.name})
        assert response.status_code == 404, response.text
        assert "while bob is away" not in await _texts(bob, room_id)
        await _join_via(bob, room_id, a.name)
        assert await _joined_members(bob, room_id) == {alice.user_id, bob.user_id}
        await send_text(alice, room_id, "welcome back")
        await _wait_for(lambda: _has_text(bob, room_id, "welcome back"), "the message after")


async def test_messages_backfill_history_from_before_the_join() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat")
        for n in range(15):
            await send_text(alice, room_id, f"old {n}")
        await _join_via(bob, room_id, a.name)
        # Bob's server holds nothing from before his join: paging back fetches it from a.
        chunk: list[dict[str, Any]] = []
        token = None
        for _ in range(10):
            params: dict[str, Any] = {"dir": "b", "limit": 10}
            if token is not None:
                params["from"] = token
            page = assert_ok(await bob.get(f"/rooms/{room_id}/messages", params=params))
            chunk.extend(page["chunk"])
            token = page.get("end")
            if token is None or not page["chunk"]:
                break
        texts = [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]
        assert texts == [f"old {n}" for n in reversed(range(15))]
        # History is not news: bob's incremental sync does not present it as new.
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
        since = sync["next_batch"]
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0, "since": since}))
        assert room_id not in sync["rooms"].get("join", {})


async def test_aliases_profiles_and_the_directory_of_another_server() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        assert_ok(await alice.put(f"/profile/{alice.user_id}/displayname", {"displayname": "Al"}))
        alias = f"#lobby:{a.name}"
        room_id = await create_room(alice, preset="public_chat", room_alias_name="lobby")
        assert_ok(await alice.put(f"/directory/list/room/{room_id}", {"visibility": "public"}))
        # Bob's server asks alice's for her profile, the alias, and the public directory.
        profile = assert_ok(await bob.get(f"/profile/{quote(alice.user_id)}"))
        assert profile == {"displayname": "Al"}
        name = assert_ok(await bob.get(f"/profile/{quote(alice.user_id)}/displayname"))
        assert name == {"displayname": "Al"}
        resolved = assert_ok(await bob.get(f"/directory/room/{quote(alias)}"))
        assert resolved["room_id"] == room_id
        assert a.name in resolved["servers"]
        rooms = assert_ok(await bob.get("/publicRooms", params={"server": a.name}))
        assert room_id in [r["room_id"] for r in rooms["chunk"]]
        rooms = assert_ok(await bob.post("/publicRooms", {"limit": 5}, params={"server": a.name}))
        assert room_id in [r["room_id"] for r in rooms["chunk"]]
        # Joining by the alias goes through the directory answer.
        assert_ok(await bob.post(f"/join/{quote(alias)}", {}))
        assert await _joined_members(bob, room_id) == {alice.user_id, bob.user_id}
        missing = await bob.get(f"/directory/room/{quote('#nothing:' + a.name)}")
        assert_error(missing, 404, "M_NOT_FOUND")
