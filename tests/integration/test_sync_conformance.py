"""/sync behaviour SyTest checks (tests/31sync, 49ignore): newly joined rooms, leaves, lazy
members, summaries and ignored users, each over real HTTP."""

from __future__ import annotations

from typing import Any

from tests.integration.client import Client, assert_ok
from tests.integration.room_helpers import (
    bodies,
    create_room,
    invite,
    join,
    leave,
    messages,
    send_text,
    set_state,
)
from tests.integration.test_sync_rooms import sync


def presence_senders(body: dict[str, Any]) -> list[str]:
    return [e["sender"] for e in body["presence"]["events"]]


async def test_newly_joined_room_brings_its_members_presence(alice: Client, bob: Client) -> None:
    # SyTest 31sync/03joined "Newly joined room includes presence in incremental sync".
    room_id = await create_room(alice, preset="public_chat")
    await sync(alice)
    first = await sync(bob)
    await join(bob, room_id)
    second = await sync(bob, first["next_batch"])
    assert [s for s in presence_senders(second) if s != bob.user_id] == [alice.user_id]
    third = await sync(bob, second["next_batch"])
    assert presence_senders(third) == []


async def test_new_members_presence_arrives_with_their_join(alice: Client, bob: Client) -> None:
    # SyTest 31sync/03joined "Get presence for newly joined members in incremental sync".
    room_id = await create_room(alice, preset="public_chat")
    first = await sync(alice)
    await send_text(alice, room_id, "settle")
    second = await sync(alice, first["next_batch"])
    await sync(bob)
    await join(bob, room_id)
    third = await sync(alice, second["next_batch"])
    assert [s for s in presence_senders(third) if s != alice.user_id] == [bob.user_id]
    fourth = await sync(alice, third["next_batch"])
    assert presence_senders(fourth) == []


async def test_presence_of_a_member_never_online_is_offline(alice: Client, bob: Client) -> None:
    # SyTest: the joiner never synced (or synced with set_presence=offline): still reported.
    room_id = await create_room(alice, preset="public_chat")
    first = await sync(alice, set_presence="offline")
    await join(bob, room_id)
    second = await sync(alice, first["next_batch"], set_presence="offline")
    events = [e for e in second["presence"]["events"] if e["sender"] == bob.user_id]
    assert events == [
        {"type": "m.presence", "sender": bob.user_id, "content": {"presence": "offline"}}
    ]


async def test_newly_joined_room_timeline_is_limited(alice: Client, bob: Client) -> None:
    # SyTest 31sync/03joined "Newly joined room has correct timeline in incremental sync":
    # the joiner has none of the history before the timeline, so it is `limited` (Synapse).
    room_id = await create_room(alice, preset="public_chat")
    for n in range(4):
        await send_text(alice, room_id, f"before-{n}")
    only_messages = {"room": {"timeline": {"types": ["m.room.message"], "limit": 10}}}
    first = await sync(bob, filter=only_messages)
    for n in range(4):
        await send_text(alice, room_id, f"after-{n}")
    await join(bob, room_id)
    second = await sync(bob, first["next_batch"], filter=only_messages)
    line = second["rooms"]["join"][room_id]["timeline"]
    assert line["limited"] is True
    assert [e["content"]["body"] for e in line["events"]][-4:] == [f"after-{n}" for n in range(4)]
    page = assert_ok(
        await bob.get(
            f"/rooms/{room_id}/messages",
            params={
                "from": line["prev_batch"],
                "dir": "b",
                "limit": 1,
                "filter": '{"types": ["m.room.create"]}',
            },
        )
    )
    assert [e["type"] for e in page["chunk"]] == ["m.room.create"]
    # A room the user was already in is not limited when everything fits.
    await send_text(alice, room_id, "later")
    third = await sync(bob, second["next_batch"], filter=only_messages)
    assert third["rooms"]["join"][room_id]["timeline"]["limited"] is False


