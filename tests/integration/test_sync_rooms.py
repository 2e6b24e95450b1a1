"""/sync over real HTTP: rooms, timelines, state, long-polling and tokens across a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

import trio

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import (
    bodies,
    create_room,
    invite,
    join,
    leave,
    send_text,
    set_state,
)


async def sync(client: Client, since: str | None = None, **params: Any) -> dict[str, Any]:
    if since is not None:
        params["since"] = since
    if "filter" in params and isinstance(params["filter"], dict):
        params["filter"] = json.dumps(params["filter"])
    return assert_ok(await client.get("/sync", params=params))


def timeline(body: dict[str, Any], room_id: str) -> dict[str, Any]:
    result: dict[str, Any] = body["rooms"]["join"][room_id]["timeline"]
    return result


def state_types(events: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(e["type"], e["state_key"]) for e in events}


async def test_initial_sync_has_the_room_timeline_and_state(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat", name="Lobby")
    await join(bob, room_id)
    await send_text(alice, room_id, "hello")
    body = await sync(bob)
    assert body["next_batch"]
    room = body["rooms"]["join"][room_id]
    assert bodies(room["timeline"]["events"])[-1] == "hello"
    everything = room["timeline"]["events"] + room["state"]["events"]
    assert ("m.room.name", "") in state_types([e for e in everything if "state_key" in e])
    assert room["summary"]["m.joined_member_count"] == 2
    assert "room_id" not in room["timeline"]["events"][0]
    for key in ("presence", "account_data", "to_device", "device_lists"):
        assert key in body


async def test_incremental_sync_returns_only_new_events(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    first = await sync(bob)
    await send_text(alice, room_id, "one")
    await send_text(alice, room_id, "two")
    second = await sync(bob, first["next_batch"])
    entry = second["rooms"]["join"][room_id]
    assert bodies(entry["timeline"]["events"]) == ["one", "two"]
    assert entry["timeline"]["limited"] is False
    assert entry["state"]["events"] == []
    third = await sync(bob, second["next_batch"])
    assert third["rooms"]["join"] == {}


async def test_summary_is_sent_again_only_when_membership_changes(
    alice: Client, bob: Client, hs: Any, http: httpx.AsyncClient
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    first = await sync(alice)
    assert first["rooms"]["join"][room_id]["summary"]["m.joined_member_count"] == 2
    # A message changes no membership: the spec lets the summary's fields be left out.
    await send_text(bob, room_id, "no membership change")
    second = await sync(alice, first["next_batch"])
    assert second["rooms"]["join"][room_id]["summary"] == {}
    carol = await hs.register_user("carol")
    await join(Client(http, carol.user_id, carol.access_token, carol.device_id), room_id)
    third = await sync(alice, second["next_batch"])
    summary = third["rooms"]["join"][room_id]["summary"]
    assert summary["m.joined_member_count"] == 3
    assert set(summary["m.heroes"]) == {bob.user_id, carol.user_id}


async def test_long_poll_wakes_for_a_message(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    result: dict[str, Any] = {}
    answered = trio.Event()

    async def poll() -> None:
        result.update(await sync(bob, since, timeout=20_000))
        answered.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(poll)
        await trio.sleep(0.2)
        assert not result  # still waiting
        await send_text(alice, room_id, "wake up")
        with trio.fail_after(5):
            await answered.wait()
    assert bodies(timeline(result, room_id)["events"]) == ["wake up"]


async def test_long_poll_times_out_with_an_empty_response(alice: Client) -> None:
    await create_room(alice)
    since = (await sync(alice))["next_batch"]
    start = trio.current_time()
    body = await sync(alice, since, timeout=300)
    assert trio.current_time() - start >= 0.28
    assert body["rooms"]["join"] == {}
    assert body["next_batch"] == since


async def test_long_poll_is_not_woken_by_other_rooms(alice: Client, bob: Client) -> None:
    mine = await create_room(bob)
    theirs = await create_room(alice)
    since = (await sync(bob))["next_batch"]
    async with trio.open_nursery() as nursery:
        result: dict[str, Any] = {}

        async def poll() -> None:
            result.update(await sync(bob, since, timeout=20_000))

        nursery.start_soon(poll)
        await trio.sleep(0.1)
        await send_text(alice, theirs, "not for bob")
        await trio.sleep(0.3)
        assert not result
        await send_text(bob, mine, "for bob")
    assert list(result["rooms"]["join"]) == [mine]


async def test_gappy_sync_is_limited_with_state_and_prev_batch(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    await set_state(alice, room_id, "m.room.topic", {"topic": "changed in the gap"})
    for i in range(5):
        await send_text(alice, room_id, f"m{i}")
    body = await sync(bob, since, filter={"room": {"timeline": {"limit": 2}}})
    entry = body["rooms"]["join"][room_id]
    assert bodies(entry["timeline"]["events"]) == ["m3", "m4"]
    assert entry["timeline"]["limited"] is True
    topics = [e for e in entry["state"]["events"] if e["type"] == "m.room.topic"]
    assert [t["content"]["topic"] for t in topics] == ["changed in the gap"]
    # prev_batch continues backwards with /messages exactly where the timeline starts.
    page = assert_ok(
        await bob.get(
            f"/rooms/{room_id}/messages",
            params={"dir": "b", "from": entry["timeline"]["prev_batch"], "limit": 3},
        )
    )
    assert bodies(page["chunk"]) == ["m2", "m1", "m0"]


async def test_initial_sync_state_is_the_state_at_timeline_start(alice: Client) -> None:
    room_id = await create_room(alice, name="Old name")
    await set_state(alice, room_id, "m.room.name", {"name": "New name"})
    body = await sync(alice, filter={"room": {"timeline": {"limit": 1}}})
    entry = body["rooms"]["join"][room_id]
    (event,) = entry["timeline"]["events"]
    assert event["content"] == {"name": "New name"}
    names = [e["content"]["name"] for e in entry["state"]["events"] if e["type"] == "m.room.name"]
    assert names == ["Old name"]
    assert entry["timeline"]["limited"] is True


async def test_invite_then_join(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, name="Secret")
    since = (await sync(bob))["next_batch"]
    await invite(alice, room_id, bob.user_id)
    body = await sync(bob, since)
    invite_state = body["rooms"]["invite"][room_id]["invite_state"]["events"]
    assert ("m.room.name", "") in state_types(invite_state)
    member = [e for e in invite_state if e["type"] == "m.room.member"]
    assert any(
        e["state_key"] == bob.user_id and e["content"]["membership"] == "invite" for e in member
    )
    assert all("event_id" not in e for e in invite_state)  # stripped state
    await join(bob, room_id)
    joined = await sync(bob, body["next_batch"])
    entry = joined["rooms"]["join"][room_id]
    everything = entry["state"]["events"] + entry["timeline"]["events"]
    assert ("m.room.create", "") in state_types([e for e in everything if "state_key" in e])
    assert room_id not in joined["rooms"]["invite"]


async def test_kick_and_ban_are_seen_by_the_affected_user(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    await send_text(alice, room_id, "before the kick")
    assert_ok(await alice.post(f"/rooms/{room_id}/kick", json={"user_id": bob.user_id}))
    await send_text(alice, room_id, "after the kick")
    body = await sync(bob, since)
    assert room_id not in body["rooms"]["join"]
    left = body["rooms"]["leave"][room_id]
    events = left["timeline"]["events"]
    assert "before the kick" in bodies(events)
    assert "after the kick" not in bodies(events)
    assert events[-1]["content"]["membership"] == "leave"
    assert_ok(await alice.post(f"/rooms/{room_id}/ban", json={"user_id": bob.user_id}))
    banned = await sync(bob, body["next_batch"])
    assert room_id in banned["rooms"]["leave"]
    assert room_id not in banned["rooms"]["join"]


async def test_leave_is_in_the_leave_section_then_forgotten(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    since = (await sync(bob))["next_batch"]
    await leave(bob, room_id)
    body = await sync(bob, since)
    assert room_id in body["rooms"]["leave"]
    # Initial syncs show left rooms only when asked, and never forgotten ones.
    assert room_id not in (await sync(bob))["rooms"]["leave"]
    assert room_id in (await sync(bob, filter={"room": {"include_leave": True}}))["rooms"]["leave"]
    assert_ok(await bob.post(f"/rooms/{room_id}/forget", json={}))
    forgotten = await sync(bob, filter={"room": {"include_leave": True}})
    assert room_id not in forgotten["rooms"]["leave"]


async def test_lazy_loading_members_only_sends_senders(
    alice: Client, bob: Client, hs: Any, http: httpx.AsyncClient
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    for name in ("carol", "dave", "erin"):
        user = await hs.register_user(name)
        await join(Client(http, user.user_id, user.access_token, user.device_id), room_id)
    await join(bob, room_id)
    await send_text(bob, room_id, "only bob speaks")
    body = await sync(
        alice,
        filter={"room": {"timeline": {"limit": 1}, "state": {"lazy_load_members": True}}},
    )
    entry = body["rooms"]["join"][room_id]
    members = {e["state_key"] for e in entry["state"]["events"] if e["type"] == "m.room.member"}
    # The senders' members, and (as Synapse does) the syncing user's own.
    assert members == {bob.user_id, alice.user_id}
    assert entry["summary"]["m.joined_member_count"] == 5
    assert len(entry["summary"]["m.heroes"]) == 4


async def test_timeline_filter_by_type(alice: Client) -> None:
    room_id = await create_room(alice)
    await send_text(alice, room_id, "text")
    body = await sync(alice, filter={"room": {"timeline": {"types": ["m.room.message"]}}})
    events = body["rooms"]["join"][room_id]["timeline"]["events"]
    assert {e["type"] for e in events} == {"m.room.message"}


async def test_stored_filter_by_id(alice: Client) -> None:
    room_id = await create_room(alice)
    created = assert_ok(
        await alice.post(
            f"/user/{alice.user_id}/filter", json={"room": {"timeline": {"limit": 1}}}
        )
    )
    body = await sync(alice, filter=created["filter_id"])
    assert len(body["rooms"]["join"][room_id]["timeline"]["events"]) == 1


async def test_bad_tokens_and_params(alice: Client) -> None:
    assert_error(await alice.get("/sync", params={"since": "nope"}), 400, "M_INVALID_PARAM")
    assert_error(await alice.get("/sync", params={"timeout": "x"}), 400, "M_INVALID_PARAM")
    assert_error(await alice.get("/sync", params={"filter": "{not json"}), 400, "M_NOT_JSON")
    assert_error(await alice.get("/sync", params={"set_presence": "away"}), 400, "M_INVALID_PARAM")


async def test_since_token_survives_a_restart(tmp_path: Path) -> None:
    async with serve_in_process(data_dir=tmp_path) as hs:
        user = await hs.register_user("alice")
        async with httpx.AsyncClient(base_url=hs.base_url) as http:
            alice = Client(http, user.user_id, user.access_token, user.device_id)
            room_id = await create_room(alice)
            since = (await sync(alice))["next_batch"]
            await send_text(alice, room_id, "before restart")
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        await send_text(alice, room_id, "after restart")
        body = await sync(alice, since)
        assert bodies(timeline(body, room_id)["events"]) == ["before restart", "after restart"]
