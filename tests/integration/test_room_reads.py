"""Reading rooms over HTTP: /event, /state, /members, /joined_members, /joined_rooms, /context."""

from __future__ import annotations

import json

import httpx
import pytest

from trioserver.testing import InProcessServer

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import (
    create_room,
    ids,
    invite,
    join,
    leave,
    messages,
    room_state,
    send_text,
    set_state,
)


@pytest.fixture
async def carol(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("carol", "carolpw")
    return Client(http, user.user_id, user.access_token, user.device_id)


# -- /event ---------------------------------------------------------------------------------


async def test_get_event_returns_the_client_event(alice: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "hello")
    event = assert_ok(await alice.get(f"/rooms/{room_id}/event/{event_id}"))
    assert event["event_id"] == event_id
    assert event["room_id"] == room_id
    assert event["type"] == "m.room.message"
    assert event["sender"] == alice.user_id
    assert event["content"] == {"msgtype": "m.text", "body": "hello"}
    assert isinstance(event["origin_server_ts"], int)
    unsigned = event["unsigned"]
    assert isinstance(unsigned["age"], int)
    assert unsigned["age"] >= 0
    assert unsigned["membership"] == "join"
    assert unsigned["transaction_id"].startswith("txn")
    # Federation-only keys are not part of the client format.
    for key in ("hashes", "signatures", "depth", "prev_events", "auth_events"):
        assert key not in event


async def test_transaction_id_only_for_the_sending_device(
    http: httpx.AsyncClient, alice: Client
) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "from phone")
    laptop = await Client.login(http, "alice", "alicepw")
    event = assert_ok(await laptop.get(f"/rooms/{room_id}/event/{event_id}"))
    assert "transaction_id" not in event["unsigned"]
    mine = assert_ok(await alice.get(f"/rooms/{room_id}/event/{event_id}"))
    assert "transaction_id" in mine["unsigned"]


