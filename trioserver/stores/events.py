"""Reading events: by id (through a bounded cache of parsed events) and in room order.

Stored events are parsed once and kept as `StoredEvent` objects in an LRU cache shared by
every reader of this process (DESIGN.md, "Serving JSON"). The events writer pre-fills the cache
with what it persists, and anything that changes a stored event (a redaction, an expiry)
invalidates its entry.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from trioserver.events import KNOWN_ROOM_VERSIONS, Event

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from trioserver.stores.database import Database, Row, Txn


@attrs.frozen
class StoredEvent:
    """A persisted event and where it sits in the room and the events stream."""

    event: Event
    stream_ordering: int
    topological_ordering: int
    state_group: int | None
    replaces_state: str | None
    redacted_by: str | None
    rejected: str | None

    @property
    def event_id(self) -> str:
        """The event's id."""
        return self.event.event_id

    @property
    def room_id(self) -> str:
        """The room the event is in."""
        return self.event.room_id


@attrs.frozen
class RoomPosition:
    """A position between events in a room: (topological ordering, stream ordering)."""

    topological: int
    stream: int

    def to_token(self) -> str:
        """The pagination token clients see, e.g. ``t12-345``."""
        return f"t{self.topological}-{self.stream}"


_EVENT_COLUMNS = (
    "e.event_id, e.stream_ordering, e.topological_ordering, e.state_group, e.replaces_state,"
    " e.redacted_by, e.rejected, r.room_version, j.json, j.unsigned"
)
_EVENT_FROM = (
    " FROM events AS e JOIN event_json AS j ON j.event_id = e.event_id"
    " JOIN rooms AS r ON r.room_id = e.room_id"
)


def parse_event_row(row: Row) -> StoredEvent:
    """Build a `StoredEvent` from the columns in `_EVENT_COLUMNS` order."""
    event_id, stream, topo, group, replaces, redacted_by, rejected, version, raw, unsigned = row
    event = Event(
        room_version=KNOWN_ROOM_VERSIONS[version],
        event_id=event_id,
        pdu=orjson.loads(raw),
        unsigned=orjson.loads(unsigned) if unsigned else {},
    )
    return StoredEvent(event, stream, topo, group, replaces, redacted_by, rejected)


def _get_events_txn(txn: Txn, event_ids: Sequence[str]) -> list[StoredEvent]:
    found: list[StoredEvent] = []
    # SQLite's default limit on host parameters is large, but keep statements modest.
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = txn.execute(
            f"SELECT {_EVENT_COLUMNS}{_EVENT_FROM} WHERE e.event_id IN ({marks})", chunk
        ).fetchall()
        found.extend(parse_event_row(row) for row in rows)
    return found


def _paginate_txn(
    txn: Txn,
    room_id: str,
    start: RoomPosition,
    end: RoomPosition | None,
    backwards: bool,
    limit: int,
) -> list[str]:
    if backwards:
        where = "(e.topological_ordering, e.stream_ordering) < (?, ?)"
        bound = "(e.topological_ordering, e.stream_ordering) >= (?, ?)"
        order = "DESC"
    else:
        where = "(e.topological_ordering, e.stream_ordering) > (?, ?)"
        bound = "(e.topological_ordering, e.stream_ordering) <= (?, ?)"
        order = "ASC"
    params: list[Any] = [room_id, start.topological, start.stream]
    sql = "SELECT e.event_id FROM events AS e WHERE e.room_id = ? AND e.outlier = 0"
    sql += f" AND e.rejected IS NULL AND {where}"
    if end is not None:
        sql += f" AND {bound}"
        params += [end.topological, end.stream]
    sql += f" ORDER BY e.topological_ordering {order}, e.stream_ordering {order} LIMIT ?"
    params.append(limit)
    return [str(row[0]) for row in txn.execute(sql, params).fetchall()]


def _room_end_txn(txn: Txn, room_id: str) -> RoomPosition:
    row = txn.execute(
        "SELECT topological_ordering, stream_ordering FROM events WHERE room_id = ?"
        " ORDER BY topological_ordering DESC, stream_ordering DESC LIMIT 1",
        (room_id,),
    ).fetchone()
    return RoomPosition(0, 0) if row is None else RoomPosition(row[0], row[1])


