"""Filling a gap before a received event: its ``prev_events`` are not all known here.

Spec (Server-Server API, "Retrieving events" and "PDUs"): first ask the sending server for the
missing events between this server's forward extremities and the event
(``/get_missing_events``, bounded); if that does not reach known events, ask for the state
before the missing ``prev_event`` (``/state``), store that state and its auth chain as
outliers, and place the event on it. Every fetched PDU passes the same format and signature
checks as a pushed one; what fails them is left out.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import attrs

import trio

from trioserver.federation.pdu_checks import PduRejected, check_pdu
from trioserver.storage.received_events import ReceivedEvent

if TYPE_CHECKING:
    from trioserver.events import Event, RoomVersion
    from trioserver.federation.pdu_checks import EventVerifier
    from trioserver.stores.events import EventStore
    from trioserver.stores.federation_inbound import FederationInboundStore

logger = logging.getLogger(__name__)

# Missing events asked for at most per received event (Synapse asks for 10).
MISSING_EVENTS_LIMIT = 10
# State and auth-chain PDUs accepted from one /state answer at most.
MAX_STATE_PDUS = 50_000
# Without /state, events fetched one by one at most, and how many at a time.
MAX_EVENTS_FETCHED_ONE_BY_ONE = 1_000
EVENT_FETCH_CONCURRENCY = 10

StateMap = Mapping[tuple[str, str], str]


@attrs.frozen
class Gap:
    """What to store before the event, and the state before it when it cannot be derived."""

    events: list[ReceivedEvent]
    state: dict[tuple[str, str], str] | None


def sort_by_auth(events: Iterable[Event]) -> list[Event]:
    """Events ordered so each comes after its auth events of the set (then by depth, id)."""
    by_id = {e.event_id: e for e in events}
    ordered: list[Event] = []
    placed: set[str] = set()
    visiting: set[str] = set()

    def visit(event: Event) -> None:
        # Iterative depth-first walk: auth chains of large rooms are deep.
        stack: list[tuple[Event, bool]] = [(event, False)]
        while stack:
            current, expanded = stack.pop()
            if current.event_id in placed:
                continue
            if expanded:
                placed.add(current.event_id)
                visiting.discard(current.event_id)
                ordered.append(current)
                continue
            if current.event_id in visiting:
                continue  # a cycle (hostile input): break it here
            visiting.add(current.event_id)
            stack.append((current, True))
            for auth_id in current.auth_event_ids:
                auth = by_id.get(auth_id)
                if auth is not None and auth_id not in placed:
                    stack.append((auth, False))

    for event in sorted(by_id.values(), key=lambda e: (e.depth, e.event_id)):
        visit(event)
    return ordered


class GapFiller:
    """Fetches what a received event needs before it can be placed (module docstring)."""

    def __init__(
        self,
        *,
        client: Any,
        events: EventStore,
        store: FederationInboundStore,
        verifier: EventVerifier,
    ) -> None:
        self._client = client
        self._events = events
        self._store = store
        self._verifier = verifier

    async def fill(self, origin: str, version: RoomVersion, event: Event) -> Gap:
        """The events to store before `event` (and its state, when fetched).

        The missing events are asked for first; where the oldest of them (or `event`
        itself) still names ``prev_events`` that are not held, the state after such a
        ``prev_event`` is fetched and the event placed on it.

        Raises:
            PduRejected: the gap could not be filled (the origin did not answer usefully).
        """
        if await self._placeable(event.prev_event_ids, set()):
            return Gap([], None)
        chain = await self._missing_events(origin, version, event)
        fetched = {e.event_id for e in chain}
        every = [p for e in [*chain, event] for p in e.prev_event_ids if p not in fetched]
        known = await self._events.get_events(every)
        held = {p for p, s in known.items() if s.state_group is not None}
        outliers: list[Event] = []
        received: list[ReceivedEvent] = []
        for item in [*chain, event]:
            missing = [p for p in item.prev_event_ids if p not in fetched and p not in held]
            if not missing:
                if item is not event:
                    received.append(ReceivedEvent(item))
                continue
            if item is event:
                # The pushed event itself must connect to what is held once the missing
                # events are in (Synapse refuses it too); only pulled events get fetched state.
                raise PduRejected(
                    "Your server isn't divulging details about prev_events referenced in"
                    " this event"
                )
            if len(received) + len(outliers) > MAX_STATE_PDUS:
                break
            # Placed on this state and on the state after its held prev_events, resolved
            # together (`storage.received_events`).
            events, state = await self._state_after(origin, version, item, missing[0])
            outliers.extend(events)
            received.append(ReceivedEvent(item, state_before=state))
        seen: set[str] = set()
        before = []
        for outlier in sort_by_auth(outliers):
            if outlier.event_id not in seen and outlier.event_id not in fetched:
                seen.add(outlier.event_id)
                before.append(ReceivedEvent(outlier, outlier=True))
        return Gap([*before, *received], None)

    async def _placeable(self, prev_ids: list[str], also: set[str]) -> bool:
        ids = [p for p in prev_ids if p not in also]
        if not ids:
            return True
        known = await self._events.get_events(ids)
        return all(p in known and known[p].state_group is not None for p in ids)

    async def _checked(self, version: RoomVersion, room_id: str, pdus: Any) -> list[Event]:
        if not isinstance(pdus, list):
            return []
        checked = []
        for pdu in pdus[:MAX_STATE_PDUS]:
            try:
                fetched = await check_pdu(version, pdu, self._verifier)
            except PduRejected as err:
                logger.info("dropping a fetched PDU: %s", err)
                continue
            if fetched.room_id == room_id:
                checked.append(fetched)
        return checked

    async def _missing_events(
        self, origin: str, version: RoomVersion, event: Event
    ) -> list[Event]:
        earliest = await self._store.forward_extremities(event.room_id)
        path = f"/_matrix/federation/v1/get_missing_events/{quote(event.room_id, safe='')}"
        body = {
            "earliest_events": earliest,
            "latest_events": [event.event_id],
            "limit": MISSING_EVENTS_LIMIT,
            "min_depth": 0,
        }
        try:
            answer = await self._client.post_json(origin, path, body)
        except Exception as err:  # any failure of the remote: fall back to its state
            logger.info("get_missing_events from %s failed: %s", origin, err)
            return []
        events = answer.get("events") if isinstance(answer, dict) else None
        chain = await self._checked(version, event.room_id, events)
        return sorted(
            (e for e in chain if e.event_id != event.event_id), key=lambda e: (e.depth, e.event_id)
        )

    async def _fetch_events(
        self, origin: str, version: RoomVersion, room_id: str, at: str, event_ids: list[str]
    ) -> list[Event]:
        """The state and auth events this server lacks: all at once from ``/state``, or, from
        a server that does not serve it, one ``/event`` each (a few at a time, bounded)."""
        room = quote(room_id, safe="")
        try:
            answer = await self._client.get_json(
                origin, f"/_matrix/federation/v1/state/{room}", query={"event_id": at}
            )
        except Exception as err:
            logger.info("/state from %s failed (%s): fetching events one by one", origin, err)
        else:
            if isinstance(answer, dict):
                return [
                    *await self._checked(version, room_id, answer.get("pdus")),
                    *await self._checked(version, room_id, answer.get("auth_chain")),
                ]
        found: list[Event] = []

        async def fetch(event_id: str) -> None:
            try:
                one = await self._client.get_json(
                    origin, f"/_matrix/federation/v1/event/{quote(event_id, safe='')}"
                )
            except Exception as err:  # that event is missing from the state, then
                logger.info("fetching %s from %s failed: %s", event_id, origin, err)
                return
            pdus = one.get("pdus") if isinstance(one, dict) else None
            found.extend(await self._checked(version, room_id, pdus))

        limiter = trio.CapacityLimiter(EVENT_FETCH_CONCURRENCY)

        async def limited(event_id: str) -> None:
            async with limiter:
                await fetch(event_id)

        async with trio.open_nursery() as nursery:
            for event_id in event_ids[:MAX_EVENTS_FETCHED_ONE_BY_ONE]:
                nursery.start_soon(limited, event_id)
        return found

    async def _state_after(
        self, origin: str, version: RoomVersion, event: Event, prev_id: str
    ) -> tuple[list[Event], dict[tuple[str, str], str]]:
        """The events to keep as outliers, and the state after `prev_id` (the state before
        it from ``/state_ids``, with it; the events this server lacks from ``/state``)."""
        room = quote(event.room_id, safe="")
        try:
            ids = await self._client.get_json(
                origin, f"/_matrix/federation/v1/state_ids/{room}", query={"event_id": prev_id}
            )
            prev_answer = await self._client.get_json(
                origin, f"/_matrix/federation/v1/event/{quote(prev_id, safe='')}"
            )
        except Exception as err:
            raise PduRejected(f"could not fetch the state before the event: {err}") from None
        if not isinstance(ids, dict) or not isinstance(prev_answer, dict):
            raise PduRejected("the state answer is not an object")
        prev_list = await self._checked(version, event.room_id, prev_answer.get("pdus"))
        prev = next((e for e in prev_list if e.event_id == prev_id), None)
        if prev is None:
            raise PduRejected(f"could not fetch the missing event {prev_id}")
        state_ids = _id_list(ids.get("pdu_ids"))
        wanted = [*state_ids, *_id_list(ids.get("auth_chain_ids"))][:MAX_STATE_PDUS]
        held = await self._events.get_events(wanted)
        fetched: list[Event] = []
        lacking = [e for e in wanted if e not in held]
        if lacking:
            fetched = await self._fetch_events(origin, version, event.room_id, prev_id, lacking)
        by_id = {s.event_id: s.event for s in held.values()}
        by_id.update({e.event_id: e for e in fetched})
        state = {
            (e.type, e.state_key): e.event_id
            for event_id in state_ids
            if (e := by_id.get(event_id)) is not None and e.state_key is not None
        }
        if prev.state_key is not None:
            state[(prev.type, prev.state_key)] = prev.event_id
        return [*fetched, prev], state


def _id_list(value: Any) -> list[str]:
    return [e for e in value if isinstance(e, str)] if isinstance(value, list) else []
