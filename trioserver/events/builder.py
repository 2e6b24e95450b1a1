"""Building new, hashed and signed events for this server.

Theory of operation:
    :func:`build_event` assembles the PDU in the format of the room version,
    adds the content hash and this server's signature, validates the result
    like a received PDU, and wraps it in an :class:`~trioserver.events.model.Event`.

    Per-version format decisions (PDU schemas and room version specs):

    * v1/v2: the event carries ``event_id`` = ``$<random>:<server_name>``, and
      ``prev_events``/``auth_events`` are ``[event_id, {"sha256": <reference
      hash>}]`` pairs, so the caller must supply the reference hashes.
    * v3+: no ``event_id`` (it is the reference hash); plain ID lists.
    * v11+: a redaction's target is ``content.redacts`` (MSC2174); before
      that the top-level ``redacts``, with ``content`` left as given.
    * v12: the create event has no ``room_id`` (the room ID is derived from
      its event ID) and no event lists the create event in ``auth_events``.
    * ``origin`` is no longer part of any PDU schema (removed from the spec,
      and v11 stopped protecting it from redaction), so it is only emitted
      when explicitly requested, and never in v11+.
    * ``depth`` is capped at the room version's maximum ("If the room's depth
      is already at the limit, the depth must be set to the limit").
"""

from __future__ import annotations

import secrets
import string
from typing import TYPE_CHECKING, Any

from unpaddedbase64 import encode_base64

from trioserver.events import constants as c
from trioserver.events.hashing import create_event_id_from_room_id
from trioserver.events.jsonutil import JsonDict, copy_json
from trioserver.events.model import Event
from trioserver.events.signing import add_hashes_and_signatures
from trioserver.events.validation import validate_pdu_limits

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from signedjson.types import SigningKey

    from trioserver.events.room_versions import RoomVersion

_OPAQUE_ID_ALPHABET = string.ascii_letters + string.digits


def generate_v1_event_id(server_name: str) -> str:
    """Generate a ``$opaque_id:server_name`` event ID for room versions 1 and 2.

    Args:
        server_name: This server's name.

    Returns:
        An event ID with 24 random alphanumeric characters (about 143 bits).
    """
    opaque = "".join(secrets.choice(_OPAQUE_ID_ALPHABET) for _ in range(24))
    return f"${opaque}:{server_name}"


def event_refs(
    room_version: RoomVersion,
    event_ids: Sequence[str],
    reference_hashes: Mapping[str, bytes] | None,
) -> list[Any]:
    """``prev_events``/``auth_events`` in the room version's format: ids, or (v1/v2) pairs of
    id and reference hash."""
    if not room_version.event_id_in_pdu:
        return list(event_ids)
    refs: list[Any] = []
    for event_id in event_ids:
        if reference_hashes is None or event_id not in reference_hashes:
            raise ValueError(f"room version 1/2 events need the reference hash of {event_id}")
        refs.append([event_id, {"sha256": encode_base64(reference_hashes[event_id])}])
    return refs


def _check_room_id(
    room_version: RoomVersion, is_create: bool, room_id: str | None, auth_event_ids: Sequence[str]
) -> None:
    if room_version.room_id_from_create_event and is_create:
        if room_id is not None:
            raise ValueError("a v12 create event has no room_id: its event ID defines it")
        return
    if room_id is None:
        raise ValueError("room_id is required")
    if (
        room_version.room_id_from_create_event
        and create_event_id_from_room_id(room_id) in auth_event_ids
    ):
        raise ValueError("v12 events must not list the create event in auth_events")


def build_event(
    room_version: RoomVersion,
    *,
    type: str,
    sender: str,
    content: Mapping[str, Any],
    room_id: str | None,
    prev_event_ids: Sequence[str],
    auth_event_ids: Sequence[str],
    depth: int,
    origin_server_ts: int,
    server_name: str,
    signing_key: SigningKey,
    state_key: str | None = None,
    redacts: str | None = None,
    origin: str | None = None,
    reference_hashes: Mapping[str, bytes] | None = None,
    unsigned: Mapping[str, Any] | None = None,
) -> Event:
    """Build a complete, hashed and signed event.

    Args:
        room_version: The room's version.
        type: The event type.
        sender: The sending user's ID.
        content: The event content (copied).
        room_id: The room ID; ``None`` only for a v12 ``m.room.create`` event.
        prev_event_ids: The ``prev_events``.
        auth_event_ids: The ``auth_events`` (see ``auth.auth_types_for_event``).
        depth: One more than the largest depth of the prev events (capped).
        origin_server_ts: Milliseconds since the epoch.
        server_name: This server's name (signature name; v1/v2 event ID domain).
        signing_key: This server's ed25519 signing key.
        state_key: The state key for a state event.
        redacts: For ``m.room.redaction``: the ID of the event to redact.
        origin: Legacy ``origin`` key; only emitted for room versions 1-10.
        reference_hashes: v1/v2 only: reference hash of every prev/auth event.
        unsigned: Initial unsigned data of the returned event.

    Returns:
        The signed event.

    Raises:
        ValueError: On inconsistent arguments (e.g. ``room_id`` for a v12
            create event, ``redacts`` on a non-redaction, missing reference
            hashes for v1/v2).
        InvalidEventError: If the result violates the event format or size limits.
    """
    is_create = type == c.CREATE and state_key == ""
    _check_room_id(room_version, is_create, room_id, auth_event_ids)
    if redacts is not None and type != c.REDACTION:
        raise ValueError("redacts is only valid for m.room.redaction events")
    pdu: JsonDict = {
        "type": type,
        "sender": sender,
        "content": copy_json(content),
        "prev_events": event_refs(room_version, prev_event_ids, reference_hashes),
        "auth_events": event_refs(room_version, auth_event_ids, reference_hashes),
        "depth": min(depth, room_version.max_depth),
        "origin_server_ts": origin_server_ts,
    }
    if room_id is not None:
        pdu["room_id"] = room_id
    if state_key is not None:
        pdu["state_key"] = state_key
    if redacts is not None:
        if room_version.updated_redaction_rules:
            pdu["content"]["redacts"] = redacts
        else:
            pdu["redacts"] = redacts
    if origin is not None and not room_version.updated_redaction_rules:
        pdu["origin"] = origin
    if room_version.event_id_in_pdu:
        pdu["event_id"] = generate_v1_event_id(server_name)
    add_hashes_and_signatures(room_version, pdu, server_name, signing_key)
    event = Event.from_pdu(room_version, pdu, unsigned=unsigned or {})
    validate_pdu_limits(room_version, pdu, event.event_id)
    return event
