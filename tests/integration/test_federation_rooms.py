"""Two (and three) trioservers sharing rooms over federation, over real TLS on loopback
(issue 15): joins, messages both ways, invites, leaves and rejoins."""

from __future__ import annotations

import functools
from typing import Any
from urllib.parse import quote

import httpx

import trio

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.federation_helpers import (
    federated_server,
    federating_servers,
    free_port,
    fresh_tls,
    joined_members,
    texts,
    wait_for,
)
from tests.integration.room_helpers import create_room, send_text


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
        assert await joined_members(bob, room_id) == {alice.user_id, bob.user_id}
        assert await wait_for(
            lambda: _joined_members_has(alice, room_id, bob.user_id), "bob on alice's server"
        )


async def _joined_members_has(client: Client, room_id: str, user_id: str) -> bool:
    return user_id in await joined_members(client, room_id)


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
    return user_id not in await joined_members(client, room_id)


async def test_messages_flow_both_ways() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat")
        await _join_via(bob, room_id, a.name)
        await send_text(alice, room_id, "hello from a")
        await wait_for(
            lambda: _has_text(bob, room_id, "hello from a"), "alice's message on bob's server"
        )
        await send_text(bob, room_id, "hello from b")
        await wait_for(
            lambda: _has_text(alice, room_id, "hello from b"), "bob's message on alice's server"
        )
        # Both servers hold the same conversation, in the same order.
        assert await texts(alice, room_id) == await texts(bob, room_id)


async def _has_text(client: Client, room_id: str, body: str) -> bool:
    return body in await texts(client, room_id)


async def test_a_remote_user_is_invited_and_accepts() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="private_chat", name="Private")
        assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))

        async def invited() -> bool:
            sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
            return room_id in sync["rooms"].get("invite", {})

        await wait_for(invited, "the invite in bob's sync")
        sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
        events = sync["rooms"]["invite"][room_id]["invite_state"]["events"]
        assert {"type": "m.room.name", "state_key": "", "content": {"name": "Private"}} in [
            {k: e[k] for k in ("type", "state_key", "content")} for e in events
        ]
        # The room is private: only the invite lets bob in, through alice's server.
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/join", {}))
        assert await joined_members(bob, room_id) == {alice.user_id, bob.user_id}
        await wait_for(lambda: _joined_members_has(alice, room_id, bob.user_id), "bob joined on a")


async def test_a_remote_invite_is_rejected() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="private_chat")
        assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))

        async def invited() -> bool:
            sync = assert_ok(await bob.get("/sync", params={"timeout": 0}))
            return room_id in sync["rooms"].get("invite", {})

        await wait_for(invited, "the invite")
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/leave", {}))

        async def bob_left_on_a() -> bool:
            member = await alice.get(f"/rooms/{room_id}/state/m.room.member/{bob.user_id}")
            return member.status_code == 200 and member.json()["membership"] == "leave"

        await wait_for(bob_left_on_a, "bob's rejection on alice's server")
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
        await wait_for(
            lambda: _not_joined(alice, room_id, bob.user_id), "bob's leave on alice's server"
        )
        # Bob's server is out of the room: it receives nothing from it any more, and it no
        # longer answers for it (a join through it fails: it has no current state).
        await send_text(alice, room_id, "while bob is away")
        carol = await b.user("carol")
        response = await carol.post(f"/join/{quote(room_id)}", {}, params={"server_name": b.name})
        assert response.status_code == 404, response.text
        assert "while bob is away" not in await texts(bob, room_id)
        await _join_via(bob, room_id, a.name)
        assert await joined_members(bob, room_id) == {alice.user_id, bob.user_id}
        await send_text(alice, room_id, "welcome back")
        await wait_for(lambda: _has_text(bob, room_id, "welcome back"), "the message after")


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
        bodies = [e["content"].get("body") for e in chunk if e["type"] == "m.room.message"]
        assert bodies == [f"old {n}" for n in reversed(range(15))]
        # The whole history, to the room's creation (events bob's server first held only as
        # the state it joined on, too).
        assert chunk[-1]["type"] == "m.room.create"
        assert "m.room.power_levels" in {e["type"] for e in chunk}
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
        assert await joined_members(bob, room_id) == {alice.user_id, bob.user_id}
        missing = await bob.get(f"/directory/room/{quote('#nothing:' + a.name)}")
        assert_error(missing, 404, "M_NOT_FOUND")


async def test_three_servers_share_a_room() -> None:
    async with federating_servers(3) as (a, b, c):
        alice = await a.user("alice")
        bob = await b.user("bob")
        carol = await c.user("carol")
        room_id = await create_room(alice, preset="public_chat")
        await _join_via(bob, room_id, a.name)
        # Carol joins through bob's server, which was not the room's first.
        await _join_via(carol, room_id, b.name)
        everyone = {alice.user_id, bob.user_id, carol.user_id}
        for client in (alice, bob, carol):
            await wait_for(
                functools.partial(_joined_members_equal, client, room_id, everyone),
                f"three members on {client.user_id}'s server",
            )
        for n, client in enumerate((alice, bob, carol)):
            await send_text(client, room_id, f"from {n}")
        wanted = {"from 0", "from 1", "from 2"}
        for client in (alice, bob, carol):
            await wait_for(functools.partial(_has_all, client, room_id, wanted), "every message")


