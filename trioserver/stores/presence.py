"""Presence: the last notable presence of each local user, and who shares rooms with whom.

Only the presence stream's writer (`PresenceHandler`) writes here; it passes the
`StreamIdGenerator` whose `next_id` is called inside the transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.stores.database import Database, Txn


@attrs.frozen
class PresenceRow:
    """A stored presence.

    Attributes:
        state: ``online``, ``unavailable`` or ``offline``.
        last_active_ts: ms since the epoch of the user's last activity (0: never).
        stream_id: the presence stream position of this change.
    """

    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    currently_active: bool
    stream_id: int


# Users joined to a room that `?` is joined to (each room's members from current state).
_SHARING_USERS = (
    "SELECT DISTINCT other.state_key FROM current_state_events AS mine"
    " JOIN current_state_events AS other ON other.room_id = mine.room_id"
    " WHERE mine.type = 'm.room.member' AND mine.state_key = ? AND mine.membership = 'join'"
    " AND other.type = 'm.room.member' AND other.membership = 'join'"
)


def _max_stream_id_txn(txn: Txn) -> int:
    row = txn.execute("SELECT COALESCE(MAX(stream_id), 0) FROM presence").fetchone()
    return 0 if row is None else int(row[0])


def _all_txn(txn: Txn) -> list[PresenceRow]:
    rows = txn.execute(
        "SELECT user_id, state, status_msg, last_active_ts, currently_active, stream_id"
        " FROM presence"
    ).fetchall()
    return [PresenceRow(u, s, m, ts, bool(a), sid) for u, s, m, ts, a, sid in rows]


def _upsert_txn(txn: Txn, row: PresenceRow, next_id: Callable[[], int]) -> int:
    stream_id = next_id()
    txn.execute(
        "INSERT INTO presence (user_id, state, status_msg, last_active_ts, currently_active,"
        " stream_id) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (user_id) DO UPDATE SET"
        " state = excluded.state, status_msg = excluded.status_msg,"
        " last_active_ts = excluded.last_active_ts,"
        " currently_active = excluded.currently_active, stream_id = excluded.stream_id",
        (
            row.user_id,
            row.state,
            row.status_msg,
            row.last_active_ts,
            int(row.currently_active),
            stream_id,
        ),
    )
    return stream_id


def _changed_for_txn(txn: Txn, user_id: str, since: int | None) -> list[str]:
    sql = f"SELECT user_id FROM presence WHERE (user_id = ? OR user_id IN ({_SHARING_USERS}))"
    params: list[str | int] = [user_id, user_id]
    if since is not None:
        sql += " AND stream_id > ?"
        params.append(since)
    return [row[0] for row in txn.execute(sql + " ORDER BY stream_id", params).fetchall()]


def _shares_room_txn(txn: Txn, user_id: str, other: str) -> bool:
    row = txn.execute(
        f"SELECT 1 FROM ({_SHARING_USERS}) AS s WHERE s.state_key = ? LIMIT 1", (user_id, other)
    ).fetchone()
    return row is not None


def _joined_rooms_txn(txn: Txn, user_id: str) -> list[str]:
    rows = txn.execute(
        "SELECT room_id FROM current_state_events"
        " WHERE type = 'm.room.member' AND state_key = ? AND membership = 'join'",
        (user_id,),
    ).fetchall()
    return [row[0] for row in rows]


def _user_exists_txn(txn: Txn, user_id: str) -> bool:
    return txn.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone() is not None


class PresenceStore:
    """The presence table, and the room memberships presence visibility depends on."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def max_stream_id(self) -> int:
        """The highest presence stream id stored (0 when none). Checkpoint: yes."""
        return await self._db.run_read("presence_max_stream_id", _max_stream_id_txn)

    async def all_presence(self) -> list[PresenceRow]:
        """Every stored presence (read once at start). Checkpoint: yes."""
        return await self._db.run_read("all_presence", _all_txn)

    async def upsert(self, row: PresenceRow, next_id: Callable[[], int]) -> int:
        """Store a user's presence (`row.stream_id` is ignored).

        Args:
            next_id: allocates the stream id (called once, inside the transaction).

        Returns:
            The new stream id.

        Checkpoint: yes.
        """
        return await self._db.run_txn("upsert_presence", _upsert_txn, row, next_id)

    async def changed_for(self, user_id: str, since: int | None) -> list[str]:
        """Users whose stored presence changed after `since` (any, when None) and who are
        `user_id` or share a joined room with them. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "presence_changed_for", _changed_for_txn, user_id, since
        )

    async def shares_room(self, user_id: str, other: str) -> bool:
        """Whether both users are joined to a common room. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "presence_shares_room", _shares_room_txn, user_id, other
        )

    async def joined_rooms(self, user_id: str) -> list[str]:
        """The rooms the user is joined to (current state). Checkpoint: yes."""
        return await self._db.run_read_inline("presence_joined_rooms", _joined_rooms_txn, user_id)

    async def user_exists(self, user_id: str) -> bool:
        """Whether a local account with this id exists. Checkpoint: yes."""
        return await self._db.run_read_inline("presence_user_exists", _user_exists_txn, user_id)
