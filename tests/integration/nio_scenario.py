"""A matrix-nio (asyncio) client session against a running server; run as a separate process.

Usage: python nio_scenario.py BASE_URL. Prints one line per step and exits 0 when every step
saw what a real client expects, 1 otherwise. Used by test_real_client.py.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

from nio import (
    AsyncClient,
    JoinResponse,
    ReceiptEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
    TypingNoticeEvent,
)

STEP_TIMEOUT_S = 20


def step(name: str) -> None:
    print(f"step: {name}", flush=True)


async def register(base_url: str, name: str) -> AsyncClient:
    client = AsyncClient(base_url, f"@{name}:localhost")
    response = await client.register(name, "correct horse battery staple")
    if not isinstance(response, RegisterResponse):
        raise SystemExit(f"register {name} failed: {response}")
    return client


async def sync_until(client: AsyncClient, found: Any, since: str | None) -> tuple[Any, str]:
    """Sync (long-polling) until `found(response)` returns something truthy."""
    async with asyncio.timeout(STEP_TIMEOUT_S):
        while True:
            response = await client.sync(timeout=5000, since=since)
            if not isinstance(response, SyncResponse):
                raise SystemExit(f"sync failed: {response}")
            since = response.next_batch
            result = found(response)
            if result:
                return result, since


def room_events(response: SyncResponse, room_id: str, kind: str) -> list[Any]:
    room = response.rooms.join.get(room_id)
    if room is None:
        return []
    return list(room.timeline.events if kind == "timeline" else room.ephemeral)


async def scenario(base_url: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    alice = await register(base_url, f"alice{suffix}")
    bob = await register(base_url, f"bob{suffix}")
    try:
        step("registered")
        created = await alice.room_create(name="nio room", invite=[bob.user_id])
        if not isinstance(created, RoomCreateResponse):
            raise SystemExit(f"room_create failed: {created}")
        room_id = created.room_id
        _, bob_since = await sync_until(bob, lambda r: room_id in r.rooms.invite, None)
        step("invite seen")
        joined = await bob.join(room_id)
        if not isinstance(joined, JoinResponse):
            raise SystemExit(f"join failed: {joined}")
        sent = await alice.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "hello bob"}
        )
        if not isinstance(sent, RoomSendResponse):
            raise SystemExit(f"send failed: {sent}")

        def got_message(r: SyncResponse) -> Any:
            return [
                e
                for e in room_events(r, room_id, "timeline")
                if isinstance(e, RoomMessageText) and e.body == "hello bob"
            ]

        (message,), bob_since = await sync_until(bob, got_message, bob_since)
        step("message received")
        _, alice_since = await sync_until(alice, lambda r: room_id in r.rooms.join, None)
        await bob.room_typing(room_id, typing_state=True, timeout=10_000)
        await bob.room_read_markers(room_id, message.event_id, message.event_id)

        seen: set[str] = set()

        def typing_and_receipt(r: SyncResponse) -> bool:
            # nio remembers its own next_batch, so typing and receipt may arrive in one
            # response or in two: collect both.
            for event in room_events(r, room_id, "ephemeral"):
                if isinstance(event, TypingNoticeEvent) and bob.user_id in event.users:
                    seen.add("typing")
                if isinstance(event, ReceiptEvent) and any(
                    rc.user_id == bob.user_id and rc.event_id == message.event_id
                    for rc in event.receipts
                ):
                    seen.add("receipt")
            return seen == {"typing", "receipt"}

        _, alice_since = await sync_until(alice, typing_and_receipt, alice_since)
        step("typing seen")
        step("receipt seen")
        reply = await bob.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": "hi alice"}
        )
        if not isinstance(reply, RoomSendResponse):
            raise SystemExit(f"reply failed: {reply}")

        def got_reply(r: SyncResponse) -> Any:
            return [
                e
                for e in room_events(r, room_id, "timeline")
                if isinstance(e, RoomMessageText) and e.body == "hi alice"
            ]

        await sync_until(alice, got_reply, alice_since)
        step("reply received")
    finally:
        await alice.close()
        await bob.close()


def main() -> None:
    asyncio.run(scenario(sys.argv[1]))
    print("ok", flush=True)


if __name__ == "__main__":
    main()
