"""Finding a room's events by time (``GET /rooms/{roomId}/timestamp_to_event``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn


@attrs.frozen
class TimeCursor:
    """A position in a room's events ordered by (origin_server_ts, depth, stream ordering)."""

    ts: int
    topological: int
    stream: int


def _events_by_time_txn(
    txn: Txn, room_id: str, ts: int, forwards: bool, after: TimeCursor | None, limit: int
) -> list[tuple[str, TimeCursor]]:
    # Synapse's order: the timestamp, then depth and stream ordering for ties. Accepted,
    # non-outlier events only (the index events_by_room_ts covers the scan).
    op, cmp, order = (">=", ">", "ASC") if forwards else ("<=", "<", "DESC")
    sql = (
        "SELECT event_id, origin_server_ts, topological_ordering, stream_ordering FROM events"
        f" WHERE room_id = ? AND outlier = 0 AND rejected IS NULL AND origin_server_ts {op} ?"
    )
    params: list[object] = [room_id, ts]
    if after is not None:
        sql += f" AND (origin_server_ts, topological_ordering, stream_ordering) {cmp} (?, ?, ?)"
        params += [after.ts, after.topological, after.stream]
    sql += (
        f" ORDER BY origin_server_ts {order}, topological_ordering {order},"
        f" stream_ordering {order} LIMIT ?"
    )
    params.append(limit)
    return [
        (str(event_id), TimeCursor(ts_, topo, stream))
        for event_id, ts_, topo, stream in txn.execute(sql, params).fetchall()
    ]


class EventTimestampStore:
    """Reads of events by their ``origin_server_ts``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def events_by_time(
        self,
        room_id: str,
        ts: int,
        *,
        forwards: bool,
        after: TimeCursor | None = None,
        limit: int = 20,
    ) -> list[tuple[str, TimeCursor]]:
        """Event ids at or after `ts` (or at or before, backwards), nearest first.

        Args:
            after: continue past this cursor (exclusive), from an earlier call.
            limit: at most this many.

        Returns:
            Each event id with its cursor.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "events_by_time", _events_by_time_txn, room_id, ts, forwards, after, limit
        )
