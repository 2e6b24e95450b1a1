"""The redaction algorithm of every room version.

Theory of operation:
    Redaction ("pruning") keeps only the protocol-essential parts of an event.
    It is used three ways, so it must match other servers byte for byte:

    * to redact an event when a valid ``m.room.redaction`` applies to it;
    * as the input of the *reference hash* (event IDs in v3+);
    * as the object that is signed, so signatures survive redaction.

    The algorithm (room version specs, "Redactions"; fragments
    ``v1-redactions``, ``v6-redactions``, ``v9-redactions``,
    ``v11-redactions``) keeps a fixed list of top-level keys and, for a few
    event types, a list of ``content`` keys.  The per-version differences:

    ========  ====================================================================
    v1-v5     ``m.room.aliases`` keeps ``aliases``
    v6        ``aliases`` no longer special
    v8        ``m.room.join_rules`` keeps ``allow``
    v9        ``m.room.member`` keeps ``join_authorised_via_users_server``
    v11       top level no longer keeps ``origin``, ``membership``,
              ``prev_state``; create keeps all content; power levels keep
              ``invite``; redaction keeps ``redacts``; member keeps
              ``third_party_invite.signed``; create loses ``creator`` special case
    ========  ====================================================================

    ``notifications`` of power levels is *not* protected in any version (the
    v6 change only affects auth rules).

    ``unsigned`` is not in any version's list of protected keys, so it is
    removed entirely.  (Synapse keeps a couple of its own bookkeeping keys such
    as ``age_ts`` in its internal copy; those are not part of the PDU.  This
    package keeps ``unsigned`` outside the PDU dict anyway, and servers add
    ``redacted_because`` when serving a redacted event to clients.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trioserver.events import constants as c
from trioserver.events.jsonutil import JsonDict, copy_json

if TYPE_CHECKING:
    from trioserver.events.room_versions import RoomVersion

# Top-level keys every version keeps.
_TOP_LEVEL_KEYS = frozenset(
    {
        "event_id",
        "type",
        "room_id",
        "sender",
        "state_key",
        "content",
        "hashes",
        "signatures",
        "depth",
        "prev_events",
        "auth_events",
        "origin_server_ts",
    }
)
# Removed from the list by MSC2176 (v11).
_PRE_V11_EXTRA_TOP_LEVEL_KEYS = frozenset({"prev_state", "origin", "membership"})

_POWER_LEVEL_KEYS = (
    "ban",
    "events",
    "events_default",
    "kick",
    "redact",
    "state_default",
    "users",
    "users_default",
)


def protected_content_keys(room_version: RoomVersion, event_type: str) -> tuple[str, ...]:
    """The ``content`` keys the redaction algorithm keeps for an event type.

    ``m.room.create`` in v11+ keeps *all* keys and ``m.room.member`` in v11+
    keeps part of ``third_party_invite``; :func:`prune_event_dict` handles
    those two cases on top of this list.

    Args:
        room_version: The room version.
        event_type: The event's ``type``.

    Returns:
        The protected content keys (possibly empty).
    """
    keys: tuple[str, ...] = ()
    if event_type == c.MEMBER:
        keys = ("membership",)
        if room_version.restricted_join_rule_fix:
            keys += (c.AUTHORISING_USER,)
    elif event_type == c.CREATE:
        # v11 (MSC2176) keeps everything; before that only "creator" mattered.
        keys = () if room_version.updated_redaction_rules else ("creator",)
    elif event_type == c.JOIN_RULES:
        keys = ("join_rule", "allow") if room_version.restricted_join_rule else ("join_rule",)
    elif event_type == c.POWER_LEVELS:
        keys = _POWER_LEVEL_KEYS
        if room_version.updated_redaction_rules:
            keys += ("invite",)
    elif event_type == c.HISTORY_VISIBILITY:
        keys = ("history_visibility",)
    elif event_type == c.ALIASES and room_version.special_case_aliases_auth:
        keys = ("aliases",)
    elif event_type == c.REDACTION and room_version.updated_redaction_rules:
        keys = ("redacts",)
    return keys


def _prune_content(room_version: RoomVersion, event_type: Any, content: Any) -> JsonDict:
    if not isinstance(content, Mapping) or not isinstance(event_type, str):
        return {}
    if event_type == c.CREATE and room_version.updated_redaction_rules:
        return {key: copy_json(value) for key, value in content.items()}
    pruned = {
        key: copy_json(content[key])
        for key in protected_content_keys(room_version, event_type)
        if key in content
    }
    if event_type == c.MEMBER and room_version.updated_redaction_rules:
        # v11: "allows the `signed` key of the `third_party_invite` key".  An
        # object without `signed` is kept as an empty object, as Synapse does.
        invite = content.get("third_party_invite")
        if isinstance(invite, Mapping):
            kept = {"signed": copy_json(invite["signed"])} if "signed" in invite else {}
            pruned["third_party_invite"] = kept
    return pruned


def prune_event_dict(room_version: RoomVersion, pdu: Mapping[str, Any]) -> JsonDict:
    """Apply the room version's redaction algorithm to a PDU.

    The input is not modified.  ``unsigned`` is always dropped (see the
    module docstring).

    Args:
        room_version: The room version whose algorithm to apply.
        pdu: The event in federation format.

    Returns:
        A new dict holding only the protected keys; ``content`` is always present.
    """
    allowed = _TOP_LEVEL_KEYS
    if not room_version.updated_redaction_rules:
        allowed = allowed | _PRE_V11_EXTRA_TOP_LEVEL_KEYS
    pruned: JsonDict = {key: copy_json(value) for key, value in pdu.items() if key in allowed}
    pruned["content"] = _prune_content(room_version, pdu.get("type"), pdu.get("content"))
    return pruned
