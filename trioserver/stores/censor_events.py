"""Censoring stored events: replacing an event's JSON by its pruned form (issue 5, seed 7)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import orjson

from trioserver.events import KNOWN_ROOM_VERSIONS, prune_event_dict
from trioserver.stores import relations_index, search

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn


@attrs.frozen
class PendingExpiry:
    """An event due to be pruned at `expiry_ts` (ms since the epoch)."""

    event_id: str
    expiry_ts: int


def _pending_txn(txn: Txn) -> list[PendingExpiry]:
    rows = txn.execute("SELECT event_id, expiry_ts FROM event_expiry").fetchall()
    return [PendingExpiry(str(e), int(t)) for e, t in rows]


def _expire_event_txn(txn: Txn, event_id: str) -> bool:
    txn.execute("DELETE FROM event_expiry WHERE event_id = ?", (event_id,))
    row = txn.execute(
        "SELECT j.json, r.room_version FROM event_json AS j"
        " JOIN rooms AS r USING (room_id) WHERE j.event_id = ?",
        (event_id,),
    ).fetchone()
    if row is None:
        return False
    # Issue 11: an expired message can no longer be found by searching for its text.
    search.unindex_events_txn(txn, [event_id])
    pruned = prune_event_dict(KNOWN_ROOM_VERSIONS[row[1]], orjson.loads(row[0]))
    txn.execute(
        "UPDATE event_json SET json = ?, unsigned = NULL WHERE event_id = ?",
        (orjson.dumps(pruned).decode(), event_id),
    )
    # Issue 11: its `m.relates_to` is pruned with the rest, so it relates to nothing now.
    relations_index.unindex_events_txn(txn, [event_id])
    return True


class CensorEventsStore:
    """Prunes stored events in place. Used only by the events writer."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def pending_expiries(self) -> list[PendingExpiry]:
        """Every self-destructing event not yet pruned. Checkpoint: yes."""
        return await self._db.run_read("pending_expiries", _pending_txn)

    async def expire_event(self, event_id: str) -> bool:
        """Prune one event and drop its expiry row, in one transaction.

        Returns:
            False when the event no longer exists (its row is dropped all the same).

        Checkpoint: yes.
        """
        return await self._db.run_txn("expire_event", _expire_event_txn, event_id)
