"""Room creation (``POST /createRoom``), following the spec and Synapse's observable behaviour.

The room's first events (create, the creator's join, power levels, canonical alias, the preset's
join rules, history visibility and guest access, ``initial_state``, name, topic) are one
request to the persistence controller, so they are stored together or not at all; invites are
sent after, one by one, like Synapse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import MatrixError
from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    RoomVersion,
    is_valid_room_alias,
    is_valid_user_id,
)
from trioserver.handlers.state_checks import third_party_invites_unsupported
from trioserver.storage.intents import EventIntent, NewRoom

if TYPE_CHECKING:
    from trioserver.handlers.membership import MembershipHandler
    from trioserver.storage.intents import EventSubmitter
    from trioserver.stores.directory import DirectoryStore
    from trioserver.stores.profiles import ProfileStore


@attrs.frozen
class Preset:
    """What a ``preset`` sets up (spec ``/createRoom``; Synapse's defaults)."""

    join_rule: str
    guest_can_join: bool
    invitees_have_ops: bool
    power_level_override: dict[str, Any]


PRESETS = {
    "private_chat": Preset("invite", True, False, {"invite": 0}),
    "trusted_private_chat": Preset("invite", True, True, {"invite": 0}),
    "public_chat": Preset("public", False, False, {"m.call.invite": 50}),
}


@attrs.frozen
class CreateRoomRequest:
    """A validated ``/createRoom`` body."""

    visibility: str = "private"
    preset: str = "private_chat"
    room_version: str = "12"
    alias_localpart: str | None = None
    name: str | None = None
    topic: str | None = None
    invite: tuple[str, ...] = ()
    is_direct: bool = False
    creation_content: dict[str, Any] = attrs.field(factory=dict)
    initial_state: tuple[tuple[str, str, dict[str, Any]], ...] = ()
    power_level_override: dict[str, Any] | None = None


def _get(body: dict[str, Any], key: str, kind: type, what: str) -> Any:
    value = body.get(key)
    if value is not None and (
        not isinstance(value, kind) or isinstance(value, bool) != (kind is bool)
    ):
        raise MatrixError("M_BAD_JSON", f"'{key}' must be {what}")
    return value


def _initial_state(raw: Any) -> tuple[tuple[str, str, dict[str, Any]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise MatrixError("M_BAD_JSON", "'initial_state' must be a list")
    result = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise MatrixError("M_BAD_JSON", "initial_state entries must be objects")
        event_type, state_key = entry.get("type"), entry.get("state_key", "")
        content = entry.get("content")
        if not isinstance(event_type, str) or not isinstance(state_key, str):
            raise MatrixError("M_BAD_JSON", "initial_state entries need a string type")
        if not isinstance(content, dict):
            raise MatrixError("M_BAD_JSON", "initial_state entries need an object content")
        result.append((event_type, state_key, content))
    return tuple(result)


def parse_create_room(body: dict[str, Any], default_version: str) -> CreateRoomRequest:
    """Validate a ``/createRoom`` body.

    Raises:
        MatrixError: 400 ``M_BAD_JSON``/``M_INVALID_PARAM``/``M_UNSUPPORTED_ROOM_VERSION``.
    """
    visibility = _get(body, "visibility", str, "a string") or "private"
    if visibility not in ("public", "private"):
        raise MatrixError("M_INVALID_PARAM", "'visibility' must be public or private")
    preset = _get(body, "preset", str, "a string")
    if preset is None:
        preset = "public_chat" if visibility == "public" else "private_chat"
    if preset not in PRESETS:
        raise MatrixError("M_INVALID_PARAM", f"Unknown preset: {preset}")
    version = _get(body, "room_version", str, "a string") or default_version
    if version not in KNOWN_ROOM_VERSIONS:
        raise MatrixError(
            "M_UNSUPPORTED_ROOM_VERSION", "Your homeserver does not support this room version"
        )
    invite = _get(body, "invite", list, "a list") or []
    for user_id in invite:
        if not is_valid_user_id(user_id, historical=True):
            raise MatrixError("M_INVALID_PARAM", f"Invalid user id in 'invite': {user_id!r}")
    if _get(body, "invite_3pid", list, "a list"):
        raise third_party_invites_unsupported()
    alias = _get(body, "room_alias_name", str, "a string")
    if alias is not None and (not alias or ":" in alias or any(c.isspace() for c in alias)):
        raise MatrixError("M_INVALID_PARAM", "Invalid characters in room alias")
    return CreateRoomRequest(
        visibility=visibility,
        preset=preset,
        room_version=version,
        alias_localpart=alias,
        name=_get(body, "name", str, "a string"),
        topic=_get(body, "topic", str, "a string"),
        invite=tuple(invite),
        is_direct=bool(_get(body, "is_direct", bool, "a boolean")),
        creation_content=dict(_get(body, "creation_content", dict, "an object") or {}),
        initial_state=_initial_state(body.get("initial_state")),
        power_level_override=_get(body, "power_level_content_override", dict, "an object"),
    )


def _power_levels(
    version: RoomVersion, creator: str, request: CreateRoomRequest, preset: Preset
) -> dict[str, Any]:
    # Room v12 (MSC4289): creators have infinite power and are not listed in `users`.
    creators_listed = not version.privileged_creators
    users: dict[str, int] = {creator: 100} if creators_listed else {}
    if preset.invitees_have_ops and creators_listed:
        users.update(dict.fromkeys(request.invite, 100))
    content: dict[str, Any] = {
        "users": users,
        "users_default": 0,
        "events": {
            "m.room.name": 50,
            "m.room.power_levels": 100,
            "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50,
            "m.room.avatar": 50,
            "m.room.tombstone": 150 if version.privileged_creators else 100,
            "m.room.server_acl": 100,
            "m.room.encryption": 100,
        },
        "events_default": 0,
        "state_default": 50,
        "ban": 50,
        "kick": 50,
        "redact": 50,
        "invite": 50,
        "historical": 100,
    }
    content.update(preset.power_level_override)
    if request.power_level_override:
        content.update(request.power_level_override)
    return content


class RoomCreationHandler:
    """Creates rooms for local users."""

    def __init__(
        self,
        persister: EventSubmitter,
        membership: MembershipHandler,
        directory: DirectoryStore,
        profiles: ProfileStore,
        *,
        server_name: str,
    ) -> None:
        self._persister = persister
        self._membership = membership
        self._directory = directory
        self._profiles = profiles
        self._server_name = server_name

    async def create_room(
        self, creator: str, request: CreateRoomRequest, *, room_id: str | None = None
    ) -> tuple[str, str | None]:
        """Create a room; return its id and alias (when one was asked for).

        Args:
            room_id: the id to give the room (room versions 1-11 only; see `NewRoom`).
        """
        alias = None
        if request.alias_localpart is not None:
            alias = f"#{request.alias_localpart}:{self._server_name}"
            if not is_valid_room_alias(alias):
                raise MatrixError("M_INVALID_PARAM", "Invalid room alias")
            if await self._directory.get_alias(alias) is not None:
                raise MatrixError("M_ROOM_IN_USE", "Room alias already taken")
        version = KNOWN_ROOM_VERSIONS[request.room_version]
        intents = await self._initial_events(version, creator, request, alias)
        stored = await self._persister.submit(None, intents, NewRoom(version, room_id))
        room_id = stored[0].event.room_id
        if alias is not None and not await self._directory.create_alias(alias, room_id, creator):
            raise MatrixError("M_ROOM_IN_USE", "Room alias already taken")
        if request.visibility == "public":
            await self._directory.set_public(room_id, True)
        extra = {"is_direct": True} if request.is_direct else None
        for invitee in request.invite:
            await self._membership.update_membership(
                creator, room_id, invitee, "invite", extra_content=extra
            )
        return room_id, alias

    async def _initial_events(
        self, version: RoomVersion, creator: str, request: CreateRoomRequest, alias: str | None
    ) -> list[EventIntent]:
        preset = PRESETS[request.preset]

        def state(event_type: str, content: dict[str, Any], key: str = "") -> EventIntent:
            return EventIntent(type=event_type, sender=creator, content=content, state_key=key)

        create_content = {**request.creation_content, "room_version": version.identifier}
        if not version.implicit_room_creator:
            create_content["creator"] = creator
        if version.privileged_creators and preset.invitees_have_ops and request.invite:
            create_content["additional_creators"] = list(request.invite)
        join: dict[str, Any] = {"membership": "join"}
        profile = await self._profiles.get_profile(creator)
        if profile is not None and profile.displayname is not None:
            join["displayname"] = profile.displayname
        if profile is not None and profile.avatar_url is not None:
            join["avatar_url"] = profile.avatar_url
        initial = {(t, k): c for t, k, c in request.initial_state}
        intents = [state("m.room.create", create_content), state("m.room.member", join, creator)]
        power_levels = initial.pop(("m.room.power_levels", ""), None)
        intents.append(
            state(
                "m.room.power_levels",
                power_levels or _power_levels(version, creator, request, preset),
            )
        )
        if alias is not None and ("m.room.canonical_alias", "") not in initial:
            intents.append(state("m.room.canonical_alias", {"alias": alias}))
        defaults = [
            ("m.room.join_rules", {"join_rule": preset.join_rule}),
            ("m.room.history_visibility", {"history_visibility": "shared"}),
        ]
        if preset.guest_can_join:
            defaults.append(("m.room.guest_access", {"guest_access": "can_join"}))
        intents += [state(t, c) for t, c in defaults if (t, "") not in initial]
        intents += [state(t, c, k) for (t, k), c in initial.items()]
        if request.name is not None:
            intents.append(state("m.room.name", {"name": request.name}))
        if request.topic is not None:
            topic = {"topic": request.topic, "m.topic": {"m.text": [{"body": request.topic}]}}
            intents.append(state("m.room.topic", topic))
        return intents
