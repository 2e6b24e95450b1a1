"""Membership endpoints over HTTP: join content, kick/ban rules, rejecting invites."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join, leave


@pytest.fixture
async def carol(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("carol", "carolpw")
    return Client(http, user.user_id, user.access_token, user.device_id)


async def _member(client: Client, room_id: str, user_id: str) -> dict[str, object]:
    path = f"/rooms/{room_id}/state/m.room.member/{quote(user_id)}"
    return assert_ok(await client.get(path))


async def test_join_copies_extra_body_keys_into_the_member_event(
    alice: Client, bob: Client
) -> None:
    # SyTest 10apidoc/33room-members "POST /join/:room_id can join a room with custom content".
    room_id = await create_room(alice, preset="public_chat", room_alias_name="custom")
    body = {"foo": "bar", "membership": "leave", "reason": "hello"}
    assert_ok(await bob.post(f"/join/{room_id}", body))
    content = await _member(alice, room_id, bob.user_id)
    assert content["foo"] == "bar"
    assert content["membership"] == "join"
    assert content["reason"] == "hello"
    assert content["displayname"] == "bob"
    await leave(bob, room_id)
    alias = quote("#custom:localhost")
    assert_ok(await bob.post(f"/join/{alias}", {"baz": 1, "third_party_signed": {}}))
    content = await _member(alice, room_id, bob.user_id)
    assert content["baz"] == 1
    assert "third_party_signed" not in content
    await leave(bob, room_id)
    assert_ok(await bob.post(f"/rooms/{room_id}/join", {"qux": [1]}))
    assert (await _member(alice, room_id, bob.user_id))["qux"] == [1]


async def test_join_with_a_bad_reason_is_refused(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    assert_error(await bob.post(f"/join/{room_id}", {"reason": 5}), 400, "M_INVALID_PARAM")


async def test_joined_members_always_has_both_profile_keys(alice: Client) -> None:
    room_id = await create_room(alice)
    await join(alice, room_id)
    joined = assert_ok(await alice.get(f"/rooms/{room_id}/joined_members"))["joined"]
    assert joined[alice.user_id] == {"display_name": "alice", "avatar_url": None}


async def test_kick_needs_a_target_in_the_room(alice: Client, bob: Client) -> None:
    # SyTest 30rooms/15kick and 07ban: kicking someone who is not there, has left or is
    # banned is 403; a kick must not lift a ban.
    room_id = await create_room(alice, preset="public_chat")
    kick = f"/rooms/{room_id}/kick"
    assert_error(await alice.post(kick, {"user_id": "@nobody:localhost"}), 403, "M_FORBIDDEN")
    assert_error(await alice.post(kick, {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    await join(bob, room_id)
    assert_ok(await alice.post(kick, {"user_id": bob.user_id, "reason": "testing"}))
    content = await _member(alice, room_id, bob.user_id)
    assert content == {"membership": "leave", "reason": "testing"}
    assert_error(await alice.post(kick, {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    assert_ok(await alice.post(f"/rooms/{room_id}/ban", {"user_id": bob.user_id}))
    assert_error(await alice.post(kick, {"user_id": bob.user_id}), 403, "M_FORBIDDEN")
    assert (await _member(alice, room_id, bob.user_id))["membership"] == "ban"
    assert_error(await bob.post(f"/rooms/{room_id}/join", {}), 403, "M_FORBIDDEN")
    assert_ok(await alice.post(f"/rooms/{room_id}/unban", {"user_id": bob.user_id}))
    await join(bob, room_id)


async def test_kick_revokes_an_invite(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    await invite(alice, room_id, bob.user_id)
    assert_ok(await alice.post(f"/rooms/{room_id}/kick", {"user_id": bob.user_id}))
    assert (await _member(alice, room_id, bob.user_id))["membership"] == "leave"


async def _sync_rooms(client: Client) -> dict[str, Any]:
    body = assert_ok(await client.get("/sync", params={"timeout": "0"}))
    rooms: dict[str, Any] = body.get("rooms", {})
    return rooms


async def test_reject_invite_after_the_inviter_left(alice: Client, bob: Client) -> None:
    # The last local member leaving drops the room's current state (seed 4); the invitee
    # can still reject the invite, and the server stays out of the room.
    room_id = await create_room(alice)
    await invite(alice, room_id, bob.user_id)
    assert room_id in (await _sync_rooms(bob)).get("invite", {})
    await leave(alice, room_id)
    response = await bob.post(f"/rooms/{room_id}/leave", {"reason": "no thanks"})
    assert_ok(response)
    rooms = await _sync_rooms(bob)
    assert room_id not in rooms.get("invite", {})
    joined = assert_ok(await bob.get("/joined_rooms"))["joined_rooms"]
    assert room_id not in joined
    # Rejecting again, or joining, is refused: there is no invite left and no server in
    # the room to join through.
    assert_error(await bob.post(f"/rooms/{room_id}/leave", {}), 403, "M_FORBIDDEN")
    assert_error(await bob.post(f"/rooms/{room_id}/join", {}), 404, "M_NOT_FOUND")
    # The state the room had is untouched for the inviter, who reads it as of their leave.
    state = assert_ok(
        await alice.get(f"/rooms/{room_id}/state/m.room.member/{quote(bob.user_id)}")
    )
    assert state["membership"] == "invite"


async def test_every_invitee_can_reject_after_the_inviter_left(
    alice: Client, bob: Client, carol: Client
) -> None:
    room_id = await create_room(alice)
    await invite(alice, room_id, bob.user_id)
    await invite(alice, room_id, carol.user_id)
    await leave(alice, room_id)
    assert_ok(await bob.post(f"/rooms/{room_id}/leave", {}))
    # A second invitee after the first rejection builds on the new head.
    assert_ok(await carol.post(f"/rooms/{room_id}/leave", {}))
    assert room_id not in (await _sync_rooms(carol)).get("invite", {})


async def test_leave_of_a_room_never_joined_is_refused(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    await leave(alice, room_id)
    assert_error(await bob.post(f"/rooms/{room_id}/leave", {}), 403, "M_FORBIDDEN")


async def test_reject_invite_after_the_inviter_left_across_a_restart(tmp_path: Path) -> None:
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice_user = await hs.register_user("alice", "alicepw")
        bob_user = await hs.register_user("bob", "bobpw")
        alice = Client(http, alice_user.user_id, alice_user.access_token, alice_user.device_id)
        room_id = await create_room(alice)
        await invite(alice, room_id, bob_user.user_id)
        await leave(alice, room_id)
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        bob = Client(http, bob_user.user_id, bob_user.access_token, bob_user.device_id)
        assert_ok(await bob.post(f"/rooms/{room_id}/leave", {}))
        assert room_id not in (await _sync_rooms(bob)).get("invite", {})


async def test_withdraw_a_knock_after_the_last_member_left(alice: Client, bob: Client) -> None:
    join_rules = {"type": "m.room.join_rules", "content": {"join_rule": "knock"}}
    room_id = await create_room(alice, initial_state=[join_rules])
    assert_ok(await bob.post(f"/knock/{room_id}", {}))
    await leave(alice, room_id)
    assert_ok(await bob.post(f"/rooms/{room_id}/leave", {}))
    assert room_id not in (await _sync_rooms(bob)).get("knock", {})
    assert_error(await bob.post(f"/rooms/{room_id}/leave", {}), 403, "M_FORBIDDEN")
