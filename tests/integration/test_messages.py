"""GET /rooms/{roomId}/messages over HTTP: pagination, tokens, filters and redactions."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import httpx
import pytest

import trio

from trioserver.keys import load_key_file
from trioserver.nursery import build_components
from trioserver.storage.intents import EventIntent
from trioserver.stores.database import open_configured_database
from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import (
    bodies,
    create_room,
    ids,
    join,
    messages,
    paginate_all,
    send,
    send_text,
    set_state,
)


@pytest.fixture
async def carol(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("carol", "carolpw")
    return Client(http, user.user_id, user.access_token, user.device_id)


async def _room_with_messages(alice: Client, count: int) -> tuple[str, list[str]]:
    room_id = await create_room(alice)
    return room_id, [await send_text(alice, room_id, f"m{i}") for i in range(count)]


async def test_backwards_pagination_round_trips_until_exhausted(alice: Client) -> None:
    room_id, sent = await _room_with_messages(alice, 10)
    events, pages = await paginate_all(alice, room_id, "b", 3)
    assert bodies(events) == [f"m{i}" for i in reversed(range(10))]
    assert events[0]["event_id"] == sent[-1]
    assert events[-1]["type"] == "m.room.create"
    assert len(set(ids(events))) == len(events)
    assert all(len(page["chunk"]) == 3 for page in pages[:-2])
    # As Synapse (SyTest 10apidoc/34room-messages): the page that reaches the room's start
    # still has `end`; the request after it finds nothing and has none.
    assert "end" in pages[-2]
    assert pages[-1]["chunk"] == []
    assert "end" not in pages[-1]
    # `start` echoes the `from` of each page.
    for previous, page in itertools.pairwise(pages):
        assert page["start"] == previous["end"]
    assert "state" not in pages[0]


async def test_forwards_pagination_from_the_start(alice: Client) -> None:
    room_id, _ = await _room_with_messages(alice, 7)
    forwards, pages = await paginate_all(alice, room_id, "f", 4)
    backwards, _ = await paginate_all(alice, room_id, "b", 5)
    assert ids(forwards) == list(reversed(ids(backwards)))
    assert forwards[0]["type"] == "m.room.create"
    assert pages[0]["start"] == "t0-0"
    assert "end" not in pages[-1]


async def test_the_page_reaching_the_start_has_end_and_the_next_is_empty(alice: Client) -> None:
    room_id = await create_room(alice)
    total = len((await paginate_all(alice, room_id, "b", 100))[0])
    for limit in (total, total + 5):
        events, pages = await paginate_all(alice, room_id, "b", limit)
        assert len(pages) == 2
        assert len(events) == total
        assert "end" in pages[0]
        assert pages[1] == {"chunk": [], "start": pages[0]["end"]}


async def test_backwards_token_used_forwards_returns_the_page_again(alice: Client) -> None:
    room_id, sent = await _room_with_messages(alice, 6)
    first = await messages(alice, room_id, dir="b", limit=2)
    second = await messages(alice, room_id, dir="b", limit=2, **{"from": first["end"]})
    assert ids(second["chunk"]) == [sent[3], sent[2]]
    # Paging forwards from the end of the second page replays it, then the first.
    forwards = await messages(alice, room_id, dir="f", limit=4, **{"from": second["end"]})
    assert ids(forwards["chunk"]) == sent[2:6]
    # And from the start token of a page, forwards, there is nothing newer.
    latest = await messages(alice, room_id, dir="f", limit=4, **{"from": first["start"]})
    assert latest["chunk"] == []
    assert "end" not in latest


async def test_to_bounds_pagination(alice: Client) -> None:
    room_id, sent = await _room_with_messages(alice, 8)
    first = await messages(alice, room_id, dir="b", limit=3)
    assert ids(first["chunk"]) == [sent[7], sent[6], sent[5]]
    # Backwards from the newest, stopping at the end of the first page.
    bounded = await messages(alice, room_id, dir="b", limit=10, to=first["end"])
    assert ids(bounded["chunk"]) == [sent[7], sent[6], sent[5]]
    after = await messages(
        alice, room_id, dir="b", limit=10, to=first["end"], **{"from": bounded["end"]}
    )
    assert after["chunk"] == []
    assert "end" not in after
    # Forwards from that point up to the newest position.
    forwards = await messages(
        alice, room_id, dir="f", limit=2, to=first["start"], **{"from": first["end"]}
    )
    assert ids(forwards["chunk"]) == [sent[5], sent[6]]
    rest = await messages(
        alice, room_id, dir="f", limit=5, to=first["start"], **{"from": forwards["end"]}
    )
    assert ids(rest["chunk"]) == [sent[7]]
    done = await messages(
        alice, room_id, dir="f", limit=5, to=first["start"], **{"from": rest["end"]}
    )
    assert done["chunk"] == []
    assert "end" not in done


async def test_sync_style_stream_tokens_are_accepted(alice: Client) -> None:
    room_id, sent = await _room_with_messages(alice, 4)
    newest = await messages(alice, room_id, dir="b", limit=1)
    topo_token = newest["start"]  # t{topo}-{stream}
    stream = topo_token.split("-")[1]
    for token in (f"s{stream}", f"s{stream}_0_0_0"):
        page = await messages(alice, room_id, dir="b", limit=2, **{"from": token})
        assert ids(page["chunk"]) == [sent[3], sent[2]]
        # Spec: `start` is the `from` given, even when it is a sync token.
        assert page["start"] == token
        after = await messages(alice, room_id, dir="f", limit=2, **{"from": token})
        assert after["chunk"] == []
    older = await messages(alice, room_id, dir="f", limit=10, **{"from": "s1"})
    assert ids(older["chunk"])[-4:] == sent


async def test_default_direction_and_limit(alice: Client) -> None:
    room_id, _ = await _room_with_messages(alice, 15)
    page = await messages(alice, room_id)
    assert len(page["chunk"]) == 10
    assert page["chunk"][0]["type"] == "m.room.create"
    capped = await messages(alice, room_id, dir="b", limit=100_000)
    assert capped["chunk"][-1]["type"] == "m.room.create"
    after = await messages(alice, room_id, dir="b", **{"from": capped["end"]})
    assert "end" not in after


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"dir": "x"}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "garbage"}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "t1"}, "M_INVALID_PARAM"),
        ({"dir": "b", "to": "x1-2"}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "t99999999999999999999999-1"}, "M_INVALID_PARAM"),
        ({"dir": "f", "from": "s99999999999999999999999"}, "M_INVALID_PARAM"),
        ({"dir": "b", "from": "t-1-2"}, "M_INVALID_PARAM"),
        ({"dir": "b", "limit": "-1"}, "M_INVALID_PARAM"),
        ({"dir": "b", "limit": "ten"}, "M_INVALID_PARAM"),
        ({"dir": "b", "filter": "{not json"}, "M_NOT_JSON"),
        ({"dir": "b", "filter": "[]"}, "M_BAD_JSON"),
        ({"dir": "b", "filter": '{"types": "m.room.message"}'}, "M_BAD_JSON"),
        ({"dir": "b", "filter": '{"contains_url": 1}'}, "M_BAD_JSON"),
        ({"dir": "b", "filter": '{"event_format": "xml"}'}, "M_BAD_JSON"),
    ],
)
async def test_bad_parameters(alice: Client, params: dict[str, str], errcode: str) -> None:
    room_id = await create_room(alice)
    response = await alice.get(f"/rooms/{room_id}/messages", params=params)
    assert_error(response, 400, errcode)


async def test_non_member_is_forbidden(alice: Client, bob: Client) -> None:
    room_id, _ = await _room_with_messages(alice, 1)
    response = await bob.get(f"/rooms/{room_id}/messages", params={"dir": "b"})
    assert_error(response, 403, "M_FORBIDDEN")
    response = await bob.get("/rooms/!nowhere:localhost/messages", params={"dir": "b"})
    assert_error(response, 403, "M_FORBIDDEN")


async def test_type_sender_and_url_filters(alice: Client, bob: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await send_text(alice, room_id, "a1")
    await send_text(bob, room_id, "b1")
    await send(alice, room_id, "com.example.custom", {"body": "custom"})
    await send_text(bob, room_id, "image", url="mxc://localhost/abc")
    await send(alice, room_id, "m.reaction", {"body": "r"})

    async def page(event_filter: dict[str, Any]) -> list[tuple[str, str]]:
        chunk = (await messages(alice, room_id, dir="b", limit=50, filter=event_filter))["chunk"]
        return [(e["type"], e["content"].get("body", "")) for e in chunk if "body" in e["content"]]

    assert await page({"types": ["m.room.message"]}) == [
        ("m.room.message", "image"),
        ("m.room.message", "b1"),
        ("m.room.message", "a1"),
    ]
    assert await page({"types": ["m.r*"], "not_types": ["m.room.*"]}) == [("m.reaction", "r")]
    assert await page({"types": ["com.example.*", "m.reaction"]}) == [
        ("m.reaction", "r"),
        ("com.example.custom", "custom"),
    ]
    assert [b for _, b in await page({"senders": [bob.user_id]})] == ["image", "b1"]
    assert [
        b for _, b in await page({"not_senders": [bob.user_id], "types": ["m.room.message"]})
    ] == ["a1"]
    assert [b for _, b in await page({"contains_url": True})] == ["image"]
    assert "image" not in [b for _, b in await page({"contains_url": False})]
    assert await page({"types": []}) == []
    # `rooms` and `not_rooms` do not apply: the path names the room.
    assert len(await page({"not_rooms": [room_id], "rooms": ["!other:localhost"]})) == 5
    # `not_` wins over the positive list.
    assert await page({"senders": [bob.user_id], "not_senders": [bob.user_id]}) == []


async def test_filtered_pages_fill_up_and_still_end(alice: Client) -> None:
    room_id = await create_room(alice)
    for i in range(30):
        await send(alice, room_id, "com.example.noise", {"i": i})
        if i % 10 == 0:
            await send_text(alice, room_id, f"signal{i}")
    events, pages = await paginate_all(
        alice, room_id, "b", 2, filter={"types": ["m.room.message"]}
    )
    assert bodies(events) == ["signal20", "signal10", "signal0"]
    assert [len(p["chunk"]) for p in pages] == [2, 1, 0]


async def test_lazy_loaded_members(alice: Client, bob: Client, carol: Client) -> None:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    await join(carol, room_id)
    await send_text(bob, room_id, "hi from bob")
    await send_text(alice, room_id, "hi from alice")
    page = await messages(
        alice,
        room_id,
        dir="b",
        limit=2,
        filter={"lazy_load_members": True, "types": ["m.room.message"]},
    )
    assert bodies(page["chunk"]) == ["hi from alice", "hi from bob"]
    state = {e["state_key"]: e for e in page["state"]}
    assert set(state) == {alice.user_id, bob.user_id}
    assert all(e["type"] == "m.room.member" for e in state.values())
    assert state[bob.user_id]["content"]["membership"] == "join"
    # Without lazy loading there is no state.
    assert "state" not in await messages(alice, room_id, dir="b", limit=2)


async def test_event_fields_and_federation_format(alice: Client) -> None:
    room_id, _ = await _room_with_messages(alice, 1)
    event_filter = {"event_fields": ["type", "content.body", "unsigned.nope"]}
    (event,) = (await messages(alice, room_id, dir="b", limit=1, filter=event_filter))["chunk"]
    assert event == {"type": "m.room.message", "content": {"body": "m0"}}
    (pdu,) = (
        await messages(alice, room_id, dir="b", limit=1, filter={"event_format": "federation"})
    )["chunk"]
    assert {"depth", "hashes", "signatures", "prev_events", "auth_events"} <= set(pdu)
    assert pdu["event_id"].startswith("$")


async def test_redacted_events_in_messages(alice: Client) -> None:
    room_id, sent = await _room_with_messages(alice, 3)
    path = f"/rooms/{room_id}/redact/{sent[1]}/r1"
    redaction_id = assert_ok(await alice.put(path, {"reason": "spam"}))["event_id"]
    chunk = (await messages(alice, room_id, dir="b", limit=4))["chunk"]
    assert ids(chunk) == [redaction_id, sent[2], sent[1], sent[0]]
    redacted = chunk[2]
    assert redacted["content"] == {}
    assert redacted["unsigned"]["redacted_because"]["content"] == {
        "reason": "spam",
        "redacts": sent[1],
    }
    assert chunk[0]["redacts"] == sent[1]
    assert chunk[1]["content"]["body"] == "m2"


async def test_state_redaction_without_target_is_served(alice: Client) -> None:
    # The only client route to an m.room.redaction without `redacts` is a state event.
    room_id = await create_room(alice)
    event_id = await set_state(alice, room_id, "m.room.redaction", {"reason": "none"})
    (event,) = (await messages(alice, room_id, dir="b", limit=1))["chunk"]
    assert event["event_id"] == event_id
    assert "redacts" not in event
    assert event["content"] == {"reason": "none"}
    assert_ok(await alice.get(f"/rooms/{room_id}/event/{event_id}"))
    assert_ok(await alice.get(f"/rooms/{room_id}/context/{event_id}"))


async def _persist_directly(hs: InProcessServer, room_id: str, intent: EventIntent) -> str:
    """Submit an event through the persistence controller of a stopped server's data dir."""
    # The events writer's components (hs may be a worker: TRIOSERVER_TEST_VIA_WORKER).
    config = hs.config.for_instance(hs.config.stream_writers.events)
    key = load_key_file(config.data_path(config.signing_key_path))
    async with open_configured_database(config, readers=1) as db:
        components = build_components(config, db, key)
        assert components.persister is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(components.persister.run)
            (stored,) = await components.persister.submit(room_id, [intent])
            nursery.cancel_scope.cancel()
    return stored.event_id


