"""POST /search: what leaves the index (redactions, expiry, erasure), what survives a restart or
an upgrade, and bad input (always a 400 Matrix error, never a 500)."""

from __future__ import annotations

import base64
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import trio

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, join, send_text
from tests.integration.server_db import sqlite_only
from tests.integration.test_search import found_ids, search, search_raw

FIELD = "org.matrix.self_destruct_after"


async def _redact(client: Client, room_id: str, event_id: str) -> None:
    path = f"/rooms/{room_id}/redact/{event_id}/r{time.monotonic_ns()}"
    assert_ok(await client.put(path, {"reason": "testing"}))


@pytest.mark.parametrize("order", ["rank", "recent"])
async def test_redacted_events_are_never_found(alice: Client, order: str) -> None:
    # Complement "Search results with ... ordering do not include redacted events".
    room = await create_room(alice, preset="private_chat")
    redacted = await send_text(alice, room, "This message is going to be redacted")
    kept = await send_text(alice, room, "This message is not going to be redacted")
    await _redact(alice, room, redacted)
    result = await search(alice, "redacted", keys=["content.body"], order_by=order)
    assert found_ids(result) == [kept]
    assert result["count"] == 1


async def _client(hs: InProcessServer, http: httpx.AsyncClient, name: str) -> Client:
    user = await hs.register_user(name, "pw")
    return Client(http, user.user_id, user.access_token, user.device_id)


async def test_expired_messages_leave_the_index(tmp_path: Path) -> None:
    async with (
        serve_in_process(data_dir=tmp_path, enable_ephemeral_messages=True) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice = await _client(hs, http, "alice")
        room = await create_room(alice)
        expires = int(time.time() * 1000) + 1_500
        await send_text(alice, room, "ephemeral gossip", **{FIELD: expires})
        lasting = await send_text(alice, room, "lasting gossip")
        assert len(found_ids(await search(alice, "gossip"))) == 2
        with trio.fail_after(10):
            while True:
                result = await search(alice, "gossip")
                if len(result["results"]) < 2:
                    break
                await trio.sleep(0.1)
        assert found_ids(result) == [lasting]
        assert result["count"] == 1


async def test_an_erased_senders_messages_are_not_found_by_new_members(
    hs: InProcessServer, http: httpx.AsyncClient, alice: Client, bob: Client
) -> None:
    carol = await _client(hs, http, "carol")
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    event_id = await send_text(alice, room, "my embarrassing confession")
    await join(carol, room)
    assert found_ids(await search(carol, "confession")) == [event_id]
    body = {"erase": True}
    assert_ok(await alice.with_password_uia("POST", "/account/deactivate", body, "alicepw"))
    # Bob was there when it was sent and still sees it; carol is served it redacted.
    assert found_ids(await search(bob, "confession")) == [event_id]
    assert found_ids(await search(carol, "confession")) == []


async def test_the_index_survives_a_restart(tmp_path: Path) -> None:
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice = await _client(hs, http, "alice")
        room = await create_room(alice)
        event_id = await send_text(alice, room, "persistent walrus")
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice.http = http
        assert found_ids(await search(alice, "walrus")) == [event_id]
        later = await send_text(alice, room, "another walrus")
        assert found_ids(await search(alice, "walrus", order_by="recent")) == [later, event_id]


# The upgrade of a SQLite database: a PostgreSQL one always starts at the current schema
# (sql/14_search.postgres.sql has no backfill).
@sqlite_only
async def test_an_upgraded_server_indexes_its_old_messages(tmp_path: Path) -> None:
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice = await _client(hs, http, "alice")
        room = await create_room(alice, name="Old Narwhal Room")
        old = await send_text(alice, room, "an old narwhal message")
        redacted = await send_text(alice, room, "a redacted narwhal")
        await _redact(alice, room, redacted)
        db_path = hs.config.data_path(hs.config.database.path)
    # Turn the database back into one from before sql/14_search.sql.
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("DROP TABLE event_search")
        conn.execute("DELETE FROM schema_files WHERE name = '14_search.sql'")
    conn.close()
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice.http = http
        result = await search(alice, "narwhal", order_by="recent")
        types = [r["result"]["type"] for r in result["results"]]
        assert types == ["m.room.message", "m.room.name"]
        assert found_ids(result)[0] == old


def _room_events(**fields: Any) -> dict[str, Any]:
    return {"search_categories": {"room_events": {"search_term": "hello", **fields}}}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"search_categories": []},
        {"search_categories": {"room_events": "hello"}},
        {"search_categories": {"room_events": {}}},
        {"search_categories": {"room_events": {"search_term": ""}}},
        {"search_categories": {"room_events": {"search_term": "   "}}},
        {"search_categories": {"room_events": {"search_term": 42}}},
        {"search_categories": {"room_events": {"search_term": "x" * 513}}},
        {"search_categories": {"people": {"search_term": "x"}}},
        _room_events(keys=["content.foo"]),
        _room_events(keys=[]),
        _room_events(keys=[{}]),
        _room_events(keys=[["content.body"]]),
        _room_events(keys="content.body"),
        _room_events(order_by="best"),
        _room_events(filter=[]),
        _room_events(filter={"limit": -1}),
        _room_events(filter={"limit": "10"}),
        _room_events(filter={"rooms": ["not a room id"]}),
        _room_events(filter={"senders": [7]}),
        _room_events(event_context=[]),
        _room_events(event_context={"before_limit": -1}),
        _room_events(event_context={"after_limit": 101}),
        _room_events(event_context={"after_limit": "2"}),
        _room_events(event_context={"include_profile": "yes"}),
        _room_events(include_state="true"),
        _room_events(groupings=[]),
        _room_events(groupings={"group_by": [{"key": "type"}]}),
        _room_events(groupings={"group_by": {"key": "room_id"}}),
    ],
)
async def test_malformed_bodies_are_400(alice: Client, body: dict[str, Any]) -> None:
    assert_error(await alice.post("/search", body), 400, "M_BAD_JSON")


