"""Format and size validation of PDUs.

Theory of operation:
    "Checks performed on receipt of a PDU" step 1: an event that does not
    comply with its room version's event format is *dropped*.  This module
    implements that check in two layers:

    * :func:`validate_pdu_structure` - the keys and JSON types the PDU schema
      of the room version requires (``pdu_v1``/``v3``/``v4``/``v6``/``v11``/
      ``v12`` definitions).  :class:`~trioserver.events.model.Event` runs it on
      construction so its properties can be typed.
    * :func:`validate_pdu_limits` - size limits (Client-Server API, "Size
      limits"), list lengths and depth limits from the PDU schemas, and strict
      canonical JSON for v6+ (room version spec, "Canonical JSON").  Servers
      call it on every received PDU; the builder calls it on new events.

    Identifiers are checked with the historical user ID grammar: servers must
    accept such senders over federation.  Nothing here is stricter than the
    specification, because dropping an event another server accepts splits
    the room.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trioserver.events import constants as c
from trioserver.events.errors import EventTooLargeError, InvalidEventError
from trioserver.events.hashing import canonical_json
from trioserver.events.identifiers import is_valid_room_id, is_valid_user_id
from trioserver.events.jsonutil import domain_of, is_json_int

if TYPE_CHECKING:
    from trioserver.events.room_versions import RoomVersion


def check_canonical_json_values(value: Any, path: str = "") -> None:
    """Check the value restrictions of strict canonical JSON.

    Appendices, "Canonical JSON": numbers must be integers in
    ``[-(2**53)+1, (2**53)-1]``; floats (including NaN/Infinity) are not allowed.

    Args:
        value: A parsed JSON value.
        path: Where ``value`` sits, for the error message.

    Raises:
        InvalidEventError: On a float, an out-of-range integer or a non-JSON type.
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if is_json_int(value):
        if not c.CANONICALJSON_MIN_INT <= value <= c.CANONICALJSON_MAX_INT:
            raise InvalidEventError(f"integer out of canonical JSON range at {path or '/'}")
        return
    if isinstance(value, float):
        raise InvalidEventError(f"floats are not allowed in canonical JSON (at {path or '/'})")
    if isinstance(value, Mapping):
        for key, item in value.items():
            check_canonical_json_values(item, f"{path}/{key}")
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_canonical_json_values(item, f"{path}/{index}")
        return
    raise InvalidEventError(f"not a JSON value at {path or '/'}: {type(value).__name__}")


def _require(pdu: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in pdu:
        raise InvalidEventError(f"PDU is missing required key {key!r}")
    value = pdu[key]
    ok = is_json_int(value) if kind is int else isinstance(value, kind)
    if not ok:
        raise InvalidEventError(f"PDU key {key!r} has the wrong type")
    return value


def _check_event_refs(room_version: RoomVersion, refs: list[Any], key: str) -> None:
    for ref in refs:
        if room_version.event_id_in_pdu:
            # v1/v2: [event_id, {"sha256": ...}] pairs.
            ok = (
                isinstance(ref, list)
                and len(ref) == 2
                and isinstance(ref[0], str)
                and isinstance(ref[1], Mapping)
            )
        else:
            ok = isinstance(ref, str)
        if not ok:
            raise InvalidEventError(f"malformed entry in {key!r}: {ref!r}")


def _is_v12_create(room_version: RoomVersion, pdu: Mapping[str, Any]) -> bool:
    return (
        room_version.room_id_from_create_event
        and pdu.get("type") == c.CREATE
        and pdu.get("state_key") == ""
    )


def validate_pdu_structure(room_version: RoomVersion, pdu: Mapping[str, Any]) -> None:
    """Check the keys and JSON types the room version's PDU schema requires.

    Does not check sizes or canonical JSON (see :func:`validate_pdu_limits`).
    A v12 create event that *does* carry a ``room_id`` passes here: the auth
    rules reject it (rule 1.2), which the specification distinguishes from
    dropping.

    Args:
        room_version: The room version of the event.
        pdu: The event in federation format.

    Raises:
        InvalidEventError: If a required key is missing or has the wrong type.
    """
    if not isinstance(pdu, Mapping):
        raise InvalidEventError("PDU is not a JSON object")
    _require(pdu, "type", str)
    sender = _require(pdu, "sender", str)
    if not is_valid_user_id(sender, historical=True):
        raise InvalidEventError(f"invalid sender {sender!r}")
    _require(pdu, "content", Mapping)
    _require(pdu, "origin_server_ts", int)
    _require(pdu, "depth", int)
    _require(pdu, "hashes", Mapping)
    _require(pdu, "signatures", Mapping)
    if "state_key" in pdu:
        _require(pdu, "state_key", str)
    if _is_v12_create(room_version, pdu):
        if "room_id" in pdu:
            _require(pdu, "room_id", str)
    else:
        room_id = _require(pdu, "room_id", str)
        if not is_valid_room_id(room_id, room_version):
            raise InvalidEventError(f"invalid room ID {room_id!r}")
    if room_version.event_id_in_pdu:
        event_id = _require(pdu, "event_id", str)
        # v1/v2 "Event IDs": $opaque_id:domain.  The domain matters: its server
        # must have signed the event.  Only the shape is checked, as old rooms
        # contain IDs that predate the stricter identifier grammar.
        if not event_id.startswith("$") or domain_of(event_id) is None:
            raise InvalidEventError(f"invalid event ID {event_id!r}")
    for key in ("prev_events", "auth_events"):
        _check_event_refs(room_version, _require(pdu, key, list), key)


def _byte_len(value: str) -> int:
    try:
        return len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidEventError(f"string is not valid Unicode: {exc}") from exc


def validate_pdu_limits(room_version: RoomVersion, pdu: Mapping[str, Any], event_id: str) -> None:
    """Check size limits, list lengths, depth and (v6+) strict canonical JSON.

    The whole-event limit applies to the event "formatted with the federation
    event format, including any signatures"; pass the PDU as it is or will be
    sent (with ``unsigned`` if it carries one).

    Args:
        room_version: The room version of the event.
        pdu: A PDU that passed :func:`validate_pdu_structure`.
        event_id: The event's ID (computed for v3+).

    Raises:
        InvalidEventError: If any limit is exceeded.
    """
    if len(canonical_json(pdu)) > c.MAX_PDU_SIZE:
        raise EventTooLargeError(f"PDU is larger than {c.MAX_PDU_SIZE} bytes")
    fields = {"sender": pdu["sender"], "type": pdu["type"], "event_id": event_id}
    if isinstance(pdu.get("room_id"), str):
        fields["room_id"] = pdu["room_id"]
    if "state_key" in pdu:
        fields["state_key"] = pdu["state_key"]
    for name, value in fields.items():
        if _byte_len(value) > c.MAX_ID_BYTES:
            raise InvalidEventError(f"{name!r} is longer than {c.MAX_ID_BYTES} bytes")
    if len(pdu["prev_events"]) > c.MAX_PREV_EVENTS:
        raise InvalidEventError(f"more than {c.MAX_PREV_EVENTS} prev_events")
    if len(pdu["auth_events"]) > c.MAX_AUTH_EVENTS:
        raise InvalidEventError(f"more than {c.MAX_AUTH_EVENTS} auth_events")
    # "The maximum depth of the prev_events, plus one": never negative.
    if not 0 <= pdu["depth"] <= room_version.max_depth:
        raise InvalidEventError(f"depth out of range: {pdu['depth']}")
    if room_version.strict_canonical_json:
        check_canonical_json_values(pdu)