async def test_named_room_summary_has_no_heroes(alice: Client, bob: Client) -> None:
    # SyTest 31sync/16room-summary: spec "m.heroes" is for rooms without a name or alias.
    named = await create_room(alice, preset="public_chat", name="A room name")
    aliased = await create_room(alice, preset="public_chat", room_alias_name="summary")
    unnamed = await create_room(alice, preset="public_chat")
    emptied = await create_room(alice, preset="public_chat", name="x")
    await set_state(alice, emptied, "m.room.name", {"name": ""})
    for room_id in (named, aliased, unnamed, emptied):
        await join(bob, room_id)
    rooms = (await sync(alice))["rooms"]["join"]
    counts = {"m.joined_member_count": 2, "m.invited_member_count": 0}
    assert rooms[named]["summary"] == counts
    assert rooms[aliased]["summary"] == counts
    assert rooms[unnamed]["summary"] == {**counts, "m.heroes": [bob.user_id]}
    assert rooms[emptied]["summary"] == {**counts, "m.heroes": [bob.user_id]}


async def test_heroes_are_the_first_five_sorted(alice: Client, hs: Any, http: Any) -> None:
    room_id = await create_room(alice, preset="public_chat")
    names = ["zed", "yan", "xia", "wes", "val", "uma"]
    for name in names:
        user = await hs.register_user(name)
        await join(Client(http, user.user_id, user.access_token, user.device_id), room_id)
    summary = (await sync(alice))["rooms"]["join"][room_id]["summary"]
    assert summary["m.joined_member_count"] == 7
    assert summary["m.heroes"] == sorted(f"@{n}:localhost" for n in names)[:5]


async def ignore(client: Client, *users: str) -> None:
    content: dict[str, Any] = {"ignored_users": {user: {} for user in users}}
    path = f"/user/{client.user_id}/account_data/m.ignored_user_list"
    assert_ok(await client.put(path, content))


async def test_ignored_users_events_are_left_out(
    alice: Client, bob: Client, hs: Any, http: Any
) -> None:
    # SyTest 49ignore "Ignore user in existing room"; spec "Ignoring Users".
    carol_user = await hs.register_user("carol")
    carol = Client(http, carol_user.user_id, carol_user.access_token, carol_user.device_id)
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    await send_text(alice, room_id, "from alice")
    hidden = await send_text(bob, room_id, "from bob")
    await send_text(carol, room_id, "from carol")
    await ignore(alice, bob.user_id)
    only = {"room": {"timeline": {"types": ["m.room.message", "m.room.member"]}}}
    first = await sync(alice, filter=only)
    entry = first["rooms"]["join"][room_id]
    assert bodies([e for e in entry["timeline"]["events"] if "body" in e["content"]]) == [
        "from alice",
        "from carol",
    ]
    # Counts come from push actions evaluated at send time (as in Synapse): bob's message,
    # sent before the ignore, still counts; test_push_actions covers messages sent after it.
    assert entry["unread_notifications"]["notification_count"] == 2
    # Their state still arrives: the room's members include bob.
    everything = entry["state"]["events"] + entry["timeline"]["events"]
    members = {e["state_key"] for e in everything if e["type"] == "m.room.member"}
    assert bob.user_id in members
    await send_text(bob, room_id, "bob again")
    second = await sync(alice, first["next_batch"], filter=only)
    assert room_id not in second["rooms"]["join"]
    await set_state(
        bob, room_id, "m.room.member", {"membership": "join", "displayname": "B"}, bob.user_id
    )
    third = await sync(alice, second["next_batch"], filter=only)
    assert [e["type"] for e in third["rooms"]["join"][room_id]["timeline"]["events"]] == [
        "m.room.member"
    ]
    page = await messages(alice, room_id, dir="b", limit=50, filter={"types": ["m.room.message"]})
    assert bodies(page["chunk"]) == ["from carol", "from alice"]
    response = await alice.get(f"/rooms/{room_id}/context/{hidden}")
    assert response.status_code == 404
    # Un-ignoring shows their new events again.
    await ignore(alice)
    await send_text(bob, room_id, "visible again")
    fourth = await sync(alice, third["next_batch"], filter=only)
    assert bodies(fourth["rooms"]["join"][room_id]["timeline"]["events"]) == ["visible again"]
    # ... and in /messages, which reads the same (cached) ignore list.
    page = await messages(alice, room_id, dir="b", limit=50, filter={"types": ["m.room.message"]})
    assert {"from bob", "visible again"} <= set(bodies(page["chunk"]))


