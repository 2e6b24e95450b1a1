"""Self-destructing messages (MSC2228 as Synapse implements it; issue 5, seed 7).

Theory of operation
-------------------
When ``enable_ephemeral_messages`` is on, a non-state event whose content carries an integer
timestamp (ms) under ``org.matrix.self_destruct_after`` (or ``m.self_destruct_after``) gets an
``event_expiry`` row in the transaction that persists it. On the events writer one task,
`EventExpirer.run`, keeps a heap of those deadlines (loaded from the table at start, fed by the
persister afterwards) and sleeps until the earliest; a new event with an earlier deadline wakes
it to re-arm. At a deadline the event's stored JSON is replaced by its pruned form (the room
version's redaction algorithm) and the row removed, in one transaction, and the event is
dropped from the cache, so everything that serves it afterwards serves the pruned form. No
redaction event is created and nothing is pushed to clients, which delete their copy at the
deadline themselves.

Failures are retried with exponential backoff (never a tight loop); a row whose event no longer
exists is dropped with a warning.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from trioserver.events import Event
    from trioserver.stores.censor_events import CensorEventsStore
    from trioserver.stores.events import EventCache, StoredEvent

logger = logging.getLogger(__name__)

# Clients use the unstable name; the original design (MSC2228) named it without the prefix.
SELF_DESTRUCT_FIELDS = ("org.matrix.self_destruct_after", "m.self_destruct_after")
FIRST_RETRY_S = 1.0
MAX_RETRY_S = 300.0


def expiry_ts_of(event: Event) -> int | None:
    """When a self-destructing message expires, or None.

    Only non-state events with an integer timestamp qualify: booleans, strings and floats are
    ignored (Synapse since v1.77 checks for exactly an int).
    """
    if event.is_state():
        return None
    for field in SELF_DESTRUCT_FIELDS:
        value = event.content.get(field)
        if type(value) is int:
            return value
    return None


class EventExpirer:
    """Prunes self-destructing events when they are due. Exists only on the events writer."""

    def __init__(
        self,
        store: CensorEventsStore,
        cache: EventCache,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._cache = cache
        self._wall_clock = wall_clock
        self._heap: list[tuple[int, str]] = []
        self._rearm = trio.Event()
        self._listeners: list[Callable[[str], Awaitable[None]]] = []

    def add_expiry_listener(self, listener: Callable[[str], Awaitable[None]]) -> None:
        """Have ``await listener(event_id)`` called after an event was censored (main
        announces it on the caches stream, so workers drop their cached copy; issue 13)."""
        self._listeners.append(listener)

    def on_persisted(self, stored: Sequence[StoredEvent]) -> None:
        """Persister listener: schedule the committed events that carry an expiry."""
        for item in stored:
            expiry_ts = expiry_ts_of(item.event)
            if expiry_ts is not None:
                self.schedule(item.event_id, expiry_ts)

    def schedule(self, event_id: str, expiry_ts: int) -> None:
        """Prune `event_id` at `expiry_ts`; wakes the task if that is the new earliest."""
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (expiry_ts, event_id))
        if earliest is None or expiry_ts < earliest:
            self._rearm.set()

    def pending(self) -> int:
        """How many events are waiting to expire."""
        return len(self._heap)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load pending expiries, then prune each event when it is due, until cancelled."""
        # On a restart the heap may already hold entries (and `schedule` may add more while
        # we read): merge without duplicates. A sorted list is a valid heap.
        loaded = {(p.expiry_ts, p.event_id) for p in await self._store.pending_expiries()}
        self._heap = sorted(loaded.union(self._heap))
        task_status.started()
        retry_s = FIRST_RETRY_S
        while True:
            # A fresh event before reading the heap: `schedule` runs between our checkpoints
            # only, so an earlier deadline added while we sleep always wakes this one.
            self._rearm = rearm = trio.Event()
            if not self._heap:
                await rearm.wait()
                continue
            expiry_ts, event_id = self._heap[0]
            delay = expiry_ts / 1000 - self._wall_clock()
            if delay > 0:
                with trio.move_on_after(delay):
                    await rearm.wait()
                continue
            heapq.heappop(self._heap)
            if await self._expire(event_id, expiry_ts, retry_s):
                retry_s = FIRST_RETRY_S
            else:
                retry_s = min(retry_s * 2, MAX_RETRY_S)

    async def _expire(self, event_id: str, expiry_ts: int, retry_s: float) -> bool:
        try:
            found = await self._store.expire_event(event_id)
            for listener in self._listeners:
                await listener(event_id)
        except Exception:  # boundary: one failing expiry must not stop the others
            logger.exception("expiring %s failed; retrying in %.0f s", event_id, retry_s)
            retry_ts = max(expiry_ts, math.ceil((self._wall_clock() + retry_s) * 1000))
            heapq.heappush(self._heap, (retry_ts, event_id))
            return False
        if not found:
            logger.warning("event %s was due to expire but no longer exists", event_id)
        self._cache.invalidate([event_id])
        return True
