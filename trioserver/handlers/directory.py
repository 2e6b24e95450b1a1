"""Room aliases and the public room directory.

Theory of operation
-------------------
Aliases live in the ``room_aliases`` table and only ever name rooms for this server's domain
(spec "Room aliases": servers reject aliases on other domains; without federation a remote
alias resolves to nothing). Who may create, delete or publish follows Synapse: creating needs
membership of the room, deleting needs to be the alias's creator, a server admin or someone
who could send ``m.room.canonical_alias``; publishing needs the latter two.

The public room list is computed from current state on each request: one query for the
published rooms (their joined member counts and the ids of the few state events an entry
shows), then the events through the shared event cache. Rooms are ordered by joined members,
then room id, both descending (Synapse's order); a paging token names the last room of a page
and a direction, so pages stay stable while rooms come and go.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from trioserver.errors import MatrixError
from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    get_send_level,
    get_user_power_level,
    is_valid_room_alias,
)

if TYPE_CHECKING:
    from trioserver.events import Event
    from trioserver.handlers.auth import Requester
    from trioserver.handlers.send import SendHandler
    from trioserver.stores.directory import DirectoryStore, PublicRoomRow
    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.state import StateStore

logger = logging.getLogger(__name__)

CANONICAL_ALIAS = "m.room.canonical_alias"
# Synapse caps each page of the room list at 100 rooms.
MAX_PUBLIC_ROOMS = 100
# Synapse lists published rooms that anyone can join or knock on, or whose history anyone
# can read.
LISTED_JOIN_RULES = frozenset({"public", "knock", "knock_restricted"})
# (entry key, state event type, content key): the optional string fields of an entry.
_ENTRY_FIELDS = (
    ("name", "m.room.name", "name"),
    ("topic", "m.room.topic", "topic"),
    ("canonical_alias", CANONICAL_ALIAS, "alias"),
    ("avatar_url", "m.room.avatar", "url"),
    ("join_rule", "m.room.join_rules", "join_rule"),
    ("room_type", "m.room.create", "type"),
)
ENTRY_STATE_TYPES = (
    *(event_type for _, event_type, _ in _ENTRY_FIELDS),
    "m.room.history_visibility",
    "m.room.guest_access",
)


@attrs.frozen
class PublicRoomsQuery:
    """A validated ``/publicRooms`` request."""

    limit: int = MAX_PUBLIC_ROOMS
    since: str | None = None
    search_term: str | None = None
    # None: any type; otherwise the wanted types, None standing for "no type".
    room_types: frozenset[str | None] | None = None
    # A third-party network list (application services); this server has none.
    third_party_network: str | None = None


@attrs.frozen
class _Bound:
    """A paging token: the last room seen and which way to go from it."""

    joined: int
    room_id: str
    forward: bool

    def to_token(self) -> str:
        raw = orjson.dumps([self.joined, self.room_id, self.forward])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> _Bound:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            joined, room_id, forward = orjson.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            raise MatrixError("M_INVALID_PARAM", "Invalid pagination token") from None
        if isinstance(joined, int) and isinstance(room_id, str) and isinstance(forward, bool):
            return cls(joined, room_id, forward)
        raise MatrixError("M_INVALID_PARAM", "Invalid pagination token")


@attrs.frozen
class _Entry:
    """One room of the public room list."""

    joined: int
    room_id: str
    room_type: str | None
    json: dict[str, Any]

    @property
    def key(self) -> tuple[int, str]:
        return (self.joined, self.room_id)

    def matches(self, query: PublicRoomsQuery) -> bool:
        if query.room_types is not None and self.room_type not in query.room_types:
            return False
        if not query.search_term:
            return True
        # Synapse searches name, topic and canonical alias, case-insensitively.
        term = query.search_term.casefold()
        fields = (self.json.get(k) for k in ("name", "topic", "canonical_alias"))
        return any(isinstance(f, str) and term in f.casefold() for f in fields)


def _string(content: dict[str, Any] | None, key: str) -> str | None:
    value = None if content is None else content.get(key)
    return value if isinstance(value, str) else None


def _room_entry(row: PublicRoomRow, contents: dict[str, dict[str, Any]]) -> _Entry | None:
    fields = {key: _string(contents.get(t), name) for key, t, name in _ENTRY_FIELDS}
    visibility = _string(contents.get("m.room.history_visibility"), "history_visibility")
    world_readable = visibility == "world_readable"
    if row.joined_members == 0 or not (fields["join_rule"] in LISTED_JOIN_RULES or world_readable):
        return None
    guest_access = _string(contents.get("m.room.guest_access"), "guest_access")
    json: dict[str, Any] = {
        "room_id": row.room_id,
        "num_joined_members": row.joined_members,
        "world_readable": world_readable,
        "guest_can_join": guest_access == "can_join",
    }
    json.update((k, v) for k, v in fields.items() if v is not None)
    return _Entry(row.joined_members, row.room_id, fields["room_type"], json)


def _as_served(stored: StoredEvent) -> Event:
    # A redacted state event counts with its pruned content, as clients see it.
    return stored.event.redacted() if stored.redacted_by is not None else stored.event


def _content(stored: StoredEvent | None) -> dict[str, Any] | None:
    return None if stored is None else dict(_as_served(stored).content)


def _page(entries: list[_Entry], limit: int, since: _Bound | None) -> dict[str, Any]:
    """One page of `entries` (biggest first), with Synapse's next/prev batch semantics."""
    forwards = since is None or since.forward
    if since is None:
        candidates = entries
    elif since.forward:
        candidates = [e for e in entries if e.key < (since.joined, since.room_id)]
    else:
        candidates = [e for e in reversed(entries) if e.key > (since.joined, since.room_id)]
    window = candidates[:limit]
    more = len(candidates) > limit
    chunk = window if forwards else window[::-1]
    response: dict[str, Any] = {"chunk": [e.json for e in chunk]}
    next_batch = prev_batch = None
    if chunk:
        first, last = chunk[0], chunk[-1]
        if forwards:
            if since is not None:
                prev_batch = _Bound(first.joined, first.room_id, forward=False)
            if more:
                next_batch = _Bound(last.joined, last.room_id, forward=True)
        else:
            next_batch = _Bound(last.joined, last.room_id, forward=True)
            if more:
                prev_batch = _Bound(first.joined, first.room_id, forward=False)
    elif since is not None and forwards:
        # Past the end: going back starts from the smallest room.
        prev_batch = _Bound(0, "", forward=False)
    if next_batch is not None:
        response["next_batch"] = next_batch.to_token()
    if prev_batch is not None:
        response["prev_batch"] = prev_batch.to_token()
    return response


