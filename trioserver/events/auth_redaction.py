"""When a redaction may be performed (beyond the authorisation rules).

Theory of operation:
    In room versions 1 and 2 auth rule 11 decides whether a redaction is
    allowed (redact level, or the same *event ID domain*).  From v3 on the
    auth rules accept any ``m.room.redaction`` the sender may send (only the
    ``events``/``events_default`` levels apply; "the redact level is not
    considered"), and "Handling redactions" adds a separate test, applied
    once both events are known, before the redaction takes effect or is sent
    to clients:

    1. the redaction's sender has at least the *redact level*, or
    2. the redaction's sender's *domain* matches the original's sender's.

    A server must therefore apply two different checks:

    * :func:`check_client_redaction` - when one of *its* users asks to redact:
      a user may redact their own events; anyone else's needs the redact
      level.  The server-domain clause above exists for federation only;
      locally the server knows the actual user.
    * :func:`should_apply_redaction` - for every redaction (local or
      received), before pruning the target or sending the redaction to clients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from trioserver.events import constants as c
from trioserver.events.errors import AuthError
from trioserver.events.jsonutil import StateKey, domain_of
from trioserver.events.model import Event
from trioserver.events.power_levels import get_named_level, get_user_power_level

if TYPE_CHECKING:
    from trioserver.events.room_versions import RoomVersion

AuthEvents = Mapping[StateKey, Event]


def _has_redact_level(room_version: RoomVersion, user_id: str, auth_events: AuthEvents) -> bool:
    power_levels = auth_events.get(c.POWER_LEVELS_KEY)
    redact_level = get_named_level(
        room_version, "redact", power_levels.content if power_levels else None
    )
    return get_user_power_level(room_version, user_id, auth_events) >= redact_level


def should_apply_redaction(
    room_version: RoomVersion, redaction: Event, target: Event, auth_events: AuthEvents
) -> bool:
    """Whether an accepted redaction should be applied to its target.

    Args:
        room_version: The room's version.
        redaction: The ``m.room.redaction`` event (already accepted by the auth rules).
        target: The event named by ``redaction.redacts``.
        auth_events: The state at the redaction (for the power levels).

    Returns:
        True if the target must be redacted and the redaction shown to clients.
    """
    if redaction.type != c.REDACTION or redaction.redacts != target.event_id:
        return False
    if target.room_id != redaction.room_id:
        return False
    if _has_redact_level(room_version, redaction.sender, auth_events):
        return True
    if room_version.event_id_in_pdu:
        # v1/v2 rule 11 compares the domains of the *event IDs*.
        return domain_of(redaction.event_id) == domain_of(target.event_id)
    return domain_of(redaction.sender) == domain_of(target.sender)


def check_client_redaction(
    room_version: RoomVersion,
    *,
    sender: str,
    room_id: str,
    target: Event | None,
    auth_events: AuthEvents,
) -> None:
    """Decide whether a local user may redact an event (Client-Server API).

    The ``m.room.redaction`` event must additionally pass the auth rules
    (which check its ``events`` level).  A user may redact their own events;
    redacting someone else's needs the *redact level* (``m.room.power_levels``
    schema: "The power level required to redact an event sent by another user
    is additionally governed by redact").  Like Synapse, ``m.room.create``
    and ``m.room.server_acl`` events may not be redacted: redacting them
    would change the room's identity or open it to banned servers.

    Args:
        room_version: The room's version.
        sender: The user asking to redact.
        room_id: The room the redaction is sent to.
        target: The event to redact, or ``None`` if this server does not have it.
        auth_events: The current state (for the power levels).

    Raises:
        AuthError: If the redaction is not allowed.
    """
    if _has_redact_level(room_version, sender, auth_events):
        if target is None:
            return
    elif target is None:
        raise AuthError("unknown event: only users with the redact level may redact it")
    elif target.sender != sender:
        raise AuthError("redacting another user's event needs the redact level")
    if target.room_id != room_id:
        raise AuthError("cannot redact an event from another room")
    if target.type in (c.CREATE, c.SERVER_ACL) and target.state_key == "":
        raise AuthError(f"{target.type} events cannot be redacted")
