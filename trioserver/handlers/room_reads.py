"""Reading rooms: events, state, members, history (/messages, /context), with visibility rules.

Theory of operation
-------------------
Who may read what (spec "Room History Visibility", Synapse's behaviour where the spec is
silent):

- a joined user reads the current state, and history as the visibility rules allow;
- a user who left (or was banned) and has not forgotten the room reads the state as of their
  leave event and history up to it (spec: "After a user has left a room, they may see any
  events which they were allowed to see before they left the room, but no events received after
  they left"). This works after the server itself has left the room (seed 4): their leave
  event and its state group outlive ``current_state_events``;
- anyone reads a ``world_readable`` room (current state; history as the rules allow);
- everyone else gets 403, and ``/event`` and ``/context`` answer 404 for events the user may
  not see, as for unknown ones.

Pagination tokens name a point *between* events: ``t{topo}-{stream}`` is the point just after
the position (topo, stream), so paging forwards from it returns events after that position and
paging backwards returns events at or before it. Sync tokens ``s{stream}`` (optionally followed
by ``_...``) are accepted too. The `EventStore` pages from an exclusive cursor, so backwards
cursors are one stream position past the token.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import MatrixError
from trioserver.handlers.event_filter import RoomEventFilter
from trioserver.handlers.serialize import EventSerializer, SerializeOptions
from trioserver.handlers.visibility import Page, Viewer, VisibilityFilter, visibility_of
from trioserver.stores.events import RoomPosition, StoredEvent

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from trioserver.handlers.aggregations import Aggregator
    from trioserver.handlers.auth import Requester
    from trioserver.stores.account_data import AccountDataStore
    from trioserver.stores.erasure import ErasureStore
    from trioserver.stores.events import EventStore
    from trioserver.stores.room_reads import RoomReadStore
    from trioserver.stores.state import StateMap, StateStore

JsonDict = dict[str, Any]
MEMBER = "m.room.member"
MEMBERSHIPS = ("join", "invite", "knock", "leave", "ban")
# The stream part is negative for backfilled history (issue 15, `federation.backfill`).
_ROOM_TOKEN = re.compile(r"t(\d+)-(-?\d+)(?:_.*)?\Z", re.DOTALL)
_STREAM_TOKEN = re.compile(r"s(\d+)(?:_.*)?\Z", re.DOTALL)
# Positions are SQL integers; larger numbers in a token are not ours (and would not bind).
_MAX_POSITION = 2**62


def _forbidden() -> MatrixError:
    return MatrixError("M_FORBIDDEN", "You aren't a member of the room")


def _not_found() -> MatrixError:
    return MatrixError("M_NOT_FOUND", "Event not found")


def _before(a: RoomPosition, b: RoomPosition) -> bool:
    return (a.topological, a.stream) < (b.topological, b.stream)


def store_cursor(token: RoomPosition, backwards: bool) -> RoomPosition:
    """The store's exclusive cursor for paging from a token position."""
    return RoomPosition(token.topological, token.stream + 1) if backwards else token


def page_token(cursor: RoomPosition, backwards: bool) -> str:
    """The token for the point a page stopped at (the inverse of `store_cursor`)."""
    return (
        RoomPosition(cursor.topological, cursor.stream - 1) if backwards else cursor
    ).to_token()


@attrs.frozen
class Access:
    """A user's read access to a room.

    Attributes:
        viewer: what the visibility rules need about the user.
        membership: their latest membership, if any.
        departure: their leave or ban event, when they left and did not forget the room.
        world_readable: the room's current history visibility is ``world_readable``.
    """

    viewer: Viewer
    membership: str | None
    departure: StoredEvent | None
    world_readable: bool

    @property
    def history_end(self) -> RoomPosition | None:
        """The last position a departed user may read up to (None: no limit)."""
        if self.departure is None or self.world_readable:
            return None
        return RoomPosition(self.departure.topological_ordering, self.departure.stream_ordering)

    def check_reader(self) -> None:
        """Raise 403 unless the user is joined, departed, or the room is world-readable."""
        if self.membership != "join" and self.departure is None and not self.world_readable:
            raise _forbidden()


@attrs.frozen
class MessagesQuery:
    """The parameters of ``GET /rooms/{roomId}/messages``."""

    backwards: bool
    from_token: str | None = None
    to_token: str | None = None
    limit: int = 10
    event_filter: RoomEventFilter = attrs.field(factory=RoomEventFilter)
    options: SerializeOptions = attrs.field(factory=SerializeOptions)


