"""Matrix room versions, events, hashing, signing, redaction and authorisation rules.

This package is pure: no I/O, no trio, no database.  Everything a server needs
to create events that federate correctly and to judge events it receives:

* :mod:`.room_versions` - :class:`RoomVersion` flags for versions 1-12.
* :mod:`.model` - the immutable :class:`Event`.
* :mod:`.builder` - :func:`build_event` for new, signed events.
* :mod:`.hashing`, :mod:`.signing` - content/reference hashes, event IDs, signatures.
* :mod:`.redaction` - the redaction algorithm.
* :mod:`.auth`, :mod:`.auth_membership`, :mod:`.auth_power_levels`,
  :mod:`.auth_redaction`, :mod:`.power_levels` - the authorisation rules.
* :mod:`.validation`, :mod:`.identifiers` - event format, limits and identifier grammar.
* :mod:`.state_res` - :func:`resolve_state_groups`, state resolution v1, v2 and v2.1.
"""

from trioserver.events.auth import (
    auth_types_for_event,
    check_auth_events,
    check_auth_rules,
    check_create,
)
from trioserver.events.auth_membership import join_rule_of, membership_of
from trioserver.events.auth_power_levels import validate_power_levels_content
from trioserver.events.auth_redaction import check_client_redaction, should_apply_redaction
from trioserver.events.builder import build_event, generate_v1_event_id
from trioserver.events.constants import JoinRule, Membership
from trioserver.events.errors import (
    AuthError,
    EventSignatureError,
    EventTooLargeError,
    InvalidEventError,
    InvalidIdentifierError,
)
from trioserver.events.hashing import (
    canonical_json,
    check_content_hash,
    compute_content_hash,
    compute_event_id,
    compute_reference_hash,
    create_event_id_from_room_id,
    room_id_from_create_event_id,
)
from trioserver.events.identifiers import (
    get_server_name,
    is_valid_event_id,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_server_name,
    is_valid_user_id,
    parse_server_name,
    parse_user_id,
)
from trioserver.events.jsonutil import JsonDict, StateKey
from trioserver.events.model import Event
from trioserver.events.power_levels import (
    CREATOR_POWER_LEVEL,
    get_creators,
    get_named_level,
    get_send_level,
    get_user_power_level,
    parse_power_level,
)
from trioserver.events.redaction import prune_event_dict
from trioserver.events.room_versions import (
    DEFAULT_ROOM_VERSION,
    KNOWN_ROOM_VERSIONS,
    EventIdFormat,
    RoomDisposition,
    RoomVersion,
    RoomVersions,
    StateResolutionAlgorithm,
)
from trioserver.events.signing import (
    add_hashes_and_signatures,
    compute_event_signature,
    required_signature_servers,
    verify_event_signature,
)
from trioserver.events.state_res import resolve_state_groups
from trioserver.events.validation import (
    check_canonical_json_values,
    validate_pdu_limits,
    validate_pdu_structure,
)

__all__ = [
    "CREATOR_POWER_LEVEL",
    "DEFAULT_ROOM_VERSION",
    "KNOWN_ROOM_VERSIONS",
    "AuthError",
    "Event",
    "EventIdFormat",
    "EventSignatureError",
    "EventTooLargeError",
    "InvalidEventError",
    "InvalidIdentifierError",
    "JoinRule",
    "JsonDict",
    "Membership",
    "RoomDisposition",
    "RoomVersion",
    "RoomVersions",
    "StateKey",
    "StateResolutionAlgorithm",
    "add_hashes_and_signatures",
    "auth_types_for_event",
    "build_event",
    "canonical_json",
    "check_auth_events",
    "check_auth_rules",
    "check_canonical_json_values",
    "check_client_redaction",
    "check_content_hash",
    "check_create",
    "compute_content_hash",
    "compute_event_id",
    "compute_event_signature",
    "compute_reference_hash",
    "create_event_id_from_room_id",
    "generate_v1_event_id",
    "get_creators",
    "get_named_level",
    "get_send_level",
    "get_server_name",
    "get_user_power_level",
    "is_valid_event_id",
    "is_valid_room_alias",
    "is_valid_room_id",
    "is_valid_server_name",
    "is_valid_user_id",
    "join_rule_of",
    "membership_of",
    "parse_power_level",
    "parse_server_name",
    "parse_user_id",
    "prune_event_dict",
    "required_signature_servers",
    "resolve_state_groups",
    "room_id_from_create_event_id",
    "should_apply_redaction",
    "validate_pdu_limits",
    "validate_pdu_structure",
    "validate_power_levels_content",
    "verify_event_signature",
]
