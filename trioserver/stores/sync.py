"""Queries /sync makes about a user's rooms."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import orjson

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn


@attrs.frozen
class SyncMembership:
    """A local user's latest membership of a room, as /sync sorts rooms by it."""

    room_id: str
    membership: str
    event_id: str
    stream_ordering: int
    forgotten: bool
    # The user's latest join of the room (history visibility "shared"), if any.
    last_join_stream: int | None


@attrs.frozen
class MemberCounts:
    """How many members a room has (for the room summary)."""

    joined: int
    invited: int


def _memberships_txn(txn: Txn, user_id: str) -> list[SyncMembership]:
    rows = txn.execute(
        "SELECT l.room_id, l.membership, l.event_id, l.event_stream_ordering,"
        " COALESCE(m.forgotten, 0),"
        " (SELECT MAX(j.event_stream_ordering) FROM room_memberships AS j"
        "  WHERE j.user_id = l.user_id AND j.room_id = l.room_id AND j.membership = 'join')"
        " FROM local_current_membership AS l"
        " LEFT JOIN room_memberships AS m ON m.event_id = l.event_id"
        " WHERE l.user_id = ?",
        (user_id,),
    ).fetchall()
    return [SyncMembership(r, m, e, s, bool(f), j) for r, m, e, s, f, j in rows]


def _rooms_with_events_txn(txn: Txn, room_ids: Sequence[str], after: int, upto: int) -> set[str]:
    # Walk the (short) stretch of the events stream rather than each room's history.
    rows = txn.execute(
        "SELECT DISTINCT room_id FROM events WHERE stream_ordering > ? AND stream_ordering <= ?",
        (after, upto),
    ).fetchall()
    wanted = set(room_ids)
    return {row[0] for row in rows if row[0] in wanted}


def _membership_at_txn(txn: Txn, user_id: str, room_id: str, stream: int) -> str | None:
    row = txn.execute(
        "SELECT membership FROM room_memberships"
        " WHERE user_id = ? AND room_id = ? AND event_stream_ordering <= ?"
        " ORDER BY event_stream_ordering DESC LIMIT 1",
        (user_id, room_id, stream),
    ).fetchone()
    return None if row is None else str(row[0])


def _member_counts_txn(txn: Txn, room_ids: Sequence[str]) -> dict[str, MemberCounts]:
    counts: dict[str, MemberCounts] = {}
    for room_id in room_ids:
        rows = txn.execute(
            "SELECT membership, COUNT(*) FROM current_state_events"
            " WHERE room_id = ? AND type = 'm.room.member' GROUP BY membership",
            (room_id,),
        ).fetchall()
        by_membership: dict[str, int] = {str(m): int(n) for m, n in rows}
        counts[room_id] = MemberCounts(
            int(by_membership.get("join", 0)), int(by_membership.get("invite", 0))
        )
    return counts


def _has_name_txn(txn: Txn, room_id: str) -> bool:
    for event_type, field in (("m.room.name", "name"), ("m.room.canonical_alias", "alias")):
        row = txn.execute(
            "SELECT j.json FROM current_state_events AS c JOIN event_json AS j USING (event_id)"
            " WHERE c.room_id = ? AND c.type = ? AND c.state_key = ''",
            (room_id, event_type),
        ).fetchone()
        if row is not None:
            content = orjson.loads(row[0]).get("content")
            if isinstance(content, dict) and content.get(field):
                return True
    return False


def _members_txn(txn: Txn, room_id: str, user_id: str, membership: str, limit: int) -> list[str]:
    rows = txn.execute(
        "SELECT state_key FROM current_state_events"
        " WHERE room_id = ? AND type = 'm.room.member' AND membership = ? AND state_key != ?"
        " ORDER BY event_stream_ordering LIMIT ?",
        (room_id, membership, user_id, limit),
    ).fetchall()
    return [row[0] for row in rows]


def _heroes_for_rooms_txn(
    txn: Txn, room_ids: Sequence[str], user_id: str, limit: int
) -> dict[str, list[str] | None]:
    return {room_id: _heroes_txn(txn, room_id, user_id, limit) for room_id in room_ids}


def _heroes_txn(txn: Txn, room_id: str, user_id: str, limit: int) -> list[str] | None:
    # Spec "Room summary": heroes are needed only when the room has neither a name nor a
    # canonical alias. Like Synapse: the longest-standing joined and invited members (or,
    # when there are none, those who left), sorted by user id.
    if _has_name_txn(txn, room_id):
        return None
    present = [
        user
        for membership in ("join", "invite")
        for user in _members_txn(txn, room_id, user_id, membership, limit + 1)
    ]
    if not present:
        present = [
            user
            for membership in ("leave", "ban")
            for user in _members_txn(txn, room_id, user_id, membership, limit + 1)
        ]
    return sorted(present)[:limit]


def _users_in_rooms_txn(txn: Txn, room_ids: Sequence[str]) -> set[str]:
    users: set[str] = set()
    for room_id in room_ids:
        rows = txn.execute(
            "SELECT state_key FROM current_state_events"
            " WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join'",
            (room_id,),
        ).fetchall()
        users.update(row[0] for row in rows)
    return users


class SyncStore:
    """Reads for /sync."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def memberships(self, user_id: str) -> list[SyncMembership]:
        """The user's latest membership of every room they were ever in. Checkpoint: yes."""
        return await self._db.run_read_inline("sync_memberships", _memberships_txn, user_id)

    async def rooms_with_events(self, room_ids: Sequence[str], after: int, upto: int) -> set[str]:
        """Which of `room_ids` have events in the stream range (after, upto]. Checkpoint: yes."""
        if after >= upto or not room_ids:
            return set()
        return await self._db.run_read_inline(
            "rooms_with_events", _rooms_with_events_txn, room_ids, after, upto
        )

    async def membership_at(self, user_id: str, room_id: str, stream: int) -> str | None:
        """The user's membership of a room as of an events-stream position. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "membership_at", _membership_at_txn, user_id, room_id, stream
        )

    async def member_counts(self, room_ids: Sequence[str]) -> dict[str, MemberCounts]:
        """Joined and invited member counts from current state. Checkpoint: yes."""
        return await self._db.run_read_inline("member_counts", _member_counts_txn, room_ids)

    async def users_in_rooms(self, room_ids: Sequence[str]) -> set[str]:
        """Everyone joined to any of the rooms. Checkpoint: yes."""
        if not room_ids:
            return set()
        return await self._db.run_read("users_in_rooms", _users_in_rooms_txn, room_ids)

    async def heroes(
        self, room_ids: Sequence[str], user_id: str, limit: int = 5
    ) -> dict[str, list[str] | None]:
        """Per room, up to `limit` other members to name it by (room summary ``m.heroes``),
        or None when it has a name or canonical alias. One transaction for all the rooms.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "heroes", _heroes_for_rooms_txn, room_ids, user_id, limit
        )
