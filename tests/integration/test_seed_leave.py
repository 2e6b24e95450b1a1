"""Seeds 4 and 6: current state is deleted when the server leaves a room, while
`local_current_membership` keeps every local user's latest membership (SEED-SPEC 4.4, 6.5)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.integration.server_db import server_db
from tests.integration.writer_env import WriterEnv, writer_env

MEMBER = "m.room.member"


def _current_state(env: WriterEnv, room_id: str) -> dict[tuple[str, str], str]:
    rows = env.query(
        "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
        (room_id,),
    )
    return {(t, k): e for t, k, e in rows}


def _local_membership(env: WriterEnv, room_id: str) -> list[tuple[str, str, str]]:
    return env.query(
        "SELECT user_id, event_id, membership FROM local_current_membership"
        " WHERE room_id = ? ORDER BY user_id",
        (room_id,),
    )


async def _leave(env: WriterEnv, user_id: str, room_id: str) -> str:
    membership = env.components.deps.membership
    return await membership.update_membership(user_id, room_id, user_id, "leave")


async def test_last_local_user_leaving_deletes_current_state(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice, room_version="11")
        membership = env.components.deps.membership
        await membership.update_membership(alice, room_id, "@r:other", "invite")
        before = _current_state(env, room_id)
        assert (MEMBER, "@r:other") in before

        leave_id = await _leave(env, alice, room_id)

        assert _current_state(env, room_id) == {}
        (leave_ordering,) = env.query(
            "SELECT stream_ordering FROM events WHERE event_id = ?", (leave_id,)
        )[0]
        removed = env.query(
            "SELECT type, state_key, prev_event_id, stream_id FROM current_state_delta_stream"
            " WHERE room_id = ? AND event_id IS NULL",
            (room_id,),
        )
        assert {(t, k): prev for t, k, prev, _ in removed} == before
        assert {stream for *_, stream in removed} == {leave_ordering}
        assert env.query("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,)) == [
            ("11",)
        ]
        # Seed 6: the leave is still recorded for the local user.
        assert _local_membership(env, room_id) == [(alice, leave_id, "leave")]
        rows = await env.components.deps.state.local_memberships(alice, ["leave"])
        assert [row.room_id for row in rows] == [room_id]
        assert await env.components.deps.state.local_memberships(alice, ["join"]) == []
        assert await env.components.deps.state.room_version(room_id) == "11"


async def test_state_is_kept_while_another_local_user_is_joined(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob = await env.user("alice"), await env.user("bob")
        room_id = await env.create_room(alice, preset="public_chat")
        membership = env.components.deps.membership
        await membership.update_membership(bob, room_id, bob, "join")

        leave_id = await _leave(env, alice, room_id)

        state = _current_state(env, room_id)
        assert state[(MEMBER, alice)] == leave_id
        assert env.query(
            "SELECT membership FROM current_state_events WHERE room_id = ? AND state_key = ?",
            (room_id, alice),
        ) == [("leave",)]
        assert env.query(
            "SELECT COUNT(*) FROM current_state_delta_stream WHERE room_id = ?"
            " AND event_id IS NULL",
            (room_id,),
        ) == [(0,)]


async def test_a_topic_change_deletes_nothing(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        before = _current_state(env, room_id)
        requester = env.requester("alice")
        topic_id = await env.components.deps.send.send_state(
            requester, room_id, "m.room.topic", "", {"topic": "new"}
        )
        after = _current_state(env, room_id)
        assert after == {**before, ("m.room.topic", ""): topic_id}


async def test_join_then_leave_keeps_one_local_membership_row(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice, bob = await env.user("alice"), await env.user("bob")
        room_id = await env.create_room(alice, preset="public_chat")
        membership = env.components.deps.membership
        join_id = await membership.update_membership(bob, room_id, bob, "join")
        rows = [r for r in _local_membership(env, room_id) if r[0] == bob]
        assert rows == [(bob, join_id, "join")]
        leave_id = await _leave(env, bob, room_id)
        rows = [r for r in _local_membership(env, room_id) if r[0] == bob]
        assert rows == [(bob, leave_id, "leave")]


async def test_remote_members_get_no_local_membership_row(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice = await env.user("alice")
        room_id = await env.create_room(alice)
        await env.components.deps.membership.update_membership(
            alice, room_id, "@r:other", "invite"
        )
        users = {row[0] for row in _local_membership(env, room_id)}
        assert users == {alice}


def _not_null_columns(env: WriterEnv, table: str) -> set[str]:
    if env.config.database.backend == "postgres":
        rows = env.query(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? AND is_nullable = 'NO'",
            (table,),
        )
        return {name for (name,) in rows}
    return {
        name for _, name, _, notnull, _, _ in env.query(f"PRAGMA table_info({table})") if notnull
    }


def _indexes(env: WriterEnv, table: str) -> dict[str, bool]:
    """The table's indexes by name, each with whether it is unique."""
    if env.config.database.backend == "postgres":
        rows = env.query(
            "SELECT i.relname, x.indisunique FROM pg_index AS x"
            " JOIN pg_class AS i ON i.oid = x.indexrelid"
            " JOIN pg_class AS t ON t.oid = x.indrelid"
            " WHERE t.relname = ? AND t.relnamespace = current_schema()::regnamespace",
            (table,),
        )
        return {name: bool(unique) for name, unique in rows}
    return {row[1]: bool(row[2]) for row in env.query(f"PRAGMA index_list({table})")}


