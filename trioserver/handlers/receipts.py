"""Read receipts and read markers (spec "Receipts", "Read and unread markers").

Theory of operation
-------------------
A receipt is an "up to" marker: the store keeps the latest one of each (room, receipt type,
user, thread) and ignores one for an earlier event than the stored one (Synapse's rule), so a
client that acknowledges out of order never moves its marker backwards. Each stored receipt
takes the next position of the ``receipts`` stream and wakes the room's ``/sync`` waiters.
``m.read.private`` receipts are stored like the others but only ever shown to their sender.

The fully read marker is not a receipt but the room account data ``m.fully_read``
(``{"event_id": ...}``), written through `AccountDataHandler`; it too only moves forwards.

Who may send one: a user joined to the room, for an event they may see. A receipt for an event
the server does not know (in that room) is ignored, as Synapse does since 1.93 (its room may
have been purged); a read marker for one is 404.
"""

from __future__ import annotations

import time
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from trioserver.errors import MatrixError
from trioserver.events import is_valid_event_id, is_valid_room_id
from trioserver.events.relations import MAIN_THREAD, THREAD, relation_of
from trioserver.stores.push_actions import apply_receipt_txn
from trioserver.stores.receipts import NewReceipt, ReceiptStore
from trioserver.streams import StreamIdGenerator

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.handlers.account_data import AccountDataHandler
    from trioserver.handlers.notifier import Notifier
    from trioserver.handlers.room_reads import Access, RoomReadHandler
    from trioserver.stores.database import Database
    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.state import StateStore
    from trioserver.stores.stream_updates import ReceiptStreamRow
    from trioserver.streams import StreamPositions

JsonDict = dict[str, Any]
READ = "m.read"
READ_PRIVATE = "m.read.private"
FULLY_READ = "m.fully_read"
RECEIPT_TYPES = (READ, READ_PRIVATE, FULLY_READ)
# Spec "Threaded read receipts": follow at most 3 relation hops to find an event's thread.
MAX_RELATION_HOPS = 3


