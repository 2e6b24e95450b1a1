"""POST /rooms/{roomId}/upgrade over real HTTP (what SyTest tests/30rooms/60version_upgrade.pl
checks without federation), for old and new rooms of versions 1-12."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, join, send, set_state


async def upgrade(client: Client, room_id: str, version: str = "2", **extra: Any) -> str:
    body = assert_ok(
        await client.post(f"/rooms/{room_id}/upgrade", {"new_version": version, **extra})
    )
    return str(body["replacement_room"])


async def state(client: Client, room_id: str, event_type: str, key: str = "") -> Any:
    return assert_ok(await client.get(f"/rooms/{room_id}/state/{event_type}/{key}"))


async def sync(client: Client, since: str | None = None) -> dict[str, Any]:
    params = {"since": since} if since is not None else {}
    return assert_ok(await client.get("/sync", params=params))


async def change_power_levels(client: Client, room_id: str, **changes: Any) -> dict[str, Any]:
    content = await state(client, room_id, "m.room.power_levels")
    for key, value in changes.items():
        if isinstance(value, dict):
            content[key] = {**content.get(key, {}), **value}
        else:
            content[key] = value
    await set_state(client, room_id, "m.room.power_levels", content)
    return dict(content)


@pytest.mark.parametrize(
    ("old", "new"), [("10", "2"), ("12", "2"), ("1", "11"), ("10", "12"), ("12", "12")]
)
async def test_upgrade_creates_a_linked_room(alice: Client, old: str, new: str) -> None:
    room_id = await create_room(alice, room_version=old)
    since = (await sync(alice))["next_batch"]
    new_room = await upgrade(alice, room_id, new)
    body = await sync(alice, since)
    new_events = body["rooms"]["join"][new_room]["timeline"]["events"]
    create = new_events[0]
    assert create["type"] == "m.room.create"
    assert create["content"]["room_version"] == new
    tombstone = body["rooms"]["join"][room_id]["timeline"]["events"][0]
    assert tombstone["type"] == "m.room.tombstone"
    assert tombstone["content"]["replacement_room"] == new_room
    predecessor = create["content"]["predecessor"]
    assert predecessor["room_id"] == room_id
    if new == "12":
        # MSC4291: the new room's id hashes its create event, which cannot name the tombstone.
        assert "event_id" not in predecessor
    else:
        assert predecessor["event_id"] == tombstone["event_id"]
    assert (await state(alice, room_id, "m.room.tombstone"))["replacement_room"] == new_room


@pytest.mark.parametrize("visibility", ["public", "private"])
async def test_upgrade_keeps_directory_visibility(alice: Client, visibility: str) -> None:
    room_id = await create_room(alice, room_version="10")
    assert_ok(await alice.put(f"/directory/list/room/{room_id}", {"visibility": visibility}))
    new_room = await upgrade(alice, room_id)
    listed = assert_ok(await alice.get(f"/directory/list/room/{new_room}"))
    assert listed["visibility"] == visibility
    old_listed = assert_ok(await alice.get(f"/directory/list/room/{room_id}"))
    assert old_listed["visibility"] == "private"


async def test_upgrade_copies_power_levels_over_100(alice: Client) -> None:
    users = {alice.user_id: 500}
    room_id = await create_room(
        alice, room_version="10", power_level_content_override={"users": users}
    )
    new_room = await upgrade(alice, room_id)
    assert (await state(alice, new_room, "m.room.power_levels"))["users"] == users


@pytest.mark.parametrize("old", ["10", "12"])
async def test_upgrade_copies_the_power_levels(alice: Client, old: str) -> None:
    room_id = await create_room(alice, room_version=old)
    levels = await change_power_levels(alice, room_id, users={"@test:xyz": 40})
    new_room = await upgrade(alice, room_id)
    assert await state(alice, new_room, "m.room.power_levels") == levels


async def test_upgrade_keeps_the_upgraders_level(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, room_version="10", preset="public_chat")
    await join(bob, room_id)
    levels = await change_power_levels(
        alice, room_id, users={bob.user_id: 50}, events={"m.room.tombstone": 50}
    )
    new_room = await upgrade(bob, room_id)
    # Bob could copy all state only at 100; he is back at 50 afterwards.
    assert await state(bob, new_room, "m.room.power_levels") == levels
    # A moderator may not change the old room's levels, so they stay as they were.
    assert await state(bob, room_id, "m.room.power_levels") == levels


async def test_upgrade_copies_important_state_and_bans(alice: Client) -> None:
    room_id = await create_room(alice, room_version="10")
    copied: dict[str, dict[str, Any]] = {
        "m.room.topic": {"topic": "topic"},
        "m.room.name": {"name": "name"},
        "m.room.join_rules": {"join_rule": "public"},
        "m.room.guest_access": {"guest_access": "forbidden"},
        "m.room.history_visibility": {"history_visibility": "joined"},
        "m.room.avatar": {"url": "http://something"},
        "m.room.encryption": {"algorithm": "m.megolm.v1.aes-sha2"},
        "m.room.server_acl": {
            "allow": ["*"],
            "allow_ip_literals": False,
            "deny": ["*.evil.com", "evil.com"],
        },
    }
    for event_type, content in copied.items():
        await set_state(alice, room_id, event_type, content)
    await set_state(alice, room_id, "m.room.member", {"membership": "ban"}, "@bob:matrix.org")
    new_room = await upgrade(alice, room_id)
    for event_type, content in copied.items():
        assert await state(alice, new_room, event_type) == content
    ban = await state(alice, new_room, "m.room.member", "@bob:matrix.org")
    assert ban == {"membership": "ban"}


async def test_upgrade_moves_aliases_and_canonical_alias(alice: Client) -> None:
    room_id = await create_room(alice, room_version="10")
    first, second = "#first:localhost", "#second:localhost"
    for alias in (first, second):
        assert_ok(await alice.put(f"/directory/room/{quote(alias)}", {"room_id": room_id}))
    canonical = {"alias": first, "alt_aliases": [second]}
    await set_state(alice, room_id, "m.room.canonical_alias", canonical)
    new_room = await upgrade(alice, room_id)
    assert await state(alice, room_id, "m.room.canonical_alias") == {}
    assert await state(alice, new_room, "m.room.canonical_alias") == canonical
    for alias in (first, second):
        resolved = assert_ok(await alice.get(f"/directory/room/{quote(alias)}"))
        assert resolved["room_id"] == new_room
    assert assert_ok(await alice.get(f"/rooms/{new_room}/aliases"))["aliases"] == [first, second]


async def test_upgrade_keeps_direct_chats_and_tags(alice: Client) -> None:
    room_id = await create_room(alice, room_version="10")
    path = f"/user/{alice.user_id}/account_data/m.direct"
    assert_ok(await alice.put(path, {alice.user_id: [room_id]}))
    assert_ok(await alice.put(f"/user/{alice.user_id}/rooms/{room_id}/tags/work", {"order": 1}))
    new_room = await upgrade(alice, room_id)
    direct = assert_ok(await alice.get(path))
    assert direct == {alice.user_id: [room_id, new_room]}
    tags = assert_ok(await alice.get(f"/user/{alice.user_id}/rooms/{new_room}/tags"))
    assert tags == {"tags": {"work": {"order": 1}}}


async def test_upgrade_keeps_federation_flag_and_room_type(alice: Client) -> None:
    room_id = await create_room(
        alice, room_version="10", creation_content={"m.federate": False, "type": "m.space"}
    )
    await set_state(alice, room_id, "m.space.child", {"via": ["localhost"]}, "!child:localhost")
    await set_state(alice, room_id, "m.space.child", {}, "!gone:localhost")
    new_room = await upgrade(alice, room_id, "11")
    create = await state(alice, new_room, "m.room.create")
    assert create["m.federate"] is False
    assert create["type"] == "m.space"
    assert await state(alice, new_room, "m.space.child", "!child:localhost") == {
        "via": ["localhost"]
    }
    missing = await alice.get(f"/rooms/{new_room}/state/m.space.child/!gone:localhost")
    assert_error(missing, 404, "M_NOT_FOUND")


@pytest.mark.parametrize(("users_default", "restricted"), [(0, 50), (80, 81)])
async def test_upgrade_restricts_the_old_rooms_power_levels(
    alice: Client, users_default: int, restricted: int
) -> None:
    room_id = await create_room(alice, room_version="10")
    if users_default:
        await change_power_levels(alice, room_id, users_default=users_default)
    await upgrade(alice, room_id)
    levels = await state(alice, room_id, "m.room.power_levels")
    assert levels["events_default"] == restricted
    assert levels["invite"] == restricted


async def test_upgrade_to_v12_takes_additional_creators(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, room_version="10", preset="public_chat")
    await join(bob, room_id)
    await change_power_levels(alice, room_id, users={bob.user_id: 50})
    new_room = await upgrade(alice, room_id, "12", additional_creators=[bob.user_id])
    create = await state(alice, new_room, "m.room.create")
    assert create["additional_creators"] == [bob.user_id]
    users = (await state(alice, new_room, "m.room.power_levels"))["users"]
    # Room v12: creators have infinite power and are not listed.
    assert alice.user_id not in users
    assert bob.user_id not in users
    bad = await alice.post(
        f"/rooms/{room_id}/upgrade", {"new_version": "12", "additional_creators": ["nope"]}
    )
    assert_error(bad, 400, "M_BAD_JSON")


async def test_upgrade_refusals(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    bad_version = await alice.post(f"/rooms/{room_id}/upgrade", {"new_version": "my_bad_version"})
    assert_error(bad_version, 400, "M_UNSUPPORTED_ROOM_VERSION")
    await join(bob, room_id)
    assert_error(
        await bob.post(f"/rooms/{room_id}/upgrade", {"new_version": "2"}), 403, "M_FORBIDDEN"
    )
    bogus = await alice.post("/rooms/!fail:unknown/upgrade", {"new_version": "2"})
    assert_error(bogus, 404, "M_NOT_FOUND")
    missing = await alice.post(f"/rooms/{room_id}/upgrade", {})
    assert_error(missing, 400, "M_MISSING_PARAM")


async def test_a_tombstone_cannot_point_at_its_own_room(alice: Client) -> None:
    room_id = await create_room(alice)
    content = {"replacement_room": room_id}
    as_message = await alice.put(f"/rooms/{room_id}/send/m.room.tombstone/t1", content)
    assert as_message.status_code == 400
    as_state = await alice.put(f"/rooms/{room_id}/state/m.room.tombstone/", content)
    assert as_state.status_code == 400
    # A tombstone naming another room is fine as state, and not as a message.
    other = {"replacement_room": "!other:localhost", "body": "moved"}
    await set_state(alice, room_id, "m.room.tombstone", other)
    with pytest.raises(AssertionError):
        await send(alice, room_id, "m.room.tombstone", other)
