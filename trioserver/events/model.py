"""The immutable :class:`Event`: a PDU plus its room version and event ID.

Theory of operation:
    An :class:`Event` owns a private deep copy of the PDU JSON (federation
    format, without ``unsigned``) that passed
    :func:`~trioserver.events.validation.validate_pdu_structure`, so its
    properties can promise types.  ``unsigned`` is kept apart because it is
    not covered by hashes or signatures and servers rewrite it freely; use
    :meth:`Event.with_unsigned` to change it.

    The event ID is read from the PDU in v1/v2 and computed from the
    reference hash in v3+ (:meth:`Event.from_pdu`).  In v12 the create event
    has no ``room_id``; :attr:`Event.room_id` derives it from the event ID so
    that every event has one.

    Properties return read-only views of the stored JSON
    (``MappingProxyType``); :meth:`get_pdu_json` and :meth:`for_client`
    return fresh copies that callers may mutate.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from trioserver.events import constants as c
from trioserver.events.hashing import compute_event_id, room_id_from_create_event_id
from trioserver.events.jsonutil import JsonDict, copy_json
from trioserver.events.redaction import prune_event_dict
from trioserver.events.room_versions import RoomVersion
from trioserver.events.validation import validate_pdu_structure


@attrs.frozen
class Event:
    """An event (PDU) of a given room version.

    Build instances with :meth:`from_pdu` or
    :func:`~trioserver.events.builder.build_event`; the constructor does not
    validate.

    Attributes:
        room_version: The room version whose rules apply to the event.
        event_id: The event's ID.
        unsigned: Data outside the signed PDU (e.g. ``age_ts``); servers may change it.
    """

    room_version: RoomVersion
    event_id: str
    _pdu: JsonDict = attrs.field(alias="pdu", repr=False, hash=False)
    unsigned: JsonDict = attrs.field(factory=dict, repr=False, hash=False)

    @classmethod
    def from_pdu(
        cls,
        room_version: RoomVersion,
        pdu: Mapping[str, Any],
        *,
        unsigned: Mapping[str, Any] | None = None,
    ) -> Event:
        """Build an event from a PDU received over federation or loaded from storage.

        Args:
            room_version: The room version of the room the event belongs to.
            pdu: The event in federation format.  It is copied, not kept.
            unsigned: The event's unsigned data; defaults to ``pdu["unsigned"]``
                (ignored unless it is an object).

        Returns:
            The event, with its ID read from the PDU (v1/v2) or computed (v3+).

        Raises:
            InvalidEventError: If the PDU does not have the format the room
                version requires (the event must be dropped).
        """
        validate_pdu_structure(room_version, pdu)
        stored: JsonDict = copy_json({k: v for k, v in pdu.items() if k != "unsigned"})
        if unsigned is None:
            raw_unsigned = pdu.get("unsigned")
            unsigned = raw_unsigned if isinstance(raw_unsigned, Mapping) else {}
        if room_version.event_id_in_pdu:
            event_id = stored["event_id"]
        else:
            event_id = compute_event_id(room_version, stored)
        return cls(
            room_version=room_version,
            event_id=event_id,
            pdu=stored,
            unsigned=copy_json(unsigned),
        )

    def with_unsigned(self, unsigned: Mapping[str, Any]) -> Event:
        """Return a copy of this event with different unsigned data.

        Args:
            unsigned: The new unsigned object (copied).

        Returns:
            The new event; the PDU is shared, which is safe as it is never mutated.
        """
        return attrs.evolve(self, unsigned=copy_json(unsigned))

    def redacted(self, *, unsigned: Mapping[str, Any] | None = None) -> Event:
        """Return this event with the room version's redaction algorithm applied.

        The event ID is unchanged: redaction keeps every key the reference
        hash covers.

        Args:
            unsigned: Unsigned data for the redacted copy (e.g. with
                ``redacted_because``); defaults to empty, since the redaction
                algorithm keeps nothing of ``unsigned``.

        Returns:
            The redacted event.
        """
        return Event(
            room_version=self.room_version,
            event_id=self.event_id,
            pdu=prune_event_dict(self.room_version, self._pdu),
            unsigned=copy_json(unsigned) if unsigned is not None else {},
        )

    # -- Core properties ---------------------------------------------------------------

    @property
    def type(self) -> str:
        """The event type."""
        event_type: str = self._pdu["type"]
        return event_type

    @property
    def sender(self) -> str:
        """The user ID of the sender."""
        sender: str = self._pdu["sender"]
        return sender

    @property
    def room_id(self) -> str:
        """The room ID; for a v12 create event, derived from its event ID."""
        room_id = self._pdu.get("room_id")
        if self.room_version.room_id_from_create_event and self.is_create_event():
            return room_id_from_create_event_id(self.event_id)
        assert isinstance(room_id, str)  # guaranteed by validate_pdu_structure
        return room_id

    @property
    def state_key(self) -> str | None:
        """The state key, or ``None`` for a message (non-state) event."""
        state_key: str | None = self._pdu.get("state_key")
        return state_key

    def is_state(self) -> bool:
        """Whether this is a state event (it has a ``state_key``)."""
        return "state_key" in self._pdu

    def has_pdu_key(self, key: str) -> bool:
        """Whether the PDU has a top-level key (e.g. a v12 create event's ``room_id``)."""
        return key in self._pdu

    def is_create_event(self) -> bool:
        """Whether this is the room's ``m.room.create`` event."""
        return self.type == c.CREATE and self.state_key == ""

    @property
    def content(self) -> Mapping[str, Any]:
        """A read-only view of ``content``."""
        return MappingProxyType(self._pdu["content"])

    @property
    def origin_server_ts(self) -> int:
        """Timestamp in milliseconds on the origin server."""
        ts: int = self._pdu["origin_server_ts"]
        return ts

    @property
    def depth(self) -> int:
        """The event's depth in the room DAG."""
        depth: int = self._pdu["depth"]
        return depth

    @property
    def prev_event_ids(self) -> list[str]:
        """IDs of the ``prev_events`` (v1/v2 ``[id, hashes]`` pairs are unwrapped)."""
        return self._event_refs("prev_events")

    @property
    def auth_event_ids(self) -> list[str]:
        """IDs of the ``auth_events`` exactly as listed (no create event in v12)."""
        return self._event_refs("auth_events")

    def _event_refs(self, key: str) -> list[str]:
        refs = self._pdu[key]
        if self.room_version.event_id_in_pdu:
            return [ref[0] for ref in refs]
        return list(refs)

    @property
    def hashes(self) -> Mapping[str, Any]:
        """A read-only view of ``hashes``."""
        return MappingProxyType(self._pdu["hashes"])

    @property
    def signatures(self) -> Mapping[str, Any]:
        """A read-only view of ``signatures`` (server name -> key ID -> signature)."""
        return MappingProxyType(self._pdu["signatures"])

    # -- Type-specific properties ------------------------------------------------------

    @property
    def membership(self) -> str | None:
        """``content.membership`` of an ``m.room.member`` event, else ``None``."""
        if self.type != c.MEMBER:
            return None
        membership = self._pdu["content"].get("membership")
        return membership if isinstance(membership, str) else None

    @property
    def redacts(self) -> str | None:
        """The ID of the event a redaction targets, or ``None``; never raises.

        v11+ (MSC2174) reads ``content.redacts``; earlier versions read the
        top-level ``redacts``.  Non-string values count as absent.
        """
        if self.type != c.REDACTION:
            return None
        if self.room_version.updated_redaction_rules:
            target = self._pdu["content"].get("redacts")
        else:
            target = self._pdu.get("redacts")
        return target if isinstance(target, str) else None

    # -- Serialisation -----------------------------------------------------------------

    def get_pdu_json(self, *, include_unsigned: bool = False) -> JsonDict:
        """Return the event in federation format, as sent to servers and stored.

        Args:
            include_unsigned: Add the ``unsigned`` object (when non-empty).

        Returns:
            A fresh copy the caller may modify.
        """
        pdu: JsonDict = copy_json(self._pdu)
        if include_unsigned and self.unsigned:
            pdu["unsigned"] = copy_json(self.unsigned)
        return pdu

    def client_fields(self, *, include_room_id: bool = True) -> JsonDict:
        """`for_client` without ``unsigned`` and without deep copies, for serialising
        straight to JSON.

        The returned dict is new, but ``content`` is shared with the event (copied only
        when ``redacts`` has to be added to it): callers may set top-level keys, never
        modify anything below them. A /sync serialises thousands of events; copying every
        content tree was a large part of its cost.
        """
        client_event: JsonDict = {
            "event_id": self.event_id,
            "type": self.type,
            "sender": self.sender,
            "content": self._pdu["content"],
            "origin_server_ts": self.origin_server_ts,
        }
        if include_room_id:
            client_event["room_id"] = self.room_id
        if self.is_state():
            client_event["state_key"] = self.state_key
        redacts = self.redacts
        if redacts is not None:
            client_event["redacts"] = redacts
            client_event["content"] = {**self._pdu["content"], "redacts": redacts}
        return client_event

    def for_client(self, *, include_room_id: bool = True) -> JsonDict:
        """Return the event in the Client-Server API "ClientEvent" format.

        ``redacts`` of a redaction is placed both at the top level and in
        ``content`` in every room version (room version 11, "Moving the
        redacts property": servers should add it to the top level in v11+
        and to ``content`` in older versions), as Synapse does.

        Args:
            include_room_id: Include ``room_id`` (``/sync`` omits it).

        Returns:
            A fresh dict with ``event_id``, ``type``, ``sender``, ``content``,
            ``origin_server_ts``, ``unsigned`` and, where applicable,
            ``room_id``, ``state_key`` and ``redacts``.
        """
        client_event: JsonDict = copy_json(self.client_fields(include_room_id=include_room_id))
        client_event["unsigned"] = copy_json(self.unsigned)
        return client_event
