"""Queries of the read side of rooms: who may read what, and where tokens point.

Everything here is a read (`Database.run_read`); the tables are written by the events writer
(`stores.persist_events`) and by ``/forget`` (`room_memberships.forgotten`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from trioserver.stores.events import RoomPosition

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn

MEMBER = "m.room.member"


@attrs.frozen
class RoomAccess:
    """What decides a user's read access to a room, read in one transaction.

    Attributes:
        membership: the user's latest membership (`local_current_membership`, which outlives
            the server leaving the room: seed 4), or None when they never had one.
        member_event_id: the event that set `membership`.
        forgotten: the user forgot the room after leaving it.
        last_join_stream: stream ordering of the user's latest join event in the room, if any
            (history visibility "shared": "joined the room at any point after the event").
        history_visibility_id: the current ``m.room.history_visibility`` event (None when the
            room has none, or the server has left the room).
    """

    membership: str | None
    member_event_id: str | None
    forgotten: bool
    last_join_stream: int | None
    history_visibility_id: str | None


@attrs.frozen
class JoinedProfile:
    """A joined member's display name and avatar, from their current member event."""

    user_id: str
    display_name: str | None
    avatar_url: str | None


def _room_access_txn(txn: Txn, user_id: str, room_id: str) -> RoomAccess:
    member = txn.execute(
        "SELECT l.membership, l.event_id, COALESCE(m.forgotten, 0)"
        " FROM local_current_membership AS l"
        " LEFT JOIN room_memberships AS m ON m.event_id = l.event_id"
        " WHERE l.user_id = ? AND l.room_id = ?",
        (user_id, room_id),
    ).fetchone()
    joined = txn.execute(
        "SELECT MAX(event_stream_ordering) FROM room_memberships"
        " WHERE user_id = ? AND room_id = ? AND membership = 'join'",
        (user_id, room_id),
    ).fetchone()
    visibility = txn.execute(
        "SELECT event_id FROM current_state_events"
        " WHERE room_id = ? AND type = 'm.room.history_visibility' AND state_key = ''",
        (room_id,),
    ).fetchone()
    return RoomAccess(
        membership=None if member is None else str(member[0]),
        member_event_id=None if member is None else str(member[1]),
        forgotten=member is not None and bool(member[2]),
        last_join_stream=None if joined is None or joined[0] is None else int(joined[0]),
        history_visibility_id=None if visibility is None else str(visibility[0]),
    )


def _current_state_id_txn(txn: Txn, room_id: str, event_type: str, state_key: str) -> str | None:
    row = txn.execute(
        "SELECT event_id FROM current_state_events"
        " WHERE room_id = ? AND type = ? AND state_key = ?",
        (room_id, event_type, state_key),
    ).fetchone()
    return None if row is None else str(row[0])


def _txn_ids_txn(
    txn: Txn, user_id: str, device_id: str, room_id: str, event_ids: Sequence[str]
) -> dict[str, str]:
    found: dict[str, str] = {}
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        rows = txn.execute(
            "SELECT event_id, txn_id FROM event_txn_ids"
            " WHERE user_id = ? AND device_id = ? AND room_id = ?"
            f" AND event_id IN ({','.join('?' * len(chunk))})",
            (user_id, device_id, room_id, *chunk),
        ).fetchall()
        found.update((str(event_id), str(txn_id)) for event_id, txn_id in rows)
    return found


def _position_at_stream_txn(txn: Txn, room_id: str, stream: int) -> RoomPosition:
    row = txn.execute(
        "SELECT topological_ordering FROM events"
        " WHERE room_id = ? AND stream_ordering <= ? AND outlier = 0 AND rejected IS NULL"
        " ORDER BY stream_ordering DESC LIMIT 1",
        (room_id, stream),
    ).fetchone()
    return RoomPosition(0 if row is None else int(row[0]), stream)


def _last_event_at_txn(txn: Txn, room_id: str, position: RoomPosition) -> str | None:
    row = txn.execute(
        "SELECT event_id FROM events WHERE room_id = ? AND outlier = 0 AND rejected IS NULL"
        " AND (topological_ordering, stream_ordering) <= (?, ?)"
        " ORDER BY topological_ordering DESC, stream_ordering DESC LIMIT 1",
        (room_id, position.topological, position.stream),
    ).fetchone()
    return None if row is None else str(row[0])


def _joined_profiles_txn(txn: Txn, room_id: str) -> list[JoinedProfile]:
    rows = txn.execute(
        "SELECT c.state_key, m.display_name, m.avatar_url FROM current_state_events AS c"
        " JOIN room_memberships AS m ON m.event_id = c.event_id"
        " WHERE c.room_id = ? AND c.type = ? AND c.membership = 'join'",
        (room_id, MEMBER),
    ).fetchall()
    return [JoinedProfile(*row) for row in rows]


class RoomReadStore:
    """Reads for the room read endpoints (and, later, /sync)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def room_access(self, user_id: str, room_id: str) -> RoomAccess:
        """Everything that decides `user_id`'s read access to `room_id`. Checkpoint: yes."""
        return await self._db.run_read_inline("room_access", _room_access_txn, user_id, room_id)

    async def current_state_id(self, room_id: str, event_type: str, state_key: str) -> str | None:
        """The current state event for one key (None when absent). Checkpoint: yes."""
        return await self._db.run_read_inline(
            "current_state_id", _current_state_id_txn, room_id, event_type, state_key
        )

    async def txn_ids(
        self, user_id: str, device_id: str, room_id: str, event_ids: Sequence[str]
    ) -> dict[str, str]:
        """The client transaction ids of those of `event_ids` this device sent.

        Returns:
            event id -> transaction id, for the events found.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "txn_ids", _txn_ids_txn, user_id, device_id, room_id, list(event_ids)
        )

    async def position_at_stream(self, room_id: str, stream: int) -> RoomPosition:
        """The room position of an events-stream position (a sync token).

        Returns:
            The position just after the room's last event at or before `stream`: its
            topological ordering (0 when there is none) with `stream`.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "position_at_stream", _position_at_stream_txn, room_id, stream
        )

    async def last_event_at(self, room_id: str, position: RoomPosition) -> str | None:
        """The room's last accepted event at or before `position`, if any. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "last_event_at", _last_event_at_txn, room_id, position
        )

    async def joined_profiles(self, room_id: str) -> list[JoinedProfile]:
        """The currently joined members with their room profiles. Checkpoint: yes."""
        return await self._db.run_read("joined_profiles", _joined_profiles_txn, room_id)
