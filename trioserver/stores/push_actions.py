"""Push actions and the unread notification counts kept from them.

Theory of operation
-------------------
The events writer evaluates every local joined member's push rules for each event it stores
(`storage.push_evaluation`) and hands the outcome to `PersistEventStore` as `EventPush`;
`insert_push_actions_txn` then writes, in the transaction that stores the events, a row of
``event_push_events`` for the event and a narrow ``event_push_users`` row per user it notifies
or highlights (the view ``event_push_actions`` joins them), and adds to each such user's
``event_push_summary`` counts for the event's room and thread. Users who got the same actions
share one statement (``json_each`` over their ids), so a message to a 100-member room costs
three statements, not 200 rows bound one by one from Python.

The summary is what /sync reads (`summaries`): it never counts messages. It is recomputed,
for the (room, user, thread)s concerned only, when a read receipt moves
(`apply_receipt_txn`: spec "Receiving notifications": an unthreaded receipt reads every thread up
to its event, a threaded one only its thread) and when an event with actions is redacted
(Synapse drops those actions). A receipt also deletes the rows it passes that do not
highlight, as Synapse does; highlights stay for ``GET /notifications``, marked read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import orjson

from trioserver.stores.dialect import greatest, json_array_rows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn

READ_RECEIPT_TYPES = ("m.read", "m.read.private")
# Unthreaded receipts are stored with this thread id (see stores/receipts.py).
_UNTHREADED = ""
_CHUNK = 500


@attrs.frozen
class PushGroup:
    """Users for whom an event's push rules gave the same actions."""

    user_ids: tuple[str, ...]
    actions: list[Any]
    notify: bool
    highlight: bool


@attrs.frozen
class EventPush:
    """The push actions of one event: its thread and who gets which actions."""

    thread_id: str
    groups: tuple[PushGroup, ...]


@attrs.frozen
class PushActionWrite:
    """One event's push actions, with what the rows need to know about the event."""

    room_id: str
    event_id: str
    stream_ordering: int
    topological_ordering: int
    received_ts: int
    push: EventPush


@attrs.frozen
class UnreadCounts:
    """A user's unread notification and highlight counts in one thread of a room."""

    room_id: str
    thread_id: str
    notifications: int
    highlights: int


@attrs.frozen
class Notification:
    """One row of ``GET /notifications``."""

    room_id: str
    event_id: str
    stream_ordering: int
    actions: list[Any]
    read: bool
    ts: int


def insert_push_actions_txn(txn: Txn, writes: Sequence[PushActionWrite]) -> None:
    """Store the push actions of a batch of events and add them to the unread counts.

    Called by `PersistEventStore` inside the events' own transaction.
    """
    if not writes:
        return
    events = []
    users = []
    for write in writes:
        push = write.push
        events.append(
            (
                write.stream_ordering,
                write.room_id,
                write.event_id,
                write.topological_ordering,
                push.thread_id,
                write.received_ts,
            )
        )
        for group in push.groups:
            users.append(
                (
                    write.stream_ordering,
                    orjson.dumps(group.actions).decode(),
                    int(group.notify),
                    int(group.highlight),
                    orjson.dumps(group.user_ids).decode(),
                )
            )
    txn.executemany(
        "INSERT INTO event_push_events (stream_ordering, room_id, event_id,"
        " topological_ordering, thread_id, received_ts) VALUES (?, ?, ?, ?, ?, ?)",
        events,
    )
    txn.executemany(
        "INSERT INTO event_push_users (stream_ordering, user_id, actions, notif, highlight)"
        f" SELECT ?1, j.value, ?2, ?3, ?4 FROM {json_array_rows(txn, '?5')}",
        users,
    )
    for (room_id, thread_id), (stream, by_counts) in _count_totals(writes).items():
        for (notify, highlight), ids in by_counts.items():
            _add_counts_txn(
                txn,
                room_id,
                thread_id,
                notify,
                highlight,
                stream,
                orjson.dumps(ids).decode(),
                len(ids),
            )


def _count_totals(
    writes: Sequence[PushActionWrite],
) -> dict[tuple[str, str], tuple[int, dict[tuple[int, int], list[str]]]]:
    """Per (room, thread): the batch's last position, and its users by (notifications,
    highlights) added: a user in several events of the batch gets one update, not one each."""
    by_thread: dict[tuple[str, str], list[PushActionWrite]] = {}
    for write in writes:
        by_thread.setdefault((write.room_id, write.push.thread_id), []).append(write)
    totals: dict[tuple[str, str], tuple[int, dict[tuple[int, int], list[str]]]] = {}
    for key, thread_writes in by_thread.items():
        stream = max(w.stream_ordering for w in thread_writes)
        if len(thread_writes) == 1:
            groups = thread_writes[0].push.groups
            by_counts: dict[tuple[int, int], list[str]] = {}
            for group in groups:
                pair = (int(group.notify), int(group.highlight))
                by_counts.setdefault(pair, []).extend(group.user_ids)
            totals[key] = (stream, by_counts)
            continue
        per_user: dict[str, tuple[int, int]] = {}
        for write in thread_writes:
            for group in write.push.groups:
                n, h = int(group.notify), int(group.highlight)
                for user_id in group.user_ids:
                    old = per_user.get(user_id)
                    per_user[user_id] = (n, h) if old is None else (old[0] + n, old[1] + h)
        grouped: dict[tuple[int, int], list[str]] = {}
        for user_id, pair in per_user.items():
            grouped.setdefault(pair, []).append(user_id)
        totals[key] = (stream, grouped)
    return totals


