"""History visibility over HTTP (spec "Room History Visibility"), and reading after leaving."""

from __future__ import annotations

import httpx
import pytest

from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import (
    bodies,
    create_room,
    ids,
    invite,
    join,
    leave,
    messages,
    paginate_all,
    room_state,
    send_text,
    set_state,
    set_visibility,
)
from tests.integration.server_db import server_db


@pytest.fixture
async def carol(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("carol", "carolpw")
    return Client(http, user.user_id, user.access_token, user.device_id)


async def _invite_then_join(alice: Client, bob: Client, visibility: str) -> tuple[str, list[str]]:
    """alice sends 'before', invites bob, sends 'invited', bob joins, alice sends 'joined'."""
    room_id = await create_room(alice, preset="public_chat")
    await set_visibility(alice, room_id, visibility)
    sent = [await send_text(alice, room_id, "before")]
    await invite(alice, room_id, bob.user_id)
    sent.append(await send_text(alice, room_id, "invited"))
    await join(bob, room_id)
    sent.append(await send_text(alice, room_id, "joined"))
    return room_id, sent


async def _visible_bodies(client: Client, room_id: str) -> list[str]:
    events, _ = await paginate_all(client, room_id, "b", 4)
    return list(reversed(bodies(events)))


async def test_joined_hides_history_before_the_join(alice: Client, bob: Client) -> None:
    room_id, sent = await _invite_then_join(alice, bob, "joined")
    assert await _visible_bodies(bob, room_id) == ["joined"]
    events, _ = await paginate_all(bob, room_id, "f", 4)
    # What was sent while the room was still "shared" (its creation) bob may see, up to the
    # change to "joined" (visible: "shared" before it); then nothing until his own join.
    types = [e["type"] for e in events]
    change = len(types) - 1 - types[::-1].index("m.room.history_visibility")
    assert [(e["type"], e.get("state_key")) for e in events[change + 1 :]] == [
        ("m.room.member", bob.user_id),
        ("m.room.message", None),
    ]
    assert events[change + 1]["content"]["membership"] == "join"
    for event_id in sent[:2]:
        assert_error(await bob.get(f"/rooms/{room_id}/event/{event_id}"), 404, "M_NOT_FOUND")
        assert_error(await bob.get(f"/rooms/{room_id}/context/{event_id}"), 404, "M_NOT_FOUND")
    assert_ok(await bob.get(f"/rooms/{room_id}/event/{sent[2]}"))
    # Alice sees everything.
    assert await _visible_bodies(alice, room_id) == ["before", "invited", "joined"]


async def test_invited_shows_history_from_the_invite(alice: Client, bob: Client) -> None:
    room_id, sent = await _invite_then_join(alice, bob, "invited")
    assert await _visible_bodies(bob, room_id) == ["invited", "joined"]
    event = assert_ok(await bob.get(f"/rooms/{room_id}/event/{sent[1]}"))
    assert event["unsigned"]["membership"] == "invite"
    assert_error(await bob.get(f"/rooms/{room_id}/event/{sent[0]}"), 404, "M_NOT_FOUND")


async def test_shared_shows_earlier_history_to_a_joined_user(alice: Client, bob: Client) -> None:
    room_id, sent = await _invite_then_join(alice, bob, "shared")
    assert await _visible_bodies(bob, room_id) == ["before", "invited", "joined"]
    event = assert_ok(await bob.get(f"/rooms/{room_id}/event/{sent[0]}"))
    # Spec unsigned.membership: "leave" when the user had no membership at the event.
    assert event["unsigned"]["membership"] == "leave"


async def test_shared_hides_history_from_an_invited_user(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "shared history")
    await invite(alice, room_id, bob.user_id)
    # Invited but never joined: no access to the room's history (Synapse: 403).
    response = await bob.get(f"/rooms/{room_id}/messages", params={"dir": "b"})
    assert_error(response, 403, "M_FORBIDDEN")
    assert_error(await bob.get(f"/rooms/{room_id}/event/{event_id}"), 404, "M_NOT_FOUND")


async def test_world_readable_history_for_a_non_member(alice: Client, carol: Client) -> None:
    room_id = await create_room(alice, preset="public_chat", name="Open")
    hidden = await send_text(alice, room_id, "while shared")
    await set_visibility(alice, room_id, "world_readable")
    visible = await send_text(alice, room_id, "while world readable")
    assert await _visible_bodies(carol, room_id) == ["while world readable"]
    events, _ = await paginate_all(carol, room_id, "b", 10)
    # The visibility change itself is visible: world_readable after it.
    assert events[-1]["type"] == "m.room.history_visibility"
    assert_ok(await carol.get(f"/rooms/{room_id}/event/{visible}"))
    assert_error(await carol.get(f"/rooms/{room_id}/event/{hidden}"), 404, "M_NOT_FOUND")
    state = await room_state(carol, room_id)
    assert ("m.room.name", "") in {(e["type"], e["state_key"]) for e in state}
    assert assert_ok(await carol.get(f"/rooms/{room_id}/state/m.room.name")) == {"name": "Open"}
    members = assert_ok(await carol.get(f"/rooms/{room_id}/members"))["chunk"]
    assert [e["state_key"] for e in members] == [alice.user_id]
    assert_error(await carol.get(f"/rooms/{room_id}/joined_members"), 403, "M_FORBIDDEN")
    # Changing away from world_readable is visible too (world_readable before it).
    change = await set_visibility(alice, room_id, "joined")
    assert_ok(await carol.get(f"/rooms/{room_id}/event/{change}"))
    later = await send_text(alice, room_id, "joined only")
    assert_error(await carol.get(f"/rooms/{room_id}/event/{later}"), 404, "M_NOT_FOUND")
    response = await carol.get(f"/rooms/{room_id}/messages", params={"dir": "b"})
    assert_error(response, 403, "M_FORBIDDEN")


async def test_left_user_reads_history_up_to_their_leave(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await set_visibility(alice, room_id, "joined")
    await join(bob, room_id)
    during = await send_text(alice, room_id, "during")
    await leave(bob, room_id)
    after = await send_text(alice, room_id, "after leave")
    await set_state(alice, room_id, "m.room.topic", {"topic": "later"})

    events, _ = await paginate_all(bob, room_id, "b", 2)
    assert events[0]["type"] == "m.room.member"
    assert events[0]["content"]["membership"] == "leave"
    assert events[0]["unsigned"]["membership"] == "leave"
    assert bodies(events) == ["during"]
    # The page starts at the leave, even when asked from the room's newest position.
    newest = (await messages(alice, room_id, dir="b", limit=1))["start"]
    capped = await messages(bob, room_id, dir="b", limit=1, **{"from": newest})
    assert ids(capped["chunk"]) == [events[0]["event_id"]]
    # Forwards stops at the leave too, and says so by omitting `end`.
    forwards, _ = await paginate_all(bob, room_id, "f", 3)
    assert ids(forwards) == list(reversed(ids(events)))
    assert_ok(await bob.get(f"/rooms/{room_id}/event/{during}"))
    assert_error(await bob.get(f"/rooms/{room_id}/event/{after}"), 404, "M_NOT_FOUND")
    context = assert_ok(await bob.get(f"/rooms/{room_id}/context/{during}"))
    assert [e["event_id"] for e in context["events_after"]] == [events[0]["event_id"]]
    state = await room_state(bob, room_id)
    assert "m.room.topic" not in {e["type"] for e in state}


async def test_left_user_of_shared_room_keeps_earlier_history(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await send_text(alice, room_id, "before bob")
    await join(bob, room_id)
    await leave(bob, room_id)
    await send_text(alice, room_id, "after bob")
    assert await _visible_bodies(bob, room_id) == ["before bob"]


async def test_banned_user_reads_up_to_the_ban(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await send_text(alice, room_id, "before ban")
    assert_ok(await alice.post(f"/rooms/{room_id}/ban", {"user_id": bob.user_id}))
    await send_text(alice, room_id, "after ban")
    assert await _visible_bodies(bob, room_id) == ["before ban"]


async def test_forgotten_room_is_forbidden(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await leave(bob, room_id)
    assert_ok(await bob.post(f"/rooms/{room_id}/forget", {}))
    response = await bob.get(f"/rooms/{room_id}/messages", params={"dir": "b"})
    assert_error(response, 403, "M_FORBIDDEN")


async def test_rejoined_user_sees_shared_gap_but_not_joined_gap(
    alice: Client, bob: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await leave(bob, room_id)
    await send_text(alice, room_id, "gap shared")
    await set_visibility(alice, room_id, "joined")
    await send_text(alice, room_id, "gap joined")
    await join(bob, room_id)
    await send_text(alice, room_id, "back")
    assert await _visible_bodies(bob, room_id) == ["gap shared", "back"]


def _current_state_rows(hs: InProcessServer, room_id: str) -> int:
    with server_db(hs.config) as db:
        ((count,),) = db.rows(
            "SELECT COUNT(*) FROM current_state_events WHERE room_id = ?", (room_id,)
        )
    return int(count)


async def test_seed4_last_local_user_leaves_and_still_reads(
    hs: InProcessServer, alice: Client
) -> None:
    room_id = await create_room(alice, name="Lonely", topic="just me")
    sent = [await send_text(alice, room_id, f"m{i}") for i in range(3)]
    assert _current_state_rows(hs, room_id) > 0
    await leave(alice, room_id)
    # Seed 4: the server has left the room; its current state is gone.
    assert _current_state_rows(hs, room_id) == 0
    assert room_id not in assert_ok(await alice.get("/joined_rooms"))["joined_rooms"]

    state = await room_state(alice, room_id)
    by_key = {(e["type"], e["state_key"]): e for e in state}
    assert by_key[("m.room.name", "")]["content"] == {"name": "Lonely"}
    assert by_key[("m.room.member", alice.user_id)]["content"]["membership"] == "leave"
    assert ("m.room.create", "") in by_key
    topic = assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.topic"))
    assert topic["topic"] == "just me"
    members = assert_ok(await alice.get(f"/rooms/{room_id}/members"))["chunk"]
    assert [e["content"]["membership"] for e in members] == ["leave"]
    assert_error(await alice.get(f"/rooms/{room_id}/joined_members"), 403, "M_FORBIDDEN")

    events, _ = await paginate_all(alice, room_id, "b", 2)
    assert events[0]["content"]["membership"] == "leave"
    assert bodies(events) == ["m2", "m1", "m0"]
    assert events[-1]["type"] == "m.room.create"
    assert_ok(await alice.get(f"/rooms/{room_id}/event/{sent[0]}"))
    context = assert_ok(await alice.get(f"/rooms/{room_id}/context/{sent[1]}"))
    assert ids(context["events_after"])[:1] == [sent[2]]


async def test_rejected_invite_shows_only_the_rejection(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    await send_text(alice, room_id, "not for bob")
    await invite(alice, room_id, bob.user_id)
    await leave(bob, room_id)
    await send_text(alice, room_id, "later")
    events, _ = await paginate_all(bob, room_id, "b", 5)
    assert [(e["type"], e["content"].get("membership")) for e in events] == [
        ("m.room.member", "leave")
    ]
    # The state as of the rejection, like Synapse.
    state = await room_state(bob, room_id)
    assert ("m.room.member", bob.user_id) in {(e["type"], e["state_key"]) for e in state}
