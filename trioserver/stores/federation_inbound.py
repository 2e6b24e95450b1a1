"""Reads and writes of inbound federation (issue 15): the answers to received transactions,
and the event-graph reads the Server-Server endpoints serve from."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn

# Answers kept for retried transactions; older ones are pruned.
TXN_RETENTION_MS = 24 * 3600 * 1000


def _txn_response_txn(txn: Txn, origin: str, txn_id: str) -> str | None:
    row = txn.execute(
        "SELECT response FROM federation_inbound_txns WHERE origin = ? AND txn_id = ?",
        (origin, txn_id),
    ).fetchone()
    return None if row is None else str(row[0])


def _store_txn_response_txn(
    txn: Txn, origin: str, txn_id: str, response: str, now_ms: int
) -> None:
    txn.execute(
        "INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts)"
        " VALUES (?, ?, ?, ?) ON CONFLICT (origin, txn_id) DO NOTHING",
        (origin, txn_id, response, now_ms),
    )
    txn.execute(
        "DELETE FROM federation_inbound_txns WHERE received_ts < ?",
        (now_ms - TXN_RETENTION_MS,),
    )


def _extremities_txn(txn: Txn, room_id: str) -> list[str]:
    rows = txn.execute(
        "SELECT event_id FROM event_forward_extremities WHERE room_id = ? ORDER BY event_id",
        (room_id,),
    ).fetchall()
    return [str(r[0]) for r in rows]


def _prev_events_txn(txn: Txn, event_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for event_id, prev in txn.execute(
            f"SELECT event_id, prev_event_id FROM event_edges WHERE event_id IN ({marks})",
            chunk,
        ).fetchall():
            found.setdefault(str(event_id), []).append(str(prev))
    return found


class FederationInboundStore:
    """What inbound federation keeps and reads."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def txn_response(self, origin: str, txn_id: str) -> dict[str, object] | None:
        """The answer given to an earlier transaction with this id, if any."""
        raw = await self._db.run_read("fed_txn_response", _txn_response_txn, origin, txn_id)
        if raw is None:
            return None
        answer: dict[str, object] = orjson.loads(raw)
        return answer

    async def store_txn_response(
        self, origin: str, txn_id: str, response: dict[str, object]
    ) -> None:
        """Keep the answer to a transaction (for a retry of it)."""
        await self._db.run_txn(
            "fed_store_txn_response",
            _store_txn_response_txn,
            origin,
            txn_id,
            orjson.dumps(response).decode(),
            int(time.time() * 1000),
        )

    async def forward_extremities(self, room_id: str) -> list[str]:
        """The room's forward extremities (the events nothing refers to yet)."""
        return await self._db.run_read("fed_extremities", _extremities_txn, room_id)

    async def prev_events(self, event_ids: list[str]) -> dict[str, list[str]]:
        """Each stored event's prev_events."""
        return await self._db.run_read("fed_prev_events", _prev_events_txn, event_ids)
