"""The caches stream: main's cache invalidations, replayed on every worker (issue 13).

Theory of operation
-------------------
Some caches hold facts that main changes without a stream of their own saying so: which
access token belongs to whom (`TokenCache`), a user's compiled push rules, who is erased, an
event's stored form after expiry censored it. On main, the code that changes such a fact
calls its cache's invalidation listener, wired to `CacheInvalidations.invalidate`: that
writes a ``cache_invalidations`` row with the next ``caches`` stream id, *before* the request
that caused it answers (so a worker that waits for main's positions after a forwarded logout
no longer accepts the token), advances the position and pokes the notifier so that the
replication server sends the row.

On a worker, `register(name, callback)` names what to do for each cache; the caches follower
(`on_replicated`) calls it with the row's keys (None: everything). A name nobody registered
is ignored: that worker has no such cache.

Rows older than `KEEP_MS` are pruned by `run_pruning` on main (a worker that is further
behind than that reconnects to POSITION and, with caches it cannot trust, should restart).

Names: ``access_tokens`` (tokens), ``push_rules`` (user ids), ``erasure`` (user ids),
``events`` (event ids, after expiry censoring; redactions travel on the events stream).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from trioserver.streams import StreamIdGenerator

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.handlers.notifier import Notifier
    from trioserver.stores.stream_updates import CacheRow, StreamUpdateStore

logger = logging.getLogger(__name__)

ACCESS_TOKENS = "access_tokens"
PUSH_RULES = "push_rules"
ERASURE = "erasure"
EVENTS = "events"
# How long invalidation rows are kept, and how often the pruning runs.
KEEP_MS = 24 * 60 * 60 * 1000
PRUNE_INTERVAL_S = 60 * 60.0


class CacheInvalidations:
    """The caches stream's writer (main) or follower (a worker)."""

    def __init__(
        self,
        store: StreamUpdateStore,
        notifier: Notifier,
        *,
        writer: bool = True,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._writer = writer
        self._wall_clock = wall_clock
        self._ids = StreamIdGenerator(0, writer=writer)
        self._callbacks: dict[str, list[Callable[[Sequence[str] | None], None]]] = {}

    async def load(self) -> None:
        """Read the stream's position from the database. Checkpoint: yes."""
        self._ids = StreamIdGenerator(await self._store.max_invalidation_id(), writer=self._writer)

    def position(self) -> int:
        """The caches stream's position (committed on main, applied on a worker)."""
        return self._ids.current

    async def invalidate(self, name: str, keys: Sequence[str] | None) -> None:
        """Announce that cache `name` changed for `keys` (None: all of it); main only.

        Raises:
            NotStreamWriter: on a worker (before anything is written).

        Checkpoint: yes.
        """
        await self._store.add_invalidation(self._ids, name, keys)
        # No /sync waits on this stream: the notify pokes the replication server (its wake
        # listener), which then sends the row.
        self._notifier.notify()

    def register(self, name: str, callback: Callable[[Sequence[str] | None], None]) -> None:
        """On a worker: call ``callback(keys)`` for each replicated invalidation of `name`."""
        self._callbacks.setdefault(name, []).append(callback)

    async def on_replicated(self, token: int, rows: Sequence[CacheRow]) -> None:
        """Apply replicated invalidations up to `token`. Checkpoint: yes."""
        for row in rows:
            for callback in self._callbacks.get(row.cache, ()):
                callback(row.keys)
        self._ids.advance(token)
        await trio.lowlevel.checkpoint()

    async def run_pruning(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Delete rows older than `KEEP_MS` every hour, until cancelled (main; STYLE S1)."""
        task_status.started()
        while True:
            before = int(self._wall_clock() * 1000) - KEEP_MS
            pruned = await self._store.prune_invalidations(before)
            if pruned:
                logger.info("pruned %d cache invalidations", pruned)
            await trio.sleep(PRUNE_INTERVAL_S)
