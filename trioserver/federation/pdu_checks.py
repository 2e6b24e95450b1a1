"""The first checks on a PDU from another server (Server-Server API, "Checks performed on
receipt of a PDU", steps 1-3): format, signatures, content hash.

A PDU that fails the format or signature checks is dropped (`PduRejected`); one whose content
hash does not match is kept redacted. The checks against the room (auth events, the state
before it, the current state) happen on the events writer (`storage.received_events`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Protocol

from trioserver.events import (
    Event,
    EventTooLargeError,
    InvalidEventError,
    RoomVersion,
    check_content_hash,
    validate_pdu_limits,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)


class PduRejected(Exception):
    """The PDU is not acceptable at all; it is dropped (not stored)."""


class PduSignatureError(PduRejected):
    """A signature the PDU needs is missing or does not verify (a refusal: 403 where a
    handshake answers)."""


class EventVerifier(Protocol):
    """Checks the signatures an event needs (`federation.keyring.KeyRing`)."""

    async def verify_event(self, room_version: RoomVersion, pdu: Mapping[str, Any]) -> None: ...


async def check_pdu(room_version: RoomVersion, pdu: Any, verifier: EventVerifier) -> Event:
    """Steps 1-3 of the receipt checks; the event, redacted when its content hash is wrong.

    Raises:
        PduRejected: not an object, a bad format for the room version, too large, or a
            required signature missing or not valid.
    """
    if not isinstance(pdu, dict):
        raise PduRejected("PDU is not an object")
    if not isinstance(pdu.get("signatures"), dict) or not pdu["signatures"]:
        raise PduSignatureError("PDU is not signed")
    if not isinstance(pdu.get("hashes"), dict):
        # Unhashed, it cannot have been signed as an event is signed.
        raise PduSignatureError("PDU has no hashes, so no valid signature")
    try:
        event = Event.from_pdu(room_version, pdu)
        validate_pdu_limits(room_version, event.get_pdu_json(), event.event_id)
    except (InvalidEventError, EventTooLargeError) as err:
        raise PduRejected(f"invalid event: {err}") from None
    except (TypeError, ValueError, KeyError) as err:
        raise PduRejected(f"invalid event: {err}") from None
    try:
        await verifier.verify_event(room_version, event.get_pdu_json())
    except PduRejected:
        raise
    except Exception as err:  # the keyring's SignatureError/KeyLookupError, or any other
        raise PduSignatureError(f"signature check failed: {err}") from None
    if not check_content_hash(event.get_pdu_json()):
        logger.info("event %s has a wrong content hash: keeping it redacted", event.event_id)
        event = event.redacted()
    return event
