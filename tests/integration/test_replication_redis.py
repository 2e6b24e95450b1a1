"""Main and two workers replicating over a real Redis's pub/sub (issue 14).

The deployment runs in this trio run (`serve_deployment_in_process`) with ``[replication]
redis``: no instance connects to main's replication listener (there is none); every stream
travels over Redis, on channels of this test's own prefix. Connections are cut by their client
names (``CLIENT KILL ID``, the test's own connections only), or, to keep Redis away for a
while, through `CuttableProxy` in front of it (for the workers, or for every instance: what a
Redis restart looks like to them). Forwarded writes still go to main's internal HTTP listener.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

import trio

from trioserver.testing import InProcessDeployment, serve_deployment_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.redis_helpers import (
    REDIS,
    REDIS_URL,
    kill_clients,
    requires_redis,
    unique_prefix,
)
from tests.integration.room_helpers import create_room, invite, join, send_text
from tests.integration.tcp_proxy import CuttableProxy

pytestmark = requires_redis

EVENTS_DURING_CUT = 150  # more than one catch-up page (PAGE_SIZE = 100)
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 500}}})


@asynccontextmanager
async def redis_deployment(
    prefix: str, *, redis_url: str = REDIS_URL, workers_redis_url: str | None = None
) -> AsyncIterator[InProcessDeployment]:
    replication = {"redis": redis_url, "redis_channel_prefix": prefix}
    worker_overrides = None
    if workers_redis_url is not None:
        worker_overrides = {"replication": {"redis": workers_redis_url}}
    async with serve_deployment_in_process(
        workers=2, replication=replication, worker_overrides=worker_overrides
    ) as deployment:
        yield deployment


@asynccontextmanager
async def redis_proxy() -> AsyncIterator[CuttableProxy]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0], trio.open_nursery() as nursery:
        proxy = CuttableProxy(listeners[0])
        proxy.route_to(REDIS.port)
        nursery.start_soon(proxy.serve, nursery)
        yield proxy
        nursery.cancel_scope.cancel()


class Clients:
    """Registered users' HTTP clients of the deployment's instances."""

    def __init__(self, deployment: InProcessDeployment, stack: AsyncExitStack) -> None:
        self.deployment = deployment
        self.stack = stack

    async def http(self, base_url: str) -> httpx.AsyncClient:
        return await self.stack.enter_async_context(
            httpx.AsyncClient(base_url=base_url, timeout=30)
        )

    async def user(self, base_url: str, localpart: str) -> Client:
        user = await self.deployment.main.register_user(localpart)
        return Client(await self.http(base_url), user.user_id, user.access_token, user.device_id)

    async def same_user(self, base_url: str, client: Client) -> Client:
        return Client(await self.http(base_url), client.user_id, client.token, client.device_id)


def _timeline(sync: dict[str, Any], room_id: str) -> list[dict[str, Any]]:
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    timeline = room.get("timeline", {})
    assert not timeline.get("limited", False), "a gap in what the worker delivered"
    events: list[dict[str, Any]] = timeline.get("events", [])
    return [e for e in events if e["type"] == "m.room.message"]


async def _room_of_two(clients: Clients, alice_on: str, bob_on: str) -> tuple[Client, Client, str]:
    alice = await clients.user(alice_on, "alice")
    bob = await clients.user(bob_on, "bob")
    room_id = await create_room(alice)
    await invite(alice, room_id, bob.user_id)
    await join(bob, room_id)
    return alice, bob, room_id


async def test_a_message_sent_through_one_worker_reaches_sync_on_another() -> None:
    prefix = unique_prefix()
    async with redis_deployment(prefix) as deployment, AsyncExitStack() as stack:
        assert deployment.main.running.replication_port is None  # no TCP listener at all
        clients = Clients(deployment, stack)
        w1, w2 = deployment.workers
        alice, bob, room_id = await _room_of_two(clients, w1.base_url, w2.base_url)
        since = assert_ok(await bob.get("/sync", params={"timeout": 0}))["next_batch"]
        sent = [f"message {i}" for i in range(20)]
        received: list[str] = []

        async def send_all() -> None:
            for body in sent:
                await send_text(alice, room_id, body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            with trio.fail_after(20):
                while len(received) < len(sent):
                    params = {"since": since, "timeout": 5000, "filter": SYNC_FILTER}
                    sync = assert_ok(await bob.get("/sync", params=params))
                    since = sync["next_batch"]
                    received += [e["content"]["body"] for e in _timeline(sync, room_id)]
        assert received == sent
        # Read-your-writes on a worker: each answer waits until the worker saw the write.
        path = f"/user/{alice.user_id}/account_data/org.example.redis"
        assert_ok(await alice.put(path, {"over": "redis"}))
        assert assert_ok(await alice.get(path)) == {"over": "redis"}
        # Every instance holds its own named connections to Redis (none to main's listener).
        names = await _client_names(prefix)
        assert f"{prefix}.main.writer.pub" in names
        assert f"{prefix}.worker1.follows-main.sub" in names
        assert f"{prefix}.worker2.follows-main.pub" in names


async def kill_once_there(name_part: str) -> int:
    """Kill the connections named `name_part` once there are any (an instance that lost
    them a moment ago may still be waiting to reconnect); how many."""
    with trio.fail_after(10):
        while not (killed := await kill_clients(name_part)):  # noqa: ASYNC110 - polls Redis
            await trio.sleep(0.02)
    return killed


async def _client_names(prefix: str) -> set[str]:
    from tests.integration.redis_helpers import admin

    async with await admin() as redis:
        listing = (await redis.command("CLIENT", "LIST")).decode()
    return {
        field.removeprefix("name=")
        for line in listing.splitlines()
        for field in line.split(" ")
        if field.startswith(f"name={prefix}")
    }


async def test_killed_redis_connections_lose_no_acknowledged_event() -> None:
    """Bob's worker loses its subscription again and again, and main its publisher once, while
    alice sends through the other worker; every send that was answered 200 reaches bob's
    /sync once, in order (a send answered 503 was not acknowledged: it is retried with its
    transaction id, which makes it one event)."""
    prefix = unique_prefix()
    async with redis_deployment(prefix) as deployment, AsyncExitStack() as stack:
        clients = Clients(deployment, stack)
        w1, w2 = deployment.workers
        alice, bob, room_id = await _room_of_two(clients, w1.base_url, w2.base_url)
        since = assert_ok(await bob.get("/sync", params={"timeout": 0}))["next_batch"]
        acknowledged: list[str] = []
        kills: list[int] = []
        done_sending = False

        async def send_all() -> None:
            nonlocal done_sending
            for i in range(60):
                path = f"/rooms/{room_id}/send/m.room.message/redis-{i}"
                body = {"msgtype": "m.text", "body": f"m{i}"}
                with trio.fail_after(30):
                    # 503: w1 is starting over after main's new session; try again.
                    while (response := await alice.put(path, body)).status_code == 503:  # noqa: ASYNC110
                        await trio.sleep(0.05)
                acknowledged.append(assert_ok(response)["event_id"])
                if i % 10 == 5:
                    kills.append(await kill_once_there(f"{prefix}.worker2.follows-main."))
                if i == 30:
                    kills.append(await kill_once_there(f"{prefix}.main.writer."))
            done_sending = True

        received: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_all)
            with trio.fail_after(60):
                while not done_sending or len(received) < len(acknowledged):
                    params = {"since": since, "timeout": 1000, "filter": SYNC_FILTER}
                    response = await bob.get("/sync", params=params)
                    sync = assert_ok(response)
                    since = sync["next_batch"]
                    received += [e["event_id"] for e in _timeline(sync, room_id)]
        await trio.sleep(0.5)  # a row delivered twice (catch-up and live) would show now
        sync = assert_ok(await bob.get("/sync", params={"since": since, "timeout": 0}))
        received += [e["event_id"] for e in _timeline(sync, room_id)]
        assert received == acknowledged
        assert len(kills) == 7


@pytest.mark.parametrize("cut", ["workers", "everyone"])
async def test_a_worker_without_redis_reports_not_connected_then_catches_up(cut: str) -> None:
    """Seed 3 over Redis: while Redis is out of reach (of the workers only, or of every
    instance, as in a Redis restart), a write through a worker is refused at once and the
    worker's /sync sees nothing; once Redis is back it catches up every event, the receipt
    and the account data, once and in order."""
    prefix = unique_prefix()
    async with AsyncExitStack() as stack:
        proxy = await stack.enter_async_context(redis_proxy())
        proxy_url = f"redis://127.0.0.1:{proxy.port}/0"
        if cut == "workers":
            deployment_cm = redis_deployment(prefix, workers_redis_url=proxy_url)
        else:
            deployment_cm = redis_deployment(prefix, redis_url=proxy_url)
        deployment = await stack.enter_async_context(deployment_cm)
        clients = Clients(deployment, stack)
        main, worker = deployment.main, deployment.workers[0]
        alice, bob, room_id = await _room_of_two(clients, main.base_url, worker.base_url)
        bob_on_main = await clients.same_user(main.base_url, bob)
        params: dict[str, Any] = {"timeout": 0, "filter": SYNC_FILTER}
        since = assert_ok(await bob.get("/sync", params=params))["next_batch"]

        received: list[str] = []
        receipts: list[str] = []
        account_data: list[dict[str, Any]] = []
        sent = [f"during cut {i}" for i in range(EVENTS_DURING_CUT)]
        everything_seen = trio.Event()
        stopping = False

        async def long_poll() -> None:
            nonlocal since
            while not stopping:
                poll = {"since": since, "timeout": 1000, "filter": SYNC_FILTER}
                sync = assert_ok(await bob.get("/sync", params=poll))
                since = sync["next_batch"]
                received.extend(e["content"]["body"] for e in _timeline(sync, room_id))
                room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
                for event in room.get("ephemeral", {}).get("events", []):
                    if event["type"] == "m.receipt":
                        receipts.extend(event["content"])
                for event in sync.get("account_data", {}).get("events", []):
                    if event["type"] == "org.example.redis":
                        account_data.append(event["content"])
                if len(received) >= len(sent) and receipts and account_data:
                    everything_seen.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(long_poll)
            proxy.cut()
            # Main persists and acknowledges without Redis.
            last_event_id = ""
            for body in sent:
                last_event_id = await send_text(alice, room_id, body)
            assert_ok(await alice.post(f"/rooms/{room_id}/receipt/m.read/{last_event_id}", {}))
            data_path = f"/user/{bob.user_id}/account_data/org.example.redis"
            assert_ok(await bob_on_main.put(data_path, {"seen": "all"}))

            # The worker cannot see a write come back: refused at once, as over TCP.
            with trio.fail_after(2):
                response = await bob.put(
                    f"/rooms/{room_id}/send/m.room.message/cut-txn",
                    {"msgtype": "m.text", "body": "refused"},
                )
            assert_error(response, 503, "M_UNKNOWN")
            await trio.sleep(1.2)  # longer than one long-poll
            assert received == []
            assert receipts == []
            assert account_data == []

            proxy.heal()
            with trio.fail_after(20):
                await everything_seen.wait()
            await trio.sleep(1.2)  # a row delivered twice would show up now
            stopping = True

        assert received == sent
        assert receipts == [last_event_id]
        assert account_data == [{"seen": "all"}]
        # And the worker writes again.
        assert_ok(
            await bob.put(
                f"/rooms/{room_id}/send/m.room.message/after-txn",
                {"msgtype": "m.text", "body": "back"},
            )
        )


# Real processes: one config file, `trioserver run --instance NAME` ---------------------------


@pytest.mark.parametrize("events_writer", ["main", "worker1"])
async def test_worker_processes_over_redis_ride_out_a_kill_9_of_main(
    tmp_path: Path, events_writer: str
) -> None:
    """Main, worker1 and worker2 as processes replicating over Redis; main is killed and
    started again: its new session's SERVER makes the workers start over, and every message
    sent before and after reaches bob's /sync on worker2 once, in order. With worker1
    writing events, main and worker1 follow each other over Redis too."""
    from tests.integration.test_workers_processes import (
        Syncer,
        deployment,
        new_user,
        on,
        send_text,
        shared_room,
        sync,
        until_not_503,
    )

    prefix = unique_prefix()
    redis = (REDIS_URL, prefix)
    async with deployment(
        tmp_path, "worker1", "worker2", events_writer=events_writer, redis=redis
    ) as running:
        alice_on_w1 = await new_user(await running.http("worker1"), "alice")
        bob = await new_user(await running.http("worker2"), "bob")
        room_id = await shared_room(alice_on_w1, bob)
        alice_on_main = await on(running, "main", alice_on_w1)
        assert f"{prefix}.worker2.follows-{events_writer}.sub" in await _client_names(prefix)
        syncer = Syncer(bob, room_id, (await sync(bob))["next_batch"])
        sent: list[str] = []

        async def send_round(name: str) -> None:
            for client, via in ((alice_on_main, "main"), (alice_on_w1, "worker1")):
                for i in range(10):
                    body = f"{name} via {via} {i}"
                    assert_ok(await until_not_503(partial(send_text, client, room_id, body)))
                    sent.append(body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(syncer.run)
            await send_round("before")
            await syncer.wait_for(sent)
            main = running.processes["main"]
            main.process.kill()
            with trio.fail_after(10):
                await main.process.wait()
            # Main is down: a write through a worker is refused fast; reads still answer.
            with trio.fail_after(2):
                response = await send_text(alice_on_w1, room_id, "while main is down")
            assert_error(response, 503, "M_UNKNOWN")
            await running.start("main")
            await send_round("after")
            await syncer.wait_for(sent, within_s=20)
            syncer.stopping = True
        assert syncer.received == sent


async def test_a_wrong_redis_password_stops_main_with_one_error_line(tmp_path: Path) -> None:
    from tests.integration.test_cli import run_cli
    from tests.integration.test_workers_processes import write_deployment_config

    data_dir = tmp_path / "data"
    address = f"redis://:not-the-password@{REDIS.host}:{REDIS.port}/0"
    write_deployment_config(data_dir, ("worker1",), redis=(address, unique_prefix()))
    result = await run_cli("run", "--config", data_dir / "trioserver.toml", cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.decode().splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr.decode()
    assert errors[0].startswith("error: config.replication.redis: redis://")
    assert "AUTH refused" in errors[0]
    assert "not-the-password" not in result.stderr.decode()