async def _joined_members_equal(client: Client, room_id: str, members: set[str]) -> bool:
    return await joined_members(client, room_id) == members


async def _has_all(client: Client, room_id: str, bodies: set[str]) -> bool:
    return bodies <= set(await texts(client, room_id))


async def test_redactions_and_state_changes_travel() -> None:
    async with federating_servers(2) as (a, b):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat")
        await _join_via(bob, room_id, a.name)
        event_id = await send_text(alice, room_id, "regrettable")
        await wait_for(lambda: _has_text(bob, room_id, "regrettable"), "the message on b")
        assert_ok(
            await alice.put(f"/rooms/{room_id}/redact/{quote(event_id)}/r1", {"reason": "oops"})
        )
        assert_ok(await alice.put(f"/rooms/{room_id}/state/m.room.topic", {"topic": "New"}))

        async def redacted_on_b() -> bool:
            response = await bob.get(f"/rooms/{room_id}/event/{quote(event_id)}")
            return response.status_code == 200 and response.json()["content"] == {}

        await wait_for(redacted_on_b, "the redaction on b")

        async def topic_on_b() -> bool:
            response = await bob.get(f"/rooms/{room_id}/state/m.room.topic")
            return response.status_code == 200 and response.json().get("topic") == "New"

        await wait_for(topic_on_b, "the topic on b")
        # Bob may not redact alice's message (no power); his attempt changes nothing on a.
        other = await send_text(alice, room_id, "keep me")
        await wait_for(lambda: _has_text(bob, room_id, "keep me"), "the second message")
        response = await bob.put(f"/rooms/{room_id}/redact/{quote(other)}/r2", {})
        assert_error(response, 403, "M_FORBIDDEN")
        kept = assert_ok(await alice.get(f"/rooms/{room_id}/event/{quote(other)}"))
        assert kept["content"]["body"] == "keep me"


async def test_a_server_acl_shuts_a_server_out() -> None:
    async with federating_servers(3) as (a, b, d):
        alice = await a.user("alice")
        bob = await b.user("bob")
        room_id = await create_room(alice, preset="public_chat")
        await _join_via(bob, room_id, a.name)
        # ACLs match host names without the port, and both test servers are "localhost":
        # allowing only a name that matches neither shuts out every server but the ACL
        # sender's own (whose users' events it does not judge).
        acl = {"allow": ["nothing.example"], "deny": []}
        assert_ok(await alice.put(f"/rooms/{room_id}/state/m.room.server_acl", acl))
        await wait_for(lambda: _state_is(bob, room_id, "m.room.server_acl", acl), "the ACL on b")
        await send_text(bob, room_id, "after the acl")
        # Bob's server still holds the room, so carol joins there; alice's server refuses
        # both the message and the join that b sends it.
        carol = await b.user("carol")
        await _join_via(carol, room_id, a.name)
        await _never(lambda: _has_text(alice, room_id, "after the acl"), seconds=2)
        assert carol.user_id not in await joined_members(alice, room_id)
        # A join through a, by a user of a server the ACL denies, is refused at make_join.
        dave = await d.user("dave")
        response = await dave.post(f"/join/{quote(room_id)}", {}, params={"server_name": a.name})
        assert_error(response, 403, "M_FORBIDDEN")


async def _never(predicate: Any, seconds: float) -> None:
    with trio.move_on_after(seconds):
        while True:
            assert not await predicate()
            await trio.sleep(0.1)


async def _state_is(client: Client, room_id: str, event_type: str, content: Any) -> bool:
    response = await client.get(f"/rooms/{room_id}/state/{event_type}")
    return response.status_code == 200 and response.json() == content


async def test_well_known_server_delegation_and_version() -> None:
    async with federating_servers(1) as (a,):
        response = await a.http.get("/.well-known/matrix/server")
        assert_error(response, 404, "M_NOT_FOUND")
        version = assert_ok(await a.http.get("/_matrix/federation/v1/version"))
        assert version["server"]["name"] == "trioserver"
    overrides = {"serve_well_known": True, "public_baseurl": "https://matrix.example.org"}
    async with (
        serve_in_process(federation=overrides) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        answer = assert_ok(await http.get("/.well-known/matrix/server"))
        assert answer == {"m.server": "matrix.example.org:443"}


async def test_a_worker_backfills_through_main() -> None:
    async with (
        fresh_tls() as tls,
        federated_server(tls, free_port()) as a,
        federated_server(tls, free_port(), via_worker=True) as b,
    ):
        alice = await a.user("alice")
        bob = await b.user("bob")  # b's clients talk to its worker
        room_id = await create_room(alice, preset="public_chat")
        for n in range(5):
            await send_text(alice, room_id, f"early {n}")
        await _join_via(bob, room_id, a.name)
        page = assert_ok(
            await bob.get(f"/rooms/{room_id}/messages", params={"dir": "b", "limit": 30})
        )
        bodies = [e["content"].get("body") for e in page["chunk"] if e["type"] == "m.room.message"]
        assert bodies == [f"early {n}" for n in reversed(range(5))]