def _txn_event_id_txn(
    txn: Txn, user_id: str, device_id: str, room_id: str, txn_id: str
) -> str | None:
    row = txn.execute(
        "SELECT event_id FROM event_txn_ids"
        " WHERE user_id = ? AND device_id = ? AND room_id = ? AND txn_id = ?",
        (user_id, device_id, room_id, txn_id),
    ).fetchone()
    return None if row is None else str(row[0])


def _outlier_ids_txn(txn: Txn, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(event_ids), 500):
        chunk = event_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = txn.execute(
            f"SELECT event_id FROM events WHERE outlier = 1 AND event_id IN ({marks})", chunk
        ).fetchall()
        found.update(str(r[0]) for r in rows)
    return found


class EventCache:
    """A bounded LRU of parsed stored events, keyed by event id."""

    def __init__(self, max_size: int = 50_000) -> None:
        self._entries: collections.OrderedDict[str, StoredEvent] = collections.OrderedDict()
        self._max_size = max_size

    def get(self, event_id: str) -> StoredEvent | None:
        """A cached event, marked as recently used."""
        stored = self._entries.get(event_id)
        if stored is not None:
            self._entries.move_to_end(event_id)
        return stored

    def put(self, stored: StoredEvent) -> None:
        """Cache an event, evicting the least recently used when full."""
        self._entries[stored.event_id] = stored
        self._entries.move_to_end(stored.event_id)
        if len(self._entries) > self._max_size:
            self._entries.popitem(last=False)

    def invalidate(self, event_ids: Iterable[str]) -> None:
        """Forget events whose stored form changed."""
        for event_id in event_ids:
            self._entries.pop(event_id, None)


class EventStore:
    """Reads of persisted events."""

    def __init__(self, db: Database, cache: EventCache) -> None:
        self._db = db
        self.cache = cache

    async def get_events(self, event_ids: Iterable[str]) -> dict[str, StoredEvent]:
        """The stored events among `event_ids` (missing ones are left out).

        Checkpoint: only when some are not cached.
        """
        result: dict[str, StoredEvent] = {}
        missing: list[str] = []
        for event_id in event_ids:
            stored = self.cache.get(event_id)
            if stored is not None:
                result[event_id] = stored
            elif event_id not in result:
                missing.append(event_id)
        if missing:
            for stored in await self._db.run_read_inline("get_events", _get_events_txn, missing):
                self.cache.put(stored)
                result[stored.event_id] = stored
        return result

    async def outlier_ids(self, event_ids: Sequence[str]) -> set[str]:
        """Those of the events stored outside the timeline (outliers, rejected and
        soft-failed events from other servers). Checkpoint: yes."""
        if not event_ids:
            return set()
        return await self._db.run_read("outlier_ids", _outlier_ids_txn, list(event_ids))

    async def get_event(self, event_id: str) -> StoredEvent | None:
        """One stored event, or None."""
        return (await self.get_events([event_id])).get(event_id)

    async def paginate(
        self,
        room_id: str,
        start: RoomPosition,
        end: RoomPosition | None,
        *,
        backwards: bool,
        limit: int,
    ) -> list[StoredEvent]:
        """Accepted events of a room after (or before, when `backwards`) `start`.

        Args:
            start: exclusive bound to page from.
            end: inclusive bound to stop at (None: no bound).
            backwards: newest first when True.
            limit: at most this many events.

        Checkpoint: yes.
        """
        # Ids first, then the events through the cache: most pages are recent events that
        # are cached already, and parsing their JSON again is the costly part of a page.
        event_ids = await self._db.run_read_inline(
            "paginate_room_events", _paginate_txn, room_id, start, end, backwards, limit
        )
        found = await self.get_events(event_ids)
        return [found[event_id] for event_id in event_ids if event_id in found]

    async def room_end(self, room_id: str) -> RoomPosition:
        """The position just after the newest event of the room. Checkpoint: yes."""
        return await self._db.run_read_inline("room_end", _room_end_txn, room_id)

    async def event_for_txn(
        self, user_id: str, device_id: str, room_id: str, txn_id: str
    ) -> str | None:
        """The event a client already sent with this transaction id, if any."""
        return await self._db.run_read_inline(
            "event_for_txn", _txn_event_id_txn, user_id, device_id, room_id, txn_id
        )
