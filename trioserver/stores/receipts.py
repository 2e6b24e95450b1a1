"""Read receipts: the latest receipt of each (room, receipt type, user, thread).

Only the receipts stream's writer (`ReceiptsHandler`) calls `insert_receipt`; it passes the
`StreamIdGenerator` whose `next_id` is called inside the transaction, so stream ids commit in
order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.stores.database import Database, Txn

# The primary key cannot hold NULL; unthreaded receipts use this thread id.
UNTHREADED = ""
# Bound the number of `?` parameters per statement.
_CHUNK = 500


@attrs.frozen
class ReceiptRow:
    """One stored receipt.

    Attributes:
        thread_id: the thread (an event id or ``main``), or None for an unthreaded receipt.
        ts: when the server received it, in ms since the epoch.
        stream_id: its position in the receipts stream.
    """

    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str | None
    event_id: str
    ts: int
    stream_id: int


@attrs.frozen
class NewReceipt:
    """A receipt to store."""

    room_id: str
    receipt_type: str
    user_id: str
    thread_id: str | None
    event_id: str
    event_stream_ordering: int
    ts: int


def _max_stream_id_txn(txn: Txn) -> int:
    row = txn.execute("SELECT COALESCE(MAX(stream_id), 0) FROM receipts").fetchone()
    return 0 if row is None else int(row[0])


def _insert_receipt_txn(txn: Txn, receipt: NewReceipt, next_id: Callable[[], int]) -> int | None:
    thread = UNTHREADED if receipt.thread_id is None else receipt.thread_id
    key = (receipt.room_id, receipt.receipt_type, receipt.user_id, thread)
    row = txn.execute(
        "SELECT event_stream_ordering FROM receipts"
        " WHERE room_id = ? AND receipt_type = ? AND user_id = ? AND thread_id = ?",
        key,
    ).fetchone()
    # "Up to" markers only move forwards (Synapse ignores a receipt for an earlier event).
    if row is not None and int(row[0]) >= receipt.event_stream_ordering:
        return None
    stream_id = next_id()
    txn.execute(
        "INSERT INTO receipts (room_id, receipt_type, user_id, thread_id, event_id,"
        " event_stream_ordering, ts, stream_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (room_id, receipt_type, user_id, thread_id) DO UPDATE SET"
        " event_id = excluded.event_id, event_stream_ordering = excluded.event_stream_ordering,"
        " ts = excluded.ts, stream_id = excluded.stream_id",
        (*key, receipt.event_id, receipt.event_stream_ordering, receipt.ts, stream_id),
    )
    return stream_id


def _insert_receipt_then_txn(
    txn: Txn,
    receipt: NewReceipt,
    next_id: Callable[[], int],
    then: Callable[[Txn], object] | None,
) -> int | None:
    stream_id = _insert_receipt_txn(txn, receipt, next_id)
    if stream_id is not None and then is not None:
        then(txn)
    return stream_id


def _receipts_for_rooms_txn(
    txn: Txn, user_id: str, room_ids: Sequence[str], since: int | None
) -> list[ReceiptRow]:
    rows: list[ReceiptRow] = []
    for start in range(0, len(room_ids), _CHUNK):
        chunk = room_ids[start : start + _CHUNK]
        # Spec "Private read receipts": never send m.read.private to anyone but its sender.
        sql = (
            "SELECT room_id, receipt_type, user_id, thread_id, event_id, ts, stream_id"
            f" FROM receipts WHERE room_id IN ({','.join('?' * len(chunk))})"
            " AND (receipt_type != 'm.read.private' OR user_id = ?)"
        )
        params: list[str | int] = [*chunk, user_id]
        if since is not None:
            sql += " AND stream_id > ?"
            params.append(since)
        for room_id, rtype, uid, thread, event_id, ts, stream_id in txn.execute(
            sql + " ORDER BY stream_id", params
        ).fetchall():
            thread_id = None if thread == UNTHREADED else thread
            rows.append(ReceiptRow(room_id, rtype, uid, thread_id, event_id, ts, stream_id))
    return rows


class ReceiptStore:
    """The receipts table."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def max_stream_id(self) -> int:
        """The highest receipts stream id stored (0 when none). Checkpoint: yes."""
        return await self._db.run_read("receipts_max_stream_id", _max_stream_id_txn)

    async def insert_receipt(
        self,
        receipt: NewReceipt,
        next_id: Callable[[], int],
        *,
        then: Callable[[Txn], object] | None = None,
    ) -> int | None:
        """Store a receipt unless the same kind of receipt already points at a later event.

        Args:
            receipt: the receipt.
            next_id: allocates the stream id (called inside the transaction, at most once).
            then: run in the same transaction when the receipt was stored (the unread counts
                it clears, `stores.push_actions.apply_receipt_txn`), so that a crash cannot
                keep the receipt and lose its effect.

        Returns:
            The receipt's stream id, or None when it was older than the stored one and ignored.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "insert_receipt", _insert_receipt_then_txn, receipt, next_id, then
        )

    async def receipts_for_rooms(
        self, user_id: str, room_ids: Sequence[str], since: int | None
    ) -> list[ReceiptRow]:
        """The receipts in `room_ids` that `user_id` may see, in stream order.

        Args:
            user_id: who is asking (their own private receipts are included, nobody else's).
            room_ids: the rooms.
            since: only receipts with a stream id above this; None for all of them.

        Checkpoint: yes.
        """
        if not room_ids:
            return []
        return await self._db.run_read_inline(
            "receipts_for_rooms", _receipts_for_rooms_txn, user_id, list(room_ids), since
        )
