"""Membership endpoints over HTTP: join content, kick/ban rules, rejecting invites."""

from __future__ import annotations

from urllib.parse import quote

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join, leave


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
