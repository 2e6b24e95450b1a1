"""``GET /events``: the deprecated (but specified) v1 event stream, and room previews.

Theory of operation
-------------------
A request names a point in the streams (``from``, a `StreamToken` as ``/sync`` and
``/initialSync`` hand out; none means "now") and gets, as one flat ``chunk``, what happened
after it: room events (with ``room_id``) in stream order, then ``m.typing`` and ``m.receipt``
events of the rooms, then the user's account data changes (per-room ones with ``room_id``),
then ``m.presence`` events. ``end`` is the token to continue from. With
nothing new it long-polls like ``/sync`` does (`Notifier.wait_for_change`), then answers with
whatever is there.

Which rooms: without ``room_id``, those the user is joined to, plus the user's own member
events elsewhere (an invite, a leave). With ``room_id`` (spec "Room Previews"), that one room,
which a user who is not joined may read while it is ``world_readable``; the history visibility
rules then pass only the events that were world-readable when sent, and presence is that of
the room's members. Guests must name a room (as in Synapse).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver.errors import MatrixError
from trioserver.handlers.auth import Requester
from trioserver.handlers.serialize import SerializeOptions
from trioserver.handlers.sync import MAX_TIMEOUT_MS
from trioserver.handlers.visibility import Viewer
from trioserver.streams import StreamToken

if TYPE_CHECKING:
    from trioserver.handlers.notifier import Notifier
    from trioserver.handlers.room_reads import RoomReadHandler
    from trioserver.handlers.sync_streams import StreamHandlers
    from trioserver.stores.event_stream import EventStreamStore
    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.sync import SyncStore

JsonDict = dict[str, Any]
# Synapse's defaults.
DEFAULT_LIMIT = 10
DEFAULT_TIMEOUT_MS = 30_000


@attrs.frozen
class EventsRequest:
    """A parsed ``GET /events`` request."""

    requester: Requester
    from_token: StreamToken | None
    timeout_ms: int
    room_id: str | None = None
    limit: int = DEFAULT_LIMIT


@attrs.frozen
class _Scope:
    """The rooms one request reads, and as whom.

    Attributes:
        viewers: room id -> the viewer the visibility rules filter for.
        own_members: the user's own member events in rooms they are not joined to, by
            stream ordering (they always see those).
        peek: the one room of a preview, whose members' presence is reported.
        account_rooms: the rooms whose account data of the user is reported: every room
            the user has a membership in (the one room of a preview).
    """

    viewers: dict[str, Viewer]
    own_members: dict[int, str]
    peek: str | None
    account_rooms: tuple[str, ...]


@attrs.frozen
class _Chunk:
    events: list[JsonDict]
    end: StreamToken


# What the v1 format repeats at the top level from ``unsigned`` (as Synapse's v1 client format).
_V1_COPIED = (
    "age",
    "redacted_because",
    "replaces_state",
    "prev_content",
    "invite_room_state",
    "knock_room_state",
)


def client_v1(event: JsonDict) -> JsonDict:
    """A serialised client event in the v1 shape the deprecated endpoints use (``/events``,
    ``/events/{eventId}``, both ``initialSync``s): ``user_id`` repeats ``sender``, and ``age``,
    ``prev_content``, ``replaces_state`` and ``redacted_because`` repeat their ``unsigned``
    values at the top level, where clients of the v1 API (SyTest among them) read them.

    Sets top-level keys only, so a fresh event from `EventSerializer` may be passed.
    """
    if "sender" in event:
        event["user_id"] = event["sender"]
    unsigned = event.get("unsigned") or {}
    for key in _V1_COPIED:
        if key in unsigned:
            event[key] = unsigned[key]
    return event


def v1_presence(event: JsonDict) -> JsonDict:
    """A ``/sync`` presence event in the v1 shape: ``content.user_id`` names the user."""
    content = {**event["content"], "user_id": event["sender"]}
    return {"type": "m.presence", "sender": event["sender"], "content": content}


class LegacyEventStream:
    """Answers ``GET /events``."""

    def __init__(
        self,
        notifier: Notifier,
        events: EventStore,
        stream_store: EventStreamStore,
        sync_store: SyncStore,
        room_reads: RoomReadHandler,
        streams: StreamHandlers,
    ) -> None:
        self._notifier = notifier
        self._events = events
        self._stream = stream_store
        self._sync = sync_store
        self._room_reads = room_reads
        self._h = streams

    async def events(self, request: EventsRequest) -> JsonDict:
        """What happened after ``from``, waiting up to the timeout for something.

        Raises:
            MatrixError: 403 when the room of a preview may not be read, or for a guest
                without ``room_id``.
        """
        requester = request.requester
        if requester.is_guest and request.room_id is None:
            raise MatrixError(
                "M_GUEST_ACCESS_FORBIDDEN", "Guest users must specify the room_id parameter"
            )
        if request.room_id is not None:
            await self._check_peek(requester.user_id, request.room_id)
        if requester.is_guest:
            return await self._events_now_or_later(request)
        # As with /sync, a user streaming events counts as online (Synapse: not guests).
        async with self._h.presence.user_syncing(requester.user_id, None):
            return await self._events_now_or_later(request)

    async def _events_now_or_later(self, request: EventsRequest) -> JsonDict:
        requester = request.requester
        now = self._notifier.current_token()
        since = request.from_token or now
        deadline = trio.current_time() + min(request.timeout_ms, MAX_TIMEOUT_MS) / 1000
        while True:
            scope = await self._scope(requester.user_id, request.room_id, since, now)
            if since != now:
                chunk = await self._compute(request, scope, since, now)
                if chunk.events:
                    return _body(since, chunk)
            changed, now = await self._notifier.wait_for_change(
                requester.user_id, scope.viewers, now, deadline
            )
            if not changed:
                scope = await self._scope(requester.user_id, request.room_id, since, now)
                return _body(since, await self._compute(request, scope, since, now))

    async def _check_peek(self, user_id: str, room_id: str) -> None:
        access = await self._room_reads.access(user_id, room_id)
        if access.membership != "join" and not access.world_readable:
            raise MatrixError("M_FORBIDDEN", "User not in room and room not world-readable")

    async def _scope(
        self, user_id: str, room_id: str | None, since: StreamToken, now: StreamToken
    ) -> _Scope:
        if room_id is not None:
            access = await self._room_reads.access(user_id, room_id)
            peek = None if access.membership == "join" else room_id
            return _Scope({room_id: access.viewer}, {}, peek, (room_id,))
        viewers: dict[str, Viewer] = {}
        own: dict[int, str] = {}
        rows = await self._sync.memberships(user_id)
        for row in rows:
            if row.membership == "join":
                viewers[row.room_id] = Viewer(user_id, row.last_join_stream)
            elif since.events < row.stream_ordering <= now.events:
                own[row.stream_ordering] = row.event_id
        return _Scope(viewers, own, None, tuple(row.room_id for row in rows))

    async def _compute(
        self, request: EventsRequest, scope: _Scope, since: StreamToken, now: StreamToken
    ) -> _Chunk:
        room_events, events_end = await self._room_events(request, scope, since, now)
        user_id = request.requester.user_id
        rooms = list(scope.viewers)
        ephemeral: list[JsonDict] = []
        for room_id, user_ids in self._h.typing.typing_for_rooms(rooms, since.typing).items():
            content = {"user_ids": user_ids}
            ephemeral.append({"type": "m.typing", "room_id": room_id, "content": content})
        if since.receipts != now.receipts:
            receipts = await self._h.receipts.receipts_for_rooms(user_id, rooms, since.receipts)
            for room_id, content in receipts.items():
                ephemeral.append({"type": "m.receipt", "room_id": room_id, "content": content})
        account_data = await self._account_data(user_id, scope, since, now)
        presence = await self._presence(user_id, scope, since, now)
        end = attrs.evolve(now, events=events_end)
        return _Chunk([*room_events, *ephemeral, *account_data, *presence], end)

    async def _account_data(
        self, user_id: str, scope: _Scope, since: StreamToken, now: StreamToken
    ) -> list[JsonDict]:
        """The user's account data changed after ``since``: global entries as
        ``{"type", "content"}``, per-room ones (tags as ``m.tag``) with their ``room_id``, as
        Synapse's v1 event stream delivers them (SyTest 42tags.pl, 44account_data.pl)."""
        if since.account_data == now.account_data:
            return []
        handler = self._h.account_data
        found = await handler.global_since(user_id, since.account_data, with_push_rules=False)
        by_room = await handler.rooms_since(user_id, scope.account_rooms, since.account_data)
        for room_id, room_events in by_room.items():
            found.extend({**event, "room_id": room_id} for event in room_events)
        return found

    async def _room_events(
        self, request: EventsRequest, scope: _Scope, since: StreamToken, now: StreamToken
    ) -> tuple[list[JsonDict], int]:
        """The visible room events after ``since`` and the events position to go on from."""
        if since.events >= now.events:
            return [], now.events
        found = await self._stream.stream_event_ids(
            list(scope.viewers), since.events, now.events, request.limit
        )
        positions = dict(found)
        positions.update(scope.own_members)
        ordered = sorted(positions.items())[: request.limit]
        # A full page stops at its last event; the rest comes with the next request.
        end = ordered[-1][0] if len(ordered) == request.limit else now.events
        stored = await self._events.get_events(event_id for _, event_id in ordered)
        visible = await self._visible([stored[e] for _, e in ordered if e in stored], scope)
        requester = request.requester
        options = SerializeOptions(user_id=requester.user_id, device_id=requester.device_id)
        serialized = await self._room_reads.serializer.serialize(
            [s for s, _ in visible], options, {s.event_id: m for s, m in visible}
        )
        return [client_v1(e) for e in serialized], end

    async def _visible(
        self, stored: list[StoredEvent], scope: _Scope
    ) -> list[tuple[StoredEvent, str]]:
        """The events the user may see, in stream order, with their membership at each."""
        by_room: dict[str, list[StoredEvent]] = {}
        for item in stored:
            by_room.setdefault(item.room_id, []).append(item)
        visible: list[tuple[StoredEvent, str]] = []
        for room_id, items in by_room.items():
            viewer = scope.viewers.get(room_id)
            if viewer is None:
                # The user's own member events in rooms they are not joined to.
                visible.extend((item, item.event.membership or "leave") for item in items)
            else:
                visible.extend(await self._room_reads.visibility.filter(items, viewer))
        visible.sort(key=lambda pair: pair[0].stream_ordering)
        return visible

    async def _presence(
        self, user_id: str, scope: _Scope, since: StreamToken, now: StreamToken
    ) -> list[JsonDict]:
        if since.presence == now.presence:
            return []
        presence = self._h.presence
        if scope.peek is not None:
            changed = await self._stream.presence_changed_in_room(scope.peek, since.presence)
            events = presence.presence_for_users(changed)
        else:
            events = await presence.presence_since(user_id, since.presence)
        return [v1_presence(e) for e in events]


def _body(since: StreamToken, chunk: _Chunk) -> JsonDict:
    return {"chunk": chunk.events, "start": since.to_string(), "end": chunk.end.to_string()}
