"""Authorisation rules for ``m.room.power_levels`` events (rule 10 in v1, 9 in v6+).

Theory of operation:
    First the new content is validated (rules 10.1-10.4 of v12):

    * v10+: the seven top-level levels must be JSON integers; ``events`` and
      ``notifications`` objects of integers; ``users`` an object mapping
      valid user IDs to integers.
    * v1-9: ``users`` must map valid user IDs to integers "or a string that
      is an integer".  The specification says nothing about the other levels
      in these versions; a value that cannot be read as a power level (see
      :func:`~trioserver.events.power_levels.parse_power_level`) is rejected
      here too, because the later comparison rules cannot be evaluated on it
      (Synapse fails on such values as well).
    * v12: no room creator may appear in ``users``.

    Then, if the room already has power levels, every alteration is compared
    with the sender's *current* level: top-level levels and ``events`` /
    ``notifications`` (v6+) entries may neither be changed from nor to a
    value above it; ``users`` entries other than the sender's own may only be
    changed or removed if their current value is *below* it, and no entry
    may be set above it.  "Changed" compares the interpreted integers, so
    ``"50"`` -> ``50`` is not an alteration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from trioserver.events import constants as c
from trioserver.events.errors import AuthError
from trioserver.events.identifiers import is_valid_user_id
from trioserver.events.jsonutil import StateKey, is_json_int
from trioserver.events.power_levels import (
    NAMED_LEVEL_DEFAULTS,
    get_creators,
    get_user_power_level,
    parse_power_level,
)

if TYPE_CHECKING:
    from trioserver.events.model import Event
    from trioserver.events.room_versions import RoomVersion

_NAMED_LEVELS = tuple(NAMED_LEVEL_DEFAULTS)


def _level_maps(room_version: RoomVersion) -> tuple[str, ...]:
    # v6 (MSC2209) extends the events rules to "notifications".
    if room_version.limit_notifications_power_levels:
        return ("events", "notifications")
    return ("events",)


def _is_level(room_version: RoomVersion, value: object) -> bool:
    if room_version.enforce_int_power_levels:
        return is_json_int(value)
    return parse_power_level(room_version, value) is not None


def validate_power_levels_content(room_version: RoomVersion, content: Mapping[str, Any]) -> None:
    """Check the format of a new power levels event's content.

    Args:
        room_version: The room's version.
        content: The ``content`` of the ``m.room.power_levels`` event.

    Raises:
        AuthError: If a level has the wrong type or a ``users`` key is not a user ID.
    """
    for name in _NAMED_LEVELS:
        if name in content and not _is_level(room_version, content[name]):
            raise AuthError(f"power level {name!r} is not an integer")
    for name in _level_maps(room_version):
        if name not in content:
            continue
        levels = content[name]
        if not isinstance(levels, Mapping) or not all(
            _is_level(room_version, value) for value in levels.values()
        ):
            raise AuthError(f"power levels {name!r} is not an object of integers")
    users = content.get("users", {})
    if not isinstance(users, Mapping):
        raise AuthError("power levels 'users' is not an object")
    for user_id, value in users.items():
        if not is_valid_user_id(user_id, historical=True):
            raise AuthError(f"power levels 'users' has an invalid user ID {user_id!r}")
        if not _is_level(room_version, value):
            raise AuthError(f"power level of {user_id!r} is not an integer")


def _parsed(room_version: RoomVersion, mapping: Any) -> dict[str, int]:
    """Interpretable entries of a power levels object; unreadable ones count as absent."""
    if not isinstance(mapping, Mapping):
        return {}
    parsed = {}
    for key, value in mapping.items():
        level = parse_power_level(room_version, value)
        if level is not None:
            parsed[key] = level
    return parsed


def check_power_levels(
    room_version: RoomVersion, event: Event, auth_events: Mapping[StateKey, Event]
) -> None:
    """Apply the ``m.room.power_levels`` authorisation rules.

    Args:
        room_version: The room's version.
        event: The new ``m.room.power_levels`` event.
        auth_events: The state to check against (must contain the create event).

    Raises:
        AuthError: If the event is rejected.
    """
    content = event.content
    validate_power_levels_content(room_version, content)
    if room_version.privileged_creators:
        creators = get_creators(room_version, auth_events[c.CREATE_KEY])
        if creators & set(content.get("users", {})):
            raise AuthError("room creators cannot be listed in power levels 'users'")
    current = auth_events.get(c.POWER_LEVELS_KEY)
    if current is None:
        return
    sender_level = get_user_power_level(room_version, event.sender, auth_events)
    old_top = _parsed(
        room_version, {k: v for k, v in current.content.items() if k in _NAMED_LEVELS}
    )
    new_top = _parsed(room_version, {k: v for k, v in content.items() if k in _NAMED_LEVELS})
    _check_changes(old_top, new_top, sender_level, "power level")
    for name in _level_maps(room_version):
        old = _parsed(room_version, current.content.get(name))
        new = _parsed(room_version, content.get(name))
        _check_changes(old, new, sender_level, f"{name} level")
    _check_user_changes(
        _parsed(room_version, current.content.get("users")),
        _parsed(room_version, content.get("users")),
        event.sender,
        sender_level,
    )


def _check_changes(old: dict[str, int], new: dict[str, int], sender_level: int, what: str) -> None:
    # For each alteration: reject if the current value or the new value is
    # greater than the sender's current power level.
    for key in old.keys() | new.keys():
        if old.get(key) == new.get(key):
            continue
        if key in old and old[key] > sender_level:
            raise AuthError(f"cannot change {what} {key!r} from above your own level")
        if key in new and new[key] > sender_level:
            raise AuthError(f"cannot set {what} {key!r} above your own level")


def _check_user_changes(
    old: dict[str, int], new: dict[str, int], sender: str, sender_level: int
) -> None:
    for user_id in old.keys() | new.keys():
        if old.get(user_id) == new.get(user_id):
            continue
        # Changed or removed, other than the sender's own entry: the current
        # value must be strictly below the sender's level.
        if user_id != sender and user_id in old and old[user_id] >= sender_level:
            raise AuthError(f"cannot change the level of {user_id}: not below your own")
        if user_id in new and new[user_id] > sender_level:
            raise AuthError(f"cannot set the level of {user_id} above your own")