class ReceiptsHandler:
    """Read receipts and read markers."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        positions: StreamPositions,
        state: StateStore,
        *,
        server_name: str,
        events: EventStore,
        room_reads: RoomReadHandler,
        account_data: AccountDataHandler,
        clock: Callable[[], float] = time.time,
        writer: bool = True,
    ) -> None:
        self._store = ReceiptStore(db)
        # False on a worker (issue 13): positions come from replication (`on_replicated`).
        self._writer = writer
        self._notifier = notifier
        self._positions = positions
        self._state = state
        self._server_name = server_name
        self._events = events
        self._room_reads = room_reads
        self._account_data = account_data
        self._clock = clock
        self._ids = StreamIdGenerator(0)
        self._position = 0
        # Read-modify-write of m.fully_read must not interleave (it only moves forwards).
        self._marker_lock = trio.Lock()
        self._receipt_listeners: list[Callable[[str], None]] = []

    def add_receipt_listener(self, listener: Callable[[str], None]) -> None:
        """Call `listener(user_id)` after a user's new read receipt is committed (it must
        not block: pushers use it to update badges)."""
        self._receipt_listeners.append(listener)

    async def load(self) -> None:
        """Read the stream's position from the database and register it. Checkpoint: yes."""
        self._position = await self._store.max_stream_id()
        self._ids = StreamIdGenerator(self._position, writer=self._writer)
        self._positions.register("receipts", self.position)

    def position(self) -> int:
        """The receipts stream's position: every receipt up to it is committed."""
        return self._position

    async def post_receipt(
        self,
        user_id: str,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None,
    ) -> None:
        """``POST /rooms/{roomId}/receipt/{receiptType}/{eventId}``.

        Raises:
            MatrixError: 400 for a bad room id, event id, receipt type or thread id; 403 when
                not joined or the event is not visible to the user; 404 for ``m.fully_read``
                on an unknown event.
            NotStreamWriter: on an instance that does not write the receipts stream.
        """
        self._ids.check_writer("receipts")
        if not is_valid_room_id(room_id) or not is_valid_event_id(event_id):
            raise MatrixError("M_INVALID_PARAM", "A valid room ID and event ID must be given")
        if receipt_type not in RECEIPT_TYPES:
            raise MatrixError("M_INVALID_PARAM", f"Receipt type must be one of {RECEIPT_TYPES}")
        if receipt_type == FULLY_READ:
            if thread_id is not None:
                raise MatrixError(
                    "M_INVALID_PARAM", "thread_id is not compatible with m.fully_read"
                )
            await self.set_read_markers(user_id, room_id, {FULLY_READ: event_id})
            return
        access = await self._joined_access(user_id, room_id)
        await self._receipt(access, room_id, receipt_type, event_id, thread_id)

    async def set_read_markers(self, user_id: str, room_id: str, markers: dict[str, str]) -> None:
        """``POST /rooms/{roomId}/read_markers``: any of ``m.fully_read``, ``m.read`` and
        ``m.read.private`` (unthreaded), each an event id.

        Raises:
            MatrixError: 403 when not joined; 404 when the fully read event is not in the room.
            NotStreamWriter: on an instance that does not write the receipts stream.
        """
        self._ids.check_writer("receipts")
        access = await self._joined_access(user_id, room_id)
        fully_read = markers.get(FULLY_READ)
        if fully_read is not None:
            await self._fully_read(user_id, room_id, fully_read)
        for receipt_type in (READ, READ_PRIVATE):
            if (event_id := markers.get(receipt_type)) is not None:
                await self._receipt(access, room_id, receipt_type, event_id, None)

    def on_replicated(self, token: int, rows: Sequence[ReceiptStreamRow]) -> None:
        """A follower applied the writer's receipts up to `token`: what `_receipt` does after
        its commit (the rows are in the shared database already)."""
        self._position = max(self._position, token)
        self._notifier.notify(rooms={row.room_id for row in rows})

    async def receipts_for_rooms(
        self, user_id: str, room_ids: Sequence[str], since: int | None
    ) -> dict[str, JsonDict]:
        """The ``m.receipt`` content of each room with receipts after `since`.

        Args:
            user_id: the syncing user (the only one whose ``m.read.private`` receipts show).
            room_ids: the rooms to report on.
            since: the client's receipts position; None for every current receipt.

        Returns:
            Room id -> ``{event_id: {receipt_type: {user_id: {"ts", "thread_id"?}}}}``, only
            for rooms with any.

        Checkpoint: yes.
        """
        result: dict[str, JsonDict] = {}
        for row in await self._store.receipts_for_rooms(user_id, room_ids, since):
            data: JsonDict = {"ts": row.ts}
            if row.thread_id is not None:
                data["thread_id"] = row.thread_id
            by_event = result.setdefault(row.room_id, {})
            by_event.setdefault(row.event_id, {}).setdefault(row.receipt_type, {})[row.user_id] = (
                data
            )
        return result

    async def _joined_access(self, user_id: str, room_id: str) -> Access:
        access = await self._room_reads.access(user_id, room_id)
        if access.membership != "join":
            raise MatrixError("M_FORBIDDEN", f"User {user_id} not in room {room_id}")
        return access

    async def _receipt(
        self,
        access: Access,
        room_id: str,
        receipt_type: str,
        event_id: str,
        thread_id: str | None,
    ) -> None:
        stored = await self._events.get_event(event_id)
        if stored is None or stored.room_id != room_id or stored.rejected is not None:
            return
        if not await self._room_reads.visibility.filter([stored], access.viewer):
            raise MatrixError("M_FORBIDDEN", "You don't have permission to access that event.")
        if thread_id is not None and not await self._in_thread(stored, thread_id):
            raise MatrixError(
                "M_INVALID_PARAM", f"event_id {event_id} is not related to thread {thread_id}"
            )
        receipt = NewReceipt(
            room_id=room_id,
            receipt_type=receipt_type,
            user_id=access.viewer.user_id,
            thread_id=thread_id,
            event_id=event_id,
            event_stream_ordering=stored.stream_ordering,
            ts=int(self._clock() * 1000),
        )
        # Spec "Receiving notifications": a read receipt marks the notifications up to its
        # event as read (in its thread only, when threaded), in the receipt's transaction.
        clear_counts = partial(
            apply_receipt_txn, user_id=receipt.user_id, room_id=room_id, thread_id=thread_id
        )
        stream_id = await self._store.insert_receipt(receipt, self._ids.next_id, then=clear_counts)
        if stream_id is not None:
            # Publish the position only once the row is committed (see `position`).
            self._position = max(self._position, stream_id)
            self._notifier.notify(rooms=[room_id])
            for listener in self._receipt_listeners:
                listener(receipt.user_id)

    async def _in_thread(self, stored: StoredEvent, thread_id: str) -> bool:
        """Whether the event belongs to the thread (``main``: to no thread).

        Spec "Threaded read receipts": an event is in a thread when it, or an event it relates
        to (up to 3 hops), has an ``m.thread`` relation to the root; the root itself and events
        relating to it by other relations count as the thread's too (Synapse).
        """
        current: StoredEvent | None = stored
        for _ in range(MAX_RELATION_HOPS + 1):
            if current is None:
                break
            if current.event_id == thread_id:
                return True
            relation = relation_of(current.event)
            if relation is None:
                break
            if relation.rel_type == THREAD:
                return relation.parent_id == thread_id
            current = await self._events.get_event(relation.parent_id)
        return thread_id == MAIN_THREAD

    async def _fully_read(self, user_id: str, room_id: str, event_id: str) -> None:
        stored = await self._events.get_event(event_id)
        if stored is None or stored.room_id != room_id:
            raise MatrixError("M_NOT_FOUND", f"Could not find event {event_id} in {room_id}")
        async with self._marker_lock:
            existing = await self._account_data.get_account_data(user_id, room_id, FULLY_READ)
            old_id = None if existing is None else existing.get("event_id")
            old = await self._events.get_event(old_id) if isinstance(old_id, str) else None
            # Only move the marker forwards (Synapse); a vanished old event counts as behind.
            if old is not None and old.room_id == room_id:
                new_at = (stored.topological_ordering, stored.stream_ordering)
                if new_at <= (old.topological_ordering, old.stream_ordering):
                    return
            await self._account_data.set_account_data(
                user_id, room_id, FULLY_READ, {"event_id": event_id}
            )
