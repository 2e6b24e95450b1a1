"""Seed 5: a redaction that names no target is stored without a `redactions` row and never
crashes anything (SEED-SPEC 5.4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trioserver.storage.intents import EventIntent

from tests.integration.writer_env import writer_env


@pytest.mark.parametrize("room_version", ["10", "11", "12"])
async def test_redaction_without_target_is_stored_without_a_row(
    tmp_path: Path, room_version: str
) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice, room_version=room_version)
        intent = EventIntent("m.room.redaction", alice, {"reason": "foo"})
        (stored,) = await env.persister.submit(room_id, [intent])
        assert stored.event.redacts is None
        assert env.query(
            "SELECT COUNT(*) FROM redactions WHERE event_id = ?", (stored.event_id,)
        ) == [(0,)]
        # Loading it back from the database (not the cache) works too.
        env.components.deps.events.cache.invalidate([stored.event_id])
        loaded = await env.components.deps.events.get_event(stored.event_id)
        assert loaded is not None
        assert loaded.event.redacts is None
        assert loaded.event.for_client()["content"] == {"reason": "foo"}


@pytest.mark.parametrize(("room_version", "pruned_keeps_target"), [("10", False), ("11", True)])
async def test_redacting_a_redaction(
    tmp_path: Path, room_version: str, pruned_keeps_target: bool
) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice, room_version=room_version)
        message = await env.send_text(alice, room_id, "secret")
        send = env.components.deps.send
        requester = env.requester("alice")
        r1 = await send.redact(requester, room_id, message.event_id, "r1", "t1")
        r2 = await send.redact(requester, room_id, r1, "r2", "t2")
        events = env.components.deps.events
        env.components.deps.events.cache.invalidate([message.event_id, r1, r2])
        stored = await events.get_events([message.event_id, r1, r2])
        assert stored[message.event_id].redacted_by == r1
        assert stored[r1].redacted_by == r2
        assert stored[r2].redacted_by is None
        assert env.query("SELECT event_id, redacts FROM redactions ORDER BY redacts") == sorted(
            [(r1, message.event_id), (r2, r1)], key=lambda row: row[1]
        )
        # v1-10 prune the top-level `redacts`; v11 keeps `content.redacts` (MSC2176).
        pruned = stored[r1].event.redacted()
        assert (pruned.redacts == message.event_id) is pruned_keeps_target
        client = stored[r2].event.for_client()
        assert client["redacts"] == r1
        assert client["content"]["redacts"] == r1