async def test_a_body_that_is_not_json_is_400(alice: Client) -> None:
    response = await alice.http.post(
        "/_matrix/client/v3/search", content=b"{nope", headers=alice.headers
    )
    assert_error(response, 400, "M_NOT_JSON")


@pytest.mark.parametrize(
    "term",
    [
        '"foo',
        "a AND (",
        "NEAR(a b)",
        "value: hello",
        "^hello*",
        '""""',
        "- -- ---",
        "hello OR OR or",
        "(((",
        "*",
        "a NOT",
        "x" * 512,
        "ünïcødé 東京",
    ],
)
async def test_fts_syntax_in_a_term_is_only_text(alice: Client, term: str) -> None:
    room = await create_room(alice)
    await send_text(alice, room, "hello a foo b NEAR value 東京")
    result = await search(alice, term)
    assert isinstance(result["count"], int)


async def test_syntax_characters_still_find_their_words(alice: Client) -> None:
    room = await create_room(alice)
    event_id = await send_text(alice, room, "hello world")
    assert found_ids(await search(alice, '"hello')) == [event_id]
    assert found_ids(await search(alice, "hello AND (")) == []  # "and" is a word here
    assert found_ids(await search(alice, "(hello)*")) == [event_id]


def _b64(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).decode()


@pytest.mark.parametrize(
    "token",
    [
        "garbage!",
        "",
        _b64(b"not json"),
        _b64(b"[1, 2]"),
        _b64(orjson.dumps({"o": "recent", "s": "1", "r": 0.0})),
        _b64(orjson.dumps({"o": "recent", "s": -1, "r": 0.0})),
        _b64(b'{"o": "recent", "s": 1180591620717411303424, "r": 0.0}'),
        _b64(b'{"o": "recent", "s": 4611686018427387904, "r": 0.0}'),
        _b64(orjson.dumps({"o": "recent", "s": 1, "r": 0.0, "g": "sender", "k": "@a:b"})),
        _b64(orjson.dumps({"o": "recent", "s": 1, "r": 0.0, "g": "room_id", "k": 5})),
        _b64(orjson.dumps({"o": "rank", "s": 1, "r": 0.0})),
        "A" * 2000,
    ],
)
async def test_bad_next_batch_is_400(alice: Client, token: str) -> None:
    response = await search_raw(alice, "hello", token, order_by="recent")
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_a_next_batch_of_another_order_is_400(alice: Client) -> None:
    room = await create_room(alice)
    for i in range(3):
        await send_text(alice, room, f"paging {i}")
    page = await search(alice, "paging", filter={"limit": 1}, order_by="recent")
    response = await search_raw(alice, "paging", page["next_batch"], order_by="rank")
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_an_oversized_filter_limit_is_capped(alice: Client) -> None:
    room = await create_room(alice)
    for i in range(3):
        await send_text(alice, room, f"capped {i}")
    result = await search(alice, "capped", filter={"limit": 10**9})
    assert len(result["results"]) == 3
