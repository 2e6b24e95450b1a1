"""Reads for the legacy event stream (``GET /events``): a stretch of the events stream in
given rooms, and whose presence changed among a room's members."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn

# Rooms per statement (SQLite's limit on host parameters is large; keep statements modest).
_ROOMS_PER_QUERY = 500


def _stream_event_ids_txn(
    txn: Txn, room_ids: Sequence[str], after: int, upto: int, limit: int
) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for start in range(0, len(room_ids), _ROOMS_PER_QUERY):
        chunk = list(room_ids[start : start + _ROOMS_PER_QUERY])
        marks = ",".join("?" * len(chunk))
        rows = txn.execute(
            "SELECT stream_ordering, event_id FROM events"
            " WHERE stream_ordering > ? AND stream_ordering <= ? AND outlier = 0"
            f" AND rejected IS NULL AND room_id IN ({marks})"
            " ORDER BY stream_ordering LIMIT ?",
            [after, upto, *chunk, limit],
        ).fetchall()
        found.extend((int(row[0]), str(row[1])) for row in rows)
    found.sort()
    return found[:limit]


def _presence_changed_in_room_txn(txn: Txn, room_id: str, since: int | None) -> list[str]:
    sql = (
        "SELECT p.user_id FROM presence AS p JOIN current_state_events AS c"
        " ON c.state_key = p.user_id AND c.room_id = ? AND c.type = 'm.room.member'"
        " AND c.membership = 'join'"
    )
    params: list[str | int] = [room_id]
    if since is not None:
        sql += " WHERE p.stream_id > ?"
        params.append(since)
    return [str(row[0]) for row in txn.execute(sql + " ORDER BY p.stream_id", params).fetchall()]


class EventStreamStore:
    """Stream-ordered reads across rooms."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def stream_event_ids(
        self, room_ids: Sequence[str], after: int, upto: int, limit: int
    ) -> list[tuple[int, str]]:
        """The events of `room_ids` in the events stream range (after, upto], oldest first.

        Returns:
            At most `limit` (stream ordering, event id) pairs. Checkpoint: yes.
        """
        if not room_ids or after >= upto:
            return []
        return await self._db.run_read(
            "stream_event_ids", _stream_event_ids_txn, room_ids, after, upto, limit
        )

    async def presence_changed_in_room(self, room_id: str, since: int | None) -> list[str]:
        """Joined members of the room whose presence changed after `since` (any, when None).

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "presence_changed_in_room", _presence_changed_in_room_txn, room_id, since
        )