async def test_invites_from_ignored_users_are_not_sent(alice: Client, bob: Client) -> None:
    # SyTest 49ignore "Ignore invite in full sync" / "... in incremental sync".
    first = await sync(alice)
    room_id = await create_room(bob)
    await invite(bob, room_id, alice.user_id)
    await ignore(alice, bob.user_id)
    assert room_id not in (await sync(alice))["rooms"]["invite"]
    assert room_id not in (await sync(alice, first["next_batch"]))["rooms"]["invite"]
    other = await create_room(bob)
    await ignore(alice)
    await invite(bob, other, alice.user_id)
    assert other in (await sync(alice, first["next_batch"]))["rooms"]["invite"]


LAZY = {"room": {"state": {"lazy_load_members": True}, "timeline": {"limit": 10}}}
REDUNDANT = {
    "room": {
        "state": {"lazy_load_members": True, "include_redundant_members": True},
        "timeline": {"limit": 10},
    }
}


def members(body: dict[str, Any], room_id: str) -> dict[str, str]:
    entry = body["rooms"]["join"].get(room_id, {"state": {"events": []}})
    return {
        e["state_key"]: e["content"]["membership"]
        for e in entry["state"]["events"]
        if e["type"] == "m.room.member"
    }


async def fillers(client: Client, room_id: str, count: int) -> None:
    for n in range(count):
        await send_text(client, room_id, f"filler {n}")


async def four(hs: Any, http: Any, alice: Client, bob: Client) -> tuple[str, Client, Client]:
    """A public named room of alice's that bob and carol joined; dave not yet (SyTest)."""
    users = []
    for name in ("carol", "dave"):
        user = await hs.register_user(name)
        users.append(Client(http, user.user_id, user.access_token, user.device_id))
    room_id = await create_room(alice, preset="public_chat", name="A room name")
    await join(bob, room_id)
    await join(users[0], room_id)
    return room_id, users[0], users[1]


async def test_lazy_incremental_sync_has_new_senders_members(
    alice: Client, bob: Client, hs: Any, http: Any
) -> None:
    # SyTest "The only membership state included in an incremental sync is for senders...".
    room_id, carol, _ = await four(hs, http, alice, bob)
    await fillers(bob, room_id, 10)
    first = await sync(alice, filter=LAZY)
    assert members(first, room_id) == {alice.user_id: "join", bob.user_id: "join"}
    await send_text(carol, room_id, "from carol")
    second = await sync(alice, first["next_batch"], filter=LAZY)
    assert members(second, room_id) == {carol.user_id: "join"}
    assert (await sync(alice, second["next_batch"], filter=LAZY))["rooms"]["join"] == {}


async def test_lazy_members_are_not_sent_twice_unless_asked(
    alice: Client, bob: Client, hs: Any, http: Any
) -> None:
    # SyTest "We don't / do send redundant membership state across incremental syncs".
    room_id, carol, _ = await four(hs, http, alice, bob)
    await fillers(bob, room_id, 10)
    await fillers(carol, room_id, 5)
    for lazy, expected in ((LAZY, {}), (REDUNDANT, {bob.user_id: "join", carol.user_id: "join"})):
        first = await sync(alice, filter=lazy)
        assert set(members(first, room_id)) == {alice.user_id, bob.user_id, carol.user_id}
        await send_text(bob, room_id, "bob")
        await send_text(carol, room_id, "carol")
        second = await sync(alice, first["next_batch"], filter=lazy)
        assert members(second, room_id) == expected


async def test_gappy_lazy_sync_has_members_from_the_gap(
    alice: Client, bob: Client, hs: Any, http: Any
) -> None:
    # SyTest "Members from the gap are included in gappy incr LL sync" and "Gapped
    # incremental syncs include all state changes".
    room_id, carol, dave = await four(hs, http, alice, bob)
    await fillers(bob, room_id, 10)
    first = await sync(alice, filter=LAZY)
    assert members(first, room_id) == {alice.user_id: "join", bob.user_id: "join"}
    await join(dave, room_id)
    await fillers(carol, room_id, 10)
    second = await sync(alice, first["next_batch"], filter=LAZY)
    assert second["rooms"]["join"][room_id]["timeline"]["limited"] is True
    assert members(second, room_id) == {carol.user_id: "join", dave.user_id: "join"}
    await leave(dave, room_id)
    await fillers(carol, room_id, 20)
    third = await sync(alice, second["next_batch"], filter=LAZY)
    assert members(third, room_id) == {dave.user_id: "leave"}


