"""Account data and room tags over HTTP, and the account data stream's query API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join, leave
from tests.integration.writer_env import writer_env


def global_path(user_id: str, data_type: str) -> str:
    return f"/user/{user_id}/account_data/{data_type}"


def room_path(user_id: str, room_id: str, data_type: str) -> str:
    return f"/user/{user_id}/rooms/{room_id}/account_data/{data_type}"


def tags_path(user_id: str, room_id: str, tag: str | None = None) -> str:
    base = f"/user/{user_id}/rooms/{room_id}/tags"
    return base if tag is None else f"{base}/{tag}"


# -- Global and room account data ------------------------------------------------------------


async def test_global_account_data_round_trip(alice: Client) -> None:
    path = global_path(alice.user_id, "org.example.config")
    assert_error(await alice.get(path), 404, "M_NOT_FOUND")
    assert assert_ok(await alice.put(path, {"a": 1, "nested": {"b": [1, 2]}})) == {}
    assert assert_ok(await alice.get(path)) == {"a": 1, "nested": {"b": [1, 2]}}
    # PUT replaces the whole content; an empty object is content too.
    assert_ok(await alice.put(path, {}))
    assert assert_ok(await alice.get(path)) == {}


async def test_room_account_data_round_trip_is_separate_from_global(alice: Client) -> None:
    room_id = await create_room(alice)
    path = room_path(alice.user_id, room_id, "org.example.room")
    assert_error(await alice.get(path), 404, "M_NOT_FOUND")
    assert_ok(await alice.put(path, {"colour": "blue"}))
    assert assert_ok(await alice.get(path)) == {"colour": "blue"}
    # Spec: no inheritance between room and global account data.
    assert_error(
        await alice.get(global_path(alice.user_id, "org.example.room")), 404, "M_NOT_FOUND"
    )
    other_room = await create_room(alice)
    other = room_path(alice.user_id, other_room, "org.example.room")
    assert_error(await alice.get(other), 404, "M_NOT_FOUND")


async def test_other_users_account_data_is_403(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    assert_ok(await alice.put(global_path(alice.user_id, "x.y"), {"secret": 1}))
    assert_error(await bob.get(global_path(alice.user_id, "x.y")), 403, "M_FORBIDDEN")
    assert_error(await bob.put(global_path(alice.user_id, "x.y"), {}), 403, "M_FORBIDDEN")
    path = room_path(alice.user_id, room_id, "x.y")
    assert_error(await bob.get(path), 403, "M_FORBIDDEN")
    assert_error(await bob.put(path, {}), 403, "M_FORBIDDEN")
    # Checked before the body is read.
    response = await bob.http.put(
        "/_matrix/client/v3" + path, content=b"nope", headers=bob.headers
    )
    assert_error(response, 403, "M_FORBIDDEN")


@pytest.mark.parametrize("data_type", ["m.fully_read", "m.push_rules"])
async def test_server_managed_types_are_405(alice: Client, data_type: str) -> None:
    room_id = await create_room(alice)
    body = {"event_id": "$x"}
    assert_error(await alice.put(global_path(alice.user_id, data_type), body), 405, "M_BAD_JSON")
    response = await alice.put(room_path(alice.user_id, room_id, data_type), body)
    assert_error(response, 405, "M_BAD_JSON")


async def test_bad_room_ids_and_bodies_are_400(alice: Client) -> None:
    path = room_path(alice.user_id, "@notaroom:localhost", "x.y")
    assert_error(await alice.get(path), 400, "M_INVALID_PARAM")
    assert_error(await alice.put(path, {}), 400, "M_INVALID_PARAM")
    good = global_path(alice.user_id, "x.y")
    assert_error(await alice.put(good, [1, 2]), 400, "M_BAD_JSON")
    assert_error(await alice.put(good, "text"), 400, "M_BAD_JSON")
    response = await alice.http.put(
        "/_matrix/client/v3" + good, content=b"{", headers=alice.headers
    )
    assert_error(response, 400, "M_NOT_JSON")


async def test_account_data_needs_a_token(alice: Client) -> None:
    response = await alice.http.get("/_matrix/client/v3" + global_path(alice.user_id, "x.y"))
    assert_error(response, 401, "M_MISSING_TOKEN")


async def test_types_with_odd_characters(alice: Client) -> None:
    path = global_path(alice.user_id, "org.example%2Fslash%20space")
    assert_ok(await alice.put(path, {"ok": True}))
    assert assert_ok(await alice.get(path)) == {"ok": True}


# -- Tags --------------------------------------------------------------------------------------


async def test_tags_round_trip(alice: Client) -> None:
    room_id = await create_room(alice)
    assert assert_ok(await alice.get(tags_path(alice.user_id, room_id))) == {"tags": {}}
    assert_ok(await alice.put(tags_path(alice.user_id, room_id, "m.favourite"), {"order": 0.25}))
    assert_ok(await alice.put(tags_path(alice.user_id, room_id, "u.work"), {}))
    tags = assert_ok(await alice.get(tags_path(alice.user_id, room_id)))
    assert tags == {"tags": {"m.favourite": {"order": 0.25}, "u.work": {}}}
    # Re-tagging replaces the tag's content.
    assert_ok(await alice.put(tags_path(alice.user_id, room_id, "u.work"), {"order": 1}))
    assert_ok(await alice.delete(tags_path(alice.user_id, room_id, "m.favourite")))
    tags = assert_ok(await alice.get(tags_path(alice.user_id, room_id)))
    assert tags == {"tags": {"u.work": {"order": 1}}}
    # Deleting an absent tag is fine.
    assert assert_ok(await alice.delete(tags_path(alice.user_id, room_id, "u.none"))) == {}


async def test_tags_are_the_rooms_m_tag_account_data(alice: Client) -> None:
    room_id = await create_room(alice)
    assert_ok(await alice.put(tags_path(alice.user_id, room_id, "u.x"), {"order": 0.5}))
    content = assert_ok(await alice.get(room_path(alice.user_id, room_id, "m.tag")))
    assert content == {"tags": {"u.x": {"order": 0.5}}}


async def test_tag_names_up_to_255_bytes(alice: Client) -> None:
    room_id = await create_room(alice)
    longest = "u." + "é" * 126 + "x"  # 2 + 252 + 1 = 255 bytes
    assert_ok(await alice.put(tags_path(alice.user_id, room_id, longest), {}))
    too_long = "u." + "é" * 127
    response = await alice.put(tags_path(alice.user_id, room_id, too_long), {})
    assert_error(response, 400, "M_INVALID_PARAM")


@pytest.mark.parametrize("order", ["0.5", True, [0.5], {"x": 1}])
async def test_tag_order_must_be_a_number(alice: Client, order: Any) -> None:
    room_id = await create_room(alice)
    response = await alice.put(tags_path(alice.user_id, room_id, "u.x"), {"order": order})
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_tagging_needs_a_membership(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    response = await bob.put(tags_path(bob.user_id, room_id, "u.x"), {})
    assert_error(response, 403, "M_FORBIDDEN")
    # Any membership will do, as in Synapse: invited, or left.
    await invite(alice, room_id, bob.user_id)
    assert_ok(await bob.put(tags_path(bob.user_id, room_id, "u.invited"), {}))
    await join(bob, room_id)
    await leave(bob, room_id)
    assert_ok(await bob.put(tags_path(bob.user_id, room_id, "u.left"), {}))


async def test_other_users_tags_are_403(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    assert_error(await bob.get(tags_path(alice.user_id, room_id)), 403, "M_FORBIDDEN")
    response = await bob.put(tags_path(alice.user_id, room_id, "u.x"), {})
    assert_error(response, 403, "M_FORBIDDEN")
    response = await bob.delete(tags_path(alice.user_id, room_id, "u.x"))
    assert_error(response, 403, "M_FORBIDDEN")


async def test_tag_bodies_must_be_objects(alice: Client) -> None:
    room_id = await create_room(alice)
    response = await alice.put(tags_path(alice.user_id, room_id, "u.x"), [1])
    assert_error(response, 400, "M_BAD_JSON")
    assert_error(await alice.get(tags_path(alice.user_id, "bad")), 400, "M_INVALID_PARAM")


# -- The stream's query API --------------------------------------------------------------------


async def test_global_since_and_rooms_since(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        bob = await env.user("bob")
        room_a = await env.create_room(alice)
        room_b = await env.create_room(alice, name="b")
        data = env.components.deps.account_data
        start = data.position()
        assert env.components.deps.notifier.current_token().account_data == start
        await data.put(alice, alice, None, "x.one", {"n": 1})
        await data.put(alice, alice, room_a, "x.room", {"r": 1})
        middle = data.position()
        assert middle == start + 2
        await data.put(alice, alice, None, "x.two", {"n": 2})
        await data.put_tag(alice, alice, room_b, "u.t", {"order": 0.5})
        await data.put(bob, bob, None, "x.bob", {})

        initial = await data.global_since(alice, None)
        # An initial sync always carries the push rules too (spec "Push Rules: Events").
        assert [e["type"] for e in initial].count("m.push_rules") == 1
        assert [e for e in initial if e["type"] != "m.push_rules"] == [
            {"type": "x.one", "content": {"n": 1}},
            {"type": "x.two", "content": {"n": 2}},
        ]
        assert await data.global_since(alice, middle) == [{"type": "x.two", "content": {"n": 2}}]
        assert await data.global_since(alice, data.position()) == []
        assert await data.rooms_since(alice, [room_a, room_b], None) == {
            room_a: [{"type": "x.room", "content": {"r": 1}}],
            room_b: [{"type": "m.tag", "content": {"tags": {"u.t": {"order": 0.5}}}}],
        }
        assert await data.rooms_since(alice, [room_a, room_b], middle) == {
            room_b: [{"type": "m.tag", "content": {"tags": {"u.t": {"order": 0.5}}}}]
        }
        # Only the rooms asked about.
        assert await data.rooms_since(alice, [room_a], middle) == {}
        assert await data.rooms_since(alice, [], None) == {}


async def test_removing_the_last_tag_delivers_empty_tags(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        data = env.components.deps.account_data
        await data.put_tag(alice, alice, room_id, "u.t", {})
        before = data.position()
        await data.delete_tag(alice, alice, room_id, "u.t")
        assert data.position() == before + 1
        assert await data.rooms_since(alice, [room_id], before) == {
            room_id: [{"type": "m.tag", "content": {"tags": {}}}]
        }
        # Removing an absent tag changes nothing.
        await data.delete_tag(alice, alice, room_id, "u.t")
        assert data.position() == before + 1


async def test_changes_wake_only_the_owner(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        bob = await env.user("bob")
        notifier = env.components.deps.notifier
        data = env.components.deps.account_data
        with notifier.listen(alice, []) as mine, notifier.listen(bob, []) as theirs:
            await data.put(alice, alice, None, "x.y", {})
            assert await mine.wait(0.5)
            assert not await theirs.wait(0.01)


async def test_position_survives_a_restart(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        data = env.components.deps.account_data
        await data.put(alice, alice, None, "x.y", {"v": 1})
        await data.put(alice, alice, None, "x.y", {"v": 2})
        position = data.position()
    async with writer_env(tmp_path) as env:
        data = env.components.deps.account_data
        assert data.position() == position
        events = await data.global_since(alice, None)
        assert [e for e in events if e["type"] != "m.push_rules"] == [
            {"type": "x.y", "content": {"v": 2}}
        ]


async def test_a_null_tag_order_is_left_out(alice: Client) -> None:
    # Spec "Room Tagging": `order` is a number or absent, in GET /tags and in /sync alike.
    room_id = await create_room(alice)
    assert_ok(await alice.put(tags_path(alice.user_id, room_id, "u.x"), {"order": None}))
    tags = assert_ok(await alice.get(tags_path(alice.user_id, room_id)))
    assert tags == {"tags": {"u.x": {}}}
    body = assert_ok(await alice.get("/sync"))
    events = body["rooms"]["join"][room_id]["account_data"]["events"]
    assert {"type": "m.tag", "content": {"tags": {"u.x": {}}}} in events
