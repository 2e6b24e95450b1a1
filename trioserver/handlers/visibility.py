"""History visibility: which events of a room a user may see (spec "Room History Visibility").

Theory of operation
-------------------
The rules use the room state *at* each event: its ``m.room.history_visibility`` and the user's
membership. A stored event's state group is the state *after* it; for a state event the state
*before* it is that map with its own key set back to ``replaces_state`` (or removed). Those
differ only for the two cases the spec singles out, and for those the spec allows the event when
either side would:

- an ``m.room.history_visibility`` event is visible if the visibility before *or* after it
  allows it;
- the user's own ``m.room.member`` event is visible if their membership before *or* after it
  allows it (so a user always sees their own join, and their leave after being joined). Like
  Synapse, a user also always sees their own leave after an invite (a rejected invite), so
  that the room can be seen to go.

For a state map (before or after), in order (spec, "Server behaviour"):

1. ``world_readable``: allow;
2. the user's membership is ``join``: allow;
3. ``shared`` and the user joined the room at any point after the event: allow. A user whose
   latest join comes after the event has; a user who left has not for events after their leave,
   so "history up to the leave" follows from this rule;
4. ``invited`` and the user's membership is ``invite``: allow;
5. deny.

A missing or unknown visibility counts as ``shared``. `VisibilityFilter.filter` looks up each
state group once per call (most events of a page share one) and fetches the events it needs in
one go; `VisibilityFilter.scan` reads a room's history in batches until it has found enough
visible events (``/messages``, ``/context``, and the timeline of ``/sync``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from trioserver.stores.events import RoomPosition, StoredEvent

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from trioserver.events import Event
    from trioserver.handlers.event_filter import EventFilter
    from trioserver.stores.erasure import ErasureStore
    from trioserver.stores.events import EventStore
    from trioserver.stores.state import StateMap, StateStore

HISTORY_VISIBILITY = "m.room.history_visibility"
MEMBER = "m.room.member"
VISIBILITIES = ("world_readable", "shared", "invited", "joined")
_HV_KEY = (HISTORY_VISIBILITY, "")
# Events examined per scan at most, so that a strict filter or a long invisible stretch of
# history cannot make one request read a whole room; the client pages on with `end`.
MAX_SCAN = 5_000


@attrs.frozen
class Viewer:
    """The user events are filtered for.

    Attributes:
        user_id: the user.
        last_join_stream: stream ordering of their latest join of the room (None: never
            joined); rule 3 ("shared") compares events with it.
        ignored: users whose non-state events are hidden (spec "Ignoring Users": servers
            still send their state events).
        always: events shown whatever the rules say (/sync: the room's current state, as
            Synapse does, so that a client always learns the state it is in).
    """

    user_id: str
    last_join_stream: int | None
    ignored: frozenset[str] = frozenset()
    always: frozenset[str] = frozenset()


@attrs.frozen
class Snapshot:
    """What the rules read from one state map."""

    visibility: str
    membership: str | None


def visibility_of(event: Event | None) -> str:
    """The effective history visibility set by an event (``shared`` when absent or unknown)."""
    if event is None:
        return "shared"
    value = event.content.get("history_visibility")
    return value if isinstance(value, str) and value in VISIBILITIES else "shared"


def allowed_by(snapshot: Snapshot, viewer: Viewer, stream_ordering: int) -> bool:
    """Rules 1-5 above, for an event at `stream_ordering` and one state map."""
    if snapshot.visibility == "world_readable" or snapshot.membership == "join":
        return True
    if snapshot.visibility == "shared":
        return viewer.last_join_stream is not None and viewer.last_join_stream > stream_ordering
    return snapshot.visibility == "invited" and snapshot.membership == "invite"


def is_visible(
    stored: StoredEvent, viewer: Viewer, before: Snapshot | None, after: Snapshot
) -> bool:
    """Whether `viewer` may see the event, given the state after it and (for the two special
    state events) before it."""
    if allowed_by(after, viewer, stored.stream_ordering):
        return True
    if before is None:
        return False
    if (
        stored.event.state_key == viewer.user_id
        and after.membership == "leave"
        and before.membership in ("join", "invite")
    ):
        return True  # the user's own leave (Synapse: "otherwise they won't see the room go")
    return allowed_by(before, viewer, stored.stream_ordering)


def _ignored(stored: StoredEvent, viewer: Viewer) -> bool:
    return stored.event.state_key is None and stored.event.sender in viewer.ignored


def _special_key(stored: StoredEvent, user_id: str) -> bool:
    event = stored.event
    key = (event.type, event.state_key)
    return key == _HV_KEY or key == (MEMBER, user_id)


@attrs.frozen
class Page:
    """What a scan of room history found: visible events with the user's membership at each,
    the store cursor after the last event examined, whether history ran out, and how many
    events were examined (visible or not)."""

    events: list[tuple[StoredEvent, str]]
    cursor: RoomPosition
    exhausted: bool
    scanned: int = 0


class VisibilityFilter:
    """Applies the history visibility rules to batches of stored events."""

    def __init__(self, events: EventStore, state: StateStore, erasure: ErasureStore) -> None:
        self._events = events
        self._state = state
        self._erasure = erasure

    async def filter(
        self, stored: Sequence[StoredEvent], viewer: Viewer
    ) -> list[tuple[StoredEvent, str]]:
        """The events `viewer` may see, in order, each with their membership at it.

        The membership is the one after the event (spec ``unsigned.membership``: "including
        any changes caused by the event"), ``leave`` when they had none.

        Checkpoint: when a state group or state event is not cached.
        """
        if not stored:
            return []
        member_key = (MEMBER, viewer.user_id)
        groups = await self._group_states({s.state_group for s in stored})
        wanted: set[str] = set()
        for state in groups.values():
            wanted.update(e for k in (_HV_KEY, member_key) if (e := state.get(k)) is not None)
        wanted.update(
            s.replaces_state
            for s in stored
            if s.replaces_state is not None and _special_key(s, viewer.user_id)
        )
        found = await self._events.get_events(wanted)

        def event_at(event_id: str | None) -> Event | None:
            item = found.get(event_id) if event_id is not None else None
            return item.event if item is not None else None

        def snapshot(state: Mapping[tuple[str, str], str]) -> Snapshot:
            member = event_at(state.get(member_key))
            membership = member.membership if member is not None else None
            return Snapshot(visibility_of(event_at(state.get(_HV_KEY))), membership)

        after_by_group = {group: snapshot(state) for group, state in groups.items()}
        erased = await self._erasure.erased_among({s.event.sender for s in stored})
        result: list[tuple[StoredEvent, str]] = []
        for item in stored:
            after_state = groups[item.state_group]
            after = after_by_group[item.state_group]
            before = None
            if _special_key(item, viewer.user_id):
                key = (item.event.type, item.event.state_key or "")
                before = snapshot(_before(after_state, member_key, key, item.replaces_state))
            if item.event_id in viewer.always or (
                not _ignored(item, viewer) and is_visible(item, viewer, before, after)
            ):
                if item.event.sender in erased and after.membership != "join":
                    # An erased sender's events are served redacted to users who were not
                    # joined when they were sent (Synapse; SyTest 30rooms/32erasure).
                    item = attrs.evolve(item, event=item.event.redacted())
                result.append((item, after.membership or "leave"))
        return result

    async def scan(
        self,
        room_id: str,
        cursor: RoomPosition,
        bound: RoomPosition | None,
        *,
        backwards: bool,
        limit: int,
        event_filter: EventFilter,
        viewer: Viewer,
    ) -> Page:
        """Up to `limit` events after (or before) the store cursor that pass the filter and
        the visibility rules, reading the room in batches.

        Args:
            cursor: exclusive store cursor to start from.
            bound: inclusive store bound to stop at (None: the room's start or end).
        """
        found: list[tuple[StoredEvent, str]] = []
        scanned = 0
        while len(found) < limit and scanned < MAX_SCAN:
            batch_size = min(max(2 * (limit - len(found)), 20), MAX_SCAN - scanned)
            batch = await self._events.paginate(
                room_id, cursor, bound, backwards=backwards, limit=batch_size
            )
            candidates = [s for s in batch if event_filter.matches(s.event)]
            visible = {s.event_id: (s, m) for s, m in await self.filter(candidates, viewer)}
            for stored in batch:
                if stored.event_id in visible:
                    if len(found) == limit:
                        return Page(found, cursor, exhausted=False, scanned=scanned)
                    found.append(visible[stored.event_id])
                cursor = RoomPosition(stored.topological_ordering, stored.stream_ordering)
                scanned += 1
            if len(batch) < batch_size:
                return Page(found, cursor, exhausted=True, scanned=scanned)
        return Page(found, cursor, exhausted=False, scanned=scanned)

    async def _group_states(self, groups: Iterable[int | None]) -> dict[int | None, StateMap]:
        states: dict[int | None, StateMap] = {}
        for group in groups:
            states[group] = {} if group is None else await self._state.state_for_group(group)
        return states


def _before(
    state: Mapping[tuple[str, str], str],
    member_key: tuple[str, str],
    key: tuple[str, str],
    event_id: str | None,
) -> dict[tuple[str, str], str]:
    # The state before a state event at `key`: only the two keys the rules read matter, so
    # build a small map rather than copy `state`.
    small = {k: v for k in (_HV_KEY, member_key) if (v := state.get(k)) is not None}
    if event_id is None:
        small.pop(key, None)
    else:
        small[key] = event_id
    return small
