"""Content hashes, reference hashes and hash-derived identifiers.

Theory of operation (Server-Server API, "Signing Events"):

* The *content hash* covers the whole, unredacted event: the PDU without
  ``unsigned``, ``signatures`` and ``hashes``, as canonical JSON, SHA-256.
  It lives in ``hashes.sha256`` and lets a receiver notice that an event was
  redacted (or tampered with) in transit.
* The *reference hash* covers the redacted event including ``hashes``: the
  PDU put through the redaction algorithm, without ``signatures`` and
  ``unsigned``, as canonical JSON, SHA-256.  In v3+ the event ID is
  ``$`` + its unpadded base64 (standard alphabet in v3, URL-safe in v4+).
* In v12 the room ID is the create event's ID with ``!`` instead of ``$``.

Canonical JSON is produced by the ``canonicaljson`` library.  It does not
enforce the integer range of strict room versions: events in v1-v5 may
legitimately carry out-of-range integers and must still hash the same way
everywhere; strictness is checked separately in :mod:`validation`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from canonicaljson import encode_canonical_json
from unpaddedbase64 import decode_base64, encode_base64

from trioserver.events.errors import InvalidEventError
from trioserver.events.redaction import prune_event_dict
from trioserver.events.room_versions import EventIdFormat, RoomVersion


def canonical_json(value: Any) -> bytes:
    """Encode a JSON value as canonical JSON (Appendices, "Canonical JSON").

    Args:
        value: A parsed JSON value.

    Returns:
        The UTF-8 bytes.

    Raises:
        InvalidEventError: If the value cannot be encoded (NaN/Infinity, lone
            surrogates, non-JSON types).
    """
    try:
        return encode_canonical_json(value)
    except (ValueError, TypeError) as exc:  # UnicodeEncodeError is a ValueError
        raise InvalidEventError(f"value cannot be encoded as canonical JSON: {exc}") from exc


def compute_content_hash(pdu: Mapping[str, Any]) -> bytes:
    """Compute the SHA-256 content hash of an event.

    Args:
        pdu: The event in federation format (``unsigned``, ``signatures`` and
            ``hashes`` are ignored if present).

    Returns:
        The 32-byte digest.
    """
    stripped = {
        key: value for key, value in pdu.items() if key not in ("unsigned", "signatures", "hashes")
    }
    return hashlib.sha256(canonical_json(stripped)).digest()


def check_content_hash(pdu: Mapping[str, Any]) -> bool:
    """Whether ``hashes.sha256`` of a PDU matches its content hash.

    A mismatch means the receiver must use a redacted copy of the event
    ("Checks performed on receipt of a PDU", step 3).

    Args:
        pdu: The event in federation format.

    Returns:
        True if the stored hash is present, decodable and correct.
    """
    hashes = pdu.get("hashes")
    if not isinstance(hashes, Mapping):
        return False
    encoded = hashes.get("sha256")
    if not isinstance(encoded, str):
        return False
    try:
        expected = decode_base64(encoded)
    except ValueError:  # binascii.Error and non-ASCII input are ValueErrors
        return False
    return expected == compute_content_hash(pdu)


def compute_reference_hash(room_version: RoomVersion, pdu: Mapping[str, Any]) -> bytes:
    """Compute the SHA-256 reference hash of an event.

    Args:
        room_version: Selects the redaction algorithm.
        pdu: The event in federation format (may already be redacted).

    Returns:
        The 32-byte digest.
    """
    pruned = prune_event_dict(room_version, pdu)
    pruned.pop("signatures", None)
    pruned.pop("unsigned", None)
    return hashlib.sha256(canonical_json(pruned)).digest()


def compute_event_id(room_version: RoomVersion, pdu: Mapping[str, Any]) -> str:
    """Compute the event ID of a PDU in a room version with hash-based IDs.

    Args:
        room_version: Version 3 or later.
        pdu: The event in federation format.

    Returns:
        ``$`` + unpadded base64 of the reference hash (URL-safe in v4+).

    Raises:
        ValueError: For v1/v2, whose event IDs are not derived from the event.
    """
    if room_version.event_id_format is EventIdFormat.V1_OPAQUE:
        raise ValueError(f"room version {room_version.identifier} event IDs are not hashes")
    urlsafe = room_version.event_id_format is EventIdFormat.V4_URL_SAFE_BASE64
    return "$" + encode_base64(compute_reference_hash(room_version, pdu), urlsafe=urlsafe)


def room_id_from_create_event_id(create_event_id: str) -> str:
    """Room ID of a v12 room: the create event's ID with ``!`` instead of ``$``.

    Args:
        create_event_id: The event ID of the ``m.room.create`` event.

    Returns:
        The room ID.
    """
    return "!" + create_event_id.removeprefix("$")


def create_event_id_from_room_id(room_id: str) -> str:
    """Event ID of the create event of a v12 room, from the room ID.

    Args:
        room_id: A room ID in a room version with ``room_id_from_create_event``.

    Returns:
        ``$`` + the room ID without its ``!`` sigil.
    """
    return "$" + room_id.removeprefix("!")
