"""``/relations`` and ``/threads``: paging through an event's children and a room's threads.

Theory of operation
-------------------
Access is as for ``/messages`` (`handlers.room_reads`): a user who may not read the room gets
403; the parent of ``/relations`` must be an event of the room they may see, else 404 (as
Synapse). Children are read from the relations index in room order (topological, then
stream ordering) and filtered by history visibility and ignored users in batches, like a
``/messages`` page, so a page holds up to ``limit`` events the user may see.

Tokens are those of ``/messages`` (``t{topo}-{stream}``; sync tokens are accepted too): a
``next_batch`` of ``/relations`` can be given to ``/messages`` and the other way round.
``/threads`` tokens name the latest reply of the last thread of a page; the next page has
the threads whose latest reply is older.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from trioserver.handlers.room_reads import page_token, store_cursor
from trioserver.handlers.serialize import SerializeOptions
from trioserver.handlers.visibility import MAX_SCAN
from trioserver.stores.events import RoomPosition, StoredEvent
from trioserver.stores.relations import RECURSION_DEPTH, RelationPage

if TYPE_CHECKING:
    from trioserver.handlers.auth import Requester
    from trioserver.handlers.room_reads import Access, RoomReadHandler
    from trioserver.stores.events import EventStore
    from trioserver.stores.relations import RelationStore

JsonDict = dict[str, Any]


@attrs.frozen
class RelationsQuery:
    """The parameters of ``GET /rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]``."""

    rel_type: str | None = None
    event_type: str | None = None
    from_token: str | None = None
    to_token: str | None = None
    backwards: bool = True
    limit: int = 5
    recurse: bool = False


@attrs.define
class _Scan:
    """A page of related events being gathered."""

    cursor: RoomPosition
    found: list[tuple[StoredEvent, str]] = attrs.field(factory=list)
    more: bool = False
    scanned: int = 0


def _before(a: RoomPosition, b: RoomPosition) -> bool:
    return (a.topological, a.stream) < (b.topological, b.stream)


def _options(requester: Requester) -> SerializeOptions:
    return SerializeOptions(user_id=requester.user_id, device_id=requester.device_id)


class RelationsHandler:
    """The relations and threads of rooms, as one user may see them."""

    def __init__(
        self, room_reads: RoomReadHandler, relations: RelationStore, events: EventStore
    ) -> None:
        self._reads = room_reads
        self._relations = relations
        self._events = events

    async def get_relations(
        self, requester: Requester, room_id: str, event_id: str, query: RelationsQuery
    ) -> JsonDict:
        """The child events of `event_id`, newest first unless ``dir=f``.

        Raises:
            MatrixError: 403 when the user may not read the room, 404 when the parent is
                unknown or not visible to them, 400 for a bad token.
        """
        access = await self._reads.access(requester.user_id, room_id)
        access.check_reader()
        await self._reads.visible_event(access, room_id, event_id)
        start, bound = await self._range(access, room_id, query)
        page = RelationPage(
            rel_type=query.rel_type,
            event_type=query.event_type,
            cursor=store_cursor(start, query.backwards),
            bound=bound,
            backwards=query.backwards,
            limit=0,
            recurse=query.recurse,
        )
        scan = await self._scan(access, room_id, event_id, page, query.limit)
        stored = [s for s, _ in scan.found]
        memberships = {s.event_id: m for s, m in scan.found}
        body: JsonDict = {
            "chunk": await self._reads.serializer.serialize(
                stored, _options(requester), memberships
            )
        }
        if scan.more:
            body["next_batch"] = page_token(scan.cursor, query.backwards)
        if query.from_token is not None:
            body["prev_batch"] = query.from_token
        if query.recurse:
            body["recursion_depth"] = RECURSION_DEPTH
        return body

    async def _range(
        self, access: Access, room_id: str, query: RelationsQuery
    ) -> tuple[RoomPosition, RoomPosition | None]:
        backwards = query.backwards
        if query.from_token is not None:
            start = await self._reads.position(room_id, query.from_token)
        elif backwards:
            start = await self._events.room_end(room_id)
        else:
            start = RoomPosition(0, 0)
        bound = None
        if query.to_token is not None:
            bound = store_cursor(await self._reads.position(room_id, query.to_token), backwards)
        # A user who left reads history up to their leave only (as /messages).
        end = access.history_end
        if end is not None and backwards and _before(end, start):
            start = end
        elif end is not None and not backwards and (bound is None or _before(end, bound)):
            bound = end
        return start, bound

    async def _scan(
        self, access: Access, room_id: str, parent_id: str, page: RelationPage, limit: int
    ) -> _Scan:
        scan = _Scan(page.cursor)
        while scan.scanned < MAX_SCAN:
            size = min(max(2 * (limit - len(scan.found)), 20), MAX_SCAN - scan.scanned)
            rows = await self._relations.paginate(
                room_id, parent_id, attrs.evolve(page, cursor=scan.cursor, limit=size)
            )
            found = await self._events.get_events(r.event_id for r in rows)
            candidates = [found[r.event_id] for r in rows if r.event_id in found]
            visible = {
                s.event_id: (s, m)
                for s, m in await self._reads.visibility.filter(candidates, access.viewer)
            }
            for row in rows:
                if row.event_id in visible:
                    if len(scan.found) == limit:
                        scan.more = True
                        return scan
                    scan.found.append(visible[row.event_id])
                scan.cursor = row.position
                scan.scanned += 1
            if len(rows) < size:
                return scan
        # Too much of the history was invisible to the user for one request: page on later.
        scan.more = True
        return scan

    async def get_threads(
        self,
        requester: Requester,
        room_id: str,
        *,
        participated_only: bool,
        from_token: str | None,
        limit: int,
    ) -> JsonDict:
        """The room's thread roots by latest reply, newest first (``GET /threads``).

        Raises:
            MatrixError: 403 when the user may not read the room, 400 for a bad token.
        """
        user_id = requester.user_id
        access = await self._reads.access(user_id, room_id)
        access.check_reader()
        before = None if from_token is None else await self._reads.position(room_id, from_token)
        rows = await self._relations.threads(room_id, before, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        found = await self._events.get_events(r.thread_id for r in rows)
        roots = [found[r.thread_id] for r in rows if r.thread_id in found]
        if participated_only:
            others = [s.event_id for s in roots if s.event.sender != user_id]
            replied = await self._relations.participated(others, user_id) if others else set()
            roots = [s for s in roots if s.event.sender == user_id or s.event_id in replied]
        # Spec: a root sent by an ignored user is returned redacted (as a client aggregating
        # the thread itself would show it), not left out.
        ignored = access.viewer.ignored
        viewer = attrs.evolve(access.viewer, ignored=frozenset())
        visible = [
            attrs.evolve(s, event=s.event.redacted()) if s.event.sender in ignored else s
            for s, _ in await self._reads.visibility.filter(roots, viewer)
        ]
        body: JsonDict = {
            "chunk": await self._reads.serializer.serialize(visible, _options(requester))
        }
        if more:
            body["next_batch"] = rows[-1].position.to_token()
        return body
