"""`serve_in_thread`: the in-process server for code that is not on trio (issue 10).

These tests are synchronous on purpose: they are what a plain pytest test or an asyncio bot's
test looks like. One runs matrix-nio, a real asyncio client library, in `asyncio.run`.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from nio import AsyncClient, LoginResponse, RoomCreateResponse, RoomSendResponse, SyncResponse

from trioserver.errors import ConfigError
from trioserver.testing import serve_in_thread

from tests.integration.client import V3, assert_ok


def port_is_open(base_url: str) -> bool:
    parts = urlsplit(base_url)
    assert parts.hostname is not None
    assert parts.port is not None
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except ConnectionRefusedError:
        return False
    return True


def test_sync_code_gets_a_real_server_that_stops_on_exit() -> None:
    with serve_in_thread() as hs, httpx.Client(base_url=hs.base_url) as http:
        alice = hs.register_user("alice", "alicepw")
        assert alice.user_id == f"@alice:{hs.server_name}"
        whoami = http.get(
            f"{V3}/account/whoami", headers={"Authorization": f"Bearer {alice.access_token}"}
        )
        assert assert_ok(whoami)["user_id"] == alice.user_id
        base_url = hs.base_url
    assert not port_is_open(base_url)


def test_data_dir_survives_a_restart(tmp_path: Path) -> None:
    with serve_in_thread(tmp_path) as hs:
        hs.register_user("bob", "bobpw")
    with serve_in_thread(tmp_path) as hs, httpx.Client(base_url=hs.base_url) as http:
        body = {"type": "m.login.password", "user": "bob", "password": "bobpw"}
        assert assert_ok(http.post(f"{V3}/login", json=body))["user_id"] == "@bob:localhost"


def test_a_server_that_cannot_start_raises_on_entry() -> None:
    with (
        pytest.raises(ConfigError, match="default_room_version"),
        serve_in_thread(rooms={"default_room_version": "99"}),
    ):
        pytest.fail("the server should not have started")


async def nio_round_trip(base_url: str, user_id: str, password: str) -> str:
    client = AsyncClient(base_url, user_id)
    try:
        assert isinstance(await client.login(password), LoginResponse)
        created = await client.room_create(name="asyncio room")
        assert isinstance(created, RoomCreateResponse), created
        sent = await client.room_send(
            created.room_id, "m.room.message", {"msgtype": "m.text", "body": "from asyncio"}
        )
        assert isinstance(sent, RoomSendResponse), sent
        synced = await client.sync(timeout=0)
        assert isinstance(synced, SyncResponse), synced
        timeline = synced.rooms.join[created.room_id].timeline.events
        return str(timeline[-1].body)
    finally:
        await client.close()


def test_asyncio_client_under_asyncio_run() -> None:
    with serve_in_thread() as hs:
        carol = hs.register_user("carol", "carolpw")
        body = asyncio.run(nio_round_trip(hs.base_url, carol.user_id, "carolpw"))
    assert body == "from asyncio"


def test_used_from_inside_a_running_asyncio_loop() -> None:
    # An asyncio test (pytest-asyncio, IsolatedAsyncioTestCase) enters it in its own loop.
    async def main() -> str:
        with serve_in_thread() as hs:
            dave = hs.register_user("dave", "davepw")
            return await nio_round_trip(hs.base_url, dave.user_id, "davepw")

    assert asyncio.run(main()) == "from asyncio"
