"""Reports of events, rooms and users (spec "Reporting content"), kept for server admins."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import orjson

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn


@attrs.frozen
class ReportRow:
    """One stored report, of any kind.

    Attributes:
        kind: ``event``, ``room`` or ``user``.
        target: the event id, room id or user id reported.
        room_id: the room of a reported event or room (None for users).
        user_id: who filed it.
    """

    kind: str
    id: int
    received_ts: int
    target: str
    room_id: str | None
    user_id: str
    reason: str | None


def _add_event_report_txn(
    txn: Txn,
    room_id: str,
    event_id: str,
    user_id: str,
    reason: str | None,
    content: dict[str, Any],
    now_ms: int,
) -> None:
    txn.execute(
        "INSERT INTO event_reports (received_ts, room_id, event_id, user_id, reason, content)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (now_ms, room_id, event_id, user_id, reason, orjson.dumps(content).decode()),
    )


def _add_room_report_txn(txn: Txn, room_id: str, user_id: str, reason: str, now_ms: int) -> bool:
    # The room must exist; checking in the INSERT keeps it one statement.
    txn.execute(
        "INSERT INTO room_reports (received_ts, room_id, user_id, reason)"
        " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM rooms WHERE room_id = ?)",
        (now_ms, room_id, user_id, reason, room_id),
    )
    return txn.rowcount > 0


def _add_user_report_txn(txn: Txn, target: str, user_id: str, reason: str, now_ms: int) -> bool:
    txn.execute(
        "INSERT INTO user_reports (received_ts, target_user_id, user_id, reason)"
        " SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM users WHERE user_id = ?)",
        (now_ms, target, user_id, reason, target),
    )
    return txn.rowcount > 0


def _reports_txn(txn: Txn) -> list[ReportRow]:
    rows = txn.execute(
        "SELECT 'event', id, received_ts, event_id, room_id, user_id, reason FROM event_reports"
        " UNION ALL"
        " SELECT 'room', id, received_ts, room_id, room_id, user_id, reason FROM room_reports"
        " UNION ALL"
        " SELECT 'user', id, received_ts, target_user_id, NULL, user_id, reason"
        " FROM user_reports"
        " ORDER BY 3, 1, 2"
    ).fetchall()
    return [ReportRow(*row) for row in rows]


class ReportStore:
    """Reports filed by users."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_event_report(
        self,
        room_id: str,
        event_id: str,
        user_id: str,
        reason: str | None,
        content: dict[str, Any],
        now_ms: int,
    ) -> None:
        """Store a report of an event (the caller checked the reporter can see it).

        Args:
            content: what the request said (``reason``, ``score``), stored as JSON as
                Synapse does.

        Checkpoint: yes.
        """
        await self._db.run_txn(
            "add_event_report",
            _add_event_report_txn,
            room_id,
            event_id,
            user_id,
            reason,
            content,
            now_ms,
        )

    async def add_room_report(self, room_id: str, user_id: str, reason: str, now_ms: int) -> bool:
        """Store a report of a room.

        Returns:
            False (and nothing stored) when the server does not know the room.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "add_room_report", _add_room_report_txn, room_id, user_id, reason, now_ms
        )

    async def add_user_report(self, target: str, user_id: str, reason: str, now_ms: int) -> bool:
        """Store a report of a local user.

        Returns:
            False (and nothing stored) when there is no such account.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "add_user_report", _add_user_report_txn, target, user_id, reason, now_ms
        )

    async def reports(self) -> list[ReportRow]:
        """Every report, oldest first (for the admin API and tests). Checkpoint: yes."""
        return await self._db.run_read("list_reports", _reports_txn)