async def test_get_event_not_found_cases(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    other_room = await create_room(alice)
    event_id = await send_text(alice, room_id, "secret")
    assert_error(await alice.get(f"/rooms/{room_id}/event/$nope"), 404, "M_NOT_FOUND")
    # An event of another room is not found through this room.
    assert_error(await alice.get(f"/rooms/{other_room}/event/{event_id}"), 404, "M_NOT_FOUND")
    # Not visible to bob (never in the room): 404 as well, like Synapse.
    assert_error(await bob.get(f"/rooms/{room_id}/event/{event_id}"), 404, "M_NOT_FOUND")


async def test_redacted_event_is_served_pruned_with_redacted_because(alice: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "oops", extra_key="gone")
    path = f"/rooms/{room_id}/redact/{event_id}/r1"
    redaction_id = assert_ok(await alice.put(path, {"reason": "typo"}))["event_id"]
    event = assert_ok(await alice.get(f"/rooms/{room_id}/event/{event_id}"))
    assert event["content"] == {}
    because = event["unsigned"]["redacted_because"]
    assert because["event_id"] == redaction_id
    assert because["type"] == "m.room.redaction"
    assert because["content"]["reason"] == "typo"
    assert because["redacts"] == event_id
    assert event["unsigned"]["redacted_by"] == redaction_id
    redaction = assert_ok(await alice.get(f"/rooms/{room_id}/event/{redaction_id}"))
    assert redaction["redacts"] == event_id


async def test_redaction_of_unknown_event_is_stored_and_served(alice: Client) -> None:
    room_id = await create_room(alice, room_version="10")
    path = f"/rooms/{room_id}/send/m.room.redaction/r1"
    redaction_id = assert_ok(await alice.put(path, {"redacts": "$unknown:localhost"}))["event_id"]
    event = assert_ok(await alice.get(f"/rooms/{room_id}/event/{redaction_id}"))
    assert event["redacts"] == "$unknown:localhost"
    assert event["content"]["redacts"] == "$unknown:localhost"
    chunk = (await messages(alice, room_id, dir="b", limit=1))["chunk"]
    assert ids(chunk) == [redaction_id]


async def test_redacting_an_event_of_another_room_is_refused(alice: Client, bob: Client) -> None:
    # SyTest 30rooms/10redactions "PUT /redact disallows redaction of event in different room".
    room_a = await create_room(alice)
    event_id = await send_text(alice, room_a, "keep me")
    room_b = await create_room(bob)
    response = await bob.put(f"/rooms/{room_b}/redact/{event_id}/r1", {})
    assert_error(response, 400, "M_UNKNOWN")
    path = f"/rooms/{room_b}/send/m.room.redaction/r2"
    assert_error(await bob.put(path, {"redacts": event_id}), 400, "M_UNKNOWN")
    # The same for a member of both rooms.
    response = await alice.put(f"/rooms/{await create_room(alice)}/redact/{event_id}/r3", {})
    assert_error(response, 400, "M_UNKNOWN")
    event = assert_ok(await alice.get(f"/rooms/{room_a}/event/{event_id}"))
    assert event["content"]["body"] == "keep me"


# -- /state ---------------------------------------------------------------------------------


async def test_get_state_lists_current_state(alice: Client) -> None:
    room_id = await create_room(alice, name="Room", topic="t")
    state = await room_state(alice, room_id)
    assert isinstance(state, list)
    keys = {(e["type"], e["state_key"]) for e in state}
    for key in [
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
        ("m.room.power_levels", ""),
        ("m.room.join_rules", ""),
        ("m.room.history_visibility", ""),
        ("m.room.name", ""),
        ("m.room.topic", ""),
    ]:
        assert key in keys
    assert len(keys) == len(state)
    assert all(e["room_id"] == room_id and "age" in e["unsigned"] for e in state)


async def test_state_event_after_replacement_keeps_prev_content(alice: Client) -> None:
    room_id = await create_room(alice, name="One")
    second = await set_state(alice, room_id, "m.room.name", {"name": "Two"})
    path = f"/rooms/{room_id}/state/m.room.name/"
    event = assert_ok(await alice.get(path, params={"format": "event"}))
    assert event["event_id"] == second
    assert event["content"] == {"name": "Two"}
    assert event["state_key"] == ""
    assert event["unsigned"]["prev_content"] == {"name": "One"}
    assert event["unsigned"]["replaces_state"].startswith("$")


async def test_get_state_event_content_and_errors(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, name="Named")
    name_path = f"/rooms/{room_id}/state/m.room.name"
    assert assert_ok(await alice.get(name_path)) == {"name": "Named"}
    assert assert_ok(await alice.get(name_path + "/")) == {"name": "Named"}
    assert assert_ok(await alice.get(name_path, params={"format": "content"})) == {"name": "Named"}
    member = assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.member/{alice.user_id}"))
    assert member["membership"] == "join"
    assert_error(await alice.get(f"/rooms/{room_id}/state/m.room.topic"), 404, "M_NOT_FOUND")
    assert_error(await alice.get(name_path, params={"format": "xml"}), 400, "M_INVALID_PARAM")
    assert_error(await bob.get(name_path), 403, "M_FORBIDDEN")
    assert_error(await bob.get(f"/rooms/{room_id}/state"), 403, "M_FORBIDDEN")
    assert_error(await alice.get("/rooms/!unknown:localhost/state"), 403, "M_FORBIDDEN")


async def test_left_user_reads_state_as_of_their_leave(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat", name="Before")
    await join(bob, room_id)
    await leave(bob, room_id)
    await set_state(alice, room_id, "m.room.name", {"name": "After"})
    state = await room_state(bob, room_id)
    by_key = {(e["type"], e["state_key"]): e for e in state}
    assert by_key[("m.room.name", "")]["content"] == {"name": "Before"}
    assert by_key[("m.room.member", bob.user_id)]["content"]["membership"] == "leave"
    name = assert_ok(await bob.get(f"/rooms/{room_id}/state/m.room.name/"))
    assert name == {"name": "Before"}
    # Forgetting the room ends that access (Synapse).
    assert_ok(await bob.post(f"/rooms/{room_id}/forget", {}))
    assert_error(await bob.get(f"/rooms/{room_id}/state"), 403, "M_FORBIDDEN")


async def test_redacted_state_event_in_state_is_pruned(alice: Client) -> None:
    room_id = await create_room(alice, topic="hello")
    topic = assert_ok(
        await alice.get(f"/rooms/{room_id}/state/m.room.topic", params={"format": "event"})
    )
    path = f"/rooms/{room_id}/redact/{topic['event_id']}/r1"
    assert_ok(await alice.put(path, {}))
    state = await room_state(alice, room_id)
    (event,) = [e for e in state if e["type"] == "m.room.topic"]
    assert event["content"] == {}
    assert "redacted_because" in event["unsigned"]
    assert assert_ok(await alice.get(f"/rooms/{room_id}/state/m.room.topic")) == {}


# -- /members, /joined_members, /joined_rooms ------------------------------------------------


async def test_members_with_membership_filters(alice: Client, bob: Client, carol: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await invite(alice, room_id, carol.user_id)
    path = f"/rooms/{room_id}/members"

    async def members(**params: str) -> dict[str, str]:
        chunk = assert_ok(await alice.get(path, params=params))["chunk"]
        assert all(e["type"] == "m.room.member" for e in chunk)
        return {e["state_key"]: e["content"]["membership"] for e in chunk}

    everyone = {alice.user_id: "join", bob.user_id: "join", carol.user_id: "invite"}
    assert await members() == everyone
    assert await members(membership="join") == {alice.user_id: "join", bob.user_id: "join"}
    assert await members(not_membership="join") == {carol.user_id: "invite"}
    # Spec: both together are an "or": membership is `membership` or is not `not_membership`.
    assert await members(membership="invite", not_membership="join") == {carol.user_id: "invite"}
    assert await members(membership="join", not_membership="invite") == {
        alice.user_id: "join",
        bob.user_id: "join",
    }
    assert_error(await alice.get(path, params={"membership": "joined"}), 400, "M_INVALID_PARAM")
    assert_error(await carol.get(path), 403, "M_FORBIDDEN")


async def test_members_at_a_token(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    before_bob = (await messages(alice, room_id, dir="b", limit=1))["start"]
    await join(bob, room_id)
    path = f"/rooms/{room_id}/members"
    then = assert_ok(await alice.get(path, params={"at": before_bob}))["chunk"]
    assert [e["state_key"] for e in then] == [alice.user_id]
    now = assert_ok(await alice.get(path))["chunk"]
    assert {e["state_key"] for e in now} == {alice.user_id, bob.user_id}
    assert_error(await alice.get(path, params={"at": "bogus"}), 400, "M_INVALID_PARAM")


async def test_left_user_sees_members_as_of_their_leave(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await leave(bob, room_id)
    await invite(alice, room_id, "@dave:localhost")
    chunk = assert_ok(await bob.get(f"/rooms/{room_id}/members"))["chunk"]
    assert {e["state_key"]: e["content"]["membership"] for e in chunk} == {
        alice.user_id: "join",
        bob.user_id: "leave",
    }


async def test_joined_members(alice: Client, bob: Client, carol: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    content = {"membership": "join", "displayname": "Bob", "avatar_url": "mxc://localhost/b"}
    await set_state(bob, room_id, "m.room.member", content, bob.user_id)
    await invite(alice, room_id, carol.user_id)
    path = f"/rooms/{room_id}/joined_members"
    joined = assert_ok(await alice.get(path))["joined"]
    assert set(joined) == {alice.user_id, bob.user_id}
    assert joined[bob.user_id] == {"display_name": "Bob", "avatar_url": "mxc://localhost/b"}
    # Both keys are always there, null when unset (SyTest 10apidoc/31room-state).
    assert joined[alice.user_id] == {"display_name": "alice", "avatar_url": None}
    assert_error(await carol.get(path), 403, "M_FORBIDDEN")
    await leave(bob, room_id)
    assert_error(await bob.get(path), 403, "M_FORBIDDEN")


async def test_joined_rooms(alice: Client, bob: Client) -> None:
    assert assert_ok(await bob.get("/joined_rooms")) == {"joined_rooms": []}
    first = await create_room(alice, preset="public_chat")
    second = await create_room(alice, preset="public_chat")
    await join(bob, first)
    await join(bob, second)
    assert set(assert_ok(await bob.get("/joined_rooms"))["joined_rooms"]) == {first, second}
    await leave(bob, first)
    assert assert_ok(await bob.get("/joined_rooms"))["joined_rooms"] == [second]


# -- /context -------------------------------------------------------------------------------


async def test_context_around_an_event(alice: Client) -> None:
    room_id = await create_room(alice)
    sent = [await send_text(alice, room_id, f"m{i}") for i in range(9)]
    body = assert_ok(await alice.get(f"/rooms/{room_id}/context/{sent[4]}", params={"limit": 4}))
    assert body["event"]["event_id"] == sent[4]
    assert ids(body["events_before"]) == [sent[3], sent[2]]
    assert ids(body["events_after"]) == [sent[5], sent[6]]
    assert {(e["type"], e["state_key"]) for e in body["state"]} >= {
        ("m.room.create", ""),
        ("m.room.member", alice.user_id),
    }
    # The tokens continue the context with /messages.
    older = await messages(alice, room_id, dir="b", limit=2, **{"from": body["start"]})
    assert ids(older["chunk"]) == [sent[1], sent[0]]
    newer = await messages(alice, room_id, dir="f", limit=2, **{"from": body["end"]})
    assert ids(newer["chunk"]) == [sent[7], sent[8]]


async def test_context_limit_zero_and_default(alice: Client) -> None:
    room_id = await create_room(alice)
    sent = [await send_text(alice, room_id, f"m{i}") for i in range(12)]
    body = assert_ok(await alice.get(f"/rooms/{room_id}/context/{sent[6]}", params={"limit": 0}))
    assert body["event"]["event_id"] == sent[6]
    assert body["events_before"] == []
    assert body["events_after"] == []
    body = assert_ok(await alice.get(f"/rooms/{room_id}/context/{sent[6]}"))
    assert len(body["events_before"]) == 5
    assert ids(body["events_after"]) == sent[7:12]


async def test_context_filter_and_lazy_members(alice: Client, bob: Client, carol: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    await send_text(bob, room_id, "from bob")
    middle = await send_text(alice, room_id, "middle")
    await set_state(alice, room_id, "m.room.topic", {"topic": "x"})
    await send_text(bob, room_id, "bob again")
    event_filter = {"types": ["m.room.message"], "lazy_load_members": True}
    body = assert_ok(
        await alice.get(
            f"/rooms/{room_id}/context/{middle}",
            params={"limit": 2, "filter": json.dumps(event_filter)},
        )
    )
    assert [e["content"]["body"] for e in body["events_before"]] == ["from bob"]
    assert [e["content"]["body"] for e in body["events_after"]] == ["bob again"]
    # Lazy-loading: only the senders' member events (and the type filter applies to state).
    assert body["state"] == []
    event_filter = {"lazy_load_members": True, "not_types": ["m.room.topic"]}
    body = assert_ok(
        await alice.get(
            f"/rooms/{room_id}/context/{middle}",
            params={"limit": 2, "filter": json.dumps(event_filter)},
        )
    )
    assert {e["state_key"] for e in body["state"]} == {alice.user_id, bob.user_id}


async def test_context_errors(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "x")
    path = f"/rooms/{room_id}/context/{event_id}"
    assert_error(await alice.get(f"/rooms/{room_id}/context/$missing"), 404, "M_NOT_FOUND")
    # A non-member of a room that is not world-readable: 403, as Synapse (SyTest
    # 30rooms/50context "/context/ on non world readable room does not work").
    assert_error(await bob.get(path), 403, "M_FORBIDDEN")
    assert_error(await alice.get(path, params={"limit": "x"}), 400, "M_INVALID_PARAM")
    assert_error(await alice.get(path, params={"filter": "{"}), 400, "M_NOT_JSON")


async def test_context_invisible_event_for_a_reader_is_not_found(
    alice: Client, bob: Client
) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await set_state(alice, room_id, "m.room.history_visibility", {"history_visibility": "joined"})
    early = await send_text(alice, room_id, "before bob")
    await join(bob, room_id)
    response = await bob.get(f"/rooms/{room_id}/context/{early}")
    assert_error(response, 404, "M_NOT_FOUND")
    world = await create_room(alice, preset="public_chat")
    await set_state(
        alice, world, "m.room.history_visibility", {"history_visibility": "world_readable"}
    )
    shown = await send_text(alice, world, "for all")
    body = assert_ok(await bob.get(f"/rooms/{world}/context/{shown}"))
    assert body["event"]["event_id"] == shown


async def test_context_of_redacted_event(alice: Client) -> None:
    room_id = await create_room(alice)
    event_id = await send_text(alice, room_id, "bad words")
    after = await send_text(alice, room_id, "after")
    assert_ok(await alice.put(f"/rooms/{room_id}/redact/{event_id}/r1", {}))
    body = assert_ok(await alice.get(f"/rooms/{room_id}/context/{after}", params={"limit": 2}))
    (before,) = body["events_before"]
    assert before["event_id"] == event_id
    assert before["content"] == {}
    assert before["unsigned"]["redacted_because"]["type"] == "m.room.redaction"
    body = assert_ok(await alice.get(f"/rooms/{room_id}/context/{event_id}", params={"limit": 2}))
    assert body["event"]["content"] == {}
    assert "redacted_because" in body["event"]["unsigned"]
