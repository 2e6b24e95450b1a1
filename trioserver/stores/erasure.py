"""Erased users: accounts deactivated with ``erase: true``.

The history visibility filter asks about the senders of every batch of events it serves, so
answers are cached; erasure only ever adds users, and only through this store (there are no
worker processes yet), so a cached answer stays right until the entry is evicted.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from trioserver.stores.database import Database, Txn

_CACHE_SIZE = 50_000


def _mark_erased_txn(txn: Txn, user_id: str) -> None:
    txn.execute("INSERT INTO erased_users (user_id) VALUES (?) ON CONFLICT DO NOTHING", (user_id,))


def _erased_among_txn(txn: Txn, user_ids: list[str]) -> set[str]:
    marks = ",".join("?" * len(user_ids))
    rows = txn.execute(
        f"SELECT user_id FROM erased_users WHERE user_id IN ({marks})", user_ids
    ).fetchall()
    return {str(row[0]) for row in rows}


class ErasureStore:
    """Which users have been erased."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._known: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self._listeners: list[Callable[[str], Awaitable[None]]] = []

    def add_erasure_listener(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Have ``await listener(user_id)`` called after a user is marked erased (main
        announces it on the caches stream; issue 13)."""
        self._listeners.append(listener)

    def forget_nowait(self, user_ids: Iterable[str] | None) -> None:
        """Drop cached answers (None: all) because another instance erased users."""
        if user_ids is None:
            self._known.clear()
        for user_id in user_ids or ():
            self._known.pop(user_id, None)

    async def mark_erased(self, user_id: str) -> None:
        """Record that `user_id` asked for erasure. Checkpoint: yes."""
        await self._db.run_txn("mark_user_erased", _mark_erased_txn, user_id)
        self._remember(user_id, True)
        for listener in self._listeners:
            await listener(user_id)

    async def erased_among(self, user_ids: Iterable[str]) -> set[str]:
        """The erased users among `user_ids`.

        Checkpoint: when some user is not cached.
        """
        wanted = set(user_ids)
        missing = [u for u in wanted if u not in self._known]
        result = {u for u in wanted if self._known.get(u, False)}
        # Bounded batches: SQLite limits the number of bound parameters.
        for start in range(0, len(missing), 500):
            chunk = missing[start : start + 500]
            erased = await self._db.run_read_inline("erased_among", _erased_among_txn, chunk)
            result |= erased
            for user_id in chunk:
                self._remember(user_id, user_id in erased)
        return result

    def _remember(self, user_id: str, erased: bool) -> None:
        self._known[user_id] = erased
        self._known.move_to_end(user_id)
        if len(self._known) > _CACHE_SIZE:
            self._known.popitem(last=False)
