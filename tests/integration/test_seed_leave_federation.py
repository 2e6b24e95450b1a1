"""Seeds 4 and 6 with a real remote server (SEED-SPEC 4.4, tests 1, 4 and 7): the last local
user leaving or being banned by a remote admin drops the room's current state here, keeps the
user's last membership, and rejoining over federation fills the current state again."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import trio

from tests.integration.client import Client, assert_ok
from tests.integration.federation_helpers import FederatedServer, federating_servers
from tests.integration.room_helpers import create_room
from tests.integration.server_db import server_db


def _rows(server: FederatedServer, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    with server_db(server.hs.config) as db:
        return db.rows(sql, params)


def _current_state(server: FederatedServer, room_id: str) -> dict[tuple[str, str], str]:
    rows = _rows(
        server,
        "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
        (room_id,),
    )
    return {(t, k): e for t, k, e in rows}


def _local_membership(server: FederatedServer, room_id: str, user_id: str) -> str | None:
    rows = _rows(
        server,
        "SELECT membership FROM local_current_membership WHERE room_id = ? AND user_id = ?",
        (room_id, user_id),
    )
    return rows[0][0] if rows else None


async def _eventually(check: Any, what: str, seconds: float = 20.0) -> None:
    with trio.move_on_after(seconds):
        while True:
            if check():
                return
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def _shared_room(a: FederatedServer, b: FederatedServer) -> tuple[Client, Client, str]:
    alice = await a.user("alice")
    bob = await b.user("bob")
    room_id = await create_room(alice, preset="public_chat")
    assert_ok(await bob.post(f"/join/{quote(room_id)}", {}, params={"server_name": a.name}))
    await _eventually(
        lambda: ("m.room.member", bob.user_id) in _current_state(a, room_id), "bob on a"
    )
    return alice, bob, room_id


async def test_the_last_local_user_leaving_drops_the_state_and_rejoining_fills_it() -> None:
    async with federating_servers(2) as (a, b):
        alice, bob, room_id = await _shared_room(a, b)
        keys_before = set(_current_state(b, room_id))
        assert ("m.room.create", "") in keys_before
        assert_ok(await bob.post(f"/rooms/{quote(room_id)}/leave", {}))
        # Test 1: no current state on b, each key recorded as removed; test 3: the leave kept.
        assert _current_state(b, room_id) == {}
        removed = _rows(
            b,
            "SELECT type, state_key FROM current_state_delta_stream"
            " WHERE room_id = ? AND event_id IS NULL",
            (room_id,),
        )
        assert keys_before <= set(removed)
        assert _local_membership(b, room_id, bob.user_id) == "leave"
        versions = _rows(b, "SELECT room_version FROM rooms WHERE room_id = ?", (room_id,))
        assert versions[0][0] == "12"
        # Test 7: rejoining over federation fills current state with the room's full state.
        assert_ok(await bob.post(f"/join/{quote(room_id)}", {}, params={"server_name": a.name}))
        assert set(_current_state(b, room_id)) == set(_current_state(a, room_id))
        assert _local_membership(b, room_id, bob.user_id) == "join"
        assert alice.user_id in {k for t, k in _current_state(b, room_id) if t == "m.room.member"}


async def test_a_remote_admin_banning_the_last_local_user() -> None:
    async with federating_servers(2) as (a, b):
        alice, bob, room_id = await _shared_room(a, b)
        assert_ok(await alice.post(f"/rooms/{room_id}/ban", {"user_id": bob.user_id}))
        # Test 4: b hears of the ban, its current state goes, and bob's membership is ban.
        await _eventually(
            lambda: _local_membership(b, room_id, bob.user_id) == "ban", "the ban on b"
        )
        assert _current_state(b, room_id) == {}