async def test_gappy_lazy_sync_has_old_members_who_speak(
    alice: Client, bob: Client, hs: Any, http: Any
) -> None:
    # SyTest "Old members are included in gappy incr LL sync if they start speaking".
    room_id, carol, _ = await four(hs, http, alice, bob)
    await fillers(bob, room_id, 10)
    first = await sync(alice, filter=LAZY)
    await fillers(bob, room_id, 10)
    await fillers(carol, room_id, 10)
    second = await sync(alice, first["next_batch"], filter=LAZY)
    assert members(second, room_id) == {carol.user_id: "join"}


async def test_an_initial_sync_starts_lazy_members_afresh(
    alice: Client, bob: Client, hs: Any, http: Any
) -> None:
    room_id, _, _ = await four(hs, http, alice, bob)
    await fillers(bob, room_id, 10)
    first = await sync(alice, filter=LAZY)
    assert bob.user_id in members(first, room_id)
    # A second initial sync (another sync sequence of the same device) sends bob again.
    again = await sync(alice, filter=LAZY)
    assert bob.user_id in members(again, room_id)
    await send_text(bob, room_id, "bob again")
    assert members(await sync(alice, again["next_batch"], filter=LAZY), room_id) == {}


async def test_join_and_leave_in_one_batch_gives_the_full_state(
    alice: Client, bob: Client
) -> None:
    # SyTest 31sync/06state "When user joins and leaves a room in the same batch, the full
    # state is still included in the next sync".
    only_made_up = {
        "room": {
            "timeline": {"types": []},
            "state": {"types": ["a.madeup.test.state"]},
            "include_leave": True,
        },
        "presence": {"types": []},
    }
    room_id = await create_room(alice)
    await set_state(alice, room_id, "a.madeup.test.state", {"my_key": 1})
    await invite(alice, room_id, bob.user_id)
    first = await sync(bob, filter=only_made_up)
    await join(bob, room_id)
    await leave(bob, room_id)
    second = await sync(bob, first["next_batch"], filter=only_made_up)
    entry = second["rooms"]["leave"][room_id]
    assert [(e["type"], e["content"]) for e in entry["state"]["events"]] == [
        ("a.madeup.test.state", {"my_key": 1})
    ]
    # A room the user was in at `since` and then left gets no state: it is in the timeline.
    third = await sync(alice, filter={"room": {"include_leave": True}})
    await leave(alice, room_id)
    fourth = await sync(alice, third["next_batch"], filter={"room": {"include_leave": True}})
    left = fourth["rooms"]["leave"][room_id]
    assert left["state"]["events"] == []
    assert [e["content"]["membership"] for e in left["timeline"]["events"]] == ["leave"]


async def test_current_state_is_in_the_timeline_in_private_history(
    alice: Client, bob: Client, hs: Any, http: Any
) -> None:
    # SyTest 31sync/06state "Current state appears in timeline in private history" (and
    # "... with many messages after"): a join made while the syncer was away is shown.
    user = await hs.register_user("carol")
    carol = Client(http, user.user_id, user.access_token, user.device_id)
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await set_state(alice, room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    await invite(alice, room_id, carol.user_id)
    first = await sync(bob)
    await leave(bob, room_id)
    await join(carol, room_id)
    hidden = await send_text(alice, room_id, "while bob was away")
    await fillers(alice, room_id, 30)
    await join(bob, room_id)
    second = await sync(bob, first["next_batch"])
    events = second["rooms"]["join"][room_id]["timeline"]["events"]
    assert any(
        e["type"] == "m.room.member"
        and e["state_key"] == carol.user_id
        and e["content"]["membership"] == "join"
        for e in events
    )
    # Messages from the absence stay hidden.
    assert hidden not in [e["event_id"] for e in events]
    assert "filler 29" not in bodies([e for e in events if "body" in e["content"]])


async def test_lazy_members_of_every_room_of_an_initial_sync_are_remembered(
    alice: Client, bob: Client
) -> None:
    rooms = [await create_room(alice, preset="public_chat") for _ in range(2)]
    for room_id in rooms:
        await join(bob, room_id)
        await fillers(bob, room_id, 10)
    first = await sync(alice, filter=LAZY)
    assert all(bob.user_id in members(first, room_id) for room_id in rooms)
    for room_id in rooms:
        await send_text(bob, room_id, "again")
    second = await sync(alice, first["next_batch"], filter=LAZY)
    assert [members(second, room_id) for room_id in rooms] == [{}, {}]
