"""Profiles over HTTP: reading, setting and clearing fields, and the member events they cause."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

import trio

from trioserver.testing import InProcessServer

from tests.integration.client import V3, Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, join, leave, set_state


@pytest.fixture
async def carol(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("carol", "carolpw")
    return Client(http, user.user_id, user.access_token, user.device_id)


async def _member(client: Client, room_id: str, user_id: str) -> dict[str, Any]:
    path = f"/rooms/{room_id}/state/m.room.member/{user_id}"
    return assert_ok(await client.get(path, params={"format": "event"}))


async def _set(client: Client, key: str, value: Any, user_id: str | None = None) -> httpx.Response:
    return await client.put(f"/profile/{user_id or client.user_id}/{key}", {key: value})


# -- reading ---------------------------------------------------------------------------------


async def test_new_user_has_localpart_displayname_and_no_avatar(
    alice: Client, http: httpx.AsyncClient
) -> None:
    # No access token needed to read a profile.
    profile = assert_ok(await http.get(f"{V3}/profile/{alice.user_id}"))
    assert profile == {"displayname": "alice"}
    field = assert_ok(await http.get(f"{V3}/profile/{alice.user_id}/displayname"))
    assert field == {"displayname": "alice"}
    # Unset: 200 without the key, as Synapse (SyTest 10apidoc/11profile-avatar_url).
    assert assert_ok(await http.get(f"{V3}/profile/{alice.user_id}/avatar_url")) == {}


async def test_unknown_remote_and_invalid_users(alice: Client) -> None:
    for path in ("/profile/@nobody:localhost", "/profile/@nobody:localhost/displayname"):
        assert_error(await alice.get(path), 404, "M_NOT_FOUND")
    # A remote user's profile is asked of their server; one that cannot be reached is 502
    # (Synapse's answer). Federation between servers: test_federation_rooms.
    assert_error(await alice.get("/profile/@alice:elsewhere.example"), 502, "M_UNKNOWN")
    for path in ("/profile/alice", "/profile/not-a-user/displayname"):
        assert_error(await alice.get(path), 400, "M_INVALID_PARAM")


# -- setting and clearing ------------------------------------------------------------------


async def test_set_displayname_and_avatar_visible_in_profile(alice: Client) -> None:
    assert_ok(await _set(alice, "displayname", "Alice Liddell"))
    assert_ok(await _set(alice, "avatar_url", "mxc://localhost/abc"))
    profile = assert_ok(await alice.get(f"/profile/{alice.user_id}"))
    assert profile == {"displayname": "Alice Liddell", "avatar_url": "mxc://localhost/abc"}
    avatar = assert_ok(await alice.get(f"/profile/{alice.user_id}/avatar_url"))
    assert avatar == {"avatar_url": "mxc://localhost/abc"}
    # The r0 prefix older clients use reaches the same endpoints.
    legacy = await alice.http.get(f"/_matrix/client/r0/profile/{alice.user_id}/displayname")
    assert assert_ok(legacy) == {"displayname": "Alice Liddell"}


async def test_displayname_is_stripped_and_empty_clears(alice: Client) -> None:
    assert_ok(await _set(alice, "displayname", "  Spaced  "))
    assert assert_ok(await alice.get(f"/profile/{alice.user_id}")) == {"displayname": "Spaced"}
    assert_ok(await _set(alice, "displayname", ""))
    assert assert_ok(await alice.get(f"/profile/{alice.user_id}/displayname")) == {}
    # Nothing set at all: 404, like Synapse.
    assert_error(await alice.get(f"/profile/{alice.user_id}"), 404, "M_NOT_FOUND")
    assert_ok(await _set(alice, "avatar_url", "mxc://localhost/x"))
    profile = assert_ok(await alice.get(f"/profile/{alice.user_id}"))
    assert profile == {"avatar_url": "mxc://localhost/x"}
    assert_ok(await _set(alice, "avatar_url", ""))
    assert assert_ok(await alice.get(f"/profile/{alice.user_id}/avatar_url")) == {}


async def test_delete_clears_a_field(alice: Client) -> None:
    assert_ok(await _set(alice, "avatar_url", "mxc://localhost/x"))
    assert_ok(await alice.delete(f"/profile/{alice.user_id}/displayname"))
    assert_ok(await alice.delete(f"/profile/{alice.user_id}/avatar_url"))
    assert_error(await alice.get(f"/profile/{alice.user_id}"), 404, "M_NOT_FOUND")


async def test_cannot_change_someone_elses_profile(alice: Client, bob: Client) -> None:
    assert_error(await _set(alice, "displayname", "Bob?", bob.user_id), 403, "M_FORBIDDEN")
    assert_error(await _set(alice, "avatar_url", "mxc://a/b", bob.user_id), 403, "M_FORBIDDEN")
    path = f"/profile/{bob.user_id}/displayname"
    assert_error(await alice.delete(path), 403, "M_FORBIDDEN")
    assert_error(
        await _set(alice, "displayname", "x", "@bob:elsewhere.example"), 403, "M_FORBIDDEN"
    )
    assert assert_ok(await bob.get(f"/profile/{bob.user_id}")) == {"displayname": "bob"}


async def test_bad_bodies_are_refused(alice: Client, http: httpx.AsyncClient) -> None:
    path = f"/profile/{alice.user_id}/displayname"
    assert_error(await alice.put(path, {}), 400, "M_MISSING_PARAM")
    assert_error(await alice.put(path, {"avatar_url": "mxc://a/b"}), 400, "M_MISSING_PARAM")
    for bad in (None, 5, ["x"], {"a": 1}, True):
        assert_error(await _set(alice, "displayname", bad), 400, "M_INVALID_PARAM")
        assert_error(await _set(alice, "avatar_url", bad), 400, "M_INVALID_PARAM")
    assert_error(await _set(alice, "displayname", "x" * 257), 400, "M_INVALID_PARAM")
    assert_ok(await _set(alice, "displayname", "x" * 256))
    assert_error(await _set(alice, "avatar_url", "mxc://a/" + "b" * 1000), 400, "M_INVALID_PARAM")
    bad_json = await alice.http.put(V3 + path, content=b"{nope", headers=alice.headers)
    assert_error(bad_json, 400, "M_NOT_JSON")
    assert_error(await alice.put(path, [1]), 400, "M_BAD_JSON")
    unauthenticated = await http.put(V3 + path, json={"displayname": "x"})
    assert_error(unauthenticated, 401, "M_MISSING_TOKEN")
    assert assert_ok(await alice.get(f"/profile/{alice.user_id}"))["displayname"] == "x" * 256


# -- generic profile keys (v1.16) --------------------------------------------------------------


async def test_custom_keys_are_not_stored(alice: Client, bob: Client) -> None:
    base = f"/profile/{alice.user_id}"
    assert_error(await alice.get(f"{base}/m.tz"), 404, "M_NOT_FOUND")
    assert_error(await alice.get(f"{base}/org.example.pronouns"), 404, "M_NOT_FOUND")
    assert_error(await _set(alice, "m.tz", "Europe/London"), 403, "M_FORBIDDEN")
    assert_error(await _set(alice, "org.example.x", {"any": "json"}), 403, "M_FORBIDDEN")
    # Deleting a field that does not exist succeeds (spec: "deleted or doesn't exist").
    assert_ok(await alice.delete(f"{base}/org.example.x"))
    assert_error(await bob.delete(f"{base}/org.example.x"), 403, "M_FORBIDDEN")
    assert assert_ok(await alice.get(base)) == {"displayname": "alice"}


async def test_malformed_keys_are_refused(alice: Client) -> None:
    base = f"/profile/{alice.user_id}"
    for key in ("Capital", "has%20space", "1digit", "emoji%F0%9F%98%80"):
        assert_error(await alice.get(f"{base}/{key}"), 400, "M_INVALID_PARAM")
        assert_error(await alice.put(f"{base}/{key}", {"x": 1}), 400, "M_INVALID_PARAM")
        assert_error(await alice.delete(f"{base}/{key}"), 400, "M_INVALID_PARAM")
    long_key = "a" * 256
    assert_error(await alice.get(f"{base}/{long_key}"), 400, "M_KEY_TOO_LARGE")
    assert_error(await alice.put(f"{base}/{long_key}", {long_key: 1}), 400, "M_KEY_TOO_LARGE")


# -- member events ---------------------------------------------------------------------------


async def test_change_sends_new_join_events_into_joined_rooms(alice: Client, bob: Client) -> None:
    assert_ok(await _set(alice, "avatar_url", "mxc://localhost/face"))
    first = await create_room(alice)
    second = await create_room(alice, preset="public_chat")
    join_event = await _member(alice, second, alice.user_id)
    left = await create_room(alice, preset="public_chat")
    await join(bob, left)
    await leave(alice, left)
    left_member = await _member(bob, left, alice.user_id)

    assert_ok(await _set(alice, "displayname", "Queen Alice"))

    for room_id in (first, second):
        event = await _member(alice, room_id, alice.user_id)
        assert event["content"] == {
            "membership": "join",
            "displayname": "Queen Alice",
            "avatar_url": "mxc://localhost/face",
        }
        assert event["sender"] == alice.user_id
    changed = await _member(alice, second, alice.user_id)
    assert changed["event_id"] != join_event["event_id"]
    assert changed["unsigned"]["replaces_state"] == join_event["event_id"]
    assert changed["unsigned"]["prev_content"]["displayname"] == "alice"
    # Rooms the user has left are not touched.
    assert (await _member(bob, left, alice.user_id))["event_id"] == left_member["event_id"]


async def test_clearing_removes_the_field_from_member_events(alice: Client) -> None:
    room_id = await create_room(alice)
    assert_ok(await _set(alice, "avatar_url", "mxc://localhost/face"))
    assert (await _member(alice, room_id, alice.user_id))["content"]["avatar_url"] == (
        "mxc://localhost/face"
    )
    assert_ok(await alice.delete(f"/profile/{alice.user_id}/avatar_url"))
    content = (await _member(alice, room_id, alice.user_id))["content"]
    assert content == {"membership": "join", "displayname": "alice"}
    assert_ok(await _set(alice, "displayname", ""))
    content = (await _member(alice, room_id, alice.user_id))["content"]
    assert content == {"membership": "join"}


async def test_other_member_content_is_kept_but_not_the_join_reason(alice: Client) -> None:
    room_id = await create_room(alice)
    content = {"membership": "join", "reason": "hi", "org.example.flair": "gold"}
    set_path = f"/rooms/{room_id}/state/m.room.member/{alice.user_id}"
    assert_ok(await alice.put(set_path, content))
    assert_ok(await _set(alice, "displayname", "Flair"))
    event = await _member(alice, room_id, alice.user_id)
    assert event["content"] == {
        "membership": "join",
        "displayname": "Flair",
        "org.example.flair": "gold",
    }


async def test_unchanged_profile_sends_no_new_event(alice: Client, carol: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(carol, room_id)
    assert_ok(await _set(alice, "displayname", "Same"))
    before = await _member(alice, room_id, alice.user_id)
    assert_ok(await _set(alice, "displayname", "Same"))
    after = await _member(alice, room_id, alice.user_id)
    assert after["event_id"] == before["event_id"]
    # Carol's membership is untouched by Alice's change.
    assert (await _member(carol, room_id, carol.user_id))["content"]["displayname"] == "carol"


async def test_profile_change_in_a_room_where_the_user_lost_power(
    alice: Client, bob: Client
) -> None:
    # Member events for oneself need no power: a user with level 0 and a room whose
    # state_default is high still gets the update.
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    levels = assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.power_levels"))
    levels["state_default"] = 100
    levels["users_default"] = 0
    await set_state(alice, room_id, "m.room.power_levels", levels)
    assert_ok(await _set(bob, "displayname", "Bobby"))
    assert (await _member(alice, room_id, bob.user_id))["content"]["displayname"] == "Bobby"


async def test_concurrent_changes_leave_member_events_matching_the_profile(alice: Client) -> None:
    rooms = [await create_room(alice) for _ in range(3)]
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(_set, alice, "displayname", f"name {i}")
    final = assert_ok(await alice.get(f"/profile/{alice.user_id}/displayname"))["displayname"]
    for room_id in rooms:
        assert (await _member(alice, room_id, alice.user_id))["content"]["displayname"] == final
