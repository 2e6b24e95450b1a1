"""The room versions of the Matrix specification as frozen data.

Theory of operation:
    Each room version is a bundle of algorithm choices (event ID format,
    redaction algorithm, authorisation rules, state resolution).  Rather than
    comparing version numbers ("is this >= 8?") throughout the code, every
    behavioural difference the specification introduces is a named boolean
    flag on :class:`RoomVersion`, so a reader can see exactly which rule a
    branch implements.  The flags are derived from ``content/rooms/v1.md`` ...
    ``v12.md`` of the specification; each flag's comment names the version
    that introduced it.

    Room versions are not ordered (Room Versions, "Complete list of room
    versions"); new versions are built with :func:`attrs.evolve` from the
    version the specification says they "build on".
"""

from __future__ import annotations

import enum
from types import MappingProxyType
from typing import TYPE_CHECKING

import attrs

from trioserver.events.constants import MAX_DEPTH_V1, MAX_DEPTH_V6

if TYPE_CHECKING:
    from collections.abc import Mapping


class EventIdFormat(enum.Enum):
    """How a room version forms event IDs."""

    #: v1, v2: ``$opaque_id:server_name`` chosen by the sender, carried in the PDU.
    V1_OPAQUE = "v1"
    #: v3: ``$`` + standard unpadded base64 of the reference hash.
    V3_BASE64 = "v3"
    #: v4+: ``$`` + URL-safe unpadded base64 of the reference hash.
    V4_URL_SAFE_BASE64 = "v4"


class StateResolutionAlgorithm(enum.Enum):
    """Which state resolution algorithm a room version uses."""

    V1 = "v1"
    V2 = "v2"
    #: v12: v2 starting from an empty state map, with the conflicted state subgraph.
    V2_1 = "v2.1"


class RoomDisposition(enum.Enum):
    """Whether the specification marks a room version stable."""

    STABLE = "stable"
    UNSTABLE = "unstable"


@attrs.frozen
class RoomVersion:
    """The rules of one room version.

    Attributes:
        identifier: The version string, e.g. ``"10"``.
        disposition: Stable or unstable.
        event_id_format: How event IDs are formed (see :class:`EventIdFormat`).
        state_resolution: The state resolution algorithm.
        enforce_key_validity: v5+: signing keys must be valid at ``origin_server_ts``.
        special_case_aliases_auth: v1-5: auth rule 4 for ``m.room.aliases`` and
            the redaction algorithm keeps ``content.aliases``.
        strict_canonical_json: v6+: events must be strict canonical JSON
            (integers in +-(2**53-1), no floats) and ``depth`` <= 2**53-1.
        limit_notifications_power_levels: v6+: changes to
            ``content.notifications`` of power levels are checked like ``events``.
        knock_join_rule: v7+: the ``knock`` join rule and membership.
        restricted_join_rule: v8+: the ``restricted`` join rule,
            ``join_authorised_via_users_server`` and keeping ``allow`` on redaction.
        restricted_join_rule_fix: v9+: redaction keeps
            ``join_authorised_via_users_server`` of member events.
        knock_restricted_join_rule: v10+: the ``knock_restricted`` join rule.
        enforce_int_power_levels: v10+: power levels must be JSON integers.
        updated_redaction_rules: v11+: MSC2176/MSC3821/MSC3989 redaction rules,
            ``redacts`` moves into ``content`` (MSC2174).
        implicit_room_creator: v11+: no ``content.creator``; the create event's
            ``sender`` is the creator (MSC2175).
        room_id_from_create_event: v12+: the room ID is the create event's ID
            with a ``!`` sigil; create events have no ``room_id`` and are never
            listed in ``auth_events`` (MSC4291).
        privileged_creators: v12+: the create event's sender and
            ``content.additional_creators`` have infinite power level (MSC4289).
    """

    identifier: str
    disposition: RoomDisposition
    event_id_format: EventIdFormat
    state_resolution: StateResolutionAlgorithm
    enforce_key_validity: bool
    special_case_aliases_auth: bool
    strict_canonical_json: bool
    limit_notifications_power_levels: bool
    knock_join_rule: bool
    restricted_join_rule: bool
    restricted_join_rule_fix: bool
    knock_restricted_join_rule: bool
    enforce_int_power_levels: bool
    updated_redaction_rules: bool
    implicit_room_creator: bool
    room_id_from_create_event: bool
    privileged_creators: bool

    @property
    def event_id_in_pdu(self) -> bool:
        """Whether the PDU carries its own ``event_id`` (v1, v2) instead of a hash."""
        return self.event_id_format is EventIdFormat.V1_OPAQUE

    @property
    def create_event_in_auth_events(self) -> bool:
        """Whether events must list the create event in ``auth_events`` (not in v12)."""
        return not self.room_id_from_create_event

    @property
    def max_depth(self) -> int:
        """The largest allowed ``depth`` (PDU schema for the room version)."""
        return MAX_DEPTH_V6 if self.strict_canonical_json else MAX_DEPTH_V1