@pytest.mark.parametrize("room_version", ["10", "12"])
async def test_seed5_redaction_without_target_from_the_persister(
    tmp_path: Path, room_version: str
) -> None:
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        room_id = await create_room(alice, room_version=room_version)
        before = await send_text(alice, room_id, "before")
    intent = EventIntent(type="m.room.redaction", sender=alice.user_id, content={"reason": "?"})
    redaction_id = await _persist_directly(hs, room_id, intent)
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice.http = http
        after = await send_text(alice, room_id, "after")
        chunk = (await messages(alice, room_id, dir="b", limit=3))["chunk"]
        assert ids(chunk) == [after, redaction_id, before]
        redaction = chunk[1]
        assert redaction["type"] == "m.room.redaction"
        assert "redacts" not in redaction
        assert "redacts" not in redaction["content"]
        assert chunk[2]["content"]["body"] == "before"
        event = assert_ok(await alice.get(f"/rooms/{room_id}/event/{redaction_id}"))
        assert event["event_id"] == redaction_id
        context = assert_ok(
            await alice.get(f"/rooms/{room_id}/context/{redaction_id}", params={"limit": 2})
        )
        assert ids(context["events_before"]) == [before]
        assert ids(context["events_after"]) == [after]


async def test_redact_without_a_transaction_id(alice: Client) -> None:
    room_id, sent = await _room_with_messages(alice, 2)
    first = assert_ok(await alice.post(f"/rooms/{room_id}/redact/{sent[0]}", {}))["event_id"]
    # Not idempotent: each POST is a new redaction (as in Synapse).
    again = assert_ok(await alice.post(f"/rooms/{room_id}/redact/{sent[0]}", {"reason": "x"}))
    assert again["event_id"] != first
    chunk = (await messages(alice, room_id, dir="b", limit=5))["chunk"]
    redacted = next(e for e in chunk if e["event_id"] == sent[0])
    assert redacted["content"] == {}
    assert redacted["unsigned"]["redacted_by"] in (first, again["event_id"])