class RoomReadHandler:
    """What a user may read of a room, and in which format."""

    def __init__(
        self,
        events: EventStore,
        state: StateStore,
        reads: RoomReadStore,
        erasure: ErasureStore,
        *,
        server_name: str,
        account_data: AccountDataStore,
        aggregator: Aggregator | None = None,
    ) -> None:
        self._events = events
        self._state = state
        self._reads = reads
        self._server_name = server_name
        self._account_data = account_data
        self.visibility = VisibilityFilter(events, state, erasure)
        # Issue 15: fetches history from other servers, ``await backfill(room_id, limit)``
        # -> the ids of the events stored (main; a worker asks main).
        self.backfill: Callable[[str, int], Awaitable[list[str]]] | None = None
        # Issue 11: the aggregator bundles unsigned["m.relations"] into served events.
        self.serializer = EventSerializer(events, reads, aggregator=aggregator)

    # -- Access ---------------------------------------------------------------------------

    async def access(self, user_id: str, room_id: str) -> Access:
        """The user's read access to the room (one query, plus cached event reads)."""
        raw = await self._reads.room_access(user_id, room_id)
        departed = raw.membership in ("leave", "ban") and not raw.forgotten
        wanted = [raw.history_visibility_id, raw.member_event_id if departed else None]
        found = await self._events.get_events(e for e in wanted if e is not None)
        visibility = found.get(raw.history_visibility_id or "")
        departure = found.get(raw.member_event_id or "") if departed else None
        return Access(
            # Spec "Ignoring Users": no events from ignored users (their state excepted).
            viewer=Viewer(
                user_id,
                raw.last_join_stream,
                ignored=await self._account_data.ignored_users(user_id),
            ),
            membership=raw.membership,
            departure=departure,
            world_readable=visibility is not None
            and visibility_of(visibility.event) == "world_readable",
        )

    async def _reader_state(self, access: Access, room_id: str) -> StateMap:
        access.check_reader()
        if access.membership != "join" and access.departure is not None:
            # Spec /state: "If the user has left the room then the state is taken from the
            # state of the room when they left."
            group = access.departure.state_group
            return {} if group is None else await self._state.state_for_group(group)
        return await self._state.current_state(room_id)

    async def position(self, room_id: str, token: str) -> RoomPosition:
        """The room position a pagination token names (``t..-..`` or a sync token).

        Raises:
            MatrixError: 400 ``M_INVALID_PARAM`` for anything else.
        """
        room_match = _ROOM_TOKEN.match(token)
        stream_match = _STREAM_TOKEN.match(token)
        match = room_match or stream_match
        numbers = [] if match is None else [int(n) for n in match.groups()]
        if not numbers or max(numbers) > _MAX_POSITION:
            raise MatrixError("M_INVALID_PARAM", f"Invalid pagination token: {token!r}")
        if room_match is not None:
            return RoomPosition(numbers[0], numbers[1])
        return await self._reads.position_at_stream(room_id, numbers[0])

    # -- Single events and state ----------------------------------------------------------

    async def visible_event(
        self, access: Access, room_id: str, event_id: str
    ) -> tuple[StoredEvent, str]:
        """The event with the user's membership at it.

        Raises:
            MatrixError: 404 when unknown, in another room, or not visible to the user.
        """
        stored = await self._events.get_event(event_id)
        if stored is None or stored.room_id != room_id or stored.rejected is not None:
            raise _not_found()
        visible = await self.visibility.filter([stored], access.viewer)
        if not visible:
            # Synapse answers 404 for events the user may not see too (spec: "not found or
            # you do not have permission to read this event").
            raise _not_found()
        return visible[0]

    async def get_event(self, requester: Requester, room_id: str, event_id: str) -> JsonDict:
        """``GET /rooms/{roomId}/event/{eventId}``.

        Raises:
            MatrixError: 404 when unknown, in another room, or not visible to the user.
        """
        access = await self.access(requester.user_id, room_id)
        stored, membership = await self.visible_event(access, room_id, event_id)
        (event,) = await self.serializer.serialize(
            [stored], _options(requester), {stored.event_id: membership}
        )
        return event

    async def get_state(self, requester: Requester, room_id: str) -> list[JsonDict]:
        """``GET /rooms/{roomId}/state``: current state, or the state at the user's leave.

        Raises:
            MatrixError: 403 when the user may not read the room.
        """
        access = await self.access(requester.user_id, room_id)
        state_ids = await self._reader_state(access, room_id)
        found = await self._events.get_events(state_ids.values())
        stored = [found[e] for e in state_ids.values() if e in found]
        return await self.serializer.serialize(stored, _options(requester))

    async def get_state_event(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        state_key: str,
        *,
        as_event: bool,
    ) -> JsonDict:
        """``GET /rooms/{roomId}/state/{eventType}/{stateKey}``: content, or the whole event.

        Raises:
            MatrixError: 403 when the user may not read the room, 404 when there is no such
                state.
        """
        access = await self.access(requester.user_id, room_id)
        access.check_reader()
        if access.membership == "join" or access.departure is None:
            event_id = await self._reads.current_state_id(room_id, event_type, state_key)
        else:
            event_id = (await self._reader_state(access, room_id)).get((event_type, state_key))
        stored = await self._events.get_event(event_id) if event_id is not None else None
        if stored is None:
            raise MatrixError("M_NOT_FOUND", "Event not found")
        (event,) = await self.serializer.serialize([stored], _options(requester))
        if as_event:
            return event
        content: JsonDict = event["content"]
        return content

    # -- Members --------------------------------------------------------------------------

    async def get_members(
        self,
        requester: Requester,
        room_id: str,
        *,
        at: str | None = None,
        membership: str | None = None,
        not_membership: str | None = None,
    ) -> JsonDict:
        """``GET /rooms/{roomId}/members``.

        Raises:
            MatrixError: 403 when the user may not read the room (or its state at `at`), 404
                when `at` is before the room's first event.
        """
        access = await self.access(requester.user_id, room_id)
        if at is None:
            state_ids = await self._reader_state(access, room_id)
        else:
            state_ids = await self._state_at(access, room_id, await self.position(room_id, at))
        member_ids = [e for (t, _), e in state_ids.items() if t == MEMBER]
        found = await self._events.get_events(member_ids)
        stored = [
            found[e]
            for e in member_ids
            if e in found
            and _membership_wanted(found[e].event.membership, membership, not_membership)
        ]
        return {"chunk": await self.serializer.serialize(stored, _options(requester))}

    async def _state_at(self, access: Access, room_id: str, position: RoomPosition) -> StateMap:
        access.check_reader()
        end = access.history_end
        if end is not None and _before(end, position):
            position = end
        last_id = await self._reads.last_event_at(room_id, position)
        last = await self._events.get_event(last_id) if last_id is not None else None
        if last is None:
            raise MatrixError("M_NOT_FOUND", "No event at that token")
        if not await self.visibility.filter([last], access.viewer):
            raise MatrixError("M_FORBIDDEN", "You may not see the room at that point")
        group = last.state_group
        return {} if group is None else await self._state.state_for_group(group)

    async def get_joined_members(self, requester: Requester, room_id: str) -> JsonDict:
        """``GET /rooms/{roomId}/joined_members``: only for joined users (spec).

        Raises:
            MatrixError: 403 unless the user is joined.
        """
        row = await self._state.local_membership(requester.user_id, room_id)
        if row is None or row.membership != "join":
            raise _forbidden()
        joined: JsonDict = {}
        for profile in await self._reads.joined_profiles(room_id):
            # Both keys are always present, null when unset (SyTest 10apidoc/31room-state).
            joined[profile.user_id] = {
                "display_name": profile.display_name,
                "avatar_url": profile.avatar_url,
            }
        return {"joined": joined}

    async def joined_rooms(self, user_id: str) -> list[str]:
        """``GET /joined_rooms``: the rooms the user is joined to now."""
        rows = await self._state.local_memberships(user_id, ["join"])
        return [row.room_id for row in rows]

    # -- History --------------------------------------------------------------------------

    async def get_messages(
        self, requester: Requester, room_id: str, query: MessagesQuery
    ) -> JsonDict:
        """``GET /rooms/{roomId}/messages``.

        Raises:
            MatrixError: 403 when the user may not read the room, 400 for a bad token.
        """
        access = await self.access(requester.user_id, room_id)
        access.check_reader()
        backwards = query.backwards
        if query.from_token is not None:
            start = await self.position(room_id, query.from_token)
        elif backwards:
            start = await self._events.room_end(room_id)
        else:
            start = RoomPosition(0, 0)
        to = None if query.to_token is None else await self.position(room_id, query.to_token)
        end = access.history_end
        bound = None if to is None else store_cursor(to, backwards)
        if end is not None and backwards and _before(end, start):
            start = end
        elif end is not None and not backwards and (bound is None or _before(end, bound)):
            bound = end
        page = await self._scan(room_id, start, bound, query, access)
        # At the start of what this server holds, older history may be on other servers.
        exhausted = backwards and page.exhausted and self.backfill is not None
        if exhausted and self.backfill is not None and await self.backfill(room_id, query.limit):
            page = await self._scan(room_id, start, bound, query, access)
        return await self._messages_body(page, start, query, requester)

    async def _scan(
        self,
        room_id: str,
        start: RoomPosition,
        bound: RoomPosition | None,
        query: MessagesQuery,
        access: Access,
    ) -> Page:
        return await self.visibility.scan(
            room_id,
            store_cursor(start, query.backwards),
            bound,
            backwards=query.backwards,
            limit=query.limit,
            event_filter=query.event_filter,
            viewer=access.viewer,
        )

    async def _messages_body(
        self, page: Page, start: RoomPosition, query: MessagesQuery, requester: Requester
    ) -> JsonDict:
        stored = [s for s, _ in page.events]
        memberships = {s.event_id: m for s, m in page.events}
        body: JsonDict = {
            "chunk": await self.serializer.serialize(stored, query.options, memberships),
            # Spec: `start` "will be the same as the value given in `from`" (clients match it).
            "start": query.from_token if query.from_token is not None else start.to_token(),
        }
        # Spec: `end` is omitted when no further events are available. As Synapse (and SyTest
        # 10apidoc/34room-messages) it is still sent with the page that reached the end of
        # history, and left out once a request finds nothing more to examine.
        if not page.exhausted or page.scanned:
            body["end"] = page_token(page.cursor, query.backwards)
        if query.event_filter.lazy_load_members and stored:
            members = await self._sender_members(stored)
            body["state"] = await self.serializer.serialize(members, query.options)
        return body

    async def _sender_members(self, stored: list[StoredEvent]) -> list[StoredEvent]:
        # Spec "Lazy-loading room members": the member events of the senders, each as of the
        # first event of theirs in the list. Redundant ones are allowed, so nothing is skipped.
        wanted: dict[str, str] = {}
        for item in stored:
            sender = item.event.sender
            if sender in wanted or item.state_group is None:
                continue
            state = await self._state.state_for_group(item.state_group)
            event_id = state.get((MEMBER, sender))
            if event_id is not None:
                wanted[sender] = event_id
        found = await self._events.get_events(wanted.values())
        return [found[e] for e in wanted.values() if e in found]

    async def get_context(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        *,
        limit: int,
        event_filter: RoomEventFilter,
        options: SerializeOptions,
    ) -> JsonDict:
        """``GET /rooms/{roomId}/context/{eventId}``.

        The filter applies to the events around and the state, not to the event itself (spec).

        Raises:
            MatrixError: 403 when the user may not read the room at all (as Synapse, SyTest
                30rooms/50context), 404 when the event is unknown or not visible to them.
        """
        access = await self.access(requester.user_id, room_id)
        access.check_reader()
        target, membership = await self.visible_event(access, room_id, event_id)
        here = RoomPosition(target.topological_ordering, target.stream_ordering)
        scan_args: dict[str, Any] = {"event_filter": event_filter, "viewer": access.viewer}
        before = await self.visibility.scan(
            room_id, here, None, backwards=True, limit=limit // 2, **scan_args
        )
        after = await self.visibility.scan(
            room_id,
            here,
            access.history_end,
            backwards=False,
            limit=limit - limit // 2,
            **scan_args,
        )
        around = [*before.events, (target, membership), *after.events]
        state = await self._context_state(
            after.events[-1][0] if after.events else target, around, event_filter
        )
        memberships = {s.event_id: m for s, m in around}
        serialize = self.serializer.serialize
        return {
            "events_before": await serialize([s for s, _ in before.events], options, memberships),
            "event": (await serialize([target], options, memberships))[0],
            "events_after": await serialize([s for s, _ in after.events], options, memberships),
            "state": await serialize(state, options),
            "start": page_token(before.cursor, True),
            "end": page_token(after.cursor, False),
        }

    async def _context_state(
        self,
        last: StoredEvent,
        around: list[tuple[StoredEvent, str]],
        event_filter: RoomEventFilter,
    ) -> list[StoredEvent]:
        # Spec: "The state of the room at the last event returned", filtered like the events;
        # with lazy loading, only the member events of the senders (as Synapse does).
        group = last.state_group
        state_ids: StateMap = {} if group is None else await self._state.state_for_group(group)
        if event_filter.lazy_load_members:
            senders = {s.event.sender for s, _ in around}
            state_ids = {k: e for k, e in state_ids.items() if k[0] == MEMBER and k[1] in senders}
        found = await self._events.get_events(state_ids.values())
        return [
            found[e]
            for e in state_ids.values()
            if e in found and event_filter.matches(found[e].event)
        ]


def _options(requester: Requester) -> SerializeOptions:
    return SerializeOptions(user_id=requester.user_id, device_id=requester.device_id)


def _membership_wanted(
    value: str | None, membership: str | None, not_membership: str | None
) -> bool:
    # Spec /members: given both, "either the membership *is* the same as `membership` **or**
    # *is not* the same as `not_membership`".
    if membership is None and not_membership is None:
        return True
    if membership is not None and value == membership:
        return True
    return not_membership is not None and value != not_membership