class RoomVersions:
    """Every room version defined by the specification."""

    V1 = RoomVersion(
        identifier="1",
        disposition=RoomDisposition.STABLE,
        event_id_format=EventIdFormat.V1_OPAQUE,
        state_resolution=StateResolutionAlgorithm.V1,
        enforce_key_validity=False,
        special_case_aliases_auth=True,
        strict_canonical_json=False,
        limit_notifications_power_levels=False,
        knock_join_rule=False,
        restricted_join_rule=False,
        restricted_join_rule_fix=False,
        knock_restricted_join_rule=False,
        enforce_int_power_levels=False,
        updated_redaction_rules=False,
        implicit_room_creator=False,
        room_id_from_create_event=False,
        privileged_creators=False,
    )
    # v2: state resolution v2.
    V2 = attrs.evolve(V1, identifier="2", state_resolution=StateResolutionAlgorithm.V2)
    # v3: event IDs are reference hashes (standard base64).
    V3 = attrs.evolve(V2, identifier="3", event_id_format=EventIdFormat.V3_BASE64)
    # v4: URL-safe base64 event IDs.
    V4 = attrs.evolve(V3, identifier="4", event_id_format=EventIdFormat.V4_URL_SAFE_BASE64)
    # v5: signing key validity periods.
    V5 = attrs.evolve(V4, identifier="5", enforce_key_validity=True)
    # v6: no alias special case, strict canonical JSON, notifications power levels.
    V6 = attrs.evolve(
        V5,
        identifier="6",
        special_case_aliases_auth=False,
        strict_canonical_json=True,
        limit_notifications_power_levels=True,
    )
    # v7: knocking.
    V7 = attrs.evolve(V6, identifier="7", knock_join_rule=True)
    # v8: restricted join rule.
    V8 = attrs.evolve(V7, identifier="8", restricted_join_rule=True)
    # v9: redaction keeps join_authorised_via_users_server.
    V9 = attrs.evolve(V8, identifier="9", restricted_join_rule_fix=True)
    # v10: knock_restricted and integer-only power levels.
    V10 = attrs.evolve(
        V9, identifier="10", knock_restricted_join_rule=True, enforce_int_power_levels=True
    )
    # v11: updated redaction rules, implicit room creator.
    V11 = attrs.evolve(
        V10, identifier="11", updated_redaction_rules=True, implicit_room_creator=True
    )
    # v12: room IDs from the create event, privileged creators, state res v2.1.
    V12 = attrs.evolve(
        V11,
        identifier="12",
        state_resolution=StateResolutionAlgorithm.V2_1,
        room_id_from_create_event=True,
        privileged_creators=True,
    )


#: Every room version this server understands, by identifier.
KNOWN_ROOM_VERSIONS: Mapping[str, RoomVersion] = MappingProxyType(
    {
        version.identifier: version
        for version in (
            RoomVersions.V1,
            RoomVersions.V2,
            RoomVersions.V3,
            RoomVersions.V4,
            RoomVersions.V5,
            RoomVersions.V6,
            RoomVersions.V7,
            RoomVersions.V8,
            RoomVersions.V9,
            RoomVersions.V10,
            RoomVersions.V11,
            RoomVersions.V12,
        )
    }
)

#: Room Versions, "Complete list": servers SHOULD create rooms with version 12.
DEFAULT_ROOM_VERSION: RoomVersion = RoomVersions.V12
