"""Reading power levels from room state, per room version.

Theory of operation:
    Power levels are "inferred from defaults when not explicitly supplied"
    (auth rules note).  The defaults come from the ``m.room.power_levels``
    event schema and the server-server "Definitions":

    ==================  =======  ====================================
    ``users_default``   0
    ``events_default``  0
    ``state_default``   50       also when there is no power levels event
    ``invite``          0
    ``kick``/``ban``    50
    ``redact``          50
    ==================  =======  ====================================

    With no power levels event at all, the room creator has 100 and everyone
    else 0.  The creator is ``content.creator`` of the create event in v1-10
    and its ``sender`` from v11 (MSC2175).  In v12 (MSC4289) the creators -
    the create event's sender plus ``content.additional_creators`` - have an
    infinite power level regardless of any power levels event; it is modelled
    as :data:`CREATOR_POWER_LEVEL`, which exceeds every integer strict
    canonical JSON (mandatory in v12) can express.

    Value formats differ by room version: v10+ accepts only JSON integers;
    v1-9 also accept integer strings (``" +0100 "``, the "stringy power
    levels" fragment); v1-5 also accept floats, truncated toward zero (the
    "floaty power levels" fragment).  A value that cannot be read is treated
    as absent (the default applies): the auth rules reject *new* power levels
    events containing such values, so they only occur in old, already
    accepted state.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from trioserver.events import constants as c
from trioserver.events.identifiers import is_valid_user_id
from trioserver.events.jsonutil import StateKey, is_json_int

if TYPE_CHECKING:
    from trioserver.events.model import Event
    from trioserver.events.room_versions import RoomVersion

#: The power level of v12 room creators: "infinitely high".
CREATOR_POWER_LEVEL: Final = 2**53
#: With no power levels event, the room creator's level (pre-v12).
DEFAULT_CREATOR_POWER_LEVEL: Final = 100
#: Defaults of the named levels (server-server API, "Definitions").
NAMED_LEVEL_DEFAULTS: Final[Mapping[str, int]] = {
    "users_default": 0,
    "events_default": 0,
    "state_default": 50,
    "invite": 0,
    "kick": 50,
    "ban": 50,
    "redact": 50,
}

# "Stringy power levels": optional ASCII whitespace, one optional sign, base-10 digits.
_STRINGY_LEVEL = re.compile(r"[ \t\n\r\f\v]*([+-]?[0-9]+)[ \t\n\r\f\v]*\Z")


def parse_power_level(room_version: RoomVersion, value: object) -> int | None:
    """Interpret a JSON value as a power level under a room version's rules.

    Args:
        room_version: Selects which representations are accepted.
        value: The raw JSON value.

    Returns:
        The integer level, or ``None`` if the value is not a valid power level.
    """
    if is_json_int(value):
        assert isinstance(value, int)
        return value
    if room_version.enforce_int_power_levels:
        return None
    if isinstance(value, str):
        match = _STRINGY_LEVEL.match(value)
        return int(match.group(1)) if match else None
    if isinstance(value, float) and not room_version.strict_canonical_json:
        # "Values outside the range ... of IEEE754 binary64 ... Infinity, -Infinity
        # and NaN" cause rejection; finite floats truncate at the decimal point.
        return int(value) if math.isfinite(value) else None
    return None


def get_creators(room_version: RoomVersion, create_event: Event) -> frozenset[str]:
    """The room creators according to the room version.

    Args:
        room_version: The room's version.
        create_event: The room's ``m.room.create`` event.

    Returns:
        v1-10: ``{content.creator}`` (empty if missing or not a string);
        v11: ``{sender}``; v12: ``{sender}`` plus valid ``additional_creators``.
    """
    if not room_version.implicit_room_creator:
        creator = create_event.content.get("creator")
        return frozenset({creator}) if isinstance(creator, str) else frozenset()
    creators = {create_event.sender}
    if room_version.privileged_creators:
        extra = create_event.content.get("additional_creators")
        if isinstance(extra, list):
            creators.update(user for user in extra if is_valid_user_id(user, historical=True))
    return frozenset(creators)


def _power_levels_content(auth_events: Mapping[StateKey, Event]) -> Mapping[str, Any] | None:
    event = auth_events.get(c.POWER_LEVELS_KEY)
    return event.content if event is not None else None


def get_user_power_level(
    room_version: RoomVersion, user_id: str, auth_events: Mapping[StateKey, Event]
) -> int:
    """A user's power level in the given state.

    Args:
        room_version: The room's version.
        user_id: The user.
        auth_events: State map holding at least the create event and, if the
            room has one, the power levels event.

    Returns:
        The level (:data:`CREATOR_POWER_LEVEL` for v12 creators).
    """
    create = auth_events.get(c.CREATE_KEY)
    if (
        room_version.privileged_creators
        and create is not None
        and user_id in get_creators(room_version, create)
    ):
        return CREATOR_POWER_LEVEL
    content = _power_levels_content(auth_events)
    if content is None:
        is_creator = create is not None and user_id in get_creators(room_version, create)
        return DEFAULT_CREATOR_POWER_LEVEL if is_creator else 0
    users = content.get("users")
    if isinstance(users, Mapping) and user_id in users:
        level = parse_power_level(room_version, users[user_id])
        if level is not None:
            return level
    return get_named_level(room_version, "users_default", content)


def get_named_level(
    room_version: RoomVersion, name: str, power_levels_content: Mapping[str, Any] | None
) -> int:
    """One of the top-level levels (``invite``, ``kick``, ``ban``, ``redact``, defaults).

    Args:
        room_version: The room's version.
        name: A key of :data:`NAMED_LEVEL_DEFAULTS`.
        power_levels_content: ``content`` of the current power levels event,
            or ``None`` if the room has none.

    Returns:
        The level, or its default if absent or unreadable.
    """
    default = NAMED_LEVEL_DEFAULTS[name]
    if power_levels_content is None or name not in power_levels_content:
        return default
    level = parse_power_level(room_version, power_levels_content[name])
    return default if level is None else level


def get_send_level(
    room_version: RoomVersion,
    event_type: str,
    is_state: bool,
    power_levels_content: Mapping[str, Any] | None,
) -> int:
    """The *required power level* to send an event of a type.

    Server-server API "Definitions": ``events[type]`` if listed, otherwise
    ``state_default`` for state events or ``events_default`` for others.

    Args:
        room_version: The room's version.
        event_type: The event type.
        is_state: Whether the event has a state key.
        power_levels_content: ``content`` of the current power levels event,
            or ``None`` if the room has none.

    Returns:
        The level.
    """
    if power_levels_content is not None:
        events = power_levels_content.get("events")
        if isinstance(events, Mapping) and event_type in events:
            level = parse_power_level(room_version, events[event_type])
            if level is not None:
                return level
    name = "state_default" if is_state else "events_default"
    return get_named_level(room_version, name, power_levels_content)
