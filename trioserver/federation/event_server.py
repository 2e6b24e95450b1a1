"""Answering other servers' reads of the event graph: ``/event``, ``/state``, ``/state_ids``,
``/event_auth``, ``/backfill`` and ``/get_missing_events`` (Server-Server API).

Only a server that is in the room (one of its users is joined, or was joined or invited at
the event asked about) may read it; others get 403. Answers are bounded: a hostile request
cannot make this server walk the whole graph.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.events import get_server_name
from trioserver.federation.server_acl import check_room_acl

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from trioserver.events import Event
    from trioserver.stores.erasure import ErasureStore
    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.federation_inbound import FederationInboundStore
    from trioserver.stores.state import StateStore

MEMBER = "m.room.member"
MAX_BACKFILL = 100
MAX_MISSING = 100
# Auth chains served at most (a room's auth chain is its state's authorisation history).
MAX_AUTH_CHAIN = 100_000


def pdu_of(event: Event) -> dict[str, Any]:
    """The federation form of an event (no unsigned data of this server's)."""
    return event.get_pdu_json()


class EventServer:
    """Reads of the event graph for other servers (module docstring)."""

    def __init__(
        self,
        *,
        server_name: str,
        events: EventStore,
        state: StateStore,
        store: FederationInboundStore,
        erasure: ErasureStore | None = None,
    ) -> None:
        self._server_name = server_name
        self._erasure = erasure
        self._events = events
        self._state = state
        self._store = store

    def _envelope(self, pdus: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "origin": self._server_name,
            "origin_server_ts": int(time.time() * 1000),
            "pdus": pdus,
        }

    async def server_in_room(self, room_id: str, server: str) -> bool:
        """Whether `server` has a user joined to the room now."""
        suffix = ":" + server
        current = await self._state.current_state(room_id)
        member_ids = [e for (t, k), e in current.items() if t == MEMBER and k.endswith(suffix)]
        found = await self._events.get_events(member_ids)
        return any(s.event.membership == "join" for s in found.values())

    async def servers_in_room(self, room_id: str) -> list[str]:
        """The servers with a user joined to the room now (this one first when it is)."""
        current = await self._state.current_state(room_id)
        member_ids = [e for (t, _k), e in current.items() if t == MEMBER]
        found = await self._events.get_events(member_ids)
        servers = {
            get_server_name(s.event.state_key)
            for s in found.values()
            if s.event.membership == "join" and s.event.state_key is not None
        }
        first = [self._server_name] if self._server_name in servers else []
        return first + sorted(servers - {self._server_name})

    async def _check_may_read(self, room_id: str, origin: str) -> None:
        if await self._state.room_version(room_id) is None:
            raise MatrixError("M_NOT_FOUND", "Unknown room")
        await check_room_acl(self._state, self._events, room_id, origin)
        if not await self.server_in_room(room_id, origin):
            raise MatrixError("M_FORBIDDEN", f"Server {origin} is not in the room", status=403)

    async def _stored(self, event_id: str, room_id: str | None = None) -> StoredEvent:
        stored = await self._events.get_event(event_id)
        if stored is None or (room_id is not None and stored.room_id != room_id):
            raise MatrixError("M_NOT_FOUND", "Unknown event")
        return stored

    async def get_event(self, origin: str, event_id: str) -> dict[str, Any]:
        """``GET /event/{eventId}``."""
        stored = await self._stored(event_id)
        await self._check_may_read(stored.room_id, origin)
        return self._envelope(await self._served([stored]))

    def _as_served(self, stored: StoredEvent, erased: set[str] | None = None) -> Event:
        # Redacted events, and those of users erased with their account (GDPR erasure, as
        # Synapse serves them), go to other servers pruned.
        if stored.redacted_by is not None or (erased and stored.event.sender in erased):
            return stored.event.redacted()
        return stored.event

    async def _served(self, events: list[StoredEvent]) -> list[dict[str, Any]]:
        erased = set()
        if self._erasure is not None:
            erased = await self._erasure.erased_among({s.event.sender for s in events})
        return [pdu_of(self._as_served(s, erased)) for s in events]

    async def state_before(self, stored: StoredEvent) -> dict[tuple[str, str], str]:
        """The room's state before an event (its state group holds the state after it)."""
        if stored.state_group is None or stored.rejected is not None:
            # An outlier has no state here; a rejected event is not part of the room.
            raise MatrixError("M_NOT_FOUND", "No state is known at this event")
        state = dict(await self._state.state_for_group(stored.state_group))
        event = stored.event
        if event.state_key is not None and stored.rejected is None:
            key = (event.type, event.state_key)
            if state.get(key) == event.event_id:
                if stored.replaces_state is not None:
                    state[key] = stored.replaces_state
                else:
                    del state[key]
        return state

    async def auth_chain(self, event_ids: Iterable[str]) -> list[StoredEvent]:
        """The auth events of the events, recursively (not the events themselves), oldest
        first: a server reading the list in order ends on each key's latest event (as
        SyTest's and Synapse's readers do)."""
        seen: dict[str, StoredEvent] = {}
        start = await self._events.get_events(list(event_ids))
        frontier = {a for s in start.values() for a in s.event.auth_event_ids}
        while frontier and len(seen) < MAX_AUTH_CHAIN:
            found = await self._events.get_events(sorted(frontier))
            seen.update(found)
            frontier = {a for s in found.values() for a in s.event.auth_event_ids} - seen.keys()
        return sorted(seen.values(), key=lambda s: (s.topological_ordering, s.stream_ordering))

    async def _state_and_chain(
        self, origin: str, room_id: str, event_id: str
    ) -> tuple[list[StoredEvent], list[StoredEvent]]:
        await self._check_may_read(room_id, origin)
        stored = await self._stored(event_id, room_id)
        state_ids = list((await self.state_before(stored)).values())
        found = await self._events.get_events(state_ids)
        chain = await self.auth_chain(state_ids)
        return [found[e] for e in state_ids if e in found], chain

    async def state_ids(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``GET /state_ids/{roomId}?event_id=``: the state before the event, as ids."""
        state, chain = await self._state_and_chain(origin, room_id, event_id)
        return {
            "pdu_ids": [s.event_id for s in state],
            "auth_chain_ids": [s.event_id for s in chain],
        }

    async def state(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``GET /state/{roomId}?event_id=``: the state before the event."""
        state, chain = await self._state_and_chain(origin, room_id, event_id)
        return {
            "pdus": [pdu_of(s.event) for s in state],
            "auth_chain": [pdu_of(s.event) for s in chain],
        }

    async def event_auth(self, origin: str, room_id: str, event_id: str) -> dict[str, Any]:
        """``GET /event_auth/{roomId}/{eventId}``: the event's auth chain."""
        await self._check_may_read(room_id, origin)
        stored = await self._stored(event_id, room_id)
        chain = await self.auth_chain([stored.event_id])
        return {"auth_chain": [pdu_of(s.event) for s in chain]}

    async def backfill(
        self, origin: str, room_id: str, from_ids: Sequence[str], limit: int
    ) -> dict[str, Any]:
        """``GET /backfill/{roomId}?v=...&limit=``: the events before (and including) `v`,
        newest first, walking ``prev_events``."""
        await self._check_may_read(room_id, origin)
        limit = max(0, min(limit, MAX_BACKFILL))
        events = await self._walk_back(room_id, list(from_ids), set(), limit, include_start=True)
        return self._envelope(await self._served(events))

    async def missing_events(
        self,
        origin: str,
        room_id: str,
        earliest: Sequence[str],
        latest: Sequence[str],
        limit: int,
        min_depth: int,
    ) -> dict[str, Any]:
        """``POST /get_missing_events/{roomId}``: events between `earliest` and `latest`
        (excluding both), oldest first."""
        await self._check_may_read(room_id, origin)
        limit = max(0, min(limit, MAX_MISSING))
        events = await self._walk_back(
            room_id, list(latest), set(earliest), limit, include_start=False
        )
        events = [s for s in events if s.event.depth >= min_depth]
        events.sort(key=lambda s: (s.topological_ordering, s.stream_ordering))
        return {"events": await self._served(events)}

    async def _walk_back(
        self,
        room_id: str,
        start: list[str],
        stop: set[str],
        limit: int,
        *,
        include_start: bool,
    ) -> list[StoredEvent]:
        # Breadth-first over prev_events, newest (deepest) first.
        result: list[StoredEvent] = []
        seen = set(stop)
        if include_start:
            frontier = [e for e in start if e not in seen]
        else:
            seen.update(start)
            first = await self._store.prev_events(start)
            frontier = [p for e in start for p in first.get(e, []) if p not in seen]
        while frontier and len(result) < limit:
            found = await self._events.get_events(frontier)
            layer = sorted(
                (s for s in found.values() if s.room_id == room_id and s.event_id not in seen),
                key=lambda s: (-s.topological_ordering, s.event_id),
            )
            for stored in layer:
                if len(result) >= limit:
                    break
                seen.add(stored.event_id)
                result.append(stored)
            prevs = await self._store.prev_events([s.event_id for s in layer])
            frontier = sorted({p for ps in prevs.values() for p in ps} - seen)
        return result


def origin_of(user_id: str) -> str:
    """The server of a user id (already validated)."""
    return get_server_name(user_id)
