"""The ``rooms`` part of a /sync response: timelines and state per room.

Theory of operation
-------------------
A sync covers the events stream between ``since`` (exclusive; the start of history for an
initial sync) and ``now`` (inclusive). For each room the user is joined to:

- a room joined before ``since`` and without new events gets no entry (ephemeral and account
  data may still add one, see `handlers.sync`);
- otherwise the timeline is the newest visible events in the range, at most the filter's limit;
  ``limited`` says there were more (and, as in Synapse, is always set for a room joined since
  ``since``), and ``prev_batch`` is a ``/messages`` token for them. Events of the room's state
  as of the timeline's end are visible whatever the history visibility (Synapse does the same,
  so a client learns of a join made while it could not see the room);
- ``state`` is the state *at the start of the timeline*: the whole state for an initial sync, a
  newly joined room or ``full_state``; for a gappy (limited) incremental sync only what changed
  between ``since`` and the timeline's start; nothing otherwise (state changes are then in the
  timeline itself). With ``lazy_load_members`` the members are cut down (`handlers.sync_lazy`).

Rooms the user left or was banned from appear under ``leave`` with their history up to the leave
(their state and messages as of the leave, even once the server has left the room: seed 4; the
whole state when they joined after ``since``), and invites and knocks with the stripped state
clients show before joining (no invites from ignored users). Memberships come from
``local_current_membership`` (seed 6), which outlives the room's current state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from trioserver.handlers.event_filter import FilterDefinition
from trioserver.handlers.serialize import SerializeOptions
from trioserver.handlers.sync_lazy import SentMembers, select_state
from trioserver.handlers.visibility import Viewer
from trioserver.stores.events import RoomPosition, StoredEvent
from trioserver.streams import StreamToken

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from trioserver.handlers.serialize import EventSerializer
    from trioserver.handlers.visibility import VisibilityFilter
    from trioserver.stores.events import EventStore
    from trioserver.stores.room_reads import RoomReadStore
    from trioserver.stores.state import StateMap, StateStore
    from trioserver.stores.sync import SyncMembership, SyncStore

JsonDict = dict[str, Any]
MEMBER = "m.room.member"
DEFAULT_TIMELINE_LIMIT = 10
# What invitees and knockers see of a room (Synapse's default `room_prejoin_state`).
STRIPPED_STATE_TYPES = frozenset(
    {
        "m.room.create",
        "m.room.join_rules",
        "m.room.canonical_alias",
        "m.room.avatar",
        "m.room.encryption",
        "m.room.name",
        "m.room.topic",
    }
)


@attrs.frozen
class SyncContext:
    """One sync request, as the room builder needs it."""

    user_id: str
    since: StreamToken | None
    now: StreamToken
    filter: FilterDefinition
    full_state: bool
    options: SerializeOptions
    # Spec "Ignoring Users": whose events (but not state) and invites this sync leaves out.
    ignored: frozenset[str] = frozenset()
    device_id: str = ""

    @property
    def initial(self) -> bool:
        """No ``since``: everything is new."""
        return self.since is None


@attrs.frozen
class Timeline:
    """A room's timeline for one sync and the state at its start."""

    events: list[tuple[StoredEvent, str]]
    limited: bool
    prev_batch: str
    state: list[StoredEvent]
    # The newest position the timeline covers (where the state is read when it is empty).
    top: RoomPosition
    # The full state at the timeline's start, when building the timeline needed it (then
    # lazy-loading, `entry_state`, does not read it again).
    at_start: dict[tuple[str, str], str] | None


def _before_event(stored: StoredEvent, state_after: StateMap) -> dict[tuple[str, str], str]:
    """The full state just before `stored` (its state group holds the state after it)."""
    state = dict(state_after)
    if stored.event.state_key is not None:
        key = (stored.event.type, stored.event.state_key)
        if stored.replaces_state is None:
            state.pop(key, None)
        else:
            state[key] = stored.replaces_state
    return state


def stripped(event: Any) -> JsonDict:
    """The stripped state form of an event (spec "Stripped state")."""
    return {
        "type": event.type,
        "state_key": event.state_key,
        "content": dict(event.content),
        "sender": event.sender,
    }


