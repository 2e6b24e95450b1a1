"""A PostgreSQL server that goes away and comes back (issue 14).

The server's connections go through `CuttableProxy` (tests/integration/tcp_proxy.py) to the
machine's PostgreSQL: cutting it drops every connection at once and refuses new ones, as a
PostgreSQL restart or a network partition looks to the server. Requests in flight or made
meanwhile must get a clear Matrix error soon (503, no hang, no 500), and once the proxy heals
the same server must serve again, every acknowledged message still there.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

import trio

from trioserver.stores.postgres_admin import create_database, drop_database
from trioserver.testing import InProcessServer, serve_in_process
from trioserver.testing_postgres import POSTGRES_ENV

from tests.integration.client import Client, assert_ok
from tests.integration.room_helpers import create_room, messages, send_text
from tests.integration.tcp_proxy import CuttableProxy, running_proxy

ADMIN_DSN = os.environ.get(POSTGRES_ENV) or "postgresql://postgres@127.0.0.1:5432/postgres"
POSTGRES_PORT = 5432
CONNECT_TIMEOUT_S = 2.0


@asynccontextmanager
async def database_behind_proxy(
    tmp_path: Path,
) -> AsyncIterator[tuple[InProcessServer, CuttableProxy]]:
    name = f"trioserver_test_loss_{secrets.token_hex(6)}"
    await trio.to_thread.run_sync(create_database, ADMIN_DSN, name)
    try:
        async with running_proxy(POSTGRES_PORT) as proxy:
            dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/{name}"
            database = {
                "backend": "postgres",
                "dsn": dsn,
                "connect_timeout_seconds": CONNECT_TIMEOUT_S,
            }
            async with serve_in_process(tmp_path, database=database) as hs:
                yield hs, proxy
    finally:
        await trio.to_thread.run_sync(drop_database, ADMIN_DSN, name)


async def _client(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("alice", "alicepw")
    return Client(http, user.user_id, user.access_token, user.device_id)


async def _send_once_back(client: Client, room: str, txn: str, body: str) -> str:
    """Send with transaction id `txn`, again while the server answers 503; the event id."""
    with trio.fail_after(30):
        while True:
            sent = await client.put(
                f"/rooms/{room}/send/m.room.message/{txn}", {"msgtype": "m.text", "body": body}
            )
            if sent.status_code == 200:
                return str(sent.json()["event_id"])
            assert sent.status_code == 503, sent.text
            await trio.sleep(0.2)


async def test_a_lost_database_fails_requests_with_503_then_the_server_serves_again(
    tmp_path: Path,
) -> None:
    async with (
        database_behind_proxy(tmp_path) as (hs, proxy),
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        alice = await _client(hs, http)
        room = await create_room(alice)
        acknowledged = [await send_text(alice, room, f"before {i}") for i in range(5)]

        proxy.cut()
        # Writes and reads fail soon with a Matrix error saying so, not a 500 or a hang.
        with trio.fail_after(CONNECT_TIMEOUT_S * 5):
            sent = await alice.put(
                f"/rooms/{room}/send/m.room.message/during",
                {"msgtype": "m.text", "body": "during the outage"},
            )
            read = await alice.get(f"/rooms/{room}/messages", params={"dir": "b"})
        for response in (sent, read):
            assert response.status_code == 503, response.text
            assert response.json()["errcode"] == "M_UNKNOWN"

        proxy.heal()
        # The same server serves again without a restart, new writes included.
        acknowledged.append(await _send_once_back(alice, room, "during", "during the outage"))
        acknowledged += [await send_text(alice, room, f"after {i}") for i in range(5)]

        page = await messages(alice, room, dir="b", limit=100)
        found = [e["event_id"] for e in page["chunk"] if e["type"] == "m.room.message"]
        # Every acknowledged message is there once, in order; the retried transaction id was
        # stored once whether or not its first attempt had reached the database.
        assert found[::-1] == acknowledged


async def test_a_long_poll_during_an_outage_is_answered_and_sync_recovers(
    tmp_path: Path,
) -> None:
    async with (
        database_behind_proxy(tmp_path) as (hs, proxy),
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        alice = await _client(hs, http)
        room = await create_room(alice)
        since = assert_ok(await alice.get("/sync"))["next_batch"]
        proxy.cut()
        with trio.fail_after(CONNECT_TIMEOUT_S * 5):
            during = await alice.get("/sync", params={"since": since, "timeout": 1000})
        # Nothing changed, so a /sync may still answer from memory; if it needed the
        # database it says so with a 503.
        assert during.status_code in (200, 503), during.text
        proxy.heal()
        event_id = await _send_once_back(alice, room, "after", "after")
        synced = assert_ok(await alice.get("/sync", params={"since": since, "timeout": 5000}))
        timeline = synced["rooms"]["join"][room]["timeline"]["events"]
        assert event_id in [e["event_id"] for e in timeline]
