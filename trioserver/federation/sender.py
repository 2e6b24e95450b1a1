"""The federation sender: this server's events and EDUs, pushed to the servers that need them.

Theory of operation
-------------------
The events writer calls `FederationSender.on_persisted` after each commit with the timeline
events, in stream order (`EventPersister.add_listener`). That call only appends them to a
queue; one task (`_dispatch_loop`) takes them in order and, for each event this server sent
(sender on this server, not rejected), works out the destinations: every other server with a
joined member of the room (`trioserver.federation.room_hosts`, which sees every event, to keep
its cache right), plus, for a membership event, the server of its target (an invited, kicked
or banned remote user must hear of it) and the servers joined before it (a server hears of its
last member leaving).

Each destination has a `DestinationQueue` (`trioserver.federation.destination_queue`, which
documents the healthy / backing-off / catching-up cycle). A task runs for a destination only
while it has something to send and is not backing off, so an idle or dead destination costs
no task and no queued PDUs. The task sends one transaction at a time (``PUT
/_matrix/federation/v1/send/{txnId}``), with fresh transaction ids (``{start_ms}{random}-{n}``),
and ends when nothing is left. Each destination's attempt is the documented boundary (STYLE
S4) where any exception, a transport bug included, counts as a failed send: it is logged and
backs the destination off, and no other destination is affected.

Retry state and progress are stored per destination (`FederationSenderStore`), written in
batches by one task (`_flush_loop`): at once after a quiet spell, then at most every
`flush_interval` seconds. A restart therefore keeps backing off a dead server; a destination
with a stored position catches up from it first, in case events were queued in memory when
the process stopped.
"""

from __future__ import annotations

import collections
import itertools
import logging
import math
import random
import secrets
import time
from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver.federation.destination_queue import (
    MAX_PDUS_PER_TXN,
    BackoffPolicy,
    DestinationQueue,
    Outcome,
    TransactionTransport,
    classify_failure,
    pdu_errors,
    pdu_json,
    transaction_body,
)
from trioserver.federation.room_hosts import MEMBER, RoomHosts
from trioserver.federation.transport import DestinationNotAllowed, FederationError, fed_path

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.federation_sender import FederationSenderStore
    from trioserver.stores.state import StateStore

logger = logging.getLogger(__name__)

# Beyond the transport's own timeout, in case it does not honour it.
TIMEOUT_MARGIN_S = 10.0
SEND_PATH = "/_matrix/federation/v1/send/{}"
# Restarts (`trioserver.supervisor`) an event may fail to be dispatched before it is dropped.
MAX_DISPATCH_ATTEMPTS = 3
MAX_RELAYS = 10_000


@attrs.frozen
class SenderStatistics:
    """A snapshot of the sender's queues."""

    destinations: int
    # With a task running or about to start.
    running: int
    backing_off: int
    catching_up: int
    pending_pdus: int
    pending_edus: int
    undispatched_events: int
    # Destinations whose changed retry state or progress is not stored yet.
    unsaved_destinations: int


