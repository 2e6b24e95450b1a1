"""GET /_matrix/client/v1/rooms/{roomId}/hierarchy over real HTTP (spec "Spaces")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

import trio
from trio.testing import MockClock

from trioserver.errors import MatrixError
from trioserver.handlers.hierarchy import SESSION_SECONDS, HierarchyQuery
from trioserver.storage.intents import EventIntent
from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join, set_state
from tests.integration.writer_env import writer_env

V1 = "/_matrix/client/v1"


async def hierarchy(client: Client, room_id: str, **params: Any) -> httpx.Response:
    return await client.http.get(
        f"{V1}/rooms/{room_id}/hierarchy", params=params, headers=client.headers
    )


async def create_space(client: Client, **body: Any) -> str:
    return await create_room(client, creation_content={"type": "m.space"}, **body)


async def add_child(
    client: Client, space: str, child: str, server: str = "localhost", **content: Any
) -> str:
    return await set_state(
        client, space, "m.space.child", {"via": [server], **content}, state_key=child
    )


def room_ids(body: dict[str, Any]) -> list[str]:
    return [room["room_id"] for room in body["rooms"]]


async def nested_space(alice: Client) -> dict[str, str]:
    """space -> [room_a (order "a", suggested), subspace (order "b")]; subspace -> room_b."""
    rooms = {
        "space": await create_space(alice, name="Space"),
        "room_a": await create_room(alice, name="A", topic="about A"),
        "subspace": await create_space(alice, name="Sub"),
        "room_b": await create_room(alice, name="B"),
    }
    await add_child(alice, rooms["space"], rooms["subspace"], order="b")
    await add_child(alice, rooms["space"], rooms["room_a"], order="a", suggested=True)
    await add_child(alice, rooms["subspace"], rooms["room_b"])
    return rooms


async def test_walks_nested_spaces_depth_first(alice: Client) -> None:
    rooms = await nested_space(alice)
    body = assert_ok(await hierarchy(alice, rooms["space"]))
    order = ["space", "room_a", "subspace", "room_b"]
    assert room_ids(body) == [rooms[name] for name in order]
    assert "next_batch" not in body
    space, room_a, subspace, room_b = body["rooms"]
    assert space["room_type"] == "m.space"
    assert space["name"] == "Space"
    assert space["num_joined_members"] == 1
    assert space["world_readable"] is False
    assert space["guest_can_join"] is True  # the private_chat preset allows guests
    assert space["join_rule"] == "invite"
    assert space["room_version"] == "12"
    # The children in the spec's order ("order" first), as stripped events with a timestamp.
    children = space["children_state"]
    assert [c["state_key"] for c in children] == [rooms["room_a"], rooms["subspace"]]
    for child in children:
        assert child["type"] == "m.space.child"
        assert child["sender"] == alice.user_id
        assert isinstance(child["origin_server_ts"], int)
        assert child["content"]["via"] == ["localhost"]
        assert set(child) == {"type", "state_key", "content", "sender", "origin_server_ts"}
    assert room_a["topic"] == "about A"
    assert "room_type" not in room_a
    assert room_a["children_state"] == []
    assert [c["state_key"] for c in subspace["children_state"]] == [rooms["room_b"]]
    assert room_b["children_state"] == []
    # A subspace can be walked on its own.
    body = assert_ok(await hierarchy(alice, rooms["subspace"]))
    assert room_ids(body) == [rooms["subspace"], rooms["room_b"]]


async def test_max_depth_limits_the_walk(alice: Client) -> None:
    rooms = await nested_space(alice)
    body = assert_ok(await hierarchy(alice, rooms["space"], max_depth=0))
    assert room_ids(body) == [rooms["space"]]
    # The children are still listed; they are just not visited.
    assert len(body["rooms"][0]["children_state"]) == 2
    body = assert_ok(await hierarchy(alice, rooms["space"], max_depth=1))
    assert room_ids(body) == [rooms["space"], rooms["room_a"], rooms["subspace"]]


async def test_suggested_only(alice: Client) -> None:
    rooms = await nested_space(alice)
    body = assert_ok(await hierarchy(alice, rooms["space"], suggested_only="true"))
    assert room_ids(body) == [rooms["space"], rooms["room_a"]]
    assert [c["state_key"] for c in body["rooms"][0]["children_state"]] == [rooms["room_a"]]


async def test_pages_with_next_batch(alice: Client) -> None:
    rooms = await nested_space(alice)
    full = room_ids(assert_ok(await hierarchy(alice, rooms["space"])))
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    for _ in range(10):
        body = assert_ok(await hierarchy(alice, rooms["space"], **params))
        assert len(body["rooms"]) <= 1
        seen += room_ids(body)
        if "next_batch" not in body:
            break
        params["from"] = body["next_batch"]
    assert seen == full
    # Pages of two.
    first = assert_ok(await hierarchy(alice, rooms["space"], limit=2))
    assert room_ids(first) == full[:2]
    token = first["next_batch"]
    second = assert_ok(await hierarchy(alice, rooms["space"], limit=2, **{"from": token}))
    assert room_ids(second) == full[2:]
    assert "next_batch" not in second
    # A token is tied to the parameters it was made with (spec) and to the room.
    for changed in ({"suggested_only": "true"}, {"max_depth": 1}):
        response = await hierarchy(alice, rooms["space"], **{"from": token, **changed})
        assert_error(response, 400, "M_INVALID_PARAM")
    other = await hierarchy(alice, rooms["subspace"], **{"from": token})
    assert_error(other, 400, "M_INVALID_PARAM")
    unknown = await hierarchy(alice, rooms["space"], **{"from": "nonsense"})
    assert_error(unknown, 400, "M_INVALID_PARAM")


async def test_a_token_is_for_the_user_it_was_given_to(alice: Client, bob: Client) -> None:
    space = await create_space(alice, preset="public_chat")
    for name in ("one", "two"):
        await add_child(alice, space, await create_room(alice, preset="public_chat", name=name))
    token = assert_ok(await hierarchy(alice, space, limit=1))["next_batch"]
    assert_error(await hierarchy(bob, space, limit=1, **{"from": token}), 400, "M_INVALID_PARAM")


async def test_children_follow_join_rules_and_visibility(
    hs: InProcessServer, alice: Client, bob: Client
) -> None:
    space = await create_space(alice, preset="public_chat", name="Public space")
    public = await create_room(alice, preset="public_chat", name="public")
    private = await create_room(alice, name="private")
    readable = await create_room(alice, name="readable")
    await set_state(
        alice, readable, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    knock = await create_room(alice, name="knock")
    await set_state(alice, knock, "m.room.join_rules", {"join_rule": "knock"})
    invited = await create_room(alice, name="invited")
    await invite(alice, invited, bob.user_id)
    restricted = await create_room(alice, name="restricted")
    allow = [{"type": "m.room_membership", "room_id": space}]
    await set_state(
        alice, restricted, "m.room.join_rules", {"join_rule": "restricted", "allow": allow}
    )
    for order, child in enumerate([public, private, readable, knock, invited, restricted]):
        await add_child(alice, space, child, order=str(order))
    # Not children: no via, an empty via, a via of the wrong type; and a room this server is
    # not in is skipped.
    removed = await create_room(alice, preset="public_chat", name="removed")
    await set_state(alice, space, "m.space.child", {}, state_key=removed)
    await set_state(alice, space, "m.space.child", {"via": []}, state_key=public + "x")
    await set_state(alice, space, "m.space.child", {"via": [1]}, state_key=readable + "x")
    await add_child(alice, space, "!unknown:elsewhere.org", server="elsewhere.org", order="9")

    everything = [public, private, readable, knock, invited, restricted]
    body = assert_ok(await hierarchy(alice, space))
    assert room_ids(body) == [space, *everything]
    listed = [c["state_key"] for c in body["rooms"][0]["children_state"]]
    assert listed == [*everything, "!unknown:elsewhere.org"]
    # Bob is in no room yet: he sees what anyone may see, and what he is invited to.
    body = assert_ok(await hierarchy(bob, space))
    assert room_ids(body) == [space, public, readable, knock, invited]
    # Joining the space lets him see the room restricted to its members.
    await join(bob, space)
    body = assert_ok(await hierarchy(bob, space))
    assert room_ids(body) == [space, public, readable, knock, invited, restricted]
    entry = body["rooms"][-1]
    assert entry["join_rule"] == "restricted"
    assert "allowed_room_ids" not in entry  # Synapse keeps it for federation


async def test_root_must_be_accessible(alice: Client, bob: Client) -> None:
    space = await create_space(alice)
    assert_error(await hierarchy(bob, space), 403, "M_FORBIDDEN")
    # Rooms the server does not know (without federation) are refused the same way.
    assert_error(await hierarchy(alice, "!nowhere:localhost"), 403, "M_FORBIDDEN")
    # Not a space: the room itself, without children.
    room = await create_room(alice)
    body = assert_ok(await hierarchy(alice, room))
    assert room_ids(body) == [room]
    assert body["rooms"][0]["children_state"] == []


async def test_bad_parameters(alice: Client, http: httpx.AsyncClient) -> None:
    space = await create_space(alice)
    for params in (
        {"limit": 0},
        {"limit": -1},
        {"limit": "ten"},
        {"max_depth": -1},
        {"max_depth": "deep"},
        {"suggested_only": "maybe"},
    ):
        assert_error(await hierarchy(alice, space, **params), 400, "M_INVALID_PARAM")
    # Large limits are capped (50, as Synapse) rather than refused.
    assert_ok(await hierarchy(alice, space, limit=10**6, max_depth=10**6))
    response = await http.get(f"{V1}/rooms/{space}/hierarchy")
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_each_room_appears_once(alice: Client) -> None:
    rooms = await nested_space(alice)
    # A cycle (the subspace lists its parent) and a room listed by two spaces.
    await add_child(alice, rooms["subspace"], rooms["space"])
    await add_child(alice, rooms["subspace"], rooms["room_a"])
    body = assert_ok(await hierarchy(alice, rooms["space"]))
    assert room_ids(body) == [rooms[n] for n in ("space", "room_a", "subspace", "room_b")]


async def test_rooms_the_server_left_are_skipped(alice: Client, bob: Client) -> None:
    space = await create_space(alice, preset="public_chat")
    abandoned = await create_room(alice, preset="public_chat")
    kept = await create_room(alice, preset="public_chat")
    await add_child(alice, space, abandoned, order="1")
    await add_child(alice, space, kept, order="2")
    # The last local user leaves: the server drops the room's current state.
    assert_ok(await alice.post(f"/rooms/{abandoned}/leave", {}))
    body = assert_ok(await hierarchy(bob, space))
    assert room_ids(body) == [space, kept]


async def test_paging_tokens_expire(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        space = await env.create_room(alice, creation_content={"type": "m.space"})
        for name in ("one", "two"):
            child = await env.create_room(alice, name=name)
            intent = EventIntent("m.space.child", alice, {"via": ["blue"]}, state_key=child)
            await env.persister.submit(space, [intent])
        hierarchy = env.components.deps.hierarchy
        first = await hierarchy.hierarchy(alice, HierarchyQuery(space, limit=1))
        token = first["next_batch"]
        # Still valid a little before it expires (and more than once: a client may retry).
        await trio.sleep(SESSION_SECONDS - 1)
        query = HierarchyQuery(space, limit=1, from_token=token)
        again = await hierarchy.hierarchy(alice, query)
        retried = await hierarchy.hierarchy(alice, query)
        assert again["rooms"] == retried["rooms"] != first["rooms"]
        await trio.sleep(2)
        with pytest.raises(MatrixError) as caught:
            await hierarchy.hierarchy(alice, query)
        assert caught.value.errcode == "M_INVALID_PARAM"
