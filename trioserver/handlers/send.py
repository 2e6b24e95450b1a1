"""Sending events from clients: messages, state and redactions.

Every event goes through the persistence controller (`EventPersister.submit`), which builds,
authorises and stores it; this module adds what the client API asks on top: transaction-id
idempotency, de-duplication of unchanged state, and the checks the spec puts on some state
event types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.handlers.state_checks import check_tombstone
from trioserver.storage.intents import EventIntent, TxnKey

if TYPE_CHECKING:
    from trioserver.handlers.auth import Requester
    from trioserver.handlers.state_checks import StateContentChecker
    from trioserver.storage.intents import EventSubmitter
    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.state import StateStore

MAX_TYPE_LENGTH = 255


def check_event_type(event_type: str) -> None:
    """Event types are non-empty and at most 255 bytes (spec: event format limits)."""
    if not event_type or len(event_type.encode()) > MAX_TYPE_LENGTH:
        raise MatrixError("M_INVALID_PARAM", "Event type must be 1 to 255 bytes long")


class SendHandler:
    """Messages, state events and redactions sent by local users."""

    def __init__(
        self,
        persister: EventSubmitter,
        events: EventStore,
        state: StateStore,
        state_checks: StateContentChecker,
    ) -> None:
        self._persister = persister
        self._events = events
        self._state = state
        self._state_checks = state_checks

    async def _existing_txn(self, requester: Requester, room_id: str, txn_id: str) -> str | None:
        return await self._events.event_for_txn(
            requester.user_id, requester.device_id, room_id, txn_id
        )

    async def _check_redaction_target(self, room_id: str, target_id: str) -> None:
        # A redaction of an unknown event is stored (it may arrive later), but one naming an
        # event we hold in another room is refused: 400 M_UNKNOWN, as Synapse answers
        # (SyTest 30rooms/10redactions "PUT /redact disallows redaction of event in
        # different room").
        target = await self._events.get_event(target_id)
        if target is not None and target.room_id != room_id:
            raise MatrixError("M_UNKNOWN", "Cannot redact event from a different room", status=400)

    async def send_message(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        content: dict[str, Any],
        txn_id: str,
    ) -> str:
        """Send a non-state event; the same txn id from the same device gives the same event.

        Returns:
            The event id.
        """
        check_event_type(event_type)
        if event_type == "m.room.tombstone":
            # Synapse: a tombstone only means something as state (400 through /send).
            check_tombstone(room_id, content)
            raise MatrixError("M_BAD_JSON", "m.room.tombstone must be sent as a state event")
        existing = await self._existing_txn(requester, room_id, txn_id)
        if existing is not None:
            return existing
        redacts = None
        if event_type == "m.room.redaction":
            # MSC4169: /send/m.room.redaction names its target in content in every version.
            target = content.get("redacts")
            if not isinstance(target, str):
                raise MatrixError("M_INVALID_PARAM", "m.room.redaction needs content.redacts")
            await self._check_redaction_target(room_id, target)
            redacts = target
            content = {k: v for k, v in content.items() if k != "redacts"}
        intent = EventIntent(
            type=event_type,
            sender=requester.user_id,
            content=content,
            redacts=redacts,
            txn_key=TxnKey(requester.user_id, requester.device_id, txn_id),
        )
        (stored,) = await self._persister.submit(room_id, [intent])
        return stored.event_id

    async def redact(
        self, requester: Requester, room_id: str, target_id: str, reason: Any, txn_id: str
    ) -> str:
        """Redact an event (PUT /rooms/{roomId}/redact/{eventId}/{txnId})."""
        existing = await self._existing_txn(requester, room_id, txn_id)
        if existing is not None:
            return existing
        content: dict[str, Any] = {}
        if reason is not None:
            if not isinstance(reason, str):
                raise MatrixError("M_INVALID_PARAM", "'reason' must be a string")
            content["reason"] = reason
        await self._check_redaction_target(room_id, target_id)
        intent = EventIntent(
            type="m.room.redaction",
            sender=requester.user_id,
            content=content,
            redacts=target_id,
            txn_key=TxnKey(requester.user_id, requester.device_id, txn_id),
        )
        (stored,) = await self._persister.submit(room_id, [intent])
        return stored.event_id

    async def send_state(
        self,
        requester: Requester,
        room_id: str,
        event_type: str,
        state_key: str,
        content: dict[str, Any],
    ) -> str:
        """Send a state event; sending the current content again returns the current event."""
        check_event_type(event_type)
        if len(state_key.encode()) > MAX_TYPE_LENGTH:
            raise MatrixError("M_INVALID_PARAM", "State key must be at most 255 bytes long")
        await self._state_checks.check(room_id, event_type, state_key, content)
        current = await self._current_state_event(room_id, event_type, state_key)
        if (
            current is not None
            and current.event.sender == requester.user_id
            and dict(current.event.content) == content
        ):
            return current.event_id
        intent = EventIntent(
            type=event_type, sender=requester.user_id, content=content, state_key=state_key
        )
        (stored,) = await self._persister.submit(room_id, [intent])
        return stored.event_id

    async def _current_state_event(
        self, room_id: str, event_type: str, state_key: str
    ) -> StoredEvent | None:
        state = await self._state.current_state(room_id)
        event_id = state.get((event_type, state_key))
        return None if event_id is None else await self._events.get_event(event_id)