class RoomSyncBuilder:
    """Builds the per-room entries of a sync response."""

    def __init__(
        self,
        events: EventStore,
        state: StateStore,
        sync_store: SyncStore,
        reads: RoomReadStore,
        visibility: VisibilityFilter,
        serializer: EventSerializer,
    ) -> None:
        self._events = events
        self._state = state
        self._sync = sync_store
        self._reads = reads
        self._visibility = visibility
        self._serializer = serializer
        self._sent_members = SentMembers()

    async def timeline(
        self,
        ctx: SyncContext,
        room_id: str,
        *,
        upto_stream: int,
        full: bool,
        viewer: Viewer,
        joined: bool = False,
    ) -> Timeline:
        """The visible events of a room in (since, upto_stream] and the state at their start.

        Args:
            upto_stream: the last events-stream position to include (``now``, or a leave).
            full: give the whole state at the timeline's start (initial/newly joined/full).
            joined: the user joined since ``since``: the timeline counts as ``limited``,
                since the client has none of the history before it (as Synapse does; SyTest
                "Newly joined room has correct timeline in incremental sync").
        """
        limit = ctx.filter.room.timeline.limit
        limit = DEFAULT_TIMELINE_LIMIT if limit is None else limit
        top, bound = await self._scan_range(ctx, room_id, upto_stream, full=full)
        # Like Synapse, the room's state as of the timeline's end is always shown, even the
        # parts set while history visibility hid the room from the user (SyTest "Current
        # state appears in timeline in private history"): the client must learn its state.
        current = await self._state_at_start(room_id, None, top)
        viewer = attrs.evolve(viewer, always=frozenset(current.values()))
        page = await self._visibility.scan(
            room_id,
            RoomPosition(top.topological, top.stream + 1),
            bound,
            backwards=True,
            limit=limit,
            event_filter=ctx.filter.room.timeline,
            viewer=viewer,
        )
        events = list(reversed(page.events))
        first = events[0][0] if events else None
        whole_history = bound is None and page.exhausted
        start = _prev_batch(top, first, whole_history=whole_history)
        limited = not page.exhausted or joined
        at_start: dict[tuple[str, str], str] | None = None
        state: list[StoredEvent] = []
        if full or limited:
            # With no events the state at the start is the current one, read above.
            at_start = (
                current if first is None else await self._state_at_start(room_id, first, top)
            )
            state = await self._timeline_state(ctx, room_id, at_start, full=full)
        return Timeline(events, limited, start.to_token(), state, top, at_start)

    async def _scan_range(
        self, ctx: SyncContext, room_id: str, upto_stream: int, *, full: bool
    ) -> tuple[RoomPosition, RoomPosition | None]:
        """The timeline's newest position, and the oldest it may reach (None: the room's
        start) for an incremental, not full, entry."""
        top = await self._reads.position_at_stream(room_id, upto_stream)
        if ctx.since is None or full:
            return top, None
        low = await self._reads.position_at_stream(room_id, ctx.since.events)
        return top, RoomPosition(low.topological, low.stream + 1)

    async def _timeline_state(
        self,
        ctx: SyncContext,
        room_id: str,
        at_start: dict[tuple[str, str], str],
        *,
        full: bool,
    ) -> list[StoredEvent]:
        """A full or limited timeline's ``state``: all of `at_start` (full), or for a gappy
        incremental sync what changed between ``since`` and the timeline's start."""
        if not full and ctx.since is not None:
            at_since = await self._state_at_stream(room_id, ctx.since.events)
            at_start = {k: e for k, e in at_start.items() if at_since.get(k) != e}
        return await self._filtered_state(ctx, at_start)

    async def _state_at_start(
        self, room_id: str, first: StoredEvent | None, top: RoomPosition
    ) -> dict[tuple[str, str], str]:
        if first is not None:
            after = await self._group(first.state_group)
            return _before_event(first, after)
        last_id = await self._reads.last_event_at(room_id, top)
        last = await self._events.get_event(last_id) if last_id is not None else None
        return dict(await self._group(last.state_group)) if last is not None else {}

    async def _state_at_stream(self, room_id: str, stream: int) -> StateMap:
        position = await self._reads.position_at_stream(room_id, stream)
        last_id = await self._reads.last_event_at(room_id, position)
        last = await self._events.get_event(last_id) if last_id is not None else None
        return await self._group(last.state_group) if last is not None else {}

    async def _group(self, group: int | None) -> StateMap:
        return {} if group is None else await self._state.state_for_group(group)

    async def _filtered_state(
        self, ctx: SyncContext, state: Mapping[tuple[str, str], str]
    ) -> list[StoredEvent]:
        found = await self._events.get_events(state.values())
        state_filter = ctx.filter.room.state
        result = [
            found[event_id]
            for event_id in state.values()
            if event_id in found and state_filter.matches(found[event_id].event)
        ]
        result.sort(key=lambda s: s.stream_ordering)
        return result

    def start_sync(self, ctx: SyncContext) -> None:
        """Call once per sync before its entries: an initial sync starts a new sequence, so
        the device is assumed to have no lazy-loaded members yet (nor after a sync this
        instance did not answer: see `SentMembers.start`)."""
        self._sent_members.start((ctx.user_id, ctx.device_id), ctx.since)

    def sync_answered(self, user_id: str, device_id: str, next_batch: StreamToken) -> None:
        """The sync was answered with `next_batch`."""
        self._sent_members.answered((user_id, device_id), next_batch)

    async def entry_state(
        self, ctx: SyncContext, room_id: str, timeline: Timeline, *, full: bool
    ) -> list[StoredEvent]:
        """An entry's ``state``: the timeline's, or with ``lazy_load_members`` the members
        the client needs (see `handlers.sync_lazy`)."""
        state_filter = ctx.filter.room.state
        if not state_filter.lazy_load_members:
            return timeline.state
        senders = {s.event.sender for s, _ in timeline.events}
        if full:
            senders.add(ctx.user_id)  # so the client knows it is in the room (Synapse)
        at_start = timeline.at_start
        if at_start is None:
            first = timeline.events[0][0] if timeline.events else None
            at_start = await self._state_at_start(room_id, first, timeline.top)
        wanted = {k: e for k, e in at_start.items() if k[0] == MEMBER and k[1] in senders}
        members = await self._filtered_state(ctx, wanted)
        in_timeline = {s.event_id for s, _ in timeline.events}
        state = select_state(timeline.state, members, full=full, in_timeline=in_timeline)
        key = (ctx.user_id, ctx.device_id)
        if ctx.since is not None and not state_filter.include_redundant_members:
            state = self._sent_members.unsent(key, state)
        self._sent_members.record(key, [*state, *(s for s, _ in timeline.events)])
        return state

    async def joined_since(self, ctx: SyncContext, row: SyncMembership) -> bool:
        """Whether the user joined the room after ``since`` (an incremental sync only)."""
        if ctx.since is None or row.stream_ordering <= ctx.since.events:
            return False
        before = await self._sync.membership_at(ctx.user_id, row.room_id, ctx.since.events)
        return before != "join"

    async def serialize_timeline(self, ctx: SyncContext, timeline: Timeline) -> JsonDict:
        """The ``timeline`` object of a room entry."""
        stored = [s for s, _ in timeline.events]
        memberships = {s.event_id: m for s, m in timeline.events}
        events = await self._serializer.serialize(stored, ctx.options, memberships)
        return {"events": events, "limited": timeline.limited, "prev_batch": timeline.prev_batch}

    async def serialize_state(self, ctx: SyncContext, state: Sequence[StoredEvent]) -> JsonDict:
        """The ``state`` object of a room entry."""
        return {"events": await self._serializer.serialize(state, ctx.options)}

    async def out_of_band_timeline(self, row: SyncMembership) -> Timeline | None:
        """The timeline of a room the user only knows through an out-of-band membership (an
        invite from another server, rejected): that membership event alone; None for any
        other room."""
        stored = await self._events.get_event(row.event_id)
        if stored is None or stored.state_group is not None:
            return None
        top = RoomPosition(stored.topological_ordering, stored.stream_ordering)
        return Timeline([(stored, row.membership)], False, top.to_token(), [], top, {})

    async def stripped_state(self, ctx: SyncContext, row: SyncMembership) -> list[JsonDict] | None:
        """What an invitee or knocker sees: chosen state at their membership event, and it;
        None for an invite from an ignored user (spec "Ignoring Users": not sent)."""
        stored = await self._events.get_event(row.event_id)
        if stored is None:
            return []
        if row.membership == "invite" and stored.event.sender in ctx.ignored:
            return None
        if stored.state_group is None:
            # An invite from another server (issue 15): this server holds no state of the
            # room, only what the inviting server sent with it.
            sent = stored.event.unsigned.get("invite_room_state")
            events = [s for s in sent if isinstance(s, dict)] if isinstance(sent, list) else []
            return [*events, stripped(stored.event)]
        state = await self._group(stored.state_group)
        inviter = (MEMBER, stored.event.sender)
        wanted = [e for k, e in state.items() if k[0] in STRIPPED_STATE_TYPES or k == inviter]
        found = await self._events.get_events(wanted)
        events = [stripped(found[e].event) for e in wanted if e in found and e != row.event_id]
        events.append(stripped(stored.event))
        return events

    @staticmethod
    def viewer(ctx: SyncContext, row: SyncMembership) -> Viewer:
        """Who the visibility rules filter for."""
        return Viewer(ctx.user_id, row.last_join_stream, ignored=ctx.ignored)


def _prev_batch(
    top: RoomPosition, first: StoredEvent | None, *, whole_history: bool
) -> RoomPosition:
    """Where ``/messages`` continues backwards from a timeline: just before its first event,
    except when the timeline holds the room's whole visible history. There is nothing earlier
    then (the spec lets ``prev_batch`` be omitted), and Synapse hands out the timeline's end,
    so that paging back from it returns the timeline again and then no ``end`` (SyTest
    10apidoc/34room-messages.pl relies on it; clients dedupe events by id)."""
    if first is None or whole_history:
        return top
    return RoomPosition(first.topological_ordering, first.stream_ordering - 1)
