"""Receiving transactions from other servers: ``PUT /_matrix/federation/v1/send/{txnId}``.

Theory of operation
-------------------
A transaction carries up to 50 PDUs and 100 EDUs. It is idempotent per (origin, txn id): the
answer is kept and given again to a retry, and a retry arriving while the first copy is being
processed waits for it. Each PDU is handled on its own — a malformed or hostile one is
answered with an error in the transaction's ``pdus`` map and the others proceed — and PDUs of
different rooms are handled concurrently, each room in order under its own lock, so that a
slow or hostile room does not hold up the others.

Per PDU: the room must be one this server is in and whose ACL admits the origin; then the
format, signature and hash checks (`federation.pdu_checks`); then, when its ``prev_events``
are not all known, the gap is filled (`federation.gaps`); last, the events writer judges and
stores it (`storage.received_events`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from trioserver.errors import MatrixError
from trioserver.events import KNOWN_ROOM_VERSIONS, RoomVersion, compute_event_id
from trioserver.federation.pdu_checks import PduRejected, check_pdu
from trioserver.federation.server_acl import check_room_acl
from trioserver.storage.received_events import ReceivedEvent

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from trioserver.federation.gaps import GapFiller
    from trioserver.federation.pdu_checks import EventVerifier
    from trioserver.storage.persistence import EventPersister
    from trioserver.stores.events import EventStore
    from trioserver.stores.federation_inbound import FederationInboundStore
    from trioserver.stores.state import StateStore

logger = logging.getLogger(__name__)

MAX_PDUS = 50
MAX_EDUS = 100


class RoomLocks:
    """One lock per room, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[trio.Lock, list[int]]] = {}

    async def run(self, room_id: str, fn: Any, *args: Any) -> Any:
        """``await fn(*args)`` holding the room's lock."""
        lock, users = self._locks.setdefault(room_id, (trio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await fn(*args)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[room_id]


class InboundTransactions:
    """Handles ``PUT /send/{txnId}`` (module docstring)."""

    def __init__(
        self,
        *,
        server_name: str,
        persister: EventPersister,
        events: EventStore,
        state: StateStore,
        store: FederationInboundStore,
        verifier: EventVerifier,
        gaps: GapFiller,
    ) -> None:
        self._server_name = server_name
        self._server_suffix = ":" + server_name
        self._persister = persister
        self._events = events
        self._state = state
        self._store = store
        self._verifier = verifier
        self._gaps = gaps
        self.room_locks = RoomLocks()
        self._in_flight: dict[tuple[str, str], trio.Event] = {}
        # Told of every server that sends a transaction (the sender retries it at once).
        self.on_origin_seen: Callable[[str], None] | None = None

    async def on_transaction(self, origin: str, txn_id: str, body: Mapping[str, Any]) -> Any:
        """Process a transaction once; the ``{"pdus": {event_id: result}}`` answer.

        Raises:
            MatrixError: 400 for a body that is not a transaction.
        """
        pdus = body.get("pdus", [])
        edus = body.get("edus", [])
        if not isinstance(pdus, list) or not isinstance(edus, list):
            raise MatrixError("M_BAD_JSON", "pdus and edus must be lists")
        if len(pdus) > MAX_PDUS or len(edus) > MAX_EDUS:
            raise MatrixError("M_BAD_JSON", f"At most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs")
        if self.on_origin_seen is not None:
            self.on_origin_seen(origin)
        key = (origin, txn_id)
        while (running := self._in_flight.get(key)) is not None:
            await running.wait()  # a retry of a transaction still being processed
        earlier = await self._store.txn_response(origin, txn_id)
        if earlier is not None:
            return earlier
        done = trio.Event()
        self._in_flight[key] = done
        try:
            response: dict[str, object] = {"pdus": await self._process_pdus(origin, pdus)}
            await self._store.store_txn_response(origin, txn_id, response)
            return response
        finally:
            del self._in_flight[key]
            done.set()

    async def _process_pdus(self, origin: str, pdus: list[Any]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        by_room: dict[str, list[Any]] = {}
        for pdu in pdus:
            room_id = pdu.get("room_id") if isinstance(pdu, dict) else None
            if not isinstance(room_id, str):
                logger.info("dropping a PDU without a room from %s", origin)
                continue
            by_room.setdefault(room_id, []).append(pdu)

        async def room_task(room_id: str, room_pdus: list[Any]) -> None:
            for pdu in room_pdus:
                event_id, error = await self.room_locks.run(
                    room_id, self._handle_pdu, origin, room_id, pdu
                )
                if event_id is not None:
                    results[event_id] = {} if error is None else {"error": error}

        async with trio.open_nursery() as nursery:
            for room_id, room_pdus in by_room.items():
                nursery.start_soon(room_task, room_id, room_pdus)
        return results

    async def room_version_of(self, room_id: str) -> RoomVersion | None:
        """The version of a room this server knows, or None."""
        version = await self._state.room_version(room_id)
        return None if version is None else KNOWN_ROOM_VERSIONS.get(version)

    async def check_acl(self, room_id: str, origin: str) -> None:
        """Refuse (403) a server the room's ``m.room.server_acl`` denies."""
        await check_room_acl(self._state, self._events, room_id, origin)

    async def _handle_pdu(
        self, origin: str, room_id: str, pdu: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        """(event id, error or None); the event id is None when it cannot be worked out."""
        try:
            return await self._judge_pdu(origin, room_id, pdu)
        except PduRejected as err:
            logger.info("rejected a PDU from %s in %s: %s", origin, room_id, err)
            return await self._event_id_of(room_id, pdu), str(err)
        except MatrixError as err:
            return await self._event_id_of(room_id, pdu), err.message
        except Exception:  # boundary: one PDU's bug must not fail the transaction
            logger.exception("handling a PDU from %s in %s failed", origin, room_id)
            return await self._event_id_of(room_id, pdu), "Internal error"

    async def _event_id_of(self, room_id: str, pdu: dict[str, Any]) -> str | None:
        # The id an error is reported under: in the PDU (v1, v2), else its reference hash.
        event_id = pdu.get("event_id")
        if isinstance(event_id, str):
            return event_id
        version = await self.room_version_of(room_id)
        if version is None or version.event_id_in_pdu:
            return None
        try:
            return compute_event_id(version, pdu)
        except Exception:  # not even hashable as an event: reported under no id
            return None

    async def _judge_pdu(
        self, origin: str, room_id: str, pdu: dict[str, Any]
    ) -> tuple[str | None, str | None]:
        version = await self.room_version_of(room_id)
        if version is None:
            raise PduRejected(f"room {room_id} is not known to this server")
        event = await check_pdu(version, pdu, self._verifier)
        if not await self._in_room(room_id):
            return event.event_id, "This server is not in the room"
        await self.check_acl(room_id, origin)
        if await self._events.get_event(event.event_id) is not None:
            return event.event_id, None  # seen before (another server sent it, or a retry)
        before = await self._gaps.fill(origin, version, event)
        stored = await self._persister.submit_received(
            room_id, version, [*before.events, ReceivedEvent(event, state_before=before.state)]
        )
        mine = next((s for s in stored if s.event_id == event.event_id), None)
        if mine is not None and mine.rejected is not None:
            # Received and stored as rejected: the transaction's answer is {} for it, as
            # Synapse answers (an error is for PDUs that could not be taken at all).
            logger.info("rejected %s from %s: %s", event.event_id, origin, mine.rejected)
        return event.event_id, None

    async def _in_room(self, room_id: str) -> bool:
        # Seed 4: once no local user is joined the server holds no current state of the room,
        # and events for it are not accepted (it would have to rejoin first).
        return bool(await self._state.current_state_entries(room_id, [("m.room.create", "")]))
