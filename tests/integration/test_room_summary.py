"""GET /_matrix/client/v1/room_summary/{roomIdOrAlias} over real HTTP (spec v1.15)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from tests.integration.client import Client, assert_error, assert_ok, bearer
from tests.integration.room_helpers import create_room, invite, leave, set_state

V1 = "/_matrix/client/v1"
NHEKO = "/_matrix/client/unstable/im.nheko.summary"


async def summary(
    http: httpx.AsyncClient, room: str, client: Client | None = None, **params: Any
) -> httpx.Response:
    headers = client.headers if client is not None else {}
    # Percent-encoded: a "#" would start the URL's fragment.
    path = f"{V1}/room_summary/{quote(room, safe='')}"
    return await http.get(path, params=params, headers=headers)


async def test_public_room_by_alias_without_a_token(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    room = await create_room(
        alice,
        preset="public_chat",
        room_alias_name="lobby",
        name="Lobby",
        topic="Say hello",
        initial_state=[
            {
                "type": "m.room.encryption",
                "state_key": "",
                "content": {"algorithm": "m.megolm.v1.aes-sha2"},
            },
            {"type": "m.room.avatar", "state_key": "", "content": {"url": "mxc://localhost/av"}},
        ],
    )
    body = assert_ok(await summary(http, "#lobby:localhost", via="localhost"))
    assert body == {
        "room_id": room,
        "name": "Lobby",
        "topic": "Say hello",
        "canonical_alias": "#lobby:localhost",
        "avatar_url": "mxc://localhost/av",
        "num_joined_members": 1,
        "join_rule": "public",
        "world_readable": False,
        "guest_can_join": False,
        "room_version": "12",
        "encryption": "m.megolm.v1.aes-sha2",
    }
    # By room id too, and with a token the user's membership is added.
    by_id = assert_ok(await summary(http, room, bob))
    assert by_id["membership"] == "leave"
    assert by_id["room_id"] == room
    assert assert_ok(await summary(http, room, alice))["membership"] == "join"
    # Synapse's unstable paths answer the same.
    for path in (f"{NHEKO}/rooms/{room}/summary", f"{NHEKO}/summary/{room}"):
        assert assert_ok(await http.get(path))["room_id"] == room


async def test_private_room_only_for_members_and_invitees(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    space = await create_room(alice, creation_content={"type": "m.space"}, name="Team")
    # Unauthenticated and non-members get 404: they must not learn the room exists.
    assert_error(await summary(http, space), 404, "M_NOT_FOUND")
    assert_error(await summary(http, space, bob), 404, "M_NOT_FOUND")
    await invite(alice, space, bob.user_id)
    body = assert_ok(await summary(http, space, bob))
    assert body["membership"] == "invite"
    assert body["room_type"] == "m.space"
    assert body["join_rule"] == "invite"
    # Leaving a room open only to members makes it invisible again.
    await leave(bob, space)
    assert_error(await summary(http, space, bob), 404, "M_NOT_FOUND")


async def test_world_readable_and_knock_rooms_are_open(
    alice: Client, http: httpx.AsyncClient
) -> None:
    readable = await create_room(alice)
    await set_state(
        alice, readable, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    body = assert_ok(await summary(http, readable))
    assert body["world_readable"] is True
    assert "membership" not in body
    knock = await create_room(alice)
    await set_state(alice, knock, "m.room.join_rules", {"join_rule": "knock"})
    assert assert_ok(await summary(http, knock))["join_rule"] == "knock"


async def test_restricted_room_lists_the_allowed_rooms(
    alice: Client, bob: Client, http: httpx.AsyncClient
) -> None:
    space = await create_room(alice, preset="public_chat", creation_content={"type": "m.space"})
    room = await create_room(alice)
    allow = [{"type": "m.room_membership", "room_id": space}, {"type": "other"}]
    await set_state(alice, room, "m.room.join_rules", {"join_rule": "restricted", "allow": allow})
    assert_error(await summary(http, room, bob), 404, "M_NOT_FOUND")
    assert_ok(await bob.post(f"/rooms/{space}/join", {}))
    body = assert_ok(await summary(http, room, bob))
    assert body["join_rule"] == "restricted"
    assert body["allowed_room_ids"] == [space]
    assert body["membership"] == "leave"
    # Without a token there is no user to be in the allowed room.
    assert_error(await summary(http, room), 404, "M_NOT_FOUND")


async def test_unknown_and_malformed_rooms(alice: Client, http: httpx.AsyncClient) -> None:
    assert_error(await summary(http, "#nope:localhost"), 404, "M_NOT_FOUND")
    assert_error(await summary(http, "!nope:localhost", alice), 404, "M_NOT_FOUND")
    # A remote room: no federation to ask the via servers.
    remote = await summary(http, "!room:elsewhere.org", alice, via="elsewhere.org")
    assert_error(remote, 404, "M_NOT_FOUND")
    assert_error(await summary(http, "lobby", alice), 400, "M_INVALID_PARAM")
    assert_error(await summary(http, "#bad alias", alice), 400, "M_INVALID_PARAM")
    # A token, when given, must be valid.
    bad = await http.get(f"{V1}/room_summary/!nope:localhost", headers=bearer("nonsense"))
    assert_error(bad, 401, "M_UNKNOWN_TOKEN")
