"""Seed 3: a worker cut off from main's replication catches up when the link heals (issue 13).

Main and one worker run in this trio run (`serve_deployment_in_process`), but the worker's
replication connection goes through `CuttableProxy` (tests/integration/tcp_proxy.py), a
byte-forwarding TCP proxy that can drop every connection and refuse new ones until healed. The
worker's HTTP path to main (forwarded writes) does not go through the proxy: only replication
is cut.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx

import trio

from trioserver.testing import InProcessDeployment, serve_deployment_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join, send_text
from tests.integration.tcp_proxy import CuttableProxy

EVENTS_DURING_CUT = 150  # more than one replication page (PAGE_SIZE = 100)
# Every event of the catch-up fits one sync response: a gap would hide lost or repeated rows.
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 500}}})


@asynccontextmanager
async def proxied_deployment() -> AsyncIterator[tuple[InProcessDeployment, CuttableProxy]]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0], trio.open_nursery() as nursery:
        proxy = CuttableProxy(listeners[0])
        nursery.start_soon(proxy.serve, nursery)
        async with serve_deployment_in_process(
            workers=1, replication_port_for_workers=proxy.route_to
        ) as deployment:
            yield deployment, proxy
        nursery.cancel_scope.cancel()


def _room(sync: dict[str, Any], room_id: str) -> dict[str, Any]:
    room: dict[str, Any] = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return room


async def test_a_cut_worker_catches_up_every_event_once_in_order_after_heal() -> None:
    async with proxied_deployment() as (deployment, proxy), AsyncExitStack() as stack:
        main, worker = deployment.main, deployment.workers[0]

        async def client_of(base_url: str, localpart: str) -> Client:
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=base_url, timeout=30)
            )
            user = await main.register_user(localpart)
            return Client(http, user.user_id, user.access_token, user.device_id)

        alice = await client_of(main.base_url, "alice")
        bob = await client_of(worker.base_url, "bob")
        bob_on_main = Client(
            await stack.enter_async_context(httpx.AsyncClient(base_url=main.base_url, timeout=30)),
            bob.user_id,
            bob.token,
            bob.device_id,
        )
        room_id = await create_room(alice)
        await invite(alice, room_id, bob.user_id)
        await join(bob, room_id)  # forwarded: answered once the worker has seen the join
        assert proxy.accepted == 1
        since = assert_ok(await bob.get("/sync", params={"timeout": 0, "filter": SYNC_FILTER}))[
            "next_batch"
        ]

        received: list[str] = []
        receipts: list[str] = []
        account_data: list[dict[str, Any]] = []
        sent = [f"during cut {i}" for i in range(EVENTS_DURING_CUT)]
        everything_seen = trio.Event()
        stopping = False

        async def long_poll() -> None:
            # Stops between requests: cancelling httpx mid-request leaks its body iterator.
            nonlocal since
            while not stopping:
                params = {"since": since, "timeout": 1000, "filter": SYNC_FILTER}
                sync = assert_ok(await bob.get("/sync", params=params))
                since = sync["next_batch"]
                room = _room(sync, room_id)
                timeline = room.get("timeline", {})
                assert not timeline.get("limited", False), "a gap in the catch-up"
                received.extend(
                    e["content"]["body"]
                    for e in timeline.get("events", [])
                    if e["type"] == "m.room.message"
                )
                for event in room.get("ephemeral", {}).get("events", []):
                    if event["type"] == "m.receipt":
                        receipts.extend(event["content"])
                for event in sync.get("account_data", {}).get("events", []):
                    if event["type"] == "org.example.seed3":
                        account_data.append(event["content"])
                if len(received) >= len(sent) and receipts and account_data:
                    everything_seen.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_poll)
            proxy.cut()
            last_event_id = ""
            for body in sent:
                last_event_id = await send_text(alice, room_id, body)
            receipt_path = f"/rooms/{room_id}/receipt/m.read/{last_event_id}"
            assert_ok(await alice.post(receipt_path, {}))
            data_path = f"/user/{bob.user_id}/account_data/org.example.seed3"
            assert_ok(await bob_on_main.put(data_path, {"seen": "all"}))

            # A write through the cut-off worker cannot be read back there: refused at once.
            with trio.fail_after(2):
                response = await bob.put(
                    f"/rooms/{room_id}/send/m.room.message/cut-txn",
                    {"msgtype": "m.text", "body": "refused"},
                )
            assert_error(response, 503, "M_UNKNOWN")

            # The worker has heard of none of it: its syncer saw nothing new.
            await trio.sleep(1.2)  # longer than one long-poll
            assert received == []
            assert receipts == []
            assert account_data == []

            proxy.heal()
            with trio.fail_after(15):
                await everything_seen.wait()
            # A little longer: a row delivered twice (catch-up and live) would show up now.
            await trio.sleep(1.2)
            stopping = True

        assert received == sent
        assert receipts == [last_event_id]
        assert account_data == [{"seen": "all"}]
        assert proxy.accepted >= 2  # the worker reconnected through the healed proxy
