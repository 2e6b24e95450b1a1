"""Room aliases, canonical aliases and the published room directory over HTTP."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest

from trioserver.testing import InProcessServer

from tests.integration.client import V3, Client, assert_error, assert_ok
from tests.integration.room_helpers import (
    create_room,
    join,
    set_state,
    set_visibility,
)


@pytest.fixture
async def carol(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("carol", "carolpw")
    return Client(http, user.user_id, user.access_token, user.device_id)


@pytest.fixture
async def admin(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("root", "rootpw", admin=True)
    return Client(http, user.user_id, user.access_token, user.device_id)


def _alias_path(alias: str) -> str:
    return f"/directory/room/{quote(alias)}"


async def _put_alias(client: Client, alias: str, room_id: str) -> httpx.Response:
    return await client.put(_alias_path(alias), {"room_id": room_id})


async def _canonical(client: Client, room_id: str) -> dict[str, Any]:
    return assert_ok(await client.get(f"/rooms/{room_id}/state/m.room.canonical_alias"))


# -- aliases ---------------------------------------------------------------------------------


async def test_alias_round_trip(alice: Client, http: httpx.AsyncClient) -> None:
    room_id = await create_room(alice)
    assert assert_ok(await _put_alias(alice, "#cats:localhost", room_id)) == {}
    # Resolving needs no access token.
    resolved = assert_ok(await http.get(V3 + _alias_path("#cats:localhost")))
    assert resolved == {"room_id": room_id, "servers": ["localhost"]}
    listed = assert_ok(await alice.get(f"/rooms/{room_id}/aliases"))
    assert listed == {"aliases": ["#cats:localhost"]}
    # Joining by alias uses the same mapping.
    assert_ok(await alice.delete(_alias_path("#cats:localhost")))
    assert_error(await alice.get(_alias_path("#cats:localhost")), 404, "M_NOT_FOUND")
    assert assert_ok(await alice.get(f"/rooms/{room_id}/aliases")) == {"aliases": []}


async def test_alias_can_be_used_to_join(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    assert_ok(await _put_alias(alice, "#lobby:localhost", room_id))
    joined = assert_ok(await bob.post(f"/join/{quote('#lobby:localhost')}", {}))
    assert joined == {"room_id": room_id}


async def test_duplicate_alias_is_409(alice: Client) -> None:
    first = await create_room(alice)
    second = await create_room(alice)
    assert_ok(await _put_alias(alice, "#taken:localhost", first))
    body = assert_error(await _put_alias(alice, "#taken:localhost", second), 409, "M_UNKNOWN")
    assert "already exists" in body["error"]
    resolved = assert_ok(await alice.get(_alias_path("#taken:localhost")))
    assert resolved["room_id"] == first


async def test_bad_aliases_are_400(alice: Client) -> None:
    room_id = await create_room(alice)
    for alias in (
        "nohash:localhost",
        "#nodomain",
        "#a:bad domain",
        "#" + "a" * 260 + ":localhost",
    ):
        assert_error(await _put_alias(alice, alias, room_id), 400, "M_INVALID_PARAM")
        assert_error(await alice.get(_alias_path(alias)), 400, "M_INVALID_PARAM")
        assert_error(await alice.delete(_alias_path(alias)), 400, "M_INVALID_PARAM")
    # Aliases are only created on this server's domain, and without whitespace.
    assert_error(await _put_alias(alice, "#x:elsewhere.example", room_id), 400, "M_INVALID_PARAM")
    assert_error(await _put_alias(alice, "#a b:localhost", room_id), 400, "M_INVALID_PARAM")
    # Another server's alias is asked of it over federation; one that cannot be reached is
    # 502, as Synapse answers.
    assert_error(await alice.get(_alias_path("#x:elsewhere.example")), 502, "M_UNKNOWN")


async def test_put_alias_body_and_room_checks(alice: Client, http: httpx.AsyncClient) -> None:
    room_id = await create_room(alice)
    path = _alias_path("#body:localhost")
    assert_error(await alice.put(path, {}), 400, "M_MISSING_PARAM")
    assert_error(await alice.put(path, {"room_id": 5}), 400, "M_INVALID_PARAM")
    # Like Synapse: an unknown room is a 400, not a 404.
    assert_error(await alice.put(path, {"room_id": "!nope:localhost"}), 400, "M_UNKNOWN")
    unauthenticated = await http.put(V3 + path, json={"room_id": room_id})
    assert_error(unauthenticated, 401, "M_MISSING_TOKEN")


async def test_creating_an_alias_needs_membership_unless_admin(
    alice: Client, bob: Client, admin: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    assert_error(await _put_alias(bob, "#bobs:localhost", room_id), 403, "M_FORBIDDEN")
    assert_ok(await _put_alias(admin, "#admins:localhost", room_id))
    await join(bob, room_id)
    assert_ok(await _put_alias(bob, "#bobs:localhost", room_id))


async def test_delete_permissions(
    alice: Client, bob: Client, carol: Client, admin: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    for name in ("one", "two", "three"):
        assert_ok(await _put_alias(alice, f"#{name}:localhost", room_id))
    assert_ok(await _put_alias(carol, "#carols:localhost", room_id))
    # Bob neither created the alias nor may send m.room.canonical_alias (level 50).
    assert_error(await bob.delete(_alias_path("#one:localhost")), 403, "M_FORBIDDEN")
    # The creator of an alias may delete it without power in the room.
    assert_ok(await carol.delete(_alias_path("#carols:localhost")))
    # Someone who may send m.room.canonical_alias may delete others' aliases.
    levels = assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.power_levels"))
    levels["users"][bob.user_id] = 50
    await set_state(alice, room_id, "m.room.power_levels", levels)
    assert_ok(await bob.delete(_alias_path("#one:localhost")))
    # A server admin may delete any alias, even outside the room.
    assert_ok(await admin.delete(_alias_path("#two:localhost")))
    assert_error(await carol.delete(_alias_path("#three:localhost")), 403, "M_FORBIDDEN")
    assert_error(await alice.delete(_alias_path("#one:localhost")), 404, "M_NOT_FOUND")
    aliases = assert_ok(await alice.get(f"/rooms/{room_id}/aliases"))["aliases"]
    assert aliases == ["#three:localhost"]


async def test_local_aliases_need_membership_or_world_readable(
    alice: Client, bob: Client, admin: Client
) -> None:
    room_id = await create_room(alice, room_alias_name="hidden")
    assert_error(await bob.get(f"/rooms/{room_id}/aliases"), 403, "M_FORBIDDEN")
    assert_error(await bob.get("/rooms/!unknown:localhost/aliases"), 403, "M_FORBIDDEN")
    expected = {"aliases": ["#hidden:localhost"]}
    assert assert_ok(await admin.get(f"/rooms/{room_id}/aliases")) == expected
    await set_visibility(alice, room_id, "world_readable")
    assert assert_ok(await bob.get(f"/rooms/{room_id}/aliases")) == expected


# -- canonical aliases -----------------------------------------------------------------------


async def test_canonical_alias_must_point_to_the_room(alice: Client) -> None:
    room_id = await create_room(alice)
    other = await create_room(alice)
    assert_ok(await _put_alias(alice, "#other:localhost", other))
    path = f"/rooms/{room_id}/state/m.room.canonical_alias"
    assert_error(await alice.put(path, {"alias": "#missing:localhost"}), 400, "M_BAD_ALIAS")
    assert_error(await alice.put(path, {"alias": "#other:localhost"}), 400, "M_BAD_ALIAS")
    body = {"alt_aliases": ["#other:localhost"]}
    assert_error(await alice.put(path, body), 400, "M_BAD_ALIAS")
    assert_error(await alice.put(path, {"alias": "not an alias"}), 400, "M_INVALID_PARAM")
    assert_ok(await _put_alias(alice, "#mine:localhost", room_id))
    assert_ok(await alice.put(path, {"alias": "#mine:localhost"}))


async def test_deleting_an_alias_removes_it_from_the_canonical_alias(alice: Client) -> None:
    room_id = await create_room(alice, room_alias_name="main")
    assert await _canonical(alice, room_id) == {"alias": "#main:localhost"}
    for name in ("alt1", "alt2"):
        assert_ok(await _put_alias(alice, f"#{name}:localhost", room_id))
    content = {"alias": "#main:localhost", "alt_aliases": ["#alt1:localhost", "#alt2:localhost"]}
    await set_state(alice, room_id, "m.room.canonical_alias", content)

    assert_ok(await alice.delete(_alias_path("#alt1:localhost")))
    assert await _canonical(alice, room_id) == {
        "alias": "#main:localhost",
        "alt_aliases": ["#alt2:localhost"],
    }
    assert_ok(await alice.delete(_alias_path("#alt2:localhost")))
    assert await _canonical(alice, room_id) == {"alias": "#main:localhost"}
    assert_ok(await alice.delete(_alias_path("#main:localhost")))
    assert await _canonical(alice, room_id) == {}


async def test_deleting_is_allowed_without_power_to_update_the_canonical_alias(
    alice: Client, bob: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    assert_ok(await _put_alias(bob, "#bobs:localhost", room_id))
    content = {"alt_aliases": ["#bobs:localhost"]}
    event_id = await set_state(alice, room_id, "m.room.canonical_alias", content)
    # Spec: the alias goes and the request succeeds even though Bob cannot send the update.
    assert_ok(await bob.delete(_alias_path("#bobs:localhost")))
    assert_error(await bob.get(_alias_path("#bobs:localhost")), 404, "M_NOT_FOUND")
    state = f"/rooms/{room_id}/state/m.room.canonical_alias"
    event = assert_ok(await alice.get(state, params={"format": "event"}))
    assert event["event_id"] == event_id


# -- directory visibility --------------------------------------------------------------------


async def test_room_visibility_get_and_put(
    alice: Client, bob: Client, admin: Client, http: httpx.AsyncClient
) -> None:
    private = await create_room(alice)
    public = await create_room(alice, visibility="public")
    vis = f"{V3}/directory/list/room"
    assert assert_ok(await http.get(f"{vis}/{private}")) == {"visibility": "private"}
    assert assert_ok(await http.get(f"{vis}/{public}")) == {"visibility": "public"}
    assert_error(await http.get(f"{vis}/!unknown:localhost"), 404, "M_NOT_FOUND")

    path = f"/directory/list/room/{private}"
    assert_ok(await alice.put(path, {"visibility": "public"}))
    assert assert_ok(await alice.get(path)) == {"visibility": "public"}
    assert_ok(await alice.put(path, {"visibility": "private"}))
    # Synapse and the spec: the visibility defaults to public.
    assert_ok(await alice.put(path, {}))
    assert assert_ok(await alice.get(path)) == {"visibility": "public"}
    assert_error(await alice.put(path, {"visibility": "secret"}), 400, "M_INVALID_PARAM")
    assert_error(await alice.put(path, {"visibility": 1}), 400, "M_INVALID_PARAM")
    assert_error(
        await alice.put("/directory/list/room/!unknown:localhost", {"visibility": "public"}),
        404,
        "M_NOT_FOUND",
    )
    # Not in the room / not a moderator of it: refused. Server admins may.
    assert_error(await bob.put(path, {"visibility": "private"}), 403, "M_FORBIDDEN")
    await join(bob, public)
    bob_path = f"/directory/list/room/{public}"
    assert_error(await bob.put(bob_path, {"visibility": "private"}), 403, "M_FORBIDDEN")
    assert_ok(await admin.put(path, {"visibility": "private"}))
    assert assert_ok(await alice.get(path)) == {"visibility": "private"}
    assert_error(await http.put(V3 + path, json={}), 401, "M_MISSING_TOKEN")


# -- /publicRooms ----------------------------------------------------------------------------


async def _public_rooms_fixture(alice: Client, bob: Client, carol: Client) -> list[str]:
    """Three published rooms with 3, 2 and 1 members (in that order), plus hidden ones."""
    big = await create_room(
        alice, visibility="public", name="Big Room", topic="Lots of CATS", room_alias_name="big"
    )
    middle = await create_room(alice, visibility="public", name="Middle")
    small = await create_room(
        alice, visibility="public", creation_content={"type": "m.space"}, topic="a space"
    )
    for client in (bob, carol):
        await join(client, big)
    await join(bob, middle)
    # Not published, and published but invite-only: neither is listed.
    await create_room(alice, preset="public_chat", name="Big unpublished")
    await create_room(alice, visibility="public", preset="private_chat", name="Big invite-only")
    return [big, middle, small]


async def test_public_rooms_lists_published_rooms_biggest_first(
    alice: Client, bob: Client, carol: Client, http: httpx.AsyncClient
) -> None:
    big, middle, small = await _public_rooms_fixture(alice, bob, carol)
    # No access token needed for GET.
    body = assert_ok(await http.get(f"{V3}/publicRooms"))
    assert [r["room_id"] for r in body["chunk"]] == [big, middle, small]
    assert body["total_room_count_estimate"] == 3
    assert "next_batch" not in body
    assert "prev_batch" not in body
    entry = body["chunk"][0]
    assert entry == {
        "room_id": big,
        "num_joined_members": 3,
        "name": "Big Room",
        "topic": "Lots of CATS",
        "canonical_alias": "#big:localhost",
        "world_readable": False,
        "guest_can_join": False,
        "join_rule": "public",
    }
    assert body["chunk"][2]["room_type"] == "m.space"
    assert "name" not in body["chunk"][2]


async def test_public_rooms_reflect_current_state(
    alice: Client, bob: Client, carol: Client
) -> None:
    big, middle, _ = await _public_rooms_fixture(alice, bob, carol)
    await set_state(alice, middle, "m.room.name", {"name": "Renamed"})
    await set_state(alice, middle, "m.room.avatar", {"url": "mxc://localhost/av"})
    await set_state(alice, middle, "m.room.guest_access", {"guest_access": "can_join"})
    await set_visibility(alice, middle, "world_readable")
    body = assert_ok(await alice.get("/publicRooms"))
    entry = next(r for r in body["chunk"] if r["room_id"] == middle)
    assert entry["name"] == "Renamed"
    assert entry["avatar_url"] == "mxc://localhost/av"
    assert entry["world_readable"] is True
    assert entry["guest_can_join"] is True
    # Unpublishing hides the room.
    assert_ok(await alice.put(f"/directory/list/room/{big}", {"visibility": "private"}))
    body = assert_ok(await alice.get("/publicRooms"))
    assert big not in [r["room_id"] for r in body["chunk"]]


async def _page_all(client: Client, token_key: str, first: dict[str, Any]) -> list[Any]:
    pages = [first]
    while token_key in pages[-1]:
        since = pages[-1][token_key]
        pages.append(
            assert_ok(await client.get("/publicRooms", params={"limit": 1, "since": since}))
        )
        assert len(pages) < 10
    return pages


async def test_public_rooms_paging_forwards_and_back(
    alice: Client, bob: Client, carol: Client
) -> None:
    rooms = await _public_rooms_fixture(alice, bob, carol)
    first = assert_ok(await alice.get("/publicRooms", params={"limit": 1}))
    assert "prev_batch" not in first
    pages = await _page_all(alice, "next_batch", first)
    assert [r["room_id"] for page in pages for r in page["chunk"]] == rooms
    assert all(len(page["chunk"]) == 1 for page in pages)
    assert all(page["total_room_count_estimate"] == 3 for page in pages)
    assert "next_batch" not in pages[-1]
    assert all("prev_batch" in page for page in pages[1:])
    # Back from the last page to the first.
    back = await _page_all(alice, "prev_batch", pages[-1])
    assert [r["room_id"] for page in back for r in page["chunk"]] == rooms[::-1]
    assert "prev_batch" not in back[-1]
    assert all("next_batch" in page for page in back[1:])


async def test_public_rooms_post_paging_and_limits(
    alice: Client, bob: Client, carol: Client
) -> None:
    rooms = await _public_rooms_fixture(alice, bob, carol)
    page = assert_ok(await alice.post("/publicRooms", {"limit": 2}))
    assert [r["room_id"] for r in page["chunk"]] == rooms[:2]
    page = assert_ok(await alice.post("/publicRooms", {"limit": 2, "since": page["next_batch"]}))
    assert [r["room_id"] for r in page["chunk"]] == rooms[2:]
    assert "next_batch" not in page
    # limit 0 means "no limit"; an empty body lists everything.
    assert len(assert_ok(await alice.post("/publicRooms", {"limit": 0}))["chunk"]) == 3
    assert len(assert_ok(await alice.post("/publicRooms", {}))["chunk"]) == 3
    assert_error(await alice.post("/publicRooms", {"limit": -1}), 400, "M_INVALID_PARAM")
    assert_error(await alice.post("/publicRooms", {"limit": "2"}), 400, "M_INVALID_PARAM")
    assert_error(await alice.get("/publicRooms", params={"limit": -1}), 400, "M_INVALID_PARAM")
    assert_error(await alice.get("/publicRooms", params={"limit": "x"}), 400, "M_INVALID_PARAM")
    for token in ("garbage!", "WzEsMl0"):
        bad = await alice.get("/publicRooms", params={"since": token})
        assert_error(bad, 400, "M_INVALID_PARAM")


async def test_public_rooms_search_filter(alice: Client, bob: Client, carol: Client) -> None:
    big, middle, small = await _public_rooms_fixture(alice, bob, carol)

    async def search(**search_filter: Any) -> list[str]:
        body = assert_ok(await alice.post("/publicRooms", {"filter": search_filter}))
        assert body["total_room_count_estimate"] == len(body["chunk"])
        return [r["room_id"] for r in body["chunk"]]

    assert await search(generic_search_term="cats") == [big]  # topic, any case
    assert await search(generic_search_term="MIDDLE") == [middle]  # name
    assert await search(generic_search_term="#big:") == [big]  # canonical alias
    assert await search(generic_search_term="room") == [big]
    assert await search(generic_search_term="nothing like it") == []
    assert await search(generic_search_term="") == [big, middle, small]
    assert await search(room_types=["m.space"]) == [small]
    assert await search(room_types=[None]) == [big, middle]
    assert await search(room_types=[None, "m.space"]) == [big, middle, small]
    assert await search(room_types=[]) == [big, middle, small]
    bad_filters: list[Any] = [{"generic_search_term": 5}, {"room_types": "m.space"}, "x"]
    for bad in bad_filters:
        assert_error(await alice.post("/publicRooms", {"filter": bad}), 400, "M_INVALID_PARAM")


async def test_public_rooms_networks_and_servers(
    alice: Client, bob: Client, carol: Client, http: httpx.AsyncClient
) -> None:
    await _public_rooms_fixture(alice, bob, carol)
    everything = {"include_all_networks": True}
    assert len(assert_ok(await alice.post("/publicRooms", everything))["chunk"]) == 3
    # No application service publishes to a third-party network here.
    network = assert_ok(await alice.post("/publicRooms", {"third_party_instance_id": "irc"}))
    assert network["chunk"] == []
    both = {"include_all_networks": True, "third_party_instance_id": "irc"}
    assert_error(await alice.post("/publicRooms", both), 400, "M_INVALID_PARAM")
    ours = assert_ok(await alice.get("/publicRooms", params={"server": "localhost"}))
    assert len(ours["chunk"]) == 3
    # Another server's directory is asked of it over federation (unreachable here: 502).
    remote = await alice.get("/publicRooms", params={"server": "elsewhere.example"})
    assert_error(remote, 502, "M_UNKNOWN")
    invalid = await alice.post("/publicRooms", {}, params={"server": "bad server"})
    assert_error(invalid, 400, "M_INVALID_PARAM")
    assert_error(await http.post(f"{V3}/publicRooms", json={}), 401, "M_MISSING_TOKEN")


async def test_public_rooms_leave_out_empty_rooms(alice: Client) -> None:
    room_id = await create_room(alice, visibility="public", name="Soon empty")
    assert len(assert_ok(await alice.get("/publicRooms"))["chunk"]) == 1
    assert_ok(await alice.post(f"/rooms/{room_id}/leave", {}))
    assert assert_ok(await alice.get("/publicRooms"))["chunk"] == []
