"""Threads over real HTTP: the ``m.thread`` aggregation and ``GET /threads`` (spec "Threading")."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

import trio
from trio.testing import MockClock

from trioserver.storage.intents import EventIntent
from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.relation_helpers import (
    bundled,
    edit,
    get_threads,
    relations,
    thread_reply,
)
from tests.integration.room_helpers import create_room, ids, join, messages, send_text
from tests.integration.server_db import sqlite_only
from tests.integration.writer_env import trio_wall_clock, writer_env


async def _threads(client: Client, room: str, **params: Any) -> dict[str, Any]:
    return assert_ok(await get_threads(client, room, **params))


async def _thread_of(client: Client, room: str, root: str) -> dict[str, Any]:
    event = assert_ok(await client.get(f"/rooms/{room}/event/{root}"))
    summary: dict[str, Any] = bundled(event)["m.thread"]
    return summary


async def test_thread_summary_counts_replies_and_participation(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    root = await send_text(alice, room, "root")
    await thread_reply(alice, room, root, "one")
    latest = await thread_reply(alice, room, root, "two")
    mine = await _thread_of(alice, room, root)
    assert mine["count"] == 2
    assert mine["latest_event"]["event_id"] == latest
    assert mine["latest_event"]["content"]["body"] == "two"
    assert mine["current_user_participated"] is True
    assert (await _thread_of(bob, room, root))["current_user_participated"] is False
    await thread_reply(bob, room, root, "three")
    assert (await _thread_of(bob, room, root))["current_user_participated"] is True
    assert (await _thread_of(bob, room, root))["count"] == 3


async def test_thread_summary_in_sync_and_messages(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    root = await send_text(alice, room, "root")
    reply = await thread_reply(bob, room, root, "reply")
    reply_edit = await edit(bob, room, reply, "reply (edited)")
    synced = assert_ok(await alice.get("/sync"))
    timeline = synced["rooms"]["join"][room]["timeline"]["events"]
    (served_root,) = [e for e in timeline if e["event_id"] == root]
    summary = bundled(served_root)["m.thread"]
    assert summary["count"] == 1
    # The latest event carries its own edit (Synapse).
    latest = summary["latest_event"]
    assert latest["event_id"] == reply
    assert bundled(latest)["m.replace"]["event_id"] == reply_edit
    assert "room_id" not in latest  # /sync leaves room_id out, inside too
    page = await messages(alice, room, dir="b", limit=10)
    (paged_root,) = [e for e in page["chunk"] if e["event_id"] == root]
    assert bundled(paged_root)["m.thread"]["latest_event"]["room_id"] == room
    # An incremental sync after a new reply carries only the reply (the root is not sent
    # again): the client updates its thread from the reply itself.
    later = await thread_reply(alice, room, root, "later")
    again = assert_ok(await alice.get("/sync", params={"since": synced["next_batch"]}))
    assert ids(again["rooms"]["join"][room]["timeline"]["events"]) == [later]


async def test_threads_are_listed_by_latest_activity(alice: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    roots = [await send_text(alice, room, f"root {i}") for i in range(3)]
    for root in roots:
        await thread_reply(alice, room, root, "reply")
    await send_text(alice, room, "no thread here")
    # The oldest thread becomes the most recently active one.
    await thread_reply(alice, room, roots[0], "bump")
    body = await _threads(alice, room)
    assert ids(body["chunk"]) == [roots[0], roots[2], roots[1]]
    assert "next_batch" not in body
    assert body["chunk"][0]["room_id"] == room
    assert bundled(body["chunk"][0])["m.thread"]["count"] == 2
    # Paging one at a time gives the same order.
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 1}
    for _ in range(10):
        page = await _threads(alice, room, **params)
        seen += ids(page["chunk"])
        if "next_batch" not in page:
            break
        params["from"] = page["next_batch"]
    assert seen == [roots[0], roots[2], roots[1]]


async def test_threads_include_participated(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    by_alice = await send_text(alice, room, "alice's root")
    by_bob = await send_text(bob, room, "bob's root")
    other = await send_text(bob, room, "another of bob's")
    await thread_reply(bob, room, by_alice, "bob replies to alice")
    await thread_reply(alice, room, by_bob, "alice replies to bob")
    await thread_reply(bob, room, other, "bob alone")
    everything = await _threads(alice, room, include="all")
    assert set(ids(everything["chunk"])) == {by_alice, by_bob, other}
    mine = await _threads(alice, room, include="participated")
    assert ids(mine["chunk"]) == [by_bob, by_alice]


async def test_redacting_replies_updates_the_thread(alice: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    root = await send_text(alice, room, "root")
    first = await thread_reply(alice, room, root, "first")
    second = await thread_reply(alice, room, root, "second")
    assert_ok(await alice.put(f"/rooms/{room}/redact/{second}/r1", {}))
    summary = await _thread_of(alice, room, root)
    assert summary["count"] == 1
    assert summary["latest_event"]["event_id"] == first
    assert ids((await relations(alice, room, root))["chunk"]) == [first]
    assert ids((await _threads(alice, room))["chunk"]) == [root]
    assert_ok(await alice.put(f"/rooms/{room}/redact/{first}/r2", {}))
    event = assert_ok(await alice.get(f"/rooms/{room}/event/{root}"))
    assert "m.thread" not in bundled(event)
    assert (await _threads(alice, room))["chunk"] == []


async def test_ignored_users_in_threads(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="public_chat")
    await join(bob, room)
    root = await send_text(alice, room, "root")
    mine = await thread_reply(alice, room, root, "alice's reply")
    await thread_reply(bob, room, root, "bob's reply")
    bobs_root = await send_text(bob, room, "bob's root")
    await thread_reply(alice, room, bobs_root, "alice answers bob")
    ignore: dict[str, Any] = {"ignored_users": {bob.user_id: {}}}
    assert_ok(await alice.put(f"/user/{alice.user_id}/account_data/m.ignored_user_list", ignore))
    summary = await _thread_of(alice, room, root)
    assert summary["count"] == 1
    assert summary["latest_event"]["event_id"] == mine
    # Spec /threads: a root sent by an ignored user is returned redacted.
    listed = {e["event_id"]: e for e in (await _threads(alice, room))["chunk"]}
    assert set(listed) == {root, bobs_root}
    assert listed[bobs_root]["content"] == {}
    assert listed[root]["content"]["body"] == "root"


async def test_threads_bad_input_and_access(alice: Client, bob: Client) -> None:
    room = await create_room(alice, preset="private_chat")
    root = await send_text(alice, room, "root")
    await thread_reply(alice, room, root, "reply")
    assert_error(await get_threads(alice, room, include="mine"), 400, "M_INVALID_PARAM")
    assert_error(await get_threads(alice, room, limit="0"), 400, "M_INVALID_PARAM")
    assert_error(await get_threads(alice, room, limit="x"), 400, "M_INVALID_PARAM")
    assert_error(await get_threads(alice, room, **{"from": "garbage"}), 400, "M_INVALID_PARAM")
    assert_error(await get_threads(bob, room), 403, "M_FORBIDDEN")
    assert_error(await get_threads(bob, "!unknown:test"), 403, "M_FORBIDDEN")
    # A huge limit is capped, not refused.
    assert ids((await _threads(alice, room, limit="100000"))["chunk"]) == [root]


async def test_an_expired_reply_leaves_the_thread(tmp_path: Path, db_clock: MockClock) -> None:
    async with writer_env(tmp_path, enable_ephemeral_messages=True) as env:
        alice = await env.user("alice")
        room = await env.create_room(alice)
        root_intent = EventIntent("m.room.message", alice, {"msgtype": "m.text", "body": "root"})
        (root,) = await env.persister.submit(room, [root_intent])
        reply = {
            "msgtype": "m.text",
            "body": "gone soon",
            "m.relates_to": {"rel_type": "m.thread", "event_id": root.event_id},
            "org.matrix.self_destruct_after": int(trio_wall_clock() * 1000) + 1_000,
        }
        (sent,) = await env.persister.submit(room, [EventIntent("m.room.message", alice, reply)])
        rows = "SELECT event_id FROM event_relations"
        assert env.query(rows) == [(sent.event_id,)]
        assert env.query("SELECT latest_event_id FROM threads") == [(sent.event_id,)]
        await trio.sleep(1.5)
        assert env.query(rows) == []
        assert env.query("SELECT latest_event_id FROM threads") == []


# The upgrade of a SQLite database: a PostgreSQL one always starts at the current schema
# (sql/12_relations.postgres.sql has no backfill).
@sqlite_only
async def test_an_upgraded_server_indexes_its_old_relations(tmp_path: Path) -> None:
    # Events stored before sql/12_relations.sql existed are indexed when it is applied.
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        room = await create_room(alice)
        root = await send_text(alice, room, "root")
        await thread_reply(alice, room, root, "one")
        latest = await thread_reply(alice, room, root, "two")
        original = await send_text(alice, room, "tpyo")
        fixed = await edit(alice, room, original, "typo")
        db_path = hs.config.data_path(hs.config.database.path)
    # Turn the database back into one from before sql/12_relations.sql.
    conn = sqlite3.connect(db_path)
    with conn:
        conn.execute("DROP TABLE event_relations")
        conn.execute("DROP TABLE threads")
        conn.execute("DELETE FROM schema_files WHERE name = '12_relations.sql'")
    conn.close()
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        alice.http = http
        summary = await _thread_of(alice, room, root)
        assert (summary["count"], summary["latest_event"]["event_id"]) == (2, latest)
        assert [t["event_id"] for t in (await _threads(alice, room))["chunk"]] == [root]
        served = assert_ok(await alice.get(f"/rooms/{room}/event/{original}"))
        assert bundled(served)["m.replace"]["event_id"] == fixed
