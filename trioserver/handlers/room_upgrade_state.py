"""What a room upgrade puts where: pure functions over state contents (no I/O).

See `trioserver.handlers.room_upgrade` for the order in which they are used; every rule here
is Synapse's observable behaviour unless a comment cites the spec.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.events import is_valid_user_id

if TYPE_CHECKING:
    from trioserver.events import Event, RoomVersion

StateMap = dict[tuple[str, str], "Event"]
POWER_LEVELS = "m.room.power_levels"
CANONICAL_ALIAS = "m.room.canonical_alias"
TOMBSTONE = "m.room.tombstone"
# The state Synapse copies into the replacement room.
COPIED_TYPES = (
    "m.room.join_rules",
    "m.room.name",
    "m.room.topic",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    POWER_LEVELS,
)
MAX_USER_ID_BYTES = 255


def parse_additional_creators(raw: Any) -> list[str] | None:
    """Validate ``additional_creators`` (MSC4289) of an upgrade request.

    Raises:
        MatrixError: 400 ``M_BAD_JSON`` for anything but a list of valid user ids.
    """
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise MatrixError("M_BAD_JSON", "additional_creators must be an array")
    for entry in raw:
        if (
            not isinstance(entry, str)
            or len(entry.encode()) > MAX_USER_ID_BYTES
            or not is_valid_user_id(entry, historical=True)
        ):
            raise MatrixError("M_BAD_JSON", f"Invalid user id in additional_creators: {entry!r}")
    return list(raw)


def fixup_power_levels(content: dict[str, Any]) -> dict[str, Any]:
    """A copy of power levels content with integer-like strings made integers.

    Newer room versions accept only integers (v10); a value that is no level at all is
    dropped, so the copy is valid in any room version.
    """
    fixed: dict[str, Any] = {}
    for key, value in content.items():
        if isinstance(value, dict):
            fixed[key] = {
                k: v for k, v in ((k, _as_level(v)) for k, v in value.items()) if v is not None
            }
        elif (level := _as_level(value)) is not None:
            fixed[key] = level
    return fixed


def _as_level(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 10)
        except ValueError:
            return None
    return None


def _level(content: dict[str, Any], key: str, default: int) -> int:
    value = content.get(key, default)
    return value if isinstance(value, int) else default


def restricted_power_levels(content: dict[str, Any]) -> dict[str, Any] | None:
    """The old room's power levels after an upgrade, or None when nothing changes.

    Synapse's rule: regular users should no longer talk or invite, so ``events_default`` and
    ``invite`` become at least 50, and above ``users_default`` when that is 50 or more.
    """
    restricted = fixup_power_levels(content)
    needed = max(_level(restricted, "users_default", 0) + 1, 50)
    changed = False
    for key in ("invite", "events_default"):
        if _level(restricted, key, 0) < needed:
            restricted[key] = needed
            changed = True
    return restricted if changed else None


def without_users(content: dict[str, Any], user_ids: list[str]) -> dict[str, Any]:
    users = content.get("users")
    if not isinstance(users, dict) or not any(u in users for u in user_ids):
        return content
    return {**content, "users": {u: v for u, v in users.items() if u not in user_ids}}


def initial_power_levels(
    old: dict[str, Any], upgrader: str, version: RoomVersion, creators: list[str]
) -> dict[str, Any]:
    """The new room's first power levels: the old ones, with the upgrader able to copy state.

    The upgrader is raised to the highest of ``state_default``, ``ban`` and every ``events``
    level, as Synapse does; `restore` puts the old levels back afterwards.
    """
    content = fixup_power_levels(old)
    events = content.get("events")
    event_levels = list(events.values()) if isinstance(events, dict) else []
    needed = max(_level(content, "state_default", 50), _level(content, "ban", 50), *event_levels)
    users = dict(content.get("users") or {})
    if users.get(upgrader, _level(content, "users_default", 0)) < needed:
        users[upgrader] = needed
    content["users"] = users
    if version.privileged_creators:
        # Room v12 (MSC4289): creators have infinite power and must not be listed.
        content = without_users(content, creators)
    return content


def creation_content(
    old_create: Event, version: RoomVersion, additional: list[str] | None
) -> dict[str, Any]:
    """The new room's ``m.room.create`` content (without ``predecessor.event_id``)."""
    content: dict[str, Any] = {"predecessor": {"room_id": old_create.room_id}}
    if old_create.content.get("m.federate", True) is False:
        content["m.federate"] = False
    room_type = old_create.content.get("type")
    if room_type is not None:
        content["type"] = room_type
    if additional is not None and version.privileged_creators:
        content["additional_creators"] = additional
    return content


def copied_state(old_state: StateMap, old_create: Event) -> list[tuple[str, str, dict[str, Any]]]:
    """The state events (type, state key, content) copied into the new room, and the bans."""
    copied = [
        (t, "", dict(old_state[(t, "")].content)) for t in COPIED_TYPES if (t, "") in old_state
    ]
    is_space = old_create.content.get("type") == "m.space"
    for (event_type, state_key), event in old_state.items():
        # A space's children come along (an empty one was removed); bans stay in force.
        child = event_type == "m.space.child" and is_space and bool(event.content)
        ban = event_type == "m.room.member" and event.membership == "ban"
        if child or ban:
            copied.append((event_type, state_key, dict(event.content)))
    return copied


def moved_canonical_alias(
    content: dict[str, Any], server_suffix: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a canonical alias event's content: (what stays in the old room, what moves).

    Only local aliases move, as only they move in the directory.
    """
    old = dict(content)
    new: dict[str, Any] = {}
    alias = content.get("alias")
    if isinstance(alias, str) and alias.endswith(server_suffix):
        new["alias"] = alias
        del old["alias"]
    alt = content.get("alt_aliases")
    if isinstance(alt, list) and alt:
        local = [a for a in alt if isinstance(a, str) and a.endswith(server_suffix)]
        new["alt_aliases"] = local
        remaining = [a for a in alt if a not in local]
        if remaining:
            old["alt_aliases"] = remaining
        else:
            del old["alt_aliases"]
    return old, new


def direct_with_room(
    direct: dict[str, Any], old_room_id: str, new_room_id: str
) -> dict[str, Any] | None:
    """``m.direct`` with the new room next to the old one, or None when it is not listed."""
    changed = False
    updated: dict[str, Any] = {}
    for user_id, rooms in direct.items():
        if isinstance(rooms, list) and old_room_id in rooms and new_room_id not in rooms:
            updated[user_id] = [*rooms, new_room_id]
            changed = True
        else:
            updated[user_id] = rooms
    return updated if changed else None
