"""Rooms survive a restart: state, membership and history, and new events build on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from trioserver.config import Config
from trioserver.testing import serve_in_process

from tests.integration.server_db import server_db

V3 = "/_matrix/client/v3"


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _room_events(config: Config, room_id: str) -> list[tuple[Any, ...]]:
    with server_db(config) as db:
        return db.rows(
            "SELECT e.event_id, e.topological_ordering, j.json FROM events AS e"
            " JOIN event_json AS j USING (event_id) WHERE e.room_id = ?"
            " ORDER BY e.stream_ordering",
            (room_id,),
        )


async def test_room_survives_restart_and_new_events_continue_the_graph(tmp_path: Path) -> None:
    async with serve_in_process(data_dir=tmp_path) as hs:
        alice = await hs.register_user("alice")
        bob = await hs.register_user("bob")
        async with httpx.AsyncClient(base_url=hs.base_url) as http:
            created = await http.post(
                f"{V3}/createRoom",
                json={"preset": "public_chat", "name": "Before"},
                headers=_auth(alice.access_token),
            )
            room_id = created.json()["room_id"]
            joined = await http.post(f"{V3}/rooms/{room_id}/join", headers=_auth(bob.access_token))
            assert joined.status_code == 200
            for i in range(3):
                sent = await http.put(
                    f"{V3}/rooms/{room_id}/send/m.room.message/t{i}",
                    json={"msgtype": "m.text", "body": f"m{i}"},
                    headers=_auth(alice.access_token),
                )
                assert sent.status_code == 200
    before = _room_events(hs.config, room_id)

    async with (
        serve_in_process(data_dir=tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url) as http,
    ):
        # bob's membership came back from the database: he may still send.
        sent = await http.put(
            f"{V3}/rooms/{room_id}/send/m.room.message/after",
            json={"msgtype": "m.text", "body": "after restart"},
            headers=_auth(bob.access_token),
        )
        assert sent.status_code == 200, sent.text
        # The old transaction id still maps to the old event.
        again = await http.put(
            f"{V3}/rooms/{room_id}/send/m.room.message/t0",
            json={"msgtype": "m.text", "body": "m0"},
            headers=_auth(alice.access_token),
        )
        assert again.json()["event_id"] == before[-3][0]
        # Power levels came back too: bob (level 0) still may not rename the room.
        renamed = await http.put(
            f"{V3}/rooms/{room_id}/state/m.room.name/",
            json={"name": "Bob's"},
            headers=_auth(bob.access_token),
        )
        assert renamed.status_code == 403
    after = _room_events(hs.config, room_id)
    assert after[: len(before)] == before
    new_id, new_depth, new_json = after[-1]
    assert new_id == sent.json()["event_id"]
    assert new_depth == before[-1][1] + 1
    assert f'"prev_events":["{before[-1][0]}"]' in new_json