def _add_counts_txn(
    txn: Txn,
    room_id: str,
    thread_id: str,
    notify: int,
    highlight: int,
    stream: int,
    ids: str,
    count: int,
) -> None:
    # Nearly always every row exists: a plain UPDATE is a third of an upsert's cost. Only
    # when some are missing are they inserted (with DO NOTHING for those just updated).
    updated = txn.execute(
        "UPDATE event_push_summary SET notif_count = notif_count + ?,"
        " highlight_count = highlight_count + ?, stream_ordering = ?"
        " WHERE room_id = ? AND thread_id = ? AND user_id IN"
        f" (SELECT j.value FROM {json_array_rows(txn, '?')})",
        (notify, highlight, stream, room_id, thread_id, ids),
    ).rowcount
    if updated == count:
        return
    # `WHERE true`: SQLite's rule for an upsert whose source is a SELECT.
    txn.execute(
        "INSERT INTO event_push_summary (room_id, user_id, thread_id, notif_count,"
        " highlight_count, stream_ordering)"
        f" SELECT ?1, j.value, ?2, ?3, ?4, ?5 FROM {json_array_rows(txn, '?6')} WHERE true"
        " ON CONFLICT (room_id, user_id, thread_id) DO NOTHING",
        (room_id, thread_id, notify, highlight, stream, ids),
    )


def redact_push_actions_txn(txn: Txn, event_id: str) -> None:
    """Drop a redacted event's push actions, and take them off the counts they are in.

    Called by `PersistEventStore` inside the redaction's own transaction.
    """
    row = txn.execute(
        "SELECT p.stream_ordering, p.room_id, p.thread_id FROM events AS e"
        " JOIN event_push_events AS p ON p.stream_ordering = e.stream_ordering"
        " WHERE e.event_id = ?",
        (event_id,),
    ).fetchone()
    if row is None:
        return
    stream, room_id, thread_id = row
    users = txn.execute(
        "SELECT user_id, notif, highlight FROM event_push_users WHERE stream_ordering = ?",
        (stream,),
    ).fetchall()
    txn.executemany(
        f"UPDATE event_push_summary SET notif_count = {greatest(txn)}(0, notif_count - ?),"
        f" highlight_count = {greatest(txn)}(0, highlight_count - ?)"
        " WHERE room_id = ? AND user_id = ? AND thread_id = ? AND read_upto < ?",
        [(n, h, room_id, user, thread_id, stream) for user, n, h in users],
    )
    txn.execute("DELETE FROM event_push_users WHERE stream_ordering = ?", (stream,))
    txn.execute("DELETE FROM event_push_events WHERE stream_ordering = ?", (stream,))


def _receipt_positions_txn(txn: Txn, user_id: str, room_id: str) -> dict[str, int]:
    rows = txn.execute(
        "SELECT thread_id, MAX(event_stream_ordering) FROM receipts"
        " WHERE room_id = ? AND user_id = ? AND receipt_type IN (?, ?) GROUP BY thread_id",
        (room_id, user_id, *READ_RECEIPT_TYPES),
    ).fetchall()
    return {str(thread): int(stream) for thread, stream in rows}


def _forget_read_txn(
    txn: Txn, user_id: str, room_id: str, thread: str, after: int, upto: int
) -> None:
    # Synapse deletes the actions a receipt passes, except highlights (kept for
    # GET /notifications); an event nobody has actions for any more goes too.
    span = (room_id, after, upto, thread)
    txn.execute(
        "DELETE FROM event_push_users WHERE user_id = ? AND highlight = 0"
        " AND stream_ordering IN (SELECT stream_ordering FROM event_push_events"
        "  WHERE room_id = ? AND stream_ordering > ? AND stream_ordering <= ? AND thread_id = ?)",
        (user_id, *span),
    )
    txn.execute(
        "DELETE FROM event_push_events WHERE room_id = ? AND stream_ordering > ?"
        " AND stream_ordering <= ? AND thread_id = ? AND NOT EXISTS (SELECT 1"
        "  FROM event_push_users AS u"
        "  WHERE u.stream_ordering = event_push_events.stream_ordering)",
        span,
    )


