"""State resolution v1 (room version 1).

Theory of operation:
    Room Version 1, "State resolution": start from the union of the state
    sets without the conflicting keys (a key is conflicted only if two sets
    name *different* events for it; a key missing from some sets is not),
    then resolve the conflicts in passes - power levels, join rules,
    memberships, everything else - each pass seeing the results of the
    previous ones.

    * Power levels, join rules and memberships: sort the candidates by
      ascending ``depth`` then descending ``sha1(event_id)``; take the first,
      then each next one while the auth rules allow it on top of the
      previous, and stop at the first that fails.
    * Other keys: the candidate with the highest depth (then lowest
      ``sha1(event_id)``) that passes the auth rules; if none does, the one
      with the lowest depth.

    The text does not say which state the auth rules are checked against
    beyond "R".  As Synapse does (and it is what rooms of this version were
    resolved with), it is the unconflicted state restricted to the keys the
    conflicted events need ("auth events selection"), plus the results of
    earlier passes; the events' own ``auth_events`` are not used.
    Candidates missing from the event map are skipped; a key left with one
    candidate takes it, a key left with none is dropped.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from trioserver.events import constants as c
from trioserver.events.auth import auth_types_for_event, check_auth_rules
from trioserver.events.errors import AuthError
from trioserver.events.state_res_common import state_event

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from trioserver.events.jsonutil import StateKey
    from trioserver.events.model import Event
    from trioserver.events.room_versions import RoomVersion
    from trioserver.events.state_res_common import StateMap

    _Resolver = Callable[[RoomVersion, list[Event], Mapping[StateKey, Event]], Event]


def resolve_v1(
    room_version: RoomVersion, state_sets: Sequence[StateMap], event_map: Mapping[str, Event]
) -> dict[StateKey, str]:
    """Resolve state sets with the room version 1 algorithm (see the module docstring).

    Args:
        room_version: The room's version.
        state_sets: The state sets to resolve.
        event_map: The conflicting events and the unconflicted events they need.

    Returns:
        The resolved state map.
    """
    if len(state_sets) <= 1:
        return dict(state_sets[0]) if state_sets else {}
    unconflicted, conflicted_ids = _separate(state_sets)
    conflicted: dict[StateKey, list[Event]] = {}
    for key, event_ids in conflicted_ids.items():
        found = [e for e in (state_event(event_map, i, key) for i in event_ids) if e is not None]
        if len(found) > 1:
            conflicted[key] = found
        elif found:
            unconflicted[key] = found[0].event_id
    auth = _auth_state(room_version, unconflicted, conflicted, event_map)
    resolved = dict(unconflicted)
    passes: list[tuple[Callable[[StateKey], bool], _Resolver]] = [
        (lambda key: key == c.POWER_LEVELS_KEY, _resolve_auth_events),
        (lambda key: key[0] == c.JOIN_RULES, _resolve_auth_events),
        (lambda key: key[0] == c.MEMBER, _resolve_auth_events),
        (lambda key: True, _resolve_normal_events),
    ]
    for selects, resolve in passes:
        keys = sorted(key for key in conflicted if selects(key) and key not in resolved)
        # Within a pass every key sees the same state: results land afterwards.
        results = {key: resolve(room_version, conflicted[key], auth) for key in keys}
        for key, event in results.items():
            auth[key] = event
            resolved[key] = event.event_id
    return resolved


def _separate(
    state_sets: Sequence[StateMap],
) -> tuple[dict[StateKey, str], dict[StateKey, set[str]]]:
    unconflicted: dict[StateKey, str] = {}
    conflicted: dict[StateKey, set[str]] = {}
    for state_set in state_sets:
        for key, event_id in state_set.items():
            if key in conflicted:
                conflicted[key].add(event_id)
            elif key not in unconflicted:
                unconflicted[key] = event_id
            elif unconflicted[key] != event_id:
                conflicted[key] = {unconflicted.pop(key), event_id}
    return unconflicted, conflicted


def _auth_state(
    room_version: RoomVersion,
    unconflicted: StateMap,
    conflicted: Mapping[StateKey, list[Event]],
    event_map: Mapping[str, Event],
) -> dict[StateKey, Event]:
    """The unconflicted events the conflicted events' auth rules read."""
    auth: dict[StateKey, Event] = {}
    for events in conflicted.values():
        for event in events:
            for key in _auth_types(room_version, event):
                event_id = unconflicted.get(key)
                found = state_event(event_map, event_id, key) if event_id is not None else None
                if found is not None:
                    auth[key] = found
    return auth


def _auth_types(room_version: RoomVersion, event: Event) -> list[StateKey]:
    return auth_types_for_event(
        room_version,
        type=event.type,
        sender=event.sender,
        state_key=event.state_key,
        content=event.content,
    )


def _allowed(room_version: RoomVersion, event: Event, auth: Mapping[StateKey, Event]) -> bool:
    try:
        check_auth_rules(room_version, event, auth)
    except AuthError:
        return False
    return True


def _order_key(event: Event) -> tuple[int, str]:
    """Highest depth first, then lowest sha1(event_id)."""
    # surrogatepass: event IDs from the network may hold lone surrogates.
    digest = hashlib.sha1(event.event_id.encode("utf-8", "surrogatepass"), usedforsecurity=False)
    return -event.depth, digest.hexdigest()


def _resolve_auth_events(
    room_version: RoomVersion, events: list[Event], auth: Mapping[StateKey, Event]
) -> Event:
    """Power levels, join rules, members: walk up from the lowest depth while allowed."""
    ascending = sorted(events, key=_order_key, reverse=True)
    keys = {key for event in events for key in _auth_types(room_version, event)}
    state = {key: auth[key] for key in keys if key in auth}
    previous = ascending[0]
    for event in ascending[1:]:
        assert previous.state_key is not None
        state[(previous.type, previous.state_key)] = previous
        if not _allowed(room_version, event, state):
            return previous
        previous = event
    return previous


def _resolve_normal_events(
    room_version: RoomVersion, events: list[Event], auth: Mapping[StateKey, Event]
) -> Event:
    """Other keys: the deepest event that passes the auth rules, else the shallowest."""
    descending = sorted(events, key=_order_key)
    for event in descending:
        if _allowed(room_version, event, auth):
            return event
    return descending[-1]
