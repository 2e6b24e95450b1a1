"""Shared pieces of state resolution: event lookups, auth chains, conflicted sets.

Theory of operation:
    State resolution works on *state maps* (``(type, state_key) -> event_id``)
    and an ``event_map`` holding the events they name together with their
    auth chains.  Everything here is pure and tolerant of incomplete or
    hostile input: a missing event is treated as absent, an auth DAG with a
    cycle (possible with the sender-chosen event IDs of room versions 1 and 2)
    terminates, and nothing recurses, so 10,000-event chains are fine.

    Room version 12 (MSC4291) never lists the create event in ``auth_events``:
    the room ID names it.  It is still an auth event of every other event, so
    :func:`auth_event_ids` adds it, as Synapse does when it reads a v12 event's
    auth events.

    :class:`AuthChains` answers "which events are in the auth chains of these
    events" once per resolution.  By default it walks ``auth_events`` in the
    ``event_map``; a store with an auth chain index can inject per-event chains
    instead, which are memoised for the duration of the call.

    The auth difference (v2 "Auth difference") is union(C) - intersection(C)
    over the full auth chains C[i] of the state sets.  As in Synapse and Ruma,
    C[i] includes the state events of S[i] themselves.  The events every state
    set shares (the unconflicted state) contribute the same chain U to every
    C[i], so with D[i] the chain of the rest of S[i]::

        union(C) - intersection(C) = union(D - U) - intersection(D - U)

    U is computed once and the walks for D[i] - U stop at U (it is closed
    under "is an auth event of"), so a 10,000-event room with a small
    fork costs one walk of its auth DAG plus a few small ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence, Set
from typing import TYPE_CHECKING

from trioserver.events.constants import CREATE_KEY
from trioserver.events.hashing import create_event_id_from_room_id
from trioserver.events.jsonutil import StateKey

if TYPE_CHECKING:
    from trioserver.events.model import Event
    from trioserver.events.room_versions import RoomVersion

#: A room state: ``(event type, state key) -> event ID``.
StateMap = Mapping[StateKey, str]
#: The full auth chain of an event ID, *excluding* the event itself.
AuthChainFn = Callable[[str], Set[str]]


class RoomEvents(Mapping[str, "Event"]):
    """``event_map`` without the events of other rooms.

    An event citing an auth event of another room fails "Checks performed on
    receipt of a PDU", so honest state never needs one; a hostile one must
    not steer the orderings either.
    """

    def __init__(self, event_map: Mapping[str, Event], room_id: str) -> None:
        self._event_map = event_map
        self._room_id = room_id

    def __getitem__(self, event_id: str) -> Event:
        event = self._event_map[event_id]
        if event.room_id != self._room_id:
            raise KeyError(event_id)
        return event

    def __iter__(self) -> Iterator[str]:
        return (e for e, event in self._event_map.items() if event.room_id == self._room_id)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def room_events(
    state_sets: Sequence[StateMap], event_map: Mapping[str, Event]
) -> Mapping[str, Event]:
    """``event_map`` restricted to the room of the state sets' create event.

    Returns ``event_map`` itself when the state sets do not name exactly one
    known create event (the room cannot be told then).
    """
    creates = {s[CREATE_KEY] for s in state_sets if CREATE_KEY in s}
    known = [c for c in creates if state_event(event_map, c, CREATE_KEY) is not None]
    if len(creates) != 1 or not known:
        return event_map
    return RoomEvents(event_map, event_map[known[0]].room_id)


def state_event(
    event_map: Mapping[str, Event], event_id: str, key: StateKey | None = None
) -> Event | None:
    """The state event ``event_id`` if it is known (and has state key ``key``, if given)."""
    event = event_map.get(event_id)
    if event is None or event.state_key is None:
        return None
    if key is not None and (event.type, event.state_key) != key:
        return None
    return event


def create_event_of(
    room_version: RoomVersion, event: Event, event_map: Mapping[str, Event]
) -> Event | None:
    """v12: the create event the room ID of ``event`` names, if it is known."""
    if not room_version.room_id_from_create_event or event.is_create_event():
        return None
    create = event_map.get(create_event_id_from_room_id(event.room_id))
    return create if create is not None and create.is_create_event() else None


def auth_event_ids(room_version: RoomVersion, event: Event) -> list[str]:
    """The auth events of ``event``, with the implied create event in v12."""
    ids = event.auth_event_ids
    if room_version.room_id_from_create_event and not event.is_create_event():
        ids.append(create_event_id_from_room_id(event.room_id))
    return ids


class AuthChains:
    """Ancestor sets in the auth DAG of one resolution call."""

    def __init__(
        self,
        room_version: RoomVersion,
        event_map: Mapping[str, Event],
        auth_chain: AuthChainFn | None = None,
    ) -> None:
        """Args:
        room_version: The room's version (v12 implies the create event).
        event_map: The events, by ID.
        auth_chain: Optional per-event auth chains (without the event itself),
            e.g. from a store's index; the default walks ``event_map``.
        """
        self._room_version = room_version
        self._event_map = event_map
        self._auth_chain = auth_chain
        self._memo: dict[str, Set[str]] = {}

    def auth_event_ids(self, event_id: str) -> Sequence[str]:
        """The auth events of ``event_id``; none if the event is unknown."""
        event = self._event_map.get(event_id)
        return auth_event_ids(self._room_version, event) if event is not None else ()

    def ancestors(self, roots: Iterable[str], stop: Set[str] = frozenset()) -> set[str]:
        """``roots`` and their auth chains, leaving out ``stop`` and what lies behind it.

        ``stop`` must be closed under "is an auth event of" (the ancestors of
        some events), so that not walking through it loses nothing outside it.
        Unknown events are included by ID but have no auth events.
        """
        if self._auth_chain is not None:
            return self._ancestors_from_index(roots, stop)
        found = {root for root in roots if root not in stop}
        pending = list(found)
        while pending:
            for auth_id in self.auth_event_ids(pending.pop()):
                if auth_id not in found and auth_id not in stop:
                    found.add(auth_id)
                    pending.append(auth_id)
        return found

    def _ancestors_from_index(self, roots: Iterable[str], stop: Set[str]) -> set[str]:
        assert self._auth_chain is not None
        found: set[str] = set()
        for root in roots:
            # A root already found lies in the chain of another root, and so
            # does its own chain.
            if root in stop or root in found:
                continue
            chain = self._memo.get(root)
            if chain is None:
                chain = self._memo[root] = self._auth_chain(root)
            found.add(root)
            found.update(chain - stop if stop else chain)
        return found


def separate(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    """Split state sets into the unconflicted state map and the conflicted state set.

    v2 "Unconflicted state map and conflicted state set": a key is
    unconflicted only if *every* state map has it with the same event.

    Returns:
        The unconflicted map and, per conflicted key, the events seen for it.
    """
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    if not state_sets:
        return unconflicted, conflicted
    first, rest = state_sets[0], state_sets[1:]
    for key, event_id in first.items():
        if all(other.get(key) == event_id for other in rest):
            unconflicted[key] = event_id
    for state_set in state_sets:
        for key, event_id in state_set.items():
            if key not in unconflicted:
                conflicted.setdefault(key, set()).add(event_id)
    return unconflicted, conflicted


def auth_difference(
    state_sets: Sequence[StateMap], unconflicted: StateMap, chains: AuthChains
) -> set[str]:
    """v2 "Auth difference": events in some but not all full auth chains.

    Args:
        state_sets: The state sets being resolved.
        unconflicted: Their unconflicted state map (its events are in every set).
        chains: Auth chains of this call.

    Returns:
        Event IDs (possibly of events missing from the event map).
    """
    common = frozenset(unconflicted.values())
    shared = chains.ancestors(common)
    own_parts = [
        chains.ancestors([e for e in state_set.values() if e not in common], stop=shared)
        for state_set in state_sets
    ]
    if not own_parts:
        return set()
    first, rest = own_parts[0], own_parts[1:]
    return first.union(*rest) - first.intersection(*rest)


def conflicted_subgraph(conflicted_ids: Set[str], chains: AuthChains) -> set[str]:
    """v12 "Conflicted state subgraph": events on auth paths between conflicted events.

    An event is on such a path if it is in the auth chain of a conflicted
    event and a conflicted event is in its own auth chain.  The conflicted
    events themselves are included (the paths' endpoints).

    Args:
        conflicted_ids: The conflicted state set.
        chains: Auth chains of this call.

    Returns:
        The subgraph's event IDs.
    """
    below = chains.ancestors(conflicted_ids)
    referrers: dict[str, list[str]] = {}
    for event_id in below:
        for auth_id in chains.auth_event_ids(event_id):
            if auth_id in below:
                referrers.setdefault(auth_id, []).append(event_id)
    # Walk up from the conflicted events, staying inside their auth chains.
    found = set(conflicted_ids)
    pending = list(found)
    while pending:
        for referrer in referrers.get(pending.pop(), ()):
            if referrer not in found:
                found.add(referrer)
                pending.append(referrer)
    return found