def apply_receipt_txn(txn: Txn, user_id: str, room_id: str, thread_id: str | None) -> None:
    """Recompute the user's counts in the room after their read receipt moved (in the
    receipt's own transaction: `stores.receipts.ReceiptStore.insert_receipt`).

    Args:
        thread_id: the receipt's thread (``main`` or a root id), or None for an unthreaded
            receipt, which covers every thread of the room.
    """
    receipts = _receipt_positions_txn(txn, user_id, room_id)
    unthreaded = receipts.get(_UNTHREADED, 0)
    sql = "SELECT thread_id, read_upto FROM event_push_summary WHERE room_id = ? AND user_id = ?"
    params: tuple[str, ...] = (room_id, user_id)
    if thread_id is not None:
        sql += " AND thread_id = ?"
        params = (*params, thread_id)
    for thread, read_upto in txn.execute(sql, params).fetchall():
        # Spec "Threaded read receipts": an event is read once either the unthreaded receipt
        # or its thread's receipt is at or after it.
        upto = max(unthreaded, receipts.get(thread, 0))
        if upto <= read_upto:
            continue
        _forget_read_txn(txn, user_id, room_id, thread, read_upto, upto)
        row = txn.execute(
            "SELECT COALESCE(SUM(u.notif), 0), COALESCE(SUM(u.highlight), 0)"
            " FROM event_push_events AS e JOIN event_push_users AS u"
            " ON u.stream_ordering = e.stream_ordering AND u.user_id = ?"
            " WHERE e.room_id = ? AND e.stream_ordering > ? AND e.thread_id = ?",
            (user_id, room_id, upto, thread),
        ).fetchone()
        assert row is not None
        txn.execute(
            "UPDATE event_push_summary SET notif_count = ?, highlight_count = ?, read_upto = ?"
            " WHERE room_id = ? AND user_id = ? AND thread_id = ?",
            (int(row[0]), int(row[1]), upto, room_id, user_id, thread),
        )


def _summaries_txn(txn: Txn, user_id: str, room_ids: Sequence[str]) -> list[UnreadCounts]:
    found: list[UnreadCounts] = []
    for start in range(0, len(room_ids), _CHUNK):
        chunk = room_ids[start : start + _CHUNK]
        rows = txn.execute(
            "SELECT room_id, thread_id, notif_count, highlight_count FROM event_push_summary"
            f" WHERE room_id IN ({','.join('?' * len(chunk))}) AND user_id = ?"
            " AND (notif_count > 0 OR highlight_count > 0)",
            (*chunk, user_id),
        ).fetchall()
        found.extend(UnreadCounts(r, t, int(n), int(h)) for r, t, n, h in rows)
    return found


def _notifications_txn(
    txn: Txn, user_id: str, before: int | None, limit: int, only_highlight: bool
) -> list[Notification]:
    sql = (
        "SELECT a.room_id, a.event_id, a.stream_ordering, a.actions, a.received_ts,"
        " a.stream_ordering <= COALESCE(s.read_upto, 0)"
        " FROM event_push_actions AS a LEFT JOIN event_push_summary AS s"
        " ON s.room_id = a.room_id AND s.user_id = a.user_id AND s.thread_id = a.thread_id"
        " WHERE a.user_id = ?"
    )
    params: list[Any] = [user_id]
    if only_highlight:
        sql += " AND a.highlight = 1"
    if before is not None:
        sql += " AND a.stream_ordering < ?"
        params.append(before)
    rows = txn.execute(sql + " ORDER BY a.stream_ordering DESC LIMIT ?", (*params, limit))
    return [
        Notification(room, event, stream, orjson.loads(actions), bool(read), ts)
        for room, event, stream, actions, ts, read in rows.fetchall()
    ]


class PushActionStore:
    """Reads of push actions and unread counts; receipts' effect on them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def summaries(self, user_id: str, room_ids: Sequence[str]) -> list[UnreadCounts]:
        """The user's non-zero unread counts in the given rooms, per thread.

        Checkpoint: yes.
        """
        if not room_ids:
            return []
        return await self._db.run_read_inline(
            "push_summaries", _summaries_txn, user_id, list(room_ids)
        )

    async def notifications(
        self, user_id: str, *, before: int | None, limit: int, only_highlight: bool
    ) -> list[Notification]:
        """The user's stored push actions, newest first (``GET /notifications``).

        Args:
            before: only actions of events before this stream position; None: from the end.
            limit: at most this many.
            only_highlight: only the actions that highlight.

        Checkpoint: yes.
        """
        # Not inline: without a highlight filter this walks the table back from `before`.
        return await self._db.run_read(
            "notifications", _notifications_txn, user_id, before, limit, only_highlight
        )
