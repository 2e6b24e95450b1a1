"""Room upgrades (``POST /rooms/{roomId}/upgrade``, spec "Room Upgrades").

Theory of operation
-------------------
The spec's server behaviour, with the details Synapse shows:

1. The upgrader must be able to send ``m.room.tombstone`` in the old room (403 otherwise).
2. A new room is created whose ``m.room.create`` names the old room in ``predecessor`` and
   keeps ``m.federate`` and the room ``type``. Its initial state copies the state a client
   would want kept (`COPIED_TYPES`, space children of a space) and the bans. The power levels
   are copied too, with the upgrader raised for the moment to the highest level any state
   needs, so that every copied event is allowed; in room version 12 the creators leave the
   ``users`` map (they have infinite power there).
3. The tombstone (``replacement_room``) is sent in the old room.
4. Local aliases move to the new room, and so does the canonical alias event; tags and
   ``m.direct`` entries of local members follow; a room published in the directory is
   published in its place.
5. The old room's ``events_default`` and ``invite`` are raised to moderator (or above
   ``users_default``), and the new room gets the old room's power levels back as they were.
   Steps 4 and 5 are best effort, as in Synapse: an upgrader who may not change them in the
   old room still gets a new room.

Nobody is invited or joined to the new room: clients follow the tombstone (Synapse only
auto-joins through its admin API).

Ordering and the predecessor link: before room version 12 the new room's id is chosen here, so
the tombstone can be sent first and its event id written into ``predecessor.event_id`` (SyTest
checks the two agree). From version 12 the room id is the create event's hash, so the new room
has to exist before the tombstone can name it; its ``predecessor`` then carries only
``room_id`` (MSC4291, and what Synapse sends). The permission check comes first either way, so
a refused upgrade changes nothing. Before version 12, a failure while creating the new room
(after the tombstone) leaves the old room pointing at a room that does not exist; the client
gets the error and can upgrade again, which replaces the tombstone.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import MatrixError
from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    get_creators,
    get_send_level,
    get_user_power_level,
)
from trioserver.handlers.room_creation import CreateRoomRequest
from trioserver.handlers.room_upgrade_state import (
    CANONICAL_ALIAS,
    POWER_LEVELS,
    TOMBSTONE,
    StateMap,
    copied_state,
    creation_content,
    direct_with_room,
    fixup_power_levels,
    initial_power_levels,
    moved_canonical_alias,
    restricted_power_levels,
    without_users,
)
from trioserver.storage.intents import random_room_id

if TYPE_CHECKING:
    from collections.abc import Mapping

    from trioserver.events import Event, RoomVersion
    from trioserver.handlers.account_data import AccountDataHandler
    from trioserver.handlers.auth import Requester
    from trioserver.handlers.push_rules import PushRulesHandler
    from trioserver.handlers.room_creation import RoomCreationHandler
    from trioserver.handlers.send import SendHandler
    from trioserver.stores.directory import DirectoryStore
    from trioserver.stores.events import EventStore
    from trioserver.stores.state import StateStore

logger = logging.getLogger(__name__)


class RoomUpgradeHandler:
    """Replaces a room by a new one of another room version."""

    def __init__(
        self,
        state: StateStore,
        events: EventStore,
        send: SendHandler,
        room_creation: RoomCreationHandler,
        directory: DirectoryStore,
        account_data: AccountDataHandler,
        *,
        server_name: str,
        push_rules: PushRulesHandler | None = None,
    ) -> None:
        self._state = state
        self._events = events
        self._send = send
        self._room_creation = room_creation
        self._directory = directory
        self._account_data = account_data
        self._push_rules = push_rules
        self._server_name = server_name
        self._server_suffix = ":" + server_name
        # Rooms being upgraded now: a second upgrade of the same room is refused (Synapse).
        self._in_progress: set[str] = set()

    async def upgrade_room(
        self,
        requester: Requester,
        old_room_id: str,
        version: RoomVersion,
        additional_creators: list[str] | None,
    ) -> str:
        """Upgrade a room; return the replacement room's id.

        Raises:
            MatrixError: 404 unknown room, 403 when the requester may not send a tombstone,
                400 when an upgrade of the room is already running.
        """
        if old_room_id in self._in_progress:
            raise MatrixError("M_UNKNOWN", "An upgrade for this room is currently in progress")
        self._in_progress.add(old_room_id)
        try:
            return await self._upgrade(requester, old_room_id, version, additional_creators)
        finally:
            self._in_progress.discard(old_room_id)

    async def _upgrade(
        self,
        requester: Requester,
        old_room_id: str,
        version: RoomVersion,
        additional: list[str] | None,
    ) -> str:
        old_state = await self._old_state(requester.user_id, old_room_id)
        old_create = old_state[("m.room.create", "")]
        create_content = creation_content(old_create, version, additional)
        request = await self._new_room_request(requester.user_id, old_state, version, additional)
        if version.room_id_from_create_event:
            new_room_id = await self._create(requester, request, create_content, None)
            await self._send_tombstone(requester, old_room_id, new_room_id)
        else:
            new_room_id = await self._unused_room_id()
            tombstone_id = await self._send_tombstone(requester, old_room_id, new_room_id)
            create_content["predecessor"]["event_id"] = tombstone_id
            await self._create(requester, request, create_content, new_room_id)
        await self._move_aliases(requester, old_room_id, new_room_id, old_state)
        await self._move_user_data(old_room_id, new_room_id)
        if request.visibility == "public":  # read from the directory by _new_room_request
            await self._directory.set_public(old_room_id, False)
        await self._update_power_levels(requester, old_room_id, new_room_id, old_state, version)
        logger.info("room %s upgraded to %s (v%s)", old_room_id, new_room_id, version.identifier)
        return new_room_id

    async def _old_state(self, user_id: str, room_id: str) -> StateMap:
        version_id = await self._state.room_version(room_id)
        if version_id is None:
            raise MatrixError("M_NOT_FOUND", f"Unknown room id {room_id}")
        ids = await self._state.current_state(room_id)
        found = await self._events.get_events(ids.values())
        state = {key: found[eid].event for key, eid in ids.items() if eid in found}
        member = state.get(("m.room.member", user_id))
        create = state.get(("m.room.create", ""))
        if create is None or member is None or member.membership != "join":
            raise MatrixError("M_FORBIDDEN", f"User {user_id} is not in room {room_id}")
        old_version = KNOWN_ROOM_VERSIONS[version_id]
        power_levels = state.get((POWER_LEVELS, ""))
        needed = get_send_level(
            old_version, TOMBSTONE, True, None if power_levels is None else power_levels.content
        )
        if get_user_power_level(old_version, user_id, state) < needed:
            raise MatrixError("M_FORBIDDEN", "You don't have permission to upgrade the room")
        return state

    async def _new_room_request(
        self,
        upgrader: str,
        old_state: StateMap,
        version: RoomVersion,
        additional: list[str] | None,
    ) -> CreateRoomRequest:
        old_create = old_state[("m.room.create", "")]
        initial = copied_state(old_state, old_create)
        creators = [upgrader, *(additional or [])]
        for index, (event_type, _, content) in enumerate(initial):
            if event_type == POWER_LEVELS:
                initial[index] = (
                    POWER_LEVELS,
                    "",
                    initial_power_levels(content, upgrader, version, creators),
                )
        public = await self._directory.is_public(old_create.room_id)
        return CreateRoomRequest(
            visibility="public" if public else "private",
            # Every preset default is overridden by the copied state; Synapse uses this one.
            preset="private_chat",
            room_version=version.identifier,
            initial_state=tuple(initial),
        )

    async def _create(
        self,
        requester: Requester,
        request: CreateRoomRequest,
        create_content: dict[str, Any],
        room_id: str | None,
    ) -> str:
        with_content = attrs.evolve(request, creation_content=create_content)
        new_room_id, _ = await self._room_creation.create_room(
            requester.user_id, with_content, room_id=room_id
        )
        return new_room_id

    async def _unused_room_id(self) -> str:
        while True:
            room_id = random_room_id(self._server_name)
            if await self._state.room_version(room_id) is None:
                return room_id

    async def _send_tombstone(self, requester: Requester, old_room_id: str, new: str) -> str:
        content = {"body": "This room has been replaced", "replacement_room": new}
        return await self._send.send_state(requester, old_room_id, TOMBSTONE, "", content)

    async def _move_aliases(
        self, requester: Requester, old_room_id: str, new_room_id: str, old_state: StateMap
    ) -> None:
        await self._directory.move_aliases(old_room_id, new_room_id)
        event = old_state.get((CANONICAL_ALIAS, ""))
        if event is None:
            return
        old, new = moved_canonical_alias(dict(event.content), self._server_suffix)
        for room_id, content in ((old_room_id, old), (new_room_id, new)):
            await self._best_effort(requester, room_id, CANONICAL_ALIAS, content)

    async def on_join(
        self, user_id: str, room_id: str, state: Mapping[tuple[str, str], Event]
    ) -> None:
        """A user who joins an upgraded room later gets their data for its predecessor
        copied too (tags, ``m.direct``, push rules), as Synapse does; a `MembershipHandler`
        join listener. Copying again is harmless: the copies replace themselves."""
        create = state.get(("m.room.create", ""))
        predecessor = create.content.get("predecessor") if create is not None else None
        old_room_id = predecessor.get("room_id") if isinstance(predecessor, dict) else None
        if isinstance(old_room_id, str) and old_room_id != room_id:
            await self._copy_user_data(user_id, old_room_id, room_id)

    async def _move_user_data(self, old_room_id: str, new_room_id: str) -> None:
        # Synapse copies each local member's tags, m.direct entries and push rules for the
        # room to the new room.
        joined = await self._state.joined_users(old_room_id)
        for user_id in (u for u in joined if u.endswith(self._server_suffix)):
            await self._copy_user_data(user_id, old_room_id, new_room_id)

    async def _copy_user_data(self, user_id: str, old_room_id: str, new_room_id: str) -> None:
        if self._push_rules is not None:
            await self._push_rules.copy_room_rules(user_id, old_room_id, new_room_id)
        tags = await self._account_data.get_account_data(user_id, old_room_id, "m.tag")
        # Already copied (a later join after the upgrade copied them): leave them as they are.
        if tags and not await self._account_data.get_account_data(user_id, new_room_id, "m.tag"):
            await self._account_data.set_account_data(user_id, new_room_id, "m.tag", tags)
        direct = await self._account_data.get_account_data(user_id, None, "m.direct")
        if direct:
            updated = direct_with_room(direct, old_room_id, new_room_id)
            if updated is not None:
                await self._account_data.set_account_data(user_id, None, "m.direct", updated)

    async def _update_power_levels(
        self,
        requester: Requester,
        old_room_id: str,
        new_room_id: str,
        old_state: StateMap,
        version: RoomVersion,
    ) -> None:
        event = old_state.get((POWER_LEVELS, ""))
        if event is None:
            return
        restricted = restricted_power_levels(dict(event.content))
        if restricted is not None:
            await self._best_effort(requester, old_room_id, POWER_LEVELS, restricted)
        restored = fixup_power_levels(dict(event.content))
        if version.privileged_creators:
            create = await self._new_create_event(new_room_id)
            restored = without_users(restored, sorted(get_creators(version, create)))
        await self._send.send_state(requester, new_room_id, POWER_LEVELS, "", restored)

    async def _new_create_event(self, room_id: str) -> Event:
        ids = await self._state.current_state(room_id)
        stored = await self._events.get_event(ids[("m.room.create", "")])
        assert stored is not None
        return stored.event

    async def _best_effort(
        self, requester: Requester, room_id: str, event_type: str, content: dict[str, Any]
    ) -> None:
        try:
            await self._send.send_state(requester, room_id, event_type, "", content)
        except MatrixError as err:  # boundary: the new room exists; report it regardless
            logger.warning("room upgrade: could not send %s in %s: %s", event_type, room_id, err)
