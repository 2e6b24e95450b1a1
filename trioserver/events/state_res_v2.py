"""State resolution v2 (room versions 2-11) and v2.1 (room version 12, MSC4297).

Theory of operation:
    The algorithm of Room Version 2, "State resolution", step by step:

    1. Split the state sets into the unconflicted state map and the
       conflicted state set; the *full conflicted set* adds the auth
       difference and, in v2.1, the conflicted state subgraph.  Events
       missing from the event map (or not state events) are dropped from it.
    2. Take the *power events* in the full conflicted set plus the events of
       their auth chains that are in it, and sort them in *reverse
       topological power ordering* (Kahn's algorithm; ties go to the higher
       sender power level, then the lower ``origin_server_ts``, then the
       lower event ID).
    3. Apply the *iterative auth checks* to them, starting from the
       unconflicted state (v2) or from an empty state map (v2.1).
    4. Sort the remaining events by *mainline ordering* based on the
       resolved power levels, and apply the iterative auth checks to them.
    5. Put the unconflicted state back on top.

    Choices where the text leaves room, matching Synapse and Ruma so that
    servers converge:

    * The create event counts as a power event.
    * The power-event graph follows ``auth_events`` edges *inside* the full
      conflicted set only (spec step 1: "the events in the auth chain of P
      which also belong to the full conflicted set").
    * The sender's power level for the ordering is read from the event's own
      ``auth_events`` (plus, in v12, the create event: creators have an
      infinite level).
    * The iterative auth checks build each event's auth state from its
      ``auth_events`` overlaid with the keys of the "auth events selection"
      found in the state resolved so far; rejected events are never used as
      auth events ("Rejected events"), but are themselves re-checked.  In v12
      the create event named by the room ID is always part of it.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

from trioserver.events import constants as c
from trioserver.events.auth import auth_types_for_event, check_auth_rules
from trioserver.events.constants import Membership
from trioserver.events.errors import AuthError
from trioserver.events.power_levels import get_user_power_level
from trioserver.events.room_versions import StateResolutionAlgorithm
from trioserver.events.state_res_common import (
    AuthChains,
    auth_difference,
    conflicted_subgraph,
    create_event_of,
    separate,
    state_event,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence, Set

    from trioserver.events.jsonutil import StateKey
    from trioserver.events.model import Event
    from trioserver.events.room_versions import RoomVersion
    from trioserver.events.state_res_common import StateMap

#: Sort key of the reverse topological power ordering: (-power level, ts, event ID).
PowerOrderKey = tuple[int, int, str]
#: The auth events a sender's power level depends on.
_LEVEL_KEYS = frozenset({c.POWER_LEVELS_KEY, c.CREATE_KEY})


def resolve_v2(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    chains: AuthChains,
    rejected_event_ids: Set[str],
) -> dict[StateKey, str]:
    """Resolve state sets with state resolution v2 or v2.1 (see the module docstring).

    Args:
        room_version: The room's version; v2.1 if its algorithm says so.
        state_sets: The state sets to resolve.
        event_map: The events named by the state sets and their auth chains.
        chains: Auth chains over ``event_map`` for this call.
        rejected_event_ids: Events never to be used as auth events.

    Returns:
        The resolved state map.
    """
    unconflicted, conflicted = separate(state_sets)
    if not conflicted:
        return unconflicted
    v2_1 = room_version.state_resolution is StateResolutionAlgorithm.V2_1
    conflicted_ids = set().union(*conflicted.values())
    full = conflicted_ids | auth_difference(state_sets, unconflicted, chains)
    if v2_1:
        full |= conflicted_subgraph(conflicted_ids, chains)
    full_set = {event_id for event_id in full if state_event(event_map, event_id) is not None}

    power_events = [e for e in full_set if is_power_event(event_map[e])]
    sorted_power = reverse_topological_power_sort(
        room_version, power_events, full_set, event_map, chains
    )
    # v12 (MSC4297): the first iterative auth checks start from an empty state map.
    base: dict[StateKey, str] = {} if v2_1 else dict(unconflicted)
    resolved = iterative_auth_checks(
        room_version, sorted_power, base, event_map, rejected_event_ids
    )
    # The rest, with any power events on an auth cycle (hostile v1/v2 IDs),
    # which the topological sort leaves out.
    done = set(sorted_power)
    remaining = mainline_sort(
        [e for e in full_set if e not in done],
        resolved.get(c.POWER_LEVELS_KEY),
        event_map,
    )
    resolved = iterative_auth_checks(
        room_version, remaining, resolved, event_map, rejected_event_ids
    )
    resolved.update(unconflicted)
    return resolved


def is_power_event(event: Event) -> bool:
    """Power levels, join rules, the create event, or a kick/ban by another user."""
    if event.state_key == "" and event.type in (c.POWER_LEVELS, c.JOIN_RULES, c.CREATE):
        return True
    return (
        event.type == c.MEMBER
        and event.membership in (Membership.LEAVE, Membership.BAN)
        and event.sender != event.state_key
    )


def reverse_topological_power_sort(
    room_version: RoomVersion,
    power_event_ids: Iterable[str],
    full_conflicted_set: Set[str],
    event_map: Mapping[str, Event],
    chains: AuthChains,
) -> list[str]:
    """Step 1: the power events and their auth chains in the full conflicted set, sorted.

    Args:
        room_version: The room's version.
        power_event_ids: The power events of the full conflicted set.
        full_conflicted_set: The full conflicted set (all known state events).
        event_map: The events.
        chains: Auth chains of this call (for the auth events of each event).

    Returns:
        The events from earliest to latest.
    """
    graph: dict[str, set[str]] = {}
    pending = list(power_event_ids)
    while pending:
        event_id = pending.pop()
        if event_id in graph:
            continue
        edges = {a for a in chains.auth_event_ids(event_id) if a in full_conflicted_set}
        graph[event_id] = edges
        pending.extend(a for a in edges if a not in graph)
    keys: dict[str, PowerOrderKey] = {}
    for event_id in graph:
        event = event_map[event_id]
        level = sender_power_level(room_version, event, event_map)
        keys[event_id] = (-level, event.origin_server_ts, event_id)
    return lexicographical_topological_sort(graph, keys.__getitem__)


def lexicographical_topological_sort(
    graph: Mapping[str, Set[str]], key: Callable[[str], PowerOrderKey]
) -> list[str]:
    """Kahn's algorithm, always taking the smallest ready node by ``key``.

    Args:
        graph: Node -> the nodes it points at (its auth events).  Edges to
            nodes outside ``graph`` are ignored.
        key: Total order used to choose among the nodes that are ready.

    Returns:
        Every node after the nodes it points at.  Nodes on a cycle (which
        hostile v1/v2 event IDs can create) never become ready and are left out.
    """
    waiting_on = {node: sum(1 for edge in edges if edge in graph) for node, edges in graph.items()}
    referrers: dict[str, list[str]] = {node: [] for node in graph}
    for node, edges in graph.items():
        for edge in edges:
            if edge in referrers:
                referrers[edge].append(node)
    ready = [(key(node), node) for node, count in waiting_on.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, node = heapq.heappop(ready)
        ordered.append(node)
        for referrer in referrers[node]:
            waiting_on[referrer] -= 1
            if waiting_on[referrer] == 0:
                heapq.heappush(ready, (key(referrer), referrer))
    return ordered


def sender_power_level(
    room_version: RoomVersion, event: Event, event_map: Mapping[str, Event]
) -> int:
    """The sender's power level "when looking at their respective auth_events".

    Args:
        room_version: The room's version.
        event: The event.
        event_map: The events (to look up the auth events).

    Returns:
        The level; :data:`~trioserver.events.power_levels.CREATOR_POWER_LEVEL`
        for v12 creators, 100 for the creator of a room without power levels.
    """
    auth_state: dict[StateKey, Event] = {}
    for auth_id in event.auth_event_ids:
        auth_event = state_event(event_map, auth_id)
        if auth_event is not None and (auth_event.type, auth_event.state_key) in _LEVEL_KEYS:
            auth_state[(auth_event.type, "")] = auth_event
    create = create_event_of(room_version, event, event_map)
    if create is not None:
        auth_state[c.CREATE_KEY] = create
    return get_user_power_level(room_version, event.sender, auth_state)


def iterative_auth_checks(
    room_version: RoomVersion,
    event_ids: Iterable[str],
    base_state: dict[StateKey, str],
    event_map: Mapping[str, Event],
    rejected_event_ids: Set[str],
) -> dict[StateKey, str]:
    """v2 "Iterative auth checks": apply each event to the state if the auth rules allow it.

    Args:
        room_version: The room's version.
        event_ids: Sorted state events (all in ``event_map``).
        base_state: The state to start from; updated in place and returned.
        event_map: The events.
        rejected_event_ids: Events never to be used as auth events.

    Returns:
        The resulting state map.
    """
    state = base_state
    for event_id in event_ids:
        event = event_map[event_id]
        auth_state = _auth_state(room_version, event, state, event_map, rejected_event_ids)
        try:
            check_auth_rules(room_version, event, auth_state)
        except AuthError:
            continue  # "If the state event is not allowed ... the event is ignored."
        assert event.state_key is not None  # only state events reach here
        state[(event.type, event.state_key)] = event_id
    return state


def _auth_state(
    room_version: RoomVersion,
    event: Event,
    state: StateMap,
    event_map: Mapping[str, Event],
    rejected: Set[str],
) -> dict[StateKey, Event]:
    """The state to authorise ``event`` against during the iterative auth checks."""
    auth_state: dict[StateKey, Event] = {}
    room_id = event.room_id
    # "If a (event_type, state_key) key that is required for checking the
    # authorization rules is not present in the state, then the appropriate
    # state event from the event's auth_events is used if the auth event is
    # not rejected."
    for auth_id in event.auth_event_ids:
        auth_event = state_event(event_map, auth_id)
        if auth_event is None or auth_id in rejected or auth_event.room_id != room_id:
            continue
        assert auth_event.state_key is not None
        auth_state[(auth_event.type, auth_event.state_key)] = auth_event
    keys = auth_types_for_event(
        room_version,
        type=event.type,
        sender=event.sender,
        state_key=event.state_key,
        content=event.content,
    )
    for key in keys:
        current_id = state.get(key)
        if current_id is None or current_id in rejected:
            continue
        current = state_event(event_map, current_id, key)
        if current is not None and current.room_id == room_id:
            auth_state[key] = current
    create = create_event_of(room_version, event, event_map)
    if create is not None and create.event_id not in rejected:
        auth_state[c.CREATE_KEY] = create  # v12: implied by the room ID
    return auth_state


def mainline_sort(
    event_ids: Sequence[str], power_levels_id: str | None, event_map: Mapping[str, Event]
) -> list[str]:
    """v2 "Mainline ordering" of ``event_ids`` based on the power levels event given.

    Args:
        event_ids: Events to sort (all in ``event_map``).
        power_levels_id: The resolved ``m.room.power_levels`` event, if any.
        event_map: The events.

    Returns:
        The events, earliest first.
    """
    if not event_ids:
        return []
    position: dict[str, int] = {}
    current = power_levels_id
    while current is not None and current not in position:
        position[current] = len(position)
        current = _power_levels_auth_event(current, event_map)
    # The spec's ∞ for events whose power levels chain never meets the mainline.
    beyond = len(position)
    memo: dict[str, int] = {}

    def mainline_position(event_id: str) -> int:
        walked: dict[str, None] = {}
        current = _power_levels_auth_event(event_id, event_map)
        while current is not None and current not in position and current not in memo:
            if current in walked:
                current = None  # a cycle (hostile v1/v2 event IDs)
                break
            walked[current] = None
            current = _power_levels_auth_event(current, event_map)
        if current is None:
            found = beyond
        else:
            found = position[current] if current in position else memo[current]
        memo.update(dict.fromkeys(walked, found))
        return found

    keys = {}
    for event_id in event_ids:
        event = event_map[event_id]
        keys[event_id] = (-mainline_position(event_id), event.origin_server_ts, event_id)
    return sorted(event_ids, key=keys.__getitem__)


def _power_levels_auth_event(event_id: str, event_map: Mapping[str, Event]) -> str | None:
    """The ``m.room.power_levels`` event among the auth events of ``event_id``."""
    event = event_map.get(event_id)
    if event is None:
        return None
    for auth_id in event.auth_event_ids:
        if state_event(event_map, auth_id, c.POWER_LEVELS_KEY) is not None:
            return auth_id
    return None
