"""Backfill: history from before this server joined a room, fetched from a server that has it
(Server-Server API, "Backfilling and retrieving missing events").

When ``/messages`` paging backwards runs out of events this server holds, and the earliest of
them names ``prev_events`` it does not have, the room's other servers are asked in turn for
the events before those (``/backfill``). What they send passes the usual format and signature
checks and is stored by the events writer as history: in the timeline, at its depth, but
with stream orderings below every live event's (so that /sync does not present it as new),
and without touching the room's current state or forward extremities.

The state at backfilled events is taken as the state before the earliest event already held
(exact for the events just before it; an approximation further back, where memberships may
have differed: visibility of older history follows the state this server joined with).
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from trioserver.federation.pdu_checks import PduRejected, check_pdu
from trioserver.storage.received_events import ReceivedEvent

if TYPE_CHECKING:
    from trioserver.events import Event, RoomVersion
    from trioserver.federation.event_server import EventServer
    from trioserver.federation.inbound import InboundTransactions
    from trioserver.federation.pdu_checks import EventVerifier
    from trioserver.storage.persistence import EventPersister
    from trioserver.stores.database import Database, Txn
    from trioserver.stores.events import EventStore

logger = logging.getLogger(__name__)

MAX_BACKFILL = 100
MAX_DRY_ROOMS = 10_000
# Servers asked in turn for one backfill at most.
MAX_SERVERS_TRIED = 5


def _earliest_txn(txn: Txn, room_id: str) -> str | None:
    row = txn.execute(
        "SELECT event_id FROM events WHERE room_id = ? AND outlier = 0"
        " ORDER BY topological_ordering, stream_ordering LIMIT 1",
        (room_id,),
    ).fetchone()
    return None if row is None else str(row[0])


class Backfiller:
    """Fetches history older than what this server holds (module docstring)."""

    def __init__(
        self,
        *,
        server_name: str,
        client: Any,
        db: Database,
        events: EventStore,
        event_server: EventServer,
        persister: EventPersister,
        verifier: EventVerifier,
        inbound: InboundTransactions,
    ) -> None:
        self._server_name = server_name
        self._client = client
        self._db = db
        self._events = events
        self._event_server = event_server
        self._persister = persister
        self._verifier = verifier
        self._inbound = inbound
        # Rooms whose history ran dry at this earliest event: not asked again for it.
        self._dry: collections.OrderedDict[str, str] = collections.OrderedDict()

    async def backfill(self, room_id: str, limit: int) -> list[str]:
        """Fetch up to `limit` events before the earliest one held; the ids of those stored
        (or brought into the timeline).

        Never raises for a remote failure: history is simply not extended.
        """
        earliest_id = await self._db.run_read("fed_earliest", _earliest_txn, room_id)
        if earliest_id is None:
            return []
        earliest = await self._events.get_event(earliest_id)
        if earliest is None or earliest.event.is_create_event():
            return []
        if self._dry.get(room_id) == earliest_id:
            return []
        prevs = earliest.event.prev_event_ids
        held = await self._events.get_events(prevs)
        missing = [p for p in prevs if p not in held or held[p].state_group is None]
        if not missing:
            return []
        version = await self._inbound.room_version_of(room_id)
        if version is None or earliest.state_group is None:
            return []
        servers = [
            s for s in await self._event_server.servers_in_room(room_id) if s != self._server_name
        ]
        for server in servers[:MAX_SERVERS_TRIED]:
            try:
                fetched = await self._fetch(server, version, room_id, missing, limit)
            except Exception as err:  # that server failed: ask the next one
                logger.info("backfill of %s from %s failed: %s", room_id, server, err)
                continue
            if not fetched:
                continue
            state = await self._event_server.state_before(earliest)
            received = [ReceivedEvent(e, state_before=state, backfilled=True) for e in fetched]
            await self._inbound.room_locks.run(
                room_id, self._persister.submit_received, room_id, version, received
            )
            return [e.event_id for e in fetched]
        self._remember_dry(room_id, earliest_id)
        return []

    def _remember_dry(self, room_id: str, earliest_id: str) -> None:
        self._dry[room_id] = earliest_id
        self._dry.move_to_end(room_id)
        if len(self._dry) > MAX_DRY_ROOMS:
            self._dry.popitem(last=False)

    async def _fetch(
        self, server: str, version: RoomVersion, room_id: str, from_ids: list[str], limit: int
    ) -> list[Event]:
        answer = await self._client.get_json(
            server,
            f"/_matrix/federation/v1/backfill/{quote(room_id, safe='')}",
            query={"v": from_ids, "limit": str(max(1, min(limit, MAX_BACKFILL)))},
        )
        pdus = answer.get("pdus") if isinstance(answer, dict) else None
        if not isinstance(pdus, list):
            return []
        checked: list[Event] = []
        for pdu in pdus[:MAX_BACKFILL]:
            try:
                event = await check_pdu(version, pdu, self._verifier)
            except PduRejected as err:
                logger.info("dropping a backfilled PDU: %s", err)
                continue
            if event.room_id == room_id:
                checked.append(event)
        held = await self._events.get_events([e.event_id for e in checked])
        # New events, and those held only as outliers (the join's state and auth chain),
        # which now take their place in the timeline.
        fresh = [
            e
            for e in checked
            if e.event_id not in held
            or (held[e.event_id].state_group is None and held[e.event_id].rejected is None)
        ]
        return sorted(fresh, key=lambda e: (e.depth, e.event_id))