class DirectoryHandler:
    """Creates, resolves and deletes aliases; lists public rooms."""

    def __init__(
        self,
        directory: DirectoryStore,
        state: StateStore,
        events: EventStore,
        send: SendHandler,
        *,
        server_name: str,
    ) -> None:
        self._directory = directory
        self._state = state
        self._events = events
        self._send = send
        self._server_name = server_name

    # -- aliases ----------------------------------------------------------------------------

    def check_alias(self, alias: str, *, local: bool) -> None:
        """Refuse a malformed alias (and, when `local`, one on another server) with 400."""
        if not is_valid_room_alias(alias):
            raise MatrixError("M_INVALID_PARAM", "Room alias invalid")
        if not local:
            return
        localpart, _, domain = alias[1:].partition(":")
        if any(c.isspace() for c in localpart):
            raise MatrixError("M_INVALID_PARAM", "Invalid characters in room alias")
        if domain != self._server_name:
            raise MatrixError("M_INVALID_PARAM", "Room alias must be local")

    async def create_alias(self, user_id: str, alias: str, room_id: str) -> None:
        """Map a local alias to a room the user is in (server admins need not be).

        Raises:
            MatrixError: 400 for a bad alias or unknown room, 403 when the user is not in the
                room, 409 when the alias exists.
        """
        self.check_alias(alias, local=True)
        if await self._state.room_version(room_id) is None:
            # Synapse answers 400 here, not 404.
            raise MatrixError("M_UNKNOWN", "Room does not exist", status=400)
        if not await self._joined_or_admin(user_id, room_id):
            raise MatrixError("M_FORBIDDEN", "You must be in the room to create an alias for it")
        if not await self._directory.create_alias(alias, room_id, user_id):
            raise MatrixError("M_UNKNOWN", f"Room alias {alias} already exists", status=409)

    async def resolve_alias(self, alias: str) -> dict[str, Any]:
        """``{room_id, servers}`` for an alias.

        Raises:
            MatrixError: 400 for a malformed alias, 404 for an unknown one (remote aliases
                too: there is no federation yet).
        """
        self.check_alias(alias, local=False)
        row = await self._directory.get_alias(alias)
        if row is None:
            raise MatrixError("M_NOT_FOUND", f"Room alias {alias} not found")
        return {"room_id": row.room_id, "servers": [self._server_name]}

    async def delete_alias(self, requester: Requester, alias: str) -> None:
        """Remove an alias, then drop it from the room's ``m.room.canonical_alias``.

        Raises:
            MatrixError: 400 malformed, 404 unknown, 403 not allowed.
        """
        self.check_alias(alias, local=False)
        row = await self._directory.get_alias(alias)
        if row is None:
            raise MatrixError("M_NOT_FOUND", f"Room alias {alias} not found")
        user_id = requester.user_id
        if row.creator != user_id and not await self._can_edit_room(user_id, row.room_id):
            raise MatrixError("M_FORBIDDEN", "You don't have permission to delete the alias.")
        if not await self._directory.delete_alias(alias):
            raise MatrixError("M_NOT_FOUND", f"Room alias {alias} not found")
        try:
            await self._remove_from_canonical_alias(requester, row.room_id, alias)
        except MatrixError as err:
            # Spec DELETE /directory/room: the alias is deleted and the request succeeds even
            # when the user may not update m.room.canonical_alias (Synapse does the same).
            logger.info("not updating the canonical alias of %s: %s", row.room_id, err)

    async def _remove_from_canonical_alias(
        self, requester: Requester, room_id: str, alias: str
    ) -> None:
        current = await self._current_events(room_id, [CANONICAL_ALIAS])
        event = current.get(CANONICAL_ALIAS)
        if event is None:
            return
        content = dict(event.content)
        changed = content.get("alias") == alias
        if changed:
            del content["alias"]
        alt = content.get("alt_aliases")
        if isinstance(alt, list) and alias in alt:
            changed = True
            remaining = [a for a in alt if a != alias]
            if remaining:
                content["alt_aliases"] = remaining
            else:
                del content["alt_aliases"]
        if changed:
            await self._send.send_state(requester, room_id, CANONICAL_ALIAS, "", content)

    async def local_aliases(self, user_id: str, room_id: str) -> list[str]:
        """The room's local aliases, for members, admins, or anyone if world-readable.

        Raises:
            MatrixError: 403 otherwise.
        """
        if not await self._joined_or_admin(user_id, room_id):
            current = await self._current_events(room_id, ["m.room.history_visibility"])
            visibility = current.get("m.room.history_visibility")
            if visibility is None or visibility.content.get("history_visibility") != (
                "world_readable"
            ):
                raise MatrixError(
                    "M_FORBIDDEN",
                    f"User {user_id} not in room {room_id}, and room previews are disabled",
                )
        return await self._directory.aliases_for_room(room_id)

    # -- the published room list ------------------------------------------------------------

    async def get_visibility(self, room_id: str) -> str:
        """``public`` or ``private``.

        Raises:
            MatrixError: 404 for an unknown room.
        """
        public = await self._directory.is_public(room_id)
        if public is None:
            raise MatrixError("M_NOT_FOUND", "Room not found")
        return "public" if public else "private"

    async def set_visibility(self, user_id: str, room_id: str, visibility: str) -> None:
        """Publish or unpublish a room (moderators of the room and server admins).

        Raises:
            MatrixError: 404 unknown room, 403 not allowed.
        """
        if await self._directory.is_public(room_id) is None:
            raise MatrixError("M_NOT_FOUND", "Room not found")
        if not await self._can_edit_room(user_id, room_id):
            raise MatrixError("M_FORBIDDEN", "You must be a moderator of the room to do this")
        await self._directory.set_public(room_id, visibility == "public")

    async def public_rooms(self, query: PublicRoomsQuery) -> dict[str, Any]:
        """A page of the published room list with ``total_room_count_estimate``."""
        since = None if query.since is None else _Bound.from_token(query.since)
        if query.third_party_network is not None:
            # Only application services publish to third-party network lists.
            entries: list[_Entry] = []
        else:
            entries = [e for e in await self._listed_rooms() if e.matches(query)]
        response = _page(entries, query.limit, since)
        response["total_room_count_estimate"] = len(entries)
        return response

    async def _listed_rooms(self) -> list[_Entry]:
        rows = await self._directory.public_rooms(ENTRY_STATE_TYPES)
        events = await self._events.get_events(
            event_id for row in rows for event_id in row.state.values()
        )
        entries = []
        for row in rows:
            contents = {t: _content(events.get(eid)) for t, eid in row.state.items()}
            entry = _room_entry(row, {t: c for t, c in contents.items() if c is not None})
            if entry is not None:
                entries.append(entry)
        entries.sort(key=lambda e: e.key, reverse=True)
        return entries

    # -- permissions ------------------------------------------------------------------------

    async def _joined_or_admin(self, user_id: str, room_id: str) -> bool:
        return await self._is_joined(user_id, room_id) or await self._directory.is_admin(user_id)

    async def _is_joined(self, user_id: str, room_id: str) -> bool:
        row = await self._state.local_membership(user_id, room_id)
        return row is not None and row.membership == "join"

    async def _can_edit_room(self, user_id: str, room_id: str) -> bool:
        # Synapse: server admins, or members who could send m.room.canonical_alias.
        if await self._directory.is_admin(user_id):
            return True
        version_id = await self._state.room_version(room_id)
        if version_id is None or not await self._is_joined(user_id, room_id):
            return False
        version = KNOWN_ROOM_VERSIONS[version_id]
        current = await self._current_events(room_id, ["m.room.create", "m.room.power_levels"])
        auth_events = {(t, ""): e for t, e in current.items()}
        power_levels = current.get("m.room.power_levels")
        pl_content = None if power_levels is None else power_levels.content
        needed = get_send_level(version, CANONICAL_ALIAS, True, pl_content)
        return get_user_power_level(version, user_id, auth_events) >= needed

    async def _current_events(self, room_id: str, types: list[str]) -> dict[str, Event]:
        state = await self._state.current_state(room_id)
        ids = {t: state[(t, "")] for t in types if (t, "") in state}
        found = await self._events.get_events(ids.values())
        return {t: _as_served(found[eid]) for t, eid in ids.items() if eid in found}