class FederationSender:
    """Sends this server's events and EDUs to other servers; see the module docstring."""

    def __init__(
        self,
        *,
        server_name: str,
        store: FederationSenderStore,
        events: EventStore,
        state: StateStore,
        transport: TransactionTransport,
        clock: Callable[[], float] = time.time,
        backoff: BackoffPolicy | None = None,
        rng: random.Random | None = None,
        request_timeout: float = 60.0,
        flush_interval: float = 1.0,
        startup_wake_interval: float = 0.1,
    ) -> None:
        self._server_name = server_name
        # Other servers' events to send on their behalf (`relay_on_behalf_of`), by event id.
        self._relays: dict[str, str] = {}
        self._store = store
        self._events = events
        self._transport = transport
        self._clock = clock
        self._backoff = backoff or BackoffPolicy()
        self._rng = rng or random.Random()
        self._timeout = request_timeout
        self._flush_interval = flush_interval
        self._startup_wake_interval = startup_wake_interval
        self._queues: dict[str, DestinationQueue] = {}
        self._loaded = False
        self._incoming: collections.deque[StoredEvent] = collections.deque()
        self._incoming_ready = trio.Event()
        self._head_failures = 0
        self._hosts = RoomHosts(state, store)
        self._dirty: set[str] = set()
        self._flushing = 0
        self._waking = 0
        self._dirty_ready = trio.Event()
        self._start_send, self._start_receive = trio.open_memory_channel[DestinationQueue](
            math.inf
        )
        self._txn_ids = itertools.count(1)
        # Unique across restarts, even if the clock went back (a reused id would be taken
        # by the destination as a retry of a transaction it has, and dropped).
        self._txn_prefix = f"{self._now_ms()}{secrets.token_hex(3)}"

    # -- Entry points (sync, never block) --------------------------------------------------

    def on_persisted(self, stored_events: Sequence[StoredEvent]) -> None:
        """Take committed timeline events, in stream order (an `EventPersister` listener)."""
        self._incoming.extend(stored_events)
        self._incoming_ready.set()

    def send_edu(self, destination: str, edu_type: str, content: dict[str, Any]) -> None:
        """Queue an EDU for `destination`; dropped while it is backing off (EDUs are
        ephemeral) and when the destination is this server."""
        if destination == self._server_name:
            return
        queue = self._queue(destination)
        if queue.add_edu({"edu_type": edu_type, "content": content}, self._now_ms()):
            self._schedule(queue)

    def relay_on_behalf_of(self, event_id: str, origin: str) -> None:
        """Send another server's event to the room's other servers once it is stored (a
        join, leave or knock it made through this server). Call before submitting it."""
        self._relays[event_id] = origin
        while len(self._relays) > MAX_RELAYS:  # events that never got stored
            self._relays.pop(next(iter(self._relays)))

    def wake_destination(self, destination: str) -> None:
        """`destination` contacted us, so it is up: end its backoff and send what it missed."""
        if destination == self._server_name:
            return
        queue = self._queue(destination)
        if queue.retry.record_reachable():
            self._mark_dirty(queue)
        if queue.has_work():
            self._schedule(queue)

    def statistics(self) -> SenderStatistics:
        """Counts of destinations and of what waits for them."""
        now = self._now_ms()
        queues = self._queues.values()
        return SenderStatistics(
            destinations=len(self._queues),
            running=sum(q.running or q.scheduled for q in queues) + self._waking,
            backing_off=sum(q.retry.backing_off(now) for q in queues),
            catching_up=sum(q.catching_up for q in queues),
            pending_pdus=sum(len(q.pdus) for q in queues),
            pending_edus=sum(len(q.edus) for q in queues),
            undispatched_events=len(self._incoming),
            unsaved_destinations=len(self._dirty) + self._flushing,
        )

    # -- The subsystem ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch events and run one task per active destination, until cancelled.

        Loads the stored destinations on its first start. Safe to restart after a failure
        (`trioserver.supervisor`): the queues are kept (a transaction leaves its queue only
        once answered), the destination tasks died with the nursery, and the ones with work
        are started again.
        """
        behind: list[DestinationQueue] = []
        if not self._loaded:
            # Before any event is dispatched, so none is judged on a half-loaded queue.
            rows = await self._store.all_destinations()
            newest = await self._store.newest_local_stream(self._server_name)
            for row in rows:
                queue = self._queue(row.destination)
                queue.load(row, newest)
                if queue.catching_up:
                    behind.append(queue)
            self._loaded = True
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dispatch_loop)
            nursery.start_soon(self._flush_loop)
            nursery.start_soon(self._start_loop, nursery)
            if behind:
                self._waking = len(behind)
                nursery.start_soon(self._wake_behind, behind)
            now = self._now_ms()
            for queue in self._queues.values():
                if (queue.pdus or queue.edus) and not queue.retry.backing_off(now):
                    self._schedule(queue)
            task_status.started()

    async def _wake_behind(self, queues: list[DestinationQueue]) -> None:
        """At start, let destinations that may have missed events catch up, a few at a time
        (each catch-up reads the database). One backing off catches up when its wait is over
        and there is news for it."""
        try:
            for queue in queues:
                self._waking -= 1
                if queue.catching_up and not queue.retry.backing_off(self._now_ms()):
                    self._schedule(queue)
                    await trio.sleep(self._startup_wake_interval)
        finally:
            self._waking = 0

    async def _start_loop(self, nursery: trio.Nursery) -> None:
        async for queue in self._start_receive:
            queue.scheduled = False
            if not queue.running:
                queue.running = True
                nursery.start_soon(self._run_destination, queue)

    # -- Working out destinations -----------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while True:
            if not self._incoming:
                self._incoming_ready = trio.Event()
                await self._incoming_ready.wait()
                continue
            head = self._incoming[0]
            # Removed only once handled: after a restart the same event is handled again
            # (the database may have been down). Only an event that keeps failing is given
            # up, so that it cannot stop every later event from going out.
            try:
                await self._dispatch(head)
            except Exception:  # boundary: one event's destinations (see above)
                self._head_failures += 1
                if self._head_failures < MAX_DISPATCH_ATTEMPTS:
                    raise
                logger.exception("giving up on sending %s to other servers", head.event_id)
            self._head_failures = 0
            self._incoming.popleft()

    async def _dispatch(self, stored: StoredEvent) -> None:
        event = stored.event
        before = self._hosts.note(stored)
        # Another server's event goes out only when it came through a membership handshake
        # here (Synapse's send_on_behalf_of): the joining server reaches the room's others.
        on_behalf_of = self._relays.pop(event.event_id, None)
        local = event.sender.partition(":")[2] == self._server_name
        if (not local and on_behalf_of is None) or stored.rejected is not None:
            return
        hosts = set(await self._hosts.hosts(stored))
        if event.type == MEMBER and event.state_key is not None:
            # Those in the room before it too: a server hears of its last member leaving.
            hosts |= before or frozenset()
            _, sep, target = event.state_key.partition(":")
            # A kicked or banned user's server must hear of it; an invitee's server hears
            # of its invite through /invite (a server not in the room cannot take the PDU).
            if sep and event.membership != "invite":
                hosts.add(target)
        hosts.discard(self._server_name)
        if on_behalf_of is not None:
            hosts.discard(on_behalf_of)
        now = self._now_ms()
        for destination in sorted(hosts):
            queue = self._queue(destination)
            position = queue.retry.last_successful_stream_ordering
            if queue.add_pdu(stored, now):
                self._schedule(queue)
            if queue.retry.last_successful_stream_ordering != position:
                # It fell behind before ever being served: that must survive a restart.
                self._mark_dirty(queue)

    # -- Sending ------------------------------------------------------------------------------

    async def _run_destination(self, queue: DestinationQueue) -> None:
        try:
            while await self._step(queue):
                pass
        finally:
            queue.running = False

    async def _step(self, queue: DestinationQueue) -> bool:
        """Send one transaction; False when the task should end."""
        if queue.retry.backing_off(self._now_ms()):
            return False
        if queue.catching_up:
            return await self._catch_up_step(queue)
        pdus, edus = queue.next_pdus(), queue.next_edus()
        if not pdus and not edus:
            return False
        outcome = await self._transmit(queue, [pdu_json(p) for p in pdus], edus)
        if outcome is Outcome.FAILED:
            return False
        queue.delivered(pdus, edus)
        if pdus and queue.retry.record_delivered(pdus[-1].stream_ordering):
            self._mark_dirty(queue)
        return True

    async def _catch_up_step(self, queue: DestinationQueue) -> bool:
        since = queue.retry.last_successful_stream_ordering
        if since is None:
            queue.catching_up = False
            return True
        queue.news_while_catching_up = False
        missed = await self._store.catch_up_events(
            queue.destination, self._server_name, since, limit=MAX_PDUS_PER_TXN
        )
        if not missed:
            # Done, unless an event came in during the read that it may not have seen.
            queue.catching_up = queue.news_while_catching_up
            return True
        found = await self._events.get_events([m.event_id for m in missed])
        pdus = [pdu_json(found[m.event_id]) for m in missed if m.event_id in found]
        edus = queue.next_edus()
        if pdus or edus:
            outcome = await self._transmit(queue, pdus, edus)
            if outcome is Outcome.FAILED:
                return False
            queue.delivered([], edus)
        if queue.retry.record_delivered(missed[-1].stream_ordering):
            self._mark_dirty(queue)
        return True

    async def _transmit(
        self, queue: DestinationQueue, pdus: list[dict[str, Any]], edus: list[dict[str, Any]]
    ) -> Outcome:
        destination = queue.destination
        txn_id = f"{self._txn_prefix}-{next(self._txn_ids)}"
        body = transaction_body(self._server_name, self._now_ms(), pdus, edus)
        try:
            with trio.fail_after(self._timeout + TIMEOUT_MARGIN_S):
                response = await self._transport.put_json(
                    destination, fed_path(SEND_PATH, txn_id), body, timeout=self._timeout
                )
        except DestinationNotAllowed as exc:
            # Our own config forbids it (federation off, not whitelisted): nothing to retry.
            logger.info("not sending transaction %s to %s: %s", txn_id, destination, exc)
            return Outcome.REFUSED
        except Exception as exc:  # boundary: one destination's attempt (module docstring)
            outcome = classify_failure(exc)
            if outcome is Outcome.REFUSED:
                logger.warning("%s refused transaction %s: %r", destination, txn_id, exc)
                if queue.retry.record_reachable():
                    self._mark_dirty(queue)
                return outcome
            queue.retry.record_failure(self._now_ms(), self._backoff, self._rng)
            queue.fall_behind()
            queue.edus.clear()
            self._mark_dirty(queue)
            logger.warning(
                "transaction %s to %s failed (%r); retrying in %.0f s at the earliest",
                txn_id,
                destination,
                exc,
                queue.retry.retry_interval / 1000,
                # A traceback only for what is not a federation failure: a bug.
                exc_info=not isinstance(exc, FederationError),
            )
            return outcome
        for event_id, error in pdu_errors(response):
            logger.info(
                "%s could not process %s (transaction %s): %s",
                destination,
                event_id,
                txn_id,
                error,
            )
        if queue.retry.record_reachable():
            self._mark_dirty(queue)
        return Outcome.SENT

    # -- Storing retry state ------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        try:
            while True:
                if not self._dirty:
                    self._dirty_ready = trio.Event()
                    await self._dirty_ready.wait()
                    continue
                await self._flush()
                await trio.sleep(self._flush_interval)
        except trio.Cancelled:
            if self._dirty:
                # Shutdown or restart: store the backoffs begun since the last flush, so
                # the next start honours them. Shielded, and bounded.
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + 5
                    await self._flush()
            raise

    async def _flush(self) -> None:
        names = sorted(self._dirty)
        self._dirty.clear()
        rows = [self._queues[name].retry.to_row(name) for name in names]
        self._flushing += len(rows)
        try:
            await self._store.store_destinations(rows)
        except BaseException:
            self._dirty.update(names)
            raise
        finally:
            self._flushing -= len(rows)

    # -- Helpers --------------------------------------------------------------------------------

    def _queue(self, destination: str) -> DestinationQueue:
        queue = self._queues.get(destination)
        if queue is None:
            queue = self._queues[destination] = DestinationQueue(destination)
        return queue

    def _schedule(self, queue: DestinationQueue) -> None:
        if queue.running or queue.scheduled:
            return
        queue.scheduled = True
        self._start_send.send_nowait(queue)

    def _mark_dirty(self, queue: DestinationQueue) -> None:
        self._dirty.add(queue.destination)
        self._dirty_ready.set()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)
