"""Membership changes: join, invite, leave, kick, ban, unban, knock and forget.

The authorization rules (checked by the writer) decide who may do what; this module prepares
the member event the way Synapse does (profile in join and invite events, restricted-join
authorisation, no new event when nothing would change) and refuses what the client API
forbids beyond the rules (joining a room this server is no longer in, unbanning someone who is
not banned).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    get_named_level,
    get_server_name,
    get_user_power_level,
    is_valid_room_alias,
    is_valid_room_id,
    is_valid_user_id,
)
from trioserver.handlers.guest_access import check_guest_membership
from trioserver.handlers.sync_rooms import STRIPPED_STATE_TYPES, stripped
from trioserver.storage.intents import EventIntent

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from trioserver.events import Event
    from trioserver.federation.remote_membership import RemoteMembership
    from trioserver.storage.intents import EventSubmitter
    from trioserver.stores.database import Database, Txn
    from trioserver.stores.directory import DirectoryStore
    from trioserver.stores.events import EventStore
    from trioserver.stores.profiles import ProfileStore
    from trioserver.stores.state import StateStore

    # (user id, room id, the room's state before the join, by (type, state key)).
    JoinListener = Callable[[str, str, Mapping[tuple[str, str], Event]], Awaitable[None]]

logger = logging.getLogger(__name__)

MEMBER = "m.room.member"
RESTRICTED_RULES = ("restricted", "knock_restricted")


def _forget_txn(txn: Txn, user_id: str, room_id: str) -> None:
    txn.execute(
        "UPDATE room_memberships SET forgotten = 1 WHERE user_id = ? AND room_id = ?",
        (user_id, room_id),
    )


class MembershipHandler:
    """Changes room memberships on behalf of local users."""

    def __init__(
        self,
        persister: EventSubmitter,
        db: Database,
        events: EventStore,
        state: StateStore,
        profiles: ProfileStore,
        directory: DirectoryStore,
        *,
        server_name: str,
    ) -> None:
        self._persister = persister
        self._db = db
        self._events = events
        self._state = state
        self._profiles = profiles
        self._directory = directory
        self._server_name = server_name
        self._server_suffix = ":" + server_name
        self._join_listeners: list[JoinListener] = []
        # Issue 15: memberships in rooms this server is not in go over federation.
        self._remote: RemoteMembership | None = None

    def use_federation(self, remote: RemoteMembership) -> None:
        """Join, knock and reject invites through other servers, and invite their users."""
        self._remote = remote

    def add_join_listener(self, listener: JoinListener) -> None:
        """Have ``await listener(user_id, room_id, state)`` called after a local user joins a
        room they were not joined to; `state` is the room's state before the join."""
        self._join_listeners.append(listener)

    async def resolve_room(self, room_id_or_alias: str) -> str:
        """A room id from a room id or a local alias.

        Raises:
            MatrixError: 400 for neither, 404 for an unknown alias.
        """
        room_id, _servers = await self.resolve_room_and_servers(room_id_or_alias)
        return room_id

    async def resolve_room_and_servers(self, room_id_or_alias: str) -> tuple[str, list[str]]:
        """A room id from a room id or an alias (another server's, over federation), and
        the servers the directory says are in the room.

        Raises:
            MatrixError: 400 for neither, 404 for an unknown alias.
        """
        if room_id_or_alias.startswith("#"):
            if not is_valid_room_alias(room_id_or_alias):
                raise MatrixError("M_INVALID_PARAM", "Invalid room alias")
            if self._remote is not None and not room_id_or_alias.endswith(self._server_suffix):
                return await self._remote.query_alias(room_id_or_alias)
            row = await self._directory.get_alias(room_id_or_alias)
            if row is None:
                raise MatrixError("M_NOT_FOUND", "Room alias not found")
            return row.room_id, []
        if not is_valid_room_id(room_id_or_alias):
            raise MatrixError("M_INVALID_PARAM", f"{room_id_or_alias} is not a room id or alias")
        return room_id_or_alias, []

    async def _state_events(self, room_id: str) -> dict[tuple[str, str], Event]:
        ids = await self._state.current_state(room_id)
        found = await self._events.get_events(ids.values())
        return {key: found[eid].event for key, eid in ids.items() if eid in found}

    async def update_membership(
        self,
        sender: str,
        room_id: str,
        target: str,
        membership: str,
        *,
        reason: str | None = None,
        extra_content: dict[str, Any] | None = None,
        guest: bool = False,
        servers: Sequence[str] = (),
    ) -> str:
        """Send a member event for `target`, built like Synapse builds it.

        Args:
            membership: join, invite, leave, ban or knock ("unban" is leave by `unban`).
            guest: the sender is a guest account (spec "Guest Access").
            servers: servers to join or knock through when this server is not in the room.

        Returns:
            The member event id (an existing one when nothing would change).
        """
        if not is_valid_user_id(target, historical=True):
            raise MatrixError("M_INVALID_PARAM", f"Invalid user id: {target}")
        if membership in ("join", "knock") and target != sender:
            # The auth rules refuse these too; checked first as `target` may be remote.
            raise MatrixError("M_FORBIDDEN", f"Cannot {membership} on behalf of another user")
        content: dict[str, Any] = dict(extra_content or {})
        content["membership"] = membership
        if reason is not None:
            content["reason"] = reason
        state = await self._state_events(room_id)
        if not state:
            if membership == "leave" and target == sender:
                return await self._leave_left_room(sender, room_id, content)
            if membership in ("join", "knock") and self._remote is not None and not guest:
                return await self._remote_handshake(sender, room_id, membership, content, servers)
            await self._raise_not_in_room(room_id, membership)
        if guest:
            check_guest_membership(state, membership)
            # Synapse marks guests' member events, which is how revoking access finds them.
            content["kind"] = "guest"
        if membership in ("join", "invite") and target.endswith(self._server_suffix):
            await self._add_profile(target, content)
        if membership == "join":
            self._authorise_restricted_join(
                state, target, content, await self._joined_rooms(target)
            )
        current = state.get((MEMBER, target))
        if current is not None and current.sender == sender and dict(current.content) == content:
            return current.event_id
        intent = EventIntent(type=MEMBER, sender=sender, content=content, state_key=target)
        if membership == "invite" and self._remote is not None and not self._is_local(target):
            return await self._invite_remote(room_id, intent, state)
        (stored,) = await self._persister.submit(room_id, [intent])
        if membership == "join" and (current is None or current.membership != "join"):
            for listener in self._join_listeners:
                await listener(target, room_id, state)
        return stored.event_id

    def _is_local(self, user_id: str) -> bool:
        return user_id.endswith(self._server_suffix)

    async def _invite_remote(
        self, room_id: str, intent: EventIntent, state: Mapping[tuple[str, str], Event]
    ) -> str:
        # Spec "Inviting to a room": the invitee's server countersigns the invite before it
        # is stored; built (and authorised) here first, then sent, then stored as received.
        assert self._remote is not None
        build_only = getattr(self._persister, "build_only", None)
        if build_only is None:  # only the events writer builds (main federates: README)
            raise MatrixError(
                "M_UNKNOWN", "This instance cannot invite over federation", status=503
            )
        (event,) = await build_only(room_id, [intent])
        room_state = [stripped(e) for k, e in state.items() if k[0] in STRIPPED_STATE_TYPES]
        return await self._remote.invite(event, room_state)

    async def _remote_handshake(
        self,
        user_id: str,
        room_id: str,
        membership: str,
        content: dict[str, Any],
        servers: Sequence[str],
    ) -> str:
        assert self._remote is not None
        if membership == "join":
            await self._add_profile(user_id, content)
        candidates = [*servers, *await self._servers_known_for(user_id, room_id)]
        if membership == "join":
            event_id = await self._remote.join(user_id, room_id, candidates, content)
            for listener in self._join_listeners:
                await listener(user_id, room_id, {})
            return event_id
        return await self._remote.knock(user_id, room_id, candidates, content)

    async def _servers_known_for(self, user_id: str, room_id: str) -> list[str]:
        # Whoever invited the user, then the servers of the room's last known members (a
        # room this server left, seed 4).
        found: list[str] = []
        row = await self._state.local_membership(user_id, room_id)
        if row is not None:
            stored = await self._events.get_event(row.event_id)
            if stored is not None:
                found.append(get_server_name(stored.event.sender))
        return found

    def check_invitee(self, user_id: str) -> None:
        """Refuse to invite a user of another server (403): the invite would have to go over
        federation, which this server does not speak yet. The client API calls this; the
        handler itself records such invites (tests build rooms with remote members so)."""
        if not is_valid_user_id(user_id, historical=True):
            raise MatrixError("M_INVALID_PARAM", f"Invalid user id: {user_id}")
        if not user_id.endswith(self._server_suffix) and self._remote is None:
            raise MatrixError(
                "M_FORBIDDEN",
                f"Cannot invite {user_id}: inviting users of other servers needs federation, "
                "which this server does not support yet",
            )

    async def unban(self, sender: str, room_id: str, target: str, reason: str | None) -> str:
        """Lift a ban (membership leave); only a banned user can be unbanned."""
        state = await self._state_events(room_id)
        current = state.get((MEMBER, target))
        if current is None or current.membership != "ban":
            raise MatrixError("M_FORBIDDEN", "The user is not banned from the room")
        return await self.update_membership(sender, room_id, target, "leave", reason=reason)

    async def kick(self, sender: str, room_id: str, target: str, reason: str | None) -> str:
        """Kick (membership leave for someone else): only a joined, invited or knocking user
        can be kicked. The auth rules would allow a leave over a ban (an unban) or for a user
        who was never there; Synapse answers 403 for both (SyTest 30rooms/07ban, 15kick)."""
        if not is_valid_user_id(target, historical=True):
            raise MatrixError("M_INVALID_PARAM", f"Invalid user id: {target}")
        state = await self._state_events(room_id)
        if not state:
            await self._raise_not_in_room(room_id, "leave")
        current = state.get((MEMBER, target))
        if current is None or current.membership not in ("join", "invite", "knock"):
            raise MatrixError("M_FORBIDDEN", f"{target} is not in the room")
        return await self.update_membership(sender, room_id, target, "leave", reason=reason)

    async def leave_all_rooms(self, user_id: str) -> None:
        """Leave every room, reject every invite and withdraw every knock (deactivation)."""
        rows = await self._state.local_memberships(user_id, ["join", "invite", "knock"])
        for row in rows:
            try:
                await self.update_membership(user_id, row.room_id, user_id, "leave")
            except MatrixError as err:  # boundary: one room's refusal must not stop the rest
                logger.warning("%s could not leave %s: %s", user_id, row.room_id, err)

    async def forget(self, user_id: str, room_id: str) -> None:
        """Forget a room the user has left (it disappears from their sync)."""
        row = await self._state.local_membership(user_id, room_id)
        if row is not None and row.membership not in ("leave", "ban"):
            raise MatrixError("M_UNKNOWN", f"User {user_id} is in room {room_id}", status=400)
        await self._db.run_txn("forget_room", _forget_txn, user_id, room_id)

    async def _leave_left_room(self, user_id: str, room_id: str, content: dict[str, Any]) -> str:
        # Rejecting an invite (or withdrawing a knock) after every local member has left: the
        # server holds no current state (seed 4), but the invitee may still say no, as in
        # Synapse. The writer builds the leave on the state at the room's head.
        row = await self._state.local_membership(user_id, room_id)
        if row is None or row.membership not in ("invite", "knock"):
            await self._raise_not_in_room(room_id, "leave")
        assert row is not None
        invite = await self._events.get_event(row.event_id)
        if (
            self._remote is not None
            and invite is not None
            and invite.state_group is None
            and not self._is_local(invite.event.sender)
        ):
            # An invite from another server, of a room this server has never been in: the
            # rejection goes through the inviting server.
            servers = [get_server_name(invite.event.sender)]
            try:
                return await self._remote.leave(user_id, room_id, servers, content)
            except MatrixError as err:
                # The inviting server refused or cannot be reached: the invite is rejected
                # here all the same (Synapse does so too).
                logger.info("rejecting %s's invite to %s locally: %s", user_id, room_id, err)
                return await self._remote.leave_locally(user_id, invite.event, content)
        intent = EventIntent(type=MEMBER, sender=user_id, content=content, state_key=user_id)
        (stored,) = await self._persister.submit(room_id, [intent], on_left_room=True)
        return stored.event_id

    async def _raise_not_in_room(self, room_id: str, membership: str) -> None:
        if await self._state.room_version(room_id) is None or membership in ("join", "knock"):
            # Seed 4: once no local user is joined we hold no state for the room, and joining
            # again would need a server that is still in it.
            raise MatrixError("M_NOT_FOUND", "No known servers")
        raise MatrixError("M_FORBIDDEN", "This server is not in the room")

    async def _add_profile(self, user_id: str, content: dict[str, Any]) -> None:
        profile = await self._profiles.get_profile(user_id)
        if profile is None:
            return
        if profile.displayname is not None:
            content.setdefault("displayname", profile.displayname)
        if profile.avatar_url is not None:
            content.setdefault("avatar_url", profile.avatar_url)

    async def _joined_rooms(self, user_id: str) -> set[str]:
        rows = await self._state.local_memberships(user_id, ["join"])
        return {row.room_id for row in rows}

    def _authorise_restricted_join(
        self,
        state: dict[tuple[str, str], Event],
        user_id: str,
        content: dict[str, Any],
        joined_rooms: set[str],
    ) -> None:
        # Spec "Restricted rooms": a join without an invite names a local user who may invite,
        # vouching that the joiner is in one of the allowed rooms.
        join_rules = state.get(("m.room.join_rules", ""))
        create = state.get(("m.room.create", ""))
        if join_rules is None or create is None:
            return
        if join_rules.content.get("join_rule") not in RESTRICTED_RULES:
            return
        current = state.get((MEMBER, user_id))
        if current is not None and current.membership in ("join", "invite"):
            return
        allow = join_rules.content.get("allow")
        allowed_rooms = {
            entry.get("room_id")
            for entry in (allow if isinstance(allow, list) else [])
            if isinstance(entry, dict) and entry.get("type") == "m.room_membership"
        }
        if not allowed_rooms & joined_rooms:
            return  # the auth rules will refuse the join
        version = KNOWN_ROOM_VERSIONS[create.content.get("room_version", "1")]
        power_levels = state.get(("m.room.power_levels", ""))
        invite_level = get_named_level(
            version, "invite", power_levels.content if power_levels is not None else None
        )
        for (event_type, member), event in state.items():
            if (
                event_type == MEMBER
                and member.endswith(self._server_suffix)
                and event.membership == "join"
                and get_user_power_level(version, member, state) >= invite_level
            ):
                content["join_authorised_via_users_server"] = member
                return
