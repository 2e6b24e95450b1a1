"""Placing events received from other servers in a room (issue 15), on the events writer.

Theory of operation
-------------------
A local event is built on the writer's view of the room, so it never forks. An event from
another server arrives already built: its ``prev_events`` may name several events (a fork), or
events this server does not have. The inbound handler (`trioserver.federation.inbound`) has
already checked its format, hashes and signatures; here, on the writer and in order, it is
judged against the room as the Server-Server API says ("Checks performed on receipt of a PDU"):

1. against its own ``auth_events`` (rejected if they fail, or are missing or rejected);
2. against the state before it: the state after its ``prev_events``, resolved with the room
   version's state resolution when they differ, or the state the remote server said was there
   (`ReceivedEvent.state_before`, for an event whose ``prev_events`` this server lacks: a join's
   ``send_join`` answer, a gap filled from ``/state_ids``) — rejected if it fails;
3. against the room's current state: an event that passes 1 and 2 but fails here is
   soft-failed: stored, with its state, but not shown to clients and not a forward extremity.

Rejected and soft-failed events, and outliers (auth-chain and state events stored only to be
referred to), are stored with ``outlier = 1``: every timeline and stream query skips them. A
rejected event gets no state of its own (its state group is the state before it); a
soft-failed one keeps the state after it, so that later events built on it can be placed.

The room's current state after an accepted event is the state after it when it descends
from every forward extremity, else the resolution of the current state with it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from trioserver.events import (
    AuthError,
    Event,
    RoomVersion,
    auth_types_for_event,
    check_auth_events,
    check_auth_rules,
    create_event_id_from_room_id,
    should_apply_redaction,
)
from trioserver.events.state_res import resolve_state_groups
from trioserver.storage.live_room import RoomView, StateKey

if TYPE_CHECKING:
    from trioserver.stores.events import StoredEvent

CREATE_KEY = ("m.room.create", "")
# Resolving state loads the auth chains of the state events; past this many events the
# event is not placed (a hostile room could otherwise make the writer load without end).
MAX_RESOLUTION_EVENTS = 200_000
# Rejected or soft-failed events walked back through, at most, to find replaced extremities.
MAX_SKIPPED_PREVS = 100

StateMap = Mapping[StateKey, str]


@attrs.frozen
class ReceivedEvent:
    """An event from another server, checked for format, hashes and signatures.

    Attributes:
        outlier: stored only to be referred to (an auth-chain or state event of a join or a
            gap): not placed in the timeline, not judged against the room's state.
        state_before: the state before the event as the remote server gave it, when this
            server does not have its ``prev_events``.
        out_of_band: a membership of a local user in a room this server is not in (an
            invite from another server, the leave rejecting it): stored as an outlier,
            unjudged (the room's state is not known here), but it sets the user's membership.
    """

    event: Event
    outlier: bool = False
    state_before: StateMap | None = None
    out_of_band: bool = False
    # History from before this server joined (`federation.backfill`): in the timeline below
    # every live event, on `state_before`, leaving current state and extremities alone.
    backfilled: bool = False


@attrs.frozen
class KnownEvent:
    """An event the writer can refer to: stored, or placed earlier in this batch."""

    event: Event
    # The state after it (None for outliers; the state before it for a rejected event).
    state_group: int | None
    rejected: str | None
    outlier: bool


@attrs.define
class PlacedEvent:
    """How a received event is to be stored."""

    event: Event
    outlier: bool
    rejected: str | None
    state_group: int | None
    # The full state after the event (None for outliers), for later events of the batch.
    state_after: dict[StateKey, str] | None
    # A new state group to store with it: (id, prev group, chain length, entries).
    new_group: tuple[int, int | None, int, dict[StateKey, str]] | None
    replaces_state: str | None
    applies_redaction_to: str | None = None
    out_of_band: bool = False
    backfilled: bool = False


class PlacementContext:
    """What placing needs from the writer: lookups that see this batch too, and ids."""

    def __init__(
        self,
        *,
        lookup: Callable[[Sequence[str]], Awaitable[dict[str, KnownEvent]]],
        state_of_group: Callable[[int], Awaitable[StateMap]],
        next_group_id: Callable[[], int],
        max_chain: int,
        outliers: Callable[[Sequence[str]], Awaitable[set[str]]] | None = None,
    ) -> None:
        self.lookup = lookup
        # Which of the events are kept outside the timeline (stored or in this batch).
        self.outliers = outliers
        self.state_of_group = state_of_group
        self.next_group_id = next_group_id
        self.max_chain = max_chain


def _rejected(reason: str) -> str:
    return reason[:500]


class ReceivedEventPlacer:
    """Judges and places received events on a `RoomView` (module docstring)."""

    def __init__(self, ctx: PlacementContext, view: RoomView) -> None:
        self._ctx = ctx
        self._view = view
        self._version: RoomVersion = view.room.room_version
        # Events placed by this request, so later events of it can refer to them.
        self._placed: dict[str, KnownEvent] = {}
        self._group_state: dict[int, StateMap] = {}
        # Chain lengths of the groups made here; a received event continues only those
        # chains (others are snapshotted over: simpler, and rarely more rows).
        self._chain_lengths: dict[int, int] = {}
        self._backfill_group: tuple[int, tuple[int, int | None, int, dict[StateKey, str]]] | None
        self._backfill_group = None
        self._backfill_group_used = False

    async def _lookup(self, event_ids: Sequence[str]) -> dict[str, KnownEvent]:
        found = {e: self._placed[e] for e in event_ids if e in self._placed}
        missing = [e for e in event_ids if e not in found]
        if missing:
            found.update(await self._ctx.lookup(missing))
        return found

    async def _state_of(self, group: int) -> StateMap:
        state = self._group_state.get(group)
        if state is None:
            state = await self._ctx.state_of_group(group)
        return state

    async def place(self, received: ReceivedEvent) -> PlacedEvent:
        """Judge one event and work out its storage; updates the view when it is accepted."""
        event = received.event
        if received.out_of_band:
            placed = PlacedEvent(event, True, None, None, None, None, None, out_of_band=True)
            return self._remember(placed, None)
        rejected = await self._check_own_auth_events(event)
        if received.backfilled and received.state_before is not None:
            return self._remember(self._backfilled(event, rejected, received.state_before), None)
        if received.outlier:
            return self._remember(PlacedEvent(event, True, rejected, None, None, None, None), None)
        before, before_group = await self._state_before(received)
        if before is None:
            # Nothing known to place it on: keep it for reference only.
            return self._remember(PlacedEvent(event, True, rejected, None, None, None, None), None)
        auth_state = await self._auth_state(event, before)
        if rejected is None:
            rejected = self._check(event, auth_state)
        replaced = (
            before.get((event.type, event.state_key)) if event.state_key is not None else None
        )
        event = await self._with_our_unsigned(event, replaced)
        if event.state_key is not None and rejected is None:
            after = dict(before)
            after[(event.type, event.state_key)] = event.event_id
            group, new_group = self._group_for(before_group, after, (event.type, event.state_key))
        else:
            after = dict(before)
            if before_group is not None:
                group, new_group = before_group, None
            else:
                group, new_group = self._snapshot(after)
        applies_to = None
        if rejected is None and event.type == "m.room.redaction":
            rejected = await self._check_redaction_target(event)
        if rejected is None and event.type == "m.room.redaction":
            applies_to = await self._redaction_target(event, auth_state)
        soft_failed = rejected is None and not await self._passes_current_state(event)
        placed = PlacedEvent(
            event,
            outlier=rejected is not None or soft_failed,
            rejected=rejected,
            state_group=group,
            state_after=after,
            new_group=new_group,
            replaces_state=replaced,
            applies_redaction_to=applies_to,
        )
        if not placed.outlier:
            await self._advance_room(event, after, group)
        return self._remember(placed, group)

    def _backfilled(self, event: Event, rejected: str | None, state: StateMap) -> PlacedEvent:
        # One snapshot of the state serves every backfilled event of the request.
        if self._backfill_group is None:
            self._backfill_group = self._snapshot(dict(state))
        group, new_group = self._backfill_group
        first = new_group if not self._backfill_group_used else None
        self._backfill_group_used = True
        return PlacedEvent(
            event,
            outlier=rejected is not None,
            rejected=rejected,
            state_group=group,
            state_after=None,
            new_group=first,
            replaces_state=None,
            backfilled=True,
        )

    def _remember(self, placed: PlacedEvent, group: int | None) -> PlacedEvent:
        self._placed[placed.event.event_id] = KnownEvent(
            placed.event, group, placed.rejected, placed.outlier
        )
        if group is not None and placed.state_after is not None:
            self._group_state.setdefault(group, placed.state_after)
        return placed

    async def _check_own_auth_events(self, event: Event) -> str | None:
        # Step 1: the event's own auth events, which must all be known and not rejected.
        ids = list(event.auth_event_ids)
        create_id = None
        if self._version.room_id_from_create_event and not event.is_create_event():
            # v12: the create event is not in auth_events; the room id names it.
            create_id = create_event_id_from_room_id(event.room_id)
            ids.append(create_id)
        found = await self._lookup(ids)
        missing = [e for e in event.auth_event_ids if e not in found]
        if missing:
            return _rejected(f"auth event {missing[0]} is not known")
        rejected_ids = frozenset(e for e, k in found.items() if k.rejected is not None)
        try:
            auth_map = check_auth_events(
                self._version,
                event,
                [k.event for k in found.values()],
                rejected_event_ids=rejected_ids,
                ignore_unselected=True,
            )
            create = found.get(create_id) if create_id is not None else None
            if create is not None:
                auth_map[CREATE_KEY] = create.event
            check_auth_rules(self._version, event, auth_map)
        except AuthError as err:
            return _rejected(err.reason)
        except ValueError as err:
            return _rejected(str(err))
        return None

    async def _state_before(
        self, received: ReceivedEvent
    ) -> tuple[dict[StateKey, str] | None, int | None]:
        prevs = await self._lookup(received.event.prev_event_ids)
        if received.state_before is not None:
            # The state given for the prev_events this server lacked, resolved with the
            # state after those it holds (an event joining a gap to the known graph). What
            # of it was rejected here is no state at all: a server cannot slip in a made-up
            # power levels event by naming it in a state answer (SyTest 36state).
            given = dict(received.state_before)
            known = await self._lookup(list(given.values()))
            given = {k: e for k, e in given.items() if e in known and known[e].rejected is None}
            held = sorted({k.state_group for k in prevs.values() if k.state_group is not None})
            sets = [given, *[await self._state_of(g) for g in held]]
            if len(sets) == 1:
                return dict(sets[0]), None
            return await self._resolve(sets), None
        groups = sorted({k.state_group for k in prevs.values() if k.state_group is not None})
        if not groups:
            return None, None
        if len(groups) == 1:
            return dict(await self._state_of(groups[0])), groups[0]
        sets = [await self._state_of(g) for g in groups]
        return await self._resolve(sets), None

    async def _resolve(
        self, sets: Sequence[StateMap], also: Event | None = None
    ) -> dict[StateKey, str]:
        # `also`: the event being placed, which the state after it names but which is not
        # stored (nor remembered) yet.
        distinct = {tuple(sorted(s.items())) for s in sets}
        if len(distinct) == 1:
            return dict(sets[0])
        ids = {e for s in sets for e in s.values()}
        if also is not None:
            ids.discard(also.event_id)
            ids.update(also.auth_event_ids)
        event_map = await self._load_auth_closure(ids)
        if also is not None:
            event_map[also.event_id] = also
        return resolve_state_groups(self._version, list(sets), event_map)

    async def _load_auth_closure(self, event_ids: set[str]) -> dict[str, Event]:
        # The state events and their auth chains, level by level (one lookup per level).
        loaded: dict[str, Event] = {}
        frontier = set(event_ids)
        while frontier and len(loaded) < MAX_RESOLUTION_EVENTS:
            found = await self._lookup(sorted(frontier))
            for event_id, known in found.items():
                loaded[event_id] = known.event
            frontier = {
                a for known in found.values() for a in known.event.auth_event_ids
            } - loaded.keys()
        return loaded

    async def _auth_state(self, event: Event, state: StateMap) -> dict[StateKey, Event]:
        keys = auth_types_for_event(
            self._version,
            type=event.type,
            sender=event.sender,
            state_key=event.state_key,
            content=event.content,
        )
        wanted = {k: state[k] for k in [*keys, CREATE_KEY] if k in state}
        found = await self._lookup(list(wanted.values()))
        return {k: found[e].event for k, e in wanted.items() if e in found}

    def _check(self, event: Event, auth_state: dict[StateKey, Event]) -> str | None:
        try:
            check_auth_rules(self._version, event, auth_state)
        except AuthError as err:
            return _rejected(err.reason)
        return None

    async def _passes_current_state(self, event: Event) -> bool:
        # Step 3 (soft failure). With no current state (this server is joining, or left the
        # room), there is nothing to judge against.
        view = self._view
        if not any(True for _ in view.items()):
            return True
        keys = auth_types_for_event(
            self._version,
            type=event.type,
            sender=event.sender,
            state_key=event.state_key,
            content=event.content,
        )
        auth_state = {k: e for k in [*keys, CREATE_KEY] if (e := view.get(k)) is not None}
        return self._check(event, auth_state) is None

    async def _with_our_unsigned(self, event: Event, replaced: str | None) -> Event:
        # The remote's unsigned data is its own; ours says what the event replaced.
        unsigned: dict[str, object] = {}
        if replaced is not None:
            unsigned["replaces_state"] = replaced
            known = (await self._lookup([replaced])).get(replaced)
            if known is not None:
                unsigned["prev_content"] = dict(known.event.content)
                unsigned["prev_sender"] = known.event.sender
        return event.with_unsigned(unsigned)

    def _group_for(
        self, before_group: int | None, after: dict[StateKey, str], key: StateKey
    ) -> tuple[int, tuple[int, int | None, int, dict[StateKey, str]] | None]:
        if before_group is not None:
            chain = self._chain_lengths.get(before_group)
            if chain is None and before_group == self._view.state_group:
                chain = self._view.chain_length
            if chain is not None and chain < self._ctx.max_chain:
                group = self._ctx.next_group_id()
                self._chain_lengths[group] = chain + 1
                return group, (group, before_group, chain + 1, {key: after[key]})
        return self._snapshot(after)

    def _snapshot(
        self, state: dict[StateKey, str]
    ) -> tuple[int, tuple[int, int | None, int, dict[StateKey, str]]]:
        group = self._ctx.next_group_id()
        self._chain_lengths[group] = 0
        self._group_state[group] = dict(state)
        return group, (group, None, 0, dict(state))

    async def _check_redaction_target(self, event: Event) -> str | None:
        # A redaction of an event of another room is rejected (as Synapse): it must not
        # reach the timeline as if it had redacted something. One that names itself is
        # kept, redacting nothing.
        target_id = event.redacts
        if target_id is None or target_id == event.event_id:
            return None
        target = (await self._lookup([target_id])).get(target_id)
        if target is not None and target.event.room_id != event.room_id:
            return "the redacted event is in another room"
        return None

    async def _redaction_target(
        self, event: Event, auth_state: dict[StateKey, Event]
    ) -> str | None:
        target_id = event.redacts
        if target_id is None:
            return None
        found = await self._lookup([target_id])
        target = found.get(target_id)
        if target is None or target.event.room_id != event.room_id:
            return None
        if should_apply_redaction(self._version, event, target.event, auth_state):
            return target_id
        return None

    async def _replaced_extremities(self, event: Event) -> set[str]:
        """The events `event` makes no longer forward extremities: its prev_events, and,
        through prev_events that are rejected or soft-failed (never extremities themselves),
        the events before them (as Synapse: otherwise an extremity behind a soft-failed
        event would stay one for ever)."""
        prevs = set(event.prev_event_ids)
        extremities = {e.event_id for e in self._view.extremities}
        frontier = [p for p in prevs if p not in extremities]
        for _ in range(MAX_SKIPPED_PREVS):
            if not frontier or self._ctx.outliers is None:
                break
            here = {p for p in frontier if p in self._placed}
            outside = {p for p in here if self._placed[p].outlier}
            outside |= await self._ctx.outliers([p for p in frontier if p not in here])
            known = await self._lookup(sorted(outside))
            frontier = [
                p for k in known.values() for p in k.event.prev_event_ids if p not in prevs
            ]
            prevs.update(frontier)
        return prevs

    async def _advance_room(
        self, event: Event, after: dict[StateKey, str], group: int | None
    ) -> None:
        view = self._view
        prevs = await self._replaced_extremities(event)
        current = {k: e.event_id for k, e in view.items()}
        # With no current state (joining, or rejoining after seed 4 dropped it) the old
        # extremities are stale: the room continues from the remote server's graph.
        remaining = [e for e in view.extremities if e.event_id not in prevs] if current else []
        view.extremities = [*remaining, event]
        view.depth = max(view.depth, event.depth)
        if remaining and current:
            new_state = await self._resolve([current, after], also=event)
        else:
            new_state = after
        changed = {k: e for k, e in new_state.items() if current.get(k) != e}
        if changed:
            found = await self._lookup([e for e in changed.values() if e != event.event_id])
            for key, event_id in changed.items():
                if event_id == event.event_id:
                    view.overlay[key] = event
                elif (known := found.get(event_id)) is not None:
                    view.overlay[key] = known.event
        # The room's current state is now a resolution no stored group may hold: the next
        # event snapshots it (see `EventPersister._state_group_for`).
        if not remaining and group is not None:
            view.state_group = group
            view.chain_length = self._chain_lengths.get(group, 0)
        else:
            view.state_group = None
            view.chain_length = 0


def stored_as_known(stored: StoredEvent, *, outlier: bool) -> KnownEvent:
    """A stored event as placement sees it."""
    return KnownEvent(stored.event, stored.state_group, stored.rejected, outlier)