def _integrity_error(env: WriterEnv) -> type[Exception]:
    if env.config.database.backend == "postgres":
        import psycopg

        return psycopg.IntegrityError
    return sqlite3.IntegrityError


async def test_local_membership_table_shape(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        not_null = _not_null_columns(env, "local_current_membership")
        assert {"room_id", "user_id", "event_id", "membership"} <= not_null
        indexes = _indexes(env, "local_current_membership")
        assert indexes["local_current_membership_idx"] is True  # unique
        assert "local_current_membership_room_idx" in indexes
        with server_db(env.config) as db:
            insert = (
                "INSERT INTO local_current_membership"
                " (room_id, user_id, event_id, membership, event_stream_ordering)"
                " VALUES ('!r:blue', '@a:blue', ?, 'join', 1)"
            )
            db.execute(insert, ("$1",))
            with pytest.raises(_integrity_error(env)):
                db.execute(insert, ("$2",))


async def test_local_only_queries_refuse_remote_users(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        with pytest.raises(ValueError, match="not a local user"):
            await env.components.deps.state.local_memberships("@x:remote")


async def test_deactivating_an_invitee_rejects_the_invite(tmp_path: Path) -> None:
    async with writer_env(tmp_path) as env:
        alice, invitee = await env.user("alice"), await env.user("invitee")
        room_id = await env.create_room(alice)
        membership = env.components.deps.membership
        await membership.update_membership(alice, room_id, invitee, "invite")
        state = env.components.deps.state
        assert [r.room_id for r in await state.local_memberships(invitee, ["invite"])] == [room_id]

        await membership.leave_all_rooms(invitee)
        await env.components.deps.accounts.deactivate(invitee)

        assert await state.local_memberships(invitee, ["invite"]) == []
        left = await state.local_memberships(invitee, ["leave"])
        assert [r.room_id for r in left] == [room_id]


async def test_rejecting_an_invite_after_the_server_left_keeps_the_state_deleted(
    tmp_path: Path,
) -> None:
    async with writer_env(tmp_path) as env:
        alice, invitee = await env.user("alice"), await env.user("invitee")
        room_id = await env.create_room(alice)
        membership = env.components.deps.membership
        await membership.update_membership(alice, room_id, invitee, "invite")
        alice_leave = await _leave(env, alice, room_id)
        assert _current_state(env, room_id) == {}

        reject_id = await _leave(env, invitee, room_id)

        assert _current_state(env, room_id) == {}
        assert _local_membership(env, room_id) == [
            (alice, alice_leave, "leave"),
            (invitee, reject_id, "leave"),
        ]
        # The rejection hangs off the room's head and is authorised by its state there.
        (json_text,) = env.query("SELECT json FROM event_json WHERE event_id = ?", (reject_id,))[0]
        assert alice_leave in json_text
        assert env.query(
            "SELECT event_id FROM event_forward_extremities WHERE room_id = ?", (room_id,)
        ) == [(reject_id,)]
