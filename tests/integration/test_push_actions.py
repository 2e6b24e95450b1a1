"""Unread notification counts in /sync from push actions evaluated at send time (issue 11;
spec "Receiving notifications"; SyTest tests/61push/03_unread_count.pl)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

import trio

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client, assert_ok, register
from tests.integration.room_helpers import (
    create_room,
    join,
    leave,
    send,
    send_text,
    set_state,
)
from tests.integration.test_sync_rooms import sync

THREADED = {"room": {"timeline": {"unread_thread_notifications": True}}}


def counts(body: dict[str, Any], room_id: str) -> tuple[int, int]:
    unread = body["rooms"]["join"][room_id]["unread_notifications"]
    return unread["notification_count"], unread["highlight_count"]


async def receipt(
    client: Client,
    room_id: str,
    event_id: str,
    *,
    thread_id: str | None = None,
    private: bool = False,
) -> None:
    kind = "m.read.private" if private else "m.read"
    body = {} if thread_id is None else {"thread_id": thread_id}
    assert_ok(await client.post(f"/rooms/{room_id}/receipt/{kind}/{event_id}", body))


async def in_thread(client: Client, room_id: str, root: str, text: str) -> str:
    relation = {"rel_type": "m.thread", "event_id": root}
    return await send_text(client, room_id, text, **{"m.relates_to": relation})


async def shared_room(alice: Client, bob: Client) -> str:
    room_id = await create_room(alice, preset="public_chat")
    await join(bob, room_id)
    return room_id


async def test_messages_from_others_count_and_own_do_not(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    assert counts(await sync(alice), room_id) == (0, 0)
    await send_text(bob, room_id, "hello")
    await send_text(bob, room_id, "again")
    await send_text(alice, room_id, "mine")
    assert counts(await sync(alice), room_id) == (2, 0)
    # Synapse sets no implicit receipt when a user sends (synapse#14837): bob's count is
    # alice's one message, and alice's stays at 2 although she spoke last.
    assert counts(await sync(bob), room_id) == (1, 0)


async def test_notices_and_state_do_not_count(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    await send(bob, room_id, "m.room.message", {"msgtype": "m.notice", "body": "bot"})
    await set_state(alice, room_id, "m.room.topic", {"topic": "t"})
    assert counts(await sync(alice), room_id) == (0, 0)
    assert counts(await sync(bob), room_id) == (0, 0)


async def test_mentions_highlight(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    await set_state(
        alice,
        room_id,
        "m.room.member",
        {"membership": "join", "displayname": "Alicia"},
        alice.user_id,
    )
    await send_text(bob, room_id, "plain")
    await send_text(bob, room_id, "hi", **{"m.mentions": {"user_ids": [alice.user_id]}})
    await send_text(bob, room_id, "is alicia here?")
    assert counts(await sync(alice), room_id) == (3, 2)
    # Mentions of alice highlight nobody else (and her name change notifies nobody).
    await send_text(alice, room_id, "hi bob")
    assert counts(await sync(bob), room_id) == (1, 1)
    await send_text(alice, room_id, "Alicia is me")
    assert counts(await sync(bob), room_id) == (2, 1)


async def test_room_mention_highlights_only_with_power(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    everyone = {"m.mentions": {"room": True}}
    await send_text(bob, room_id, "@room hi", **everyone)  # bob has power 0 < 50
    assert counts(await sync(alice), room_id) == (1, 0)
    await send_text(alice, room_id, "@room hi", **everyone)  # alice is the creator (100)
    assert counts(await sync(bob), room_id) == (1, 1)


async def test_read_receipts_clear_counts(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    first = await send_text(bob, room_id, "one")
    second = await send_text(bob, room_id, "two", **{"m.mentions": {"user_ids": [alice.user_id]}})
    await send_text(bob, room_id, "three")
    assert counts(await sync(alice), room_id) == (3, 1)
    await receipt(alice, room_id, first)
    assert counts(await sync(alice), room_id) == (2, 1)
    await receipt(alice, room_id, second, private=True)
    assert counts(await sync(alice), room_id) == (1, 0)
    # An older receipt does not move anything back.
    await receipt(alice, room_id, first)
    assert counts(await sync(alice), room_id) == (1, 0)
    # Bob's counts are his own.
    assert counts(await sync(bob), room_id) == (0, 0)


async def test_threads_counted_apart_with_unread_thread_notifications(
    alice: Client, bob: Client
) -> None:
    room_id = await shared_room(alice, bob)
    root = await send_text(bob, room_id, "root")
    reply = await in_thread(bob, room_id, root, "reply 1")
    await in_thread(bob, room_id, root, "reply 2")
    # A reaction to a thread reply belongs to the thread; reactions don't notify by default,
    # but an m.text reply to it ("is_falling_back") does and is in the thread too.
    falling_back = {
        "rel_type": "m.thread",
        "event_id": root,
        "is_falling_back": True,
        "m.in_reply_to": {"event_id": reply},
    }
    await send_text(bob, room_id, "reply 3", **{"m.relates_to": falling_back})
    await send_text(bob, room_id, "main 2")
    summed = await sync(alice)
    assert counts(summed, room_id) == (5, 0)
    assert "unread_thread_notifications" not in summed["rooms"]["join"][room_id]
    threaded = await sync(alice, filter=THREADED)
    entry = threaded["rooms"]["join"][room_id]
    assert counts(threaded, room_id) == (2, 0)
    assert entry["unread_thread_notifications"] == {
        root: {"notification_count": 3, "highlight_count": 0}
    }
    # A threaded receipt clears its thread only.
    await receipt(alice, room_id, reply, thread_id=root)
    entry = (await sync(alice, filter=THREADED))["rooms"]["join"][room_id]
    assert entry["unread_notifications"]["notification_count"] == 2
    assert entry["unread_thread_notifications"][root]["notification_count"] == 2
    # ... a main-timeline receipt the main timeline only ...
    await receipt(alice, room_id, root, thread_id="main")
    entry = (await sync(alice, filter=THREADED))["rooms"]["join"][room_id]
    assert entry["unread_notifications"]["notification_count"] == 1
    assert entry["unread_thread_notifications"][root]["notification_count"] == 2
    # ... and an unthreaded receipt every thread up to its event.
    latest = await send_text(bob, room_id, "main 3")
    await receipt(alice, room_id, latest)
    body = await sync(alice, filter=THREADED)
    assert counts(body, room_id) == (0, 0)
    assert "unread_thread_notifications" not in body["rooms"]["join"][room_id]


async def test_redacted_messages_stop_counting(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    await send_text(bob, room_id, "keep")
    gone = await send_text(bob, room_id, "oops", **{"m.mentions": {"user_ids": [alice.user_id]}})
    assert counts(await sync(alice), room_id) == (2, 1)
    assert_ok(await bob.put(f"/rooms/{room_id}/redact/{gone}/r1", {}))
    assert counts(await sync(alice), room_id) == (1, 0)


async def test_ignored_senders_do_not_notify(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    path = f"/user/{alice.user_id}/account_data/m.ignored_user_list"
    assert_ok(await alice.put(path, {"ignored_users": {bob.user_id: {}}}))
    await send_text(bob, room_id, "ignored")
    assert counts(await sync(alice), room_id) == (0, 0)
    assert_ok(await alice.put(path, {"ignored_users": {}}))
    await send_text(bob, room_id, "heard")
    assert counts(await sync(alice), room_id) == (1, 0)


async def test_incremental_sync_wakes_with_new_counts(alice: Client, bob: Client) -> None:
    room_id = await shared_room(alice, bob)
    first = await sync(alice)
    event_id = await send_text(bob, room_id, "ping")
    woken = await sync(alice, first["next_batch"], timeout=5000)
    assert counts(woken, room_id) == (1, 0)
    # The user's own receipt is news for their other devices: the room comes with its new
    # counts (and the receipt), although it has no new events.
    await receipt(alice, room_id, event_id)
    after = await sync(alice, woken["next_batch"], timeout=5000)
    assert counts(after, room_id) == (0, 0)


async def test_only_members_at_send_time_are_counted(
    alice: Client, bob: Client, hs: InProcessServer, http: httpx.AsyncClient
) -> None:
    room_id = await shared_room(alice, bob)
    carol_user = await hs.register_user("carol")
    carol = Client(http, carol_user.user_id, carol_user.access_token, carol_user.device_id)
    before = await send_text(bob, room_id, "before the join")
    # Someone outside the room cannot move anybody's counts with a receipt.
    response = await carol.post(f"/rooms/{room_id}/receipt/m.read/{before}", {})
    assert response.status_code == 403
    assert response.json()["errcode"] == "M_FORBIDDEN"
    await join(carol, room_id)
    assert counts(await sync(carol), room_id) == (0, 0)
    await send_text(bob, room_id, "after the join")
    assert counts(await sync(carol), room_id) == (1, 0)
    assert counts(await sync(alice), room_id) == (2, 0)
    await leave(carol, room_id)
    await send_text(bob, room_id, "after the leave")
    assert room_id not in (await sync(carol))["rooms"]["join"]
    assert counts(await sync(alice), room_id) == (3, 0)


async def test_bad_unread_thread_notifications_filter_is_rejected(alice: Client) -> None:
    bad = json.dumps({"room": {"timeline": {"unread_thread_notifications": "yes"}}})
    response = await alice.get("/sync", params={"filter": bad})
    assert response.status_code == 400
    assert response.json()["errcode"] == "M_BAD_JSON"


async def test_counts_survive_a_restart(tmp_path: Path) -> None:
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        users = []
        for name in ("ann", "ben"):
            result = assert_ok(await register(http, {"username": name, "password": "pw"}))
            users.append(
                Client(http, result["user_id"], result["access_token"], result["device_id"])
            )
        ann, ben = users
        room_id = await shared_room(ann, ben)
        first = await send_text(ben, room_id, "one")
        await send_text(ben, room_id, "two", **{"m.mentions": {"user_ids": [ann.user_id]}})
        await receipt(ann, room_id, first)
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        ann.http = http
        ben.http = http
        assert counts(await sync(ann), room_id) == (1, 1)
        await send_text(ben, room_id, "three")
        assert counts(await sync(ann), room_id) == (2, 1)


async def test_own_push_rules_apply_after_a_restart(tmp_path: Path) -> None:
    # After a restart the rules come from the database again: the first message evaluated
    # for a user who changed their rules must use them, not the defaults.
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        users = []
        for name in ("ann", "ben", "cat"):
            result = assert_ok(await register(http, {"username": name, "password": "pw"}))
            users.append(
                Client(http, result["user_id"], result["access_token"], result["device_id"])
            )
        ann, ben, cat = users
        room_id = await shared_room(ann, ben)
        await join(cat, room_id)
        rule = {"pattern": "*", "actions": ["notify", {"set_tweak": "highlight"}]}
        assert_ok(await ann.put("/pushrules/global/content/anything", rule))
        path = "/pushrules/global/underride/.m.rule.message/enabled"
        assert_ok(await cat.put(path, {"enabled": False}))
    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        for user in users:
            user.http = http
        await send_text(ben, room_id, "after the restart")
        assert counts(await sync(ann), room_id) == (1, 1)
        assert counts(await sync(cat), room_id) == (0, 0)
        await send_text(ann, room_id, "from ann")
        assert counts(await sync(ben), room_id) == (1, 0)


async def test_own_push_rules_apply_from_the_next_message(alice: Client, bob: Client) -> None:
    # SyTest 61push/03_unread_count.pl: a content rule that highlights everything.
    room_id = await shared_room(alice, bob)
    await send_text(bob, room_id, "before the rule")
    rule = {"pattern": "*", "actions": ["notify", {"set_tweak": "highlight", "value": True}]}
    assert_ok(await alice.put("/pushrules/global/content/anything", rule))
    await send_text(bob, room_id, "after the rule")
    assert counts(await sync(alice), room_id) == (2, 1)
    # Turning the default message rules off stops plain messages notifying (in a room of two,
    # .m.rule.room_one_to_one matches first); bob is unaffected.
    assert_ok(await alice.delete("/pushrules/global/content/anything"))
    for rule_id in (".m.rule.room_one_to_one", ".m.rule.message"):
        path = f"/pushrules/global/underride/{rule_id}/enabled"
        assert_ok(await alice.put(path, {"enabled": False}))
    await send_text(bob, room_id, "quiet now")
    assert counts(await sync(alice), room_id) == (2, 1)
    await send_text(alice, room_id, "still heard")
    assert counts(await sync(bob), room_id) == (1, 0)


async def test_concurrent_sends_batched_together_all_count(
    alice: Client, bob: Client, hs: InProcessServer, http: httpx.AsyncClient
) -> None:
    room_id = await shared_room(alice, bob)
    carol_user = await hs.register_user("carol")
    carol = Client(http, carol_user.user_id, carol_user.access_token, carol_user.device_id)
    await join(carol, room_id)

    async def chat(client: Client) -> None:
        for n in range(8):
            await send_text(client, room_id, f"message {n}")

    # Sent at once, the events share the writer's batches (one count update per user each).
    async with trio.open_nursery() as nursery:
        for client in (bob, carol, bob, carol):
            nursery.start_soon(chat, client)
    assert counts(await sync(alice), room_id) == (32, 0)
    assert counts(await sync(bob), room_id) == (16, 0)
    assert counts(await sync(carol), room_id) == (16, 0)
