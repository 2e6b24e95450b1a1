"""Sync filters uploaded by clients (`/user/{userId}/filter`)."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import orjson

import trio

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn

_CACHED_FILTERS = 4096


def _add_filter_txn(txn: Txn, user_id: str, filter_json: bytes) -> int:
    row = txn.execute(
        "SELECT COALESCE(MAX(filter_id), -1) FROM user_filters WHERE user_id = ?", (user_id,)
    ).fetchone()
    assert row is not None
    filter_id = int(row[0]) + 1
    txn.execute(
        "INSERT INTO user_filters (user_id, filter_id, filter_json) VALUES (?, ?, ?)",
        (user_id, filter_id, filter_json.decode()),
    )
    return filter_id


def _get_filter_txn(txn: Txn, user_id: str, filter_id: int) -> str | None:
    row = txn.execute(
        "SELECT filter_json FROM user_filters WHERE user_id = ? AND filter_id = ?",
        (user_id, filter_id),
    ).fetchone()
    return None if row is None else str(row[0])


class FilterStore:
    """Filters, numbered per user from 0."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # A stored filter never changes (the API has no update), so its text is kept once
        # read: a client syncing with a filter id costs no read per /sync.
        self._texts: collections.OrderedDict[tuple[str, int], str] = collections.OrderedDict()

    async def add_filter(self, user_id: str, filter_body: dict[str, Any]) -> int:
        """Store a filter; return its id. Checkpoint: yes."""
        return await self._db.run_txn(
            "add_filter", _add_filter_txn, user_id, orjson.dumps(filter_body)
        )

    async def get_filter(self, user_id: str, filter_id: int) -> dict[str, Any] | None:
        """A stored filter, or None. Checkpoint: yes."""
        raw = await self.get_filter_text(user_id, filter_id)
        if raw is None:
            return None
        parsed: dict[str, Any] = orjson.loads(raw)
        return parsed

    async def get_filter_text(self, user_id: str, filter_id: int) -> str | None:
        """A stored filter's JSON text, or None. Checkpoint: yes."""
        key = (user_id, filter_id)
        raw = self._texts.get(key)
        if raw is not None:
            self._texts.move_to_end(key)
            await trio.lowlevel.checkpoint()
            return raw
        raw = await self._db.run_read_inline("get_filter", _get_filter_txn, user_id, filter_id)
        if raw is not None:
            self._texts[key] = raw
            if len(self._texts) > _CACHED_FILTERS:
                self._texts.popitem(last=False)
        return raw
