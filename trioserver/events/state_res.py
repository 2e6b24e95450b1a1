"""State resolution: merging the room states of several DAG branches into one.

Theory of operation:
    Server-server API, "Room State Resolution": the state before an event is
    the resolution of the states after its ``prev_events``.  How states are
    resolved depends on the room version
    (:attr:`~trioserver.events.room_versions.RoomVersion.state_resolution`):

    * v1 (room version 1): :mod:`.state_res_v1`.
    * v2 (room versions 2-11) and v2.1 (room version 12, MSC4297: the first
      iterative auth checks start from an empty state map, and the
      conflicted state subgraph joins the full conflicted set):
      :mod:`.state_res_v2`, with auth chains and conflicted sets in
      :mod:`.state_res_common`.

    Every "apply the authorization rules" step calls
    :func:`~trioserver.events.auth.check_auth_rules`; there is no second copy
    of the rules here.

    The functions are pure: no I/O, no clock.  The caller supplies every event
    the algorithm may look at - the events named by the state sets and their
    auth chains - in ``event_map``.  Input is not trusted: an event missing
    from ``event_map`` is treated as absent (a conflicted state event that is
    missing is skipped, a missing auth event is not used), so are events of
    another room than the state sets' create event, a state map entry
    naming an event of another type or state key is skipped like a missing
    one, and cyclic auth "chains" (possible with the sender-chosen event IDs
    of room versions 1 and 2) terminate.  Unconflicted entries are returned as
    given, whether or not their events are known.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.events.room_versions import StateResolutionAlgorithm
from trioserver.events.state_res_common import AuthChains, room_events
from trioserver.events.state_res_v1 import resolve_v1
from trioserver.events.state_res_v2 import resolve_v2

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence, Set

    from trioserver.events.jsonutil import StateKey
    from trioserver.events.model import Event
    from trioserver.events.room_versions import RoomVersion
    from trioserver.events.state_res_common import AuthChainFn, StateMap


def resolve_state_groups(
    room_version: RoomVersion,
    state_sets: Sequence[StateMap],
    event_map: Mapping[str, Event],
    auth_chain: AuthChainFn | None = None,
    *,
    rejected_event_ids: Set[str] = frozenset(),
) -> dict[StateKey, str]:
    """Resolve several room states into one, with the room version's algorithm.

    Pure and synchronous (no checkpoints); it never raises for any input of
    these types.  Cost: v2 walks the auth chains of the state sets once (or
    asks ``auth_chain`` once per state event), then only touches the full
    conflicted set, which for a small fork is small whatever the room's size.

    Args:
        room_version: The room's version; selects v1, v2 or v2.1.
        state_sets: The states to resolve, each ``(type, state_key) -> event_id``.
        event_map: Every event the resolution may read, by ID: the events of
            the state sets and their auth chains.  Missing events are treated
            as absent (see the module docstring).
        auth_chain: Optional source of auth chains: the IDs of every event in
            the auth chain of an event ID, *not* including that event (in v12,
            counting the create event as an auth event of every other event).
            Called at most once per event and call.  By default chains are
            walked in ``event_map``.  v1 does not use auth chains.
        rejected_event_ids: IDs of events this server has rejected.  They are
            never used as auth events in the v2 iterative auth checks (Room
            Version 2, "Rejected events"); as conflicted state they are checked
            again like any other event.  v1 ignores rejection.

    Returns:
        The resolved state, ``(type, state_key) -> event_id``; empty for no
        state sets, a copy of the one state set for one.
    """
    events = room_events(state_sets, event_map)
    if room_version.state_resolution is StateResolutionAlgorithm.V1:
        return resolve_v1(room_version, state_sets, events)
    chains = AuthChains(room_version, events, auth_chain)
    return resolve_v2(room_version, state_sets, events, chains, rejected_event_ids)
