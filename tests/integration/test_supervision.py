"""Supervision over real HTTP: a background subsystem that fails is restarted while the API
goes on serving (issue 10).

The failure is injected from outside, as a broken database would cause it: the presence table
is renamed away behind the server's back (a second connection to its database, as an
operator's tool would make), so the presence timeout task fails when it next writes a presence
change.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

import trio

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_ok
from tests.integration.room_helpers import create_room, send_text
from tests.integration.server_db import server_db

if TYPE_CHECKING:
    from trioserver.config import Config

PRESENCE_TASK = "PresenceHandler.run_timeouts"


def rename_table(config: Config, old: str, new: str) -> None:
    with server_db(config) as db:
        db.execute(f"ALTER TABLE {old} RENAME TO {new}")


def missing_table_error(config: Config, table: str) -> str:
    """How the server's backend reports a missing table."""
    if config.database.backend == "postgres":
        return f'relation "{table}" does not exist'
    return f"no such table: {table}"


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll `check` until it holds (the server works in real time here), for up to 10 s."""
    with trio.fail_after(10):
        for _ in itertools.count():
            if await check():
                return
            await trio.sleep(0.02)


async def wait_for_log(caplog: pytest.LogCaptureFixture, text: str) -> None:
    async def logged() -> bool:
        return text in caplog.text

    await eventually(logged)


async def test_a_failing_subsystem_is_restarted_while_the_api_keeps_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trioserver.supervisor")
    async with (
        serve_in_process(tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        room_id = await create_room(alice)
        status = f"/presence/{alice.user_id}/status"
        # Unavailable, so that the next message (activity) is a change the task must store.
        assert_ok(await alice.put(status, {"presence": "unavailable"}))

        rename_table(hs.config, "presence", "presence_hidden")
        await send_text(alice, room_id, "activity: the presence task writes, and fails")
        await wait_for_log(caplog, f"subsystem {PRESENCE_TASK} failed; restarting in 1 s")
        # Logged with its traceback.
        assert missing_table_error(hs.config, "presence") in caplog.text

        # The server is still up: the API answers and messages are still sent and read.
        assert (await http.get("/_matrix/client/versions")).status_code == 200
        event_id = await send_text(alice, room_id, "sent while presence is down")
        got = assert_ok(await alice.get(f"/rooms/{room_id}/event/{event_id}"))
        assert got["content"]["body"] == "sent while presence is down"

        # The table comes back; the restarted task applies activity again.
        rename_table(hs.config, "presence_hidden", "presence")
        await wait_for_log(caplog, f"restarting subsystem {PRESENCE_TASK}")
        assert_ok(await alice.put(status, {"presence": "unavailable"}))
        await send_text(alice, room_id, "back")

        async def online() -> bool:
            return bool(assert_ok(await alice.get(status))["presence"] == "online")

        await eventually(online)
