"""Send-to-device messaging: PUT /sendToDevice over HTTP, and the query API /sync uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trio

from trioserver.handlers.to_device import ToDeviceHandler

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.e2ee_helpers import served_env


async def send(
    client: Client, messages: Any, *, event_type: str = "m.test", txn: str = "t1"
) -> dict[str, Any]:
    return assert_ok(await client.put(f"/sendToDevice/{event_type}/{txn}", {"messages": messages}))


async def inbox(
    handler: ToDeviceHandler, client: Client, since: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    events, _ = await handler.messages_for(
        client.user_id, client.device_id, since, handler.position(), limit
    )
    return events


async def test_message_to_one_device(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob1 = await srv.client("bob", "BOB1")
        bob2 = await srv.client("bob", "BOB2")
        handler = srv.deps.to_device
        before = handler.position()
        await send(alice, {bob1.user_id: {"BOB1": {"hello": "world"}}}, event_type="m.greeting")
        assert handler.position() == before + 1
        assert await inbox(handler, bob1) == [
            {"sender": alice.user_id, "type": "m.greeting", "content": {"hello": "world"}}
        ]
        assert await inbox(handler, bob2) == []
        # The sender's own device has nothing.
        assert await inbox(handler, alice) == []


async def test_wildcard_reaches_every_device(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob1 = await srv.client("bob", "BOB1")
        bob2 = await srv.client("bob", "BOB2")
        handler = srv.deps.to_device
        await send(alice, {bob1.user_id: {"*": {"n": 1}}})
        assert [e["content"] for e in await inbox(handler, bob1)] == [{"n": 1}]
        assert [e["content"] for e in await inbox(handler, bob2)] == [{"n": 1}]
        # A device named explicitly gets its own message instead of the wildcard one.
        await send(alice, {bob1.user_id: {"*": {"n": 2}, "BOB2": {"n": 3}}}, txn="t2")
        assert [e["content"] for e in await inbox(handler, bob1)] == [{"n": 1}, {"n": 2}]
        assert [e["content"] for e in await inbox(handler, bob2)] == [{"n": 1}, {"n": 3}]


async def test_transaction_ids_make_sends_idempotent(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice", "ALICE1")
        alice2 = await srv.client("alice", "ALICE2")
        bob = await srv.client("bob")
        handler = srv.deps.to_device
        messages = {bob.user_id: {bob.device_id: {"x": 1}}}
        await send(alice, messages, txn="same")
        await send(alice, messages, txn="same")
        assert len(await inbox(handler, bob)) == 1
        # Another path (event type) or another device is another transaction.
        await send(alice, messages, txn="same", event_type="m.other")
        await send(alice2, messages, txn="same")
        assert [e["type"] for e in await inbox(handler, bob)] == ["m.test", "m.other", "m.test"]


async def test_unknown_remote_and_invalid_recipients_are_dropped(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        handler = srv.deps.to_device
        before = handler.position()
        await send(
            alice,
            {
                bob.user_id: {"NOSUCHDEVICE": {"a": 1}},
                "@nobody:blue": {"*": {"a": 2}},
                "@carol:elsewhere.example": {"DEV": {"a": 3}},
                "not a user id": {"DEV": {"a": 4}},
                bob.user_id.replace("bob", "bob2"): {},
            },
        )
        assert handler.position() == before
        assert await inbox(handler, bob) == []


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        ({}, "M_MISSING_PARAM"),
        ({"messages": []}, "M_INVALID_PARAM"),
        ({"messages": {"@bob:blue": "hi"}}, "M_INVALID_PARAM"),
        ({"messages": {"@bob:blue": {"DEV": "hi"}}}, "M_INVALID_PARAM"),
        ({"messages": {"@bob:blue": {"DEV": ["hi"]}}}, "M_INVALID_PARAM"),
    ],
)
async def test_bad_bodies_are_400(tmp_path: Path, body: dict[str, Any], errcode: str) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        assert_error(await alice.put("/sendToDevice/m.test/1", body), 400, errcode)


async def test_not_json_unauthenticated_and_too_large(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        response = await alice.http.put(
            "/_matrix/client/v3/sendToDevice/m.test/1", content=b"{", headers=alice.headers
        )
        assert_error(response, 400, "M_NOT_JSON")
        response = await alice.http.put(
            "/_matrix/client/v3/sendToDevice/m.test/1", json={"messages": {}}
        )
        assert_error(response, 401, "M_MISSING_TOKEN")
        big = {bob.user_id: {bob.device_id: {"blob": "x" * 70_000}}}
        assert_error(
            await alice.put("/sendToDevice/m.test/2", {"messages": big}), 413, "M_TOO_LARGE"
        )
        assert await inbox(srv.deps.to_device, bob) == []


async def test_limit_resume_and_acknowledge(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        handler = srv.deps.to_device
        start = handler.position()
        for n in range(5):
            await send(alice, {bob.user_id: {bob.device_id: {"n": n}}}, txn=f"t{n}")
        upto = handler.position()
        assert upto == start + 5
        first, resume = await handler.messages_for(bob.user_id, bob.device_id, start, upto, 2)
        assert [e["content"]["n"] for e in first] == [0, 1]
        assert start < resume < upto
        rest, end = await handler.messages_for(bob.user_id, bob.device_id, resume, upto, 100)
        assert [e["content"]["n"] for e in rest] == [2, 3, 4]
        assert end == upto
        # An empty range returns nothing and stays put.
        assert await handler.messages_for(bob.user_id, bob.device_id, upto, upto, 10) == (
            [],
            upto,
        )
        # Until acknowledged, messages are returned again (the response may have been lost).
        await handler.delete_delivered(bob.user_id, bob.device_id, resume)
        again, _ = await handler.messages_for(bob.user_id, bob.device_id, start, upto, 100)
        assert [e["content"]["n"] for e in again] == [2, 3, 4]
        await handler.delete_delivered(bob.user_id, bob.device_id, upto)
        assert await inbox(handler, bob) == []
        rows = srv.env.query("SELECT COUNT(*) FROM device_inbox")
        assert rows == [(0,)]


async def test_send_wakes_the_recipient_only(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        notifier = srv.deps.notifier
        with (
            notifier.listen(bob.user_id, []) as bob_listener,
            notifier.listen(alice.user_id, []) as alice_listener,
        ):
            await send(alice, {bob.user_id: {bob.device_id: {"wake": True}}})
            assert await bob_listener.wait(5)
            with trio.move_on_after(0.05):
                await alice_listener.wait(1)
                pytest.fail("the sender was woken")


async def test_deleting_a_device_drops_its_messages(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob", "GOING")
        other = await srv.client("bob", "STAYING")
        await send(alice, {bob.user_id: {"*": {"m": 1}}})
        assert_ok(await bob.post("/logout", {}))
        assert srv.env.query("SELECT device_id FROM device_inbox") == [("STAYING",)]
        # Logging in again with the old device id does not bring the messages back.
        again = await srv.client("bob", "GOING")
        assert await inbox(srv.deps.to_device, again) == []
        assert len(await inbox(srv.deps.to_device, other)) == 1


async def test_position_survives_restart_after_delivery(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        for n in range(3):
            await send(alice, {bob.user_id: {bob.device_id: {"n": n}}}, txn=f"t{n}")
        position = srv.deps.to_device.position()
        await srv.deps.to_device.delete_delivered(bob.user_id, bob.device_id, position)
    async with served_env(tmp_path) as srv:
        assert srv.deps.to_device.position() == position
        assert srv.deps.notifier.current_token().to_device == position
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        await send(alice, {bob.user_id: {bob.device_id: {"n": 9}}}, txn="after")
        assert srv.deps.to_device.position() == position + 1
        events = await inbox(srv.deps.to_device, bob, since=position)
        assert [e["content"] for e in events] == [{"n": 9}]


async def test_txn_ids_survive_restart(tmp_path: Path) -> None:
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice", "ALICE")
        bob = await srv.client("bob", "BOB")
        await send(alice, {bob.user_id: {"BOB": {"once": True}}}, txn="persist")
    async with served_env(tmp_path) as srv:
        alice = await srv.client("alice", "ALICE")
        await send(alice, {"@bob:blue": {"BOB": {"once": True}}}, txn="persist")
        assert srv.env.query("SELECT COUNT(*) FROM device_inbox") == [(1,)]


async def test_transaction_ids_are_forgotten_after_a_day(tmp_path: Path) -> None:
    now = [1_800_000_000.0]
    async with served_env(tmp_path, clock=lambda: now[0]) as srv:
        alice = await srv.client("alice")
        bob = await srv.client("bob")
        messages = {bob.user_id: {bob.device_id: {"x": 1}}}
        await send(alice, messages, txn="old")
        now[0] += 23 * 3600
        await send(alice, messages, txn="old")
        assert len(await inbox(srv.deps.to_device, bob)) == 1
        now[0] += 2 * 3600
        await send(alice, messages, txn="other")  # any send prunes expired ids
        await send(alice, messages, txn="old")
        assert len(await inbox(srv.deps.to_device, bob)) == 3
