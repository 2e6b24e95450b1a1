"""Names and limits from the Matrix specification used by the events package.

Only values that the specification fixes are collected here: event types that
the authorisation rules or the redaction algorithm treat specially, membership
states, join rules and size limits.
"""

from __future__ import annotations

from typing import Final

# -- Event types with special meaning to auth rules or redaction ------------------------
CREATE: Final = "m.room.create"
MEMBER: Final = "m.room.member"
JOIN_RULES: Final = "m.room.join_rules"
POWER_LEVELS: Final = "m.room.power_levels"
THIRD_PARTY_INVITE: Final = "m.room.third_party_invite"
HISTORY_VISIBILITY: Final = "m.room.history_visibility"
REDACTION: Final = "m.room.redaction"
ALIASES: Final = "m.room.aliases"
SERVER_ACL: Final = "m.room.server_acl"

#: ``(type, state_key)`` of the create event in a state map.
CREATE_KEY: Final = (CREATE, "")
#: ``(type, state_key)`` of the power levels event in a state map.
POWER_LEVELS_KEY: Final = (POWER_LEVELS, "")
#: ``(type, state_key)`` of the join rules event in a state map.
JOIN_RULES_KEY: Final = (JOIN_RULES, "")


class Membership:
    """Values of ``content.membership`` in ``m.room.member`` events."""

    JOIN: Final = "join"
    INVITE: Final = "invite"
    LEAVE: Final = "leave"
    BAN: Final = "ban"
    KNOCK: Final = "knock"


class JoinRule:
    """Values of ``content.join_rule`` in ``m.room.join_rules`` events."""

    PUBLIC: Final = "public"
    INVITE: Final = "invite"
    KNOCK: Final = "knock"
    PRIVATE: Final = "private"
    RESTRICTED: Final = "restricted"
    KNOCK_RESTRICTED: Final = "knock_restricted"


#: ``content`` key naming the user whose server authorised a restricted join (v8+).
AUTHORISING_USER: Final = "join_authorised_via_users_server"

# -- Limits ------------------------------------------------------------------------------
#: Client-Server API "Size limits": the whole PDU as canonical JSON.
MAX_PDU_SIZE: Final = 65536
#: Client-Server API "Size limits" / Appendices "Identifier Grammar": per-field bytes.
MAX_ID_BYTES: Final = 255
#: Appendices "Canonical JSON": the integer range strict room versions accept.
CANONICALJSON_MAX_INT: Final = 2**53 - 1
CANONICALJSON_MIN_INT: Final = -(2**53) + 1
#: PDU schemas for room versions 1-5: depth limit (``2**63 - 1``).
MAX_DEPTH_V1: Final = 2**63 - 1
#: PDU schemas for room versions 6+: depth limit, as canonical JSON allows.
MAX_DEPTH_V6: Final = CANONICALJSON_MAX_INT
#: PDU schemas: ``prev_events`` may list at most 20 events.
MAX_PREV_EVENTS: Final = 20
#: PDU schemas: ``auth_events`` may list at most 10 events.
MAX_AUTH_EVENTS: Final = 10
