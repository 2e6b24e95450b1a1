"""Main and two workers as real processes on PostgreSQL, replicating over Redis, while the
machine's PostgreSQL and then its Redis restart under traffic (issue 14).

These restart the services every other user of this machine shares, so they run only when
``TRIOSERVER_TEST_RESTART_SERVICES=1`` says that is fine (CI's matrix sets it on its
PostgreSQL pass; nothing else runs then). A message counts as acknowledged when the server
answered 200; a send that got an error is retried with its transaction id, as clients do.
Every acknowledged message must reach the other worker's /sync once, in order, and
/messages must list them the same.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest

import trio

from trioserver.stores.postgres_admin import create_database, drop_database
from trioserver.testing import redis_url_for_tests
from trioserver.testing_postgres import POSTGRES_ENV

from tests.integration.client import Client, assert_ok
from tests.integration.test_workers_processes import (
    SYNC_FILTER,
    deployment,
    new_user,
    on,
    shared_room,
    until_not_503,
)

ADMIN_DSN = os.environ.get(POSTGRES_ENV) or "postgresql://postgres@127.0.0.1:5432/postgres"
RESTART_ENV = "TRIOSERVER_TEST_RESTART_SERVICES"
pytestmark = pytest.mark.skipif(
    os.environ.get(RESTART_ENV) != "1",
    reason=f"restarts the machine's PostgreSQL and Redis ({RESTART_ENV}=1 allows it)",
)
MESSAGES = 90
REDIS_START = [
    "redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
    "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
    "--logfile", "/var/log/redis/ci.log",
]  # fmt: skip


def _restart_postgres() -> None:
    (version,) = os.listdir("/etc/postgresql")
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
    )


def _restart_redis() -> None:
    subprocess.run(["redis-cli", "shutdown", "nosave"], capture_output=True, check=False)
    subprocess.run(REDIS_START, check=True, capture_output=True)


async def _wait_for(check: list[str]) -> None:
    """Until the command `check` succeeds (the service answers again)."""
    with trio.fail_after(30):
        while True:
            done = await trio.run_process(check, check=False, capture_stdout=True)
            if done.returncode == 0:
                return
            await trio.sleep(0.2)


async def _send_until_acknowledged(client: Client, room_id: str, body: str, txn: str) -> str:
    """Send with transaction id `txn`, again and again while the deployment fails it."""
    with trio.fail_after(60):
        while True:
            try:
                response = await client.put(
                    f"/rooms/{room_id}/send/m.room.message/{txn}",
                    {"msgtype": "m.text", "body": body},
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return str(response.json()["event_id"])
            if response is not None:
                assert response.status_code in (502, 503), response.text
            await trio.sleep(0.1)


async def test_postgres_and_redis_restarts_under_traffic_lose_no_acknowledged_message(
    tmp_path: Path,
) -> None:
    name = f"trioserver_test_restarts_{secrets.token_hex(6)}"
    dsn = await trio.to_thread.run_sync(create_database, ADMIN_DSN, name)
    redis = (redis_url_for_tests(), f"trioserver-test-{secrets.token_hex(6)}")
    try:
        async with deployment(
            tmp_path, "worker1", "worker2", redis=redis, postgres_dsn=dsn
        ) as running:
            alice = await new_user(await running.http("worker1"), "alice")
            bob = await new_user(await running.http("worker2"), "bob")
            room_id = await shared_room(alice, bob)
            bob_on_2 = await on(running, "worker2", bob)
            since = assert_ok(await until_not_503(lambda: bob_on_2.get("/sync")))["next_batch"]

            acknowledged: list[str] = []
            a_third, two_thirds = trio.Event(), trio.Event()

            async def traffic() -> None:
                for i in range(MESSAGES):
                    body = f"message {i}"
                    await _send_until_acknowledged(alice, room_id, body, f"t{i}")
                    acknowledged.append(body)
                    if len(acknowledged) == MESSAGES // 3:
                        a_third.set()
                    if len(acknowledged) == 2 * MESSAGES // 3:
                        two_thirds.set()
                    await trio.sleep(0.02)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(traffic)
                with trio.fail_after(60):
                    await a_third.wait()
                await trio.to_thread.run_sync(_restart_postgres)
                await _wait_for(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"])
                with trio.fail_after(60):
                    await two_thirds.wait()
                await trio.to_thread.run_sync(_restart_redis)
                await _wait_for(["redis-cli", "-h", "127.0.0.1", "ping"])

            assert acknowledged == [f"message {i}" for i in range(MESSAGES)]
            # Bob, on the other worker, sees every message once, in order, from where he was.
            received: list[str] = []
            with trio.fail_after(60):
                while len(received) < MESSAGES:
                    response = await bob_on_2.get(
                        "/sync", params={"since": since, "timeout": 1000, "filter": SYNC_FILTER}
                    )
                    if response.status_code in (502, 503):
                        await trio.sleep(0.2)
                        continue
                    body = assert_ok(response)
                    since = body["next_batch"]
                    timeline = body.get("rooms", {}).get("join", {}).get(room_id, {})
                    timeline = timeline.get("timeline", {})
                    assert not timeline.get("limited", False), "a gap in the timeline"
                    received += [
                        e["content"]["body"]
                        for e in timeline.get("events", [])
                        if e["type"] == "m.room.message"
                    ]
            assert received == acknowledged
            # And the same history through main and through worker1.
            for instance in ("main", "worker1"):
                client = await on(running, instance, bob)
                page = assert_ok(
                    await until_not_503(
                        lambda c=client: c.get(  # type: ignore[misc]
                            f"/rooms/{room_id}/messages", params={"dir": "f", "limit": 1000}
                        )
                    )
                )
                listed = [
                    e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"
                ]
                assert listed == acknowledged, instance
    finally:
        await _wait_for(["pg_isready", "-q", "-h", "127.0.0.1", "-p", "5432"])
        await trio.to_thread.run_sync(drop_database, ADMIN_DSN, name)
