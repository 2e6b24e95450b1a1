"""``GET /rooms/{roomId}/timestamp_to_event`` (spec v1.6, Element's "jump to date")."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.handlers.room_reads import RoomReadHandler
    from trioserver.stores.event_timestamps import EventTimestampStore, TimeCursor
    from trioserver.stores.events import EventStore

JsonDict = dict[str, Any]
BATCH = 20
# Events examined at most: a long stretch the user may not see ends the search (404) rather
# than making one request read the whole room.
MAX_SCAN = 1_000


class TimestampLookup:
    """Finds the event nearest a point in time that the requester may see."""

    def __init__(
        self, store: EventTimestampStore, events: EventStore, room_reads: RoomReadHandler
    ) -> None:
        self._store = store
        self._events = events
        self._room_reads = room_reads

    async def event_near(self, user_id: str, room_id: str, ts: int, *, forwards: bool) -> JsonDict:
        """``{event_id, origin_server_ts}`` of the nearest visible event at or after `ts`
        (at or before, when not `forwards`).

        Raises:
            MatrixError: 403 when the user may not read the room (Synapse: joined, or
                world-readable; a user who left reads up to their leave), 404 when no
                visible event is on that side of `ts`.
        """
        access = await self._room_reads.access(user_id, room_id)
        access.check_reader()
        cursor: TimeCursor | None = None
        for _ in range(MAX_SCAN // BATCH):
            batch = await self._store.events_by_time(
                room_id, ts, forwards=forwards, after=cursor, limit=BATCH
            )
            found = await self._events.get_events(event_id for event_id, _ in batch)
            stored = [found[event_id] for event_id, _ in batch if event_id in found]
            visible = await self._room_reads.visibility.filter(stored, access.viewer)
            if visible:
                event = visible[0][0].event
                return {"event_id": event.event_id, "origin_server_ts": event.origin_server_ts}
            if len(batch) < BATCH:
                break
            cursor = batch[-1][1]
        direction = "after" if forwards else "before"
        raise MatrixError(
            "M_NOT_FOUND", f"Unable to find event from {ts} in direction {direction}"
        )
