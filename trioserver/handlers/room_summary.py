"""Room summaries: what a user may learn of a room before joining it (spec "Room summary",
v1.15, and the room entries of "Spaces").

Theory of operation
-------------------
A summary is built from a few current state events of a room this server is in: the
``PublishedRoomsChunk`` fields of the room directory plus ``room_type``, ``room_version``,
``encryption`` and, for restricted rooms, ``allowed_room_ids``. Who may see it follows
Synapse's ``_is_local_room_accessible`` (the spec lists the same conditions under
``GET /hierarchy``): the requester is joined or invited; or the join rule is ``public`` (or
``knock``/``knock_restricted`` in a room version that has them); or the history is
``world_readable``; or the room is restricted and the requester is joined to one of the rooms
its join rule allows. Rooms the server is not in are unknown here: there is no federation yet,
so they are treated like inaccessible ones (spec: "404 The room could not be found").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import MatrixError
from trioserver.events import KNOWN_ROOM_VERSIONS, Event
from trioserver.stores.room_summary import SPACE_CHILD, SummaryStateRow

if TYPE_CHECKING:
    from trioserver.stores.events import EventStore
    from trioserver.stores.room_summary import RoomSummaryStore

JsonDict = dict[str, Any]
SPACE = "m.space"
MEMBER = "m.room.member"
# The state types (empty state key) a summary reads.
SUMMARY_TYPES = (
    "m.room.create",
    "m.room.name",
    "m.room.topic",
    "m.room.canonical_alias",
    "m.room.avatar",
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.encryption",
)
# (entry key, state type, content key): the optional string fields of an entry.
_STRING_FIELDS = (
    ("name", "m.room.name", "name"),
    ("topic", "m.room.topic", "topic"),
    ("canonical_alias", "m.room.canonical_alias", "alias"),
    ("avatar_url", "m.room.avatar", "url"),
    ("join_rule", "m.room.join_rules", "join_rule"),
    ("room_type", "m.room.create", "type"),
    ("encryption", "m.room.encryption", "algorithm"),
)
# Spec m.space.child: "order" is at most 50 characters between \x20 and \x7E.
_VALID_ORDER = re.compile(r"[\x20-\x7E]{0,50}\Z")


def _string(content: Mapping[str, Any], key: str) -> str | None:
    value = content.get(key)
    return value if isinstance(value, str) else None


@attrs.frozen
class RoomInfo:
    """The summary state of one room, as its events are served (redacted ones pruned)."""

    row: SummaryStateRow
    events: Mapping[tuple[str, str], Event]

    @property
    def room_id(self) -> str:
        """The room's id."""
        return self.row.room_id

    def content(self, event_type: str, state_key: str = "") -> Mapping[str, Any]:
        """The content of a state event ({} when absent)."""
        event = self.events.get((event_type, state_key))
        return {} if event is None else event.content

    @property
    def join_rule(self) -> str | None:
        """The join rule, if any."""
        return _string(self.content("m.room.join_rules"), "join_rule")

    @property
    def world_readable(self) -> bool:
        """Whether the history visibility is ``world_readable``."""
        visibility = self.content("m.room.history_visibility").get("history_visibility")
        return bool(visibility == "world_readable")

    @property
    def room_type(self) -> str | None:
        """The ``type`` of the create event (``m.space`` for spaces)."""
        return _string(self.content("m.room.create"), "type")

    def membership(self, user_id: str) -> str | None:
        """The user's current membership, if any."""
        event = self.events.get((MEMBER, user_id))
        return None if event is None else event.membership

    def allowed_room_ids(self) -> list[str]:
        """The rooms a restricted join rule lets members of join from ([] otherwise)."""
        version = KNOWN_ROOM_VERSIONS.get(self.row.room_version)
        rule = self.join_rule
        restricted = version is not None and (
            (rule == "restricted" and version.restricted_join_rule)
            or (rule == "knock_restricted" and version.knock_restricted_join_rule)
        )
        allow = self.content("m.room.join_rules").get("allow")
        if not restricted or not isinstance(allow, list):
            return []
        return [
            entry["room_id"]
            for entry in allow
            if isinstance(entry, dict)
            and entry.get("type") == "m.room_membership"
            and isinstance(entry.get("room_id"), str)
        ]

    def openly_visible(self) -> bool:
        """Visible to anyone: public or knockable join rule, or world-readable history."""
        version = KNOWN_ROOM_VERSIONS.get(self.row.room_version)
        rule = self.join_rule
        if rule == "public" or self.world_readable:
            return True
        if version is None:
            return False
        return (rule == "knock" and version.knock_join_rule) or (
            rule == "knock_restricted" and version.knock_restricted_join_rule
        )

    def entry(self) -> JsonDict:
        """The room's summary fields (absent ones left out, as Synapse does)."""
        entry: JsonDict = {
            "room_id": self.room_id,
            "room_version": self.row.room_version,
            "num_joined_members": self.row.joined_members,
            "world_readable": self.world_readable,
            "guest_can_join": self.content("m.room.guest_access").get("guest_access")
            == "can_join",
        }
        for key, event_type, content_key in _STRING_FIELDS:
            value = _string(self.content(event_type), content_key)
            if value is not None:
                entry[key] = value
        allowed = self.allowed_room_ids()
        if allowed:
            entry["allowed_room_ids"] = allowed
        return entry

    def children(self, *, suggested_only: bool) -> list[JsonDict]:
        """The space's ``m.space.child`` events with a valid ``via``, as stripped events with
        ``origin_server_ts``, in the spec's order ([] for a room that is not a space)."""
        if self.room_type != SPACE:
            return []
        events = [
            event
            for (event_type, _), event in self.events.items()
            if event_type == SPACE_CHILD
            and _has_valid_via(event)
            and (not suggested_only or event.content.get("suggested") is True)
        ]
        events.sort(key=_child_order)
        return [
            {
                "type": event.type,
                "state_key": event.state_key,
                "content": dict(event.content),
                "sender": event.sender,
                "origin_server_ts": event.origin_server_ts,
            }
            for event in events
        ]


def _has_valid_via(event: Event) -> bool:
    # Spec m.space.child: a child without a non-empty `via` is not a child (a redacted one,
    # or one removed by sending {}).
    via = event.content.get("via")
    return isinstance(via, list) and bool(via) and all(isinstance(v, str) for v in via)


def _child_order(event: Event) -> tuple[bool, str, int, str]:
    # Spec "Ordering": by `order` (invalid ones count as absent, and absent sorts last), then
    # the child event's origin_server_ts, then the room id.
    order = event.content.get("order")
    if not isinstance(order, str) or _VALID_ORDER.match(order) is None:
        order = None
    return (order is None, order or "", event.origin_server_ts, event.state_key or "")


class RoomSummaryHandler:
    """Builds room summaries and decides who may see them."""

    def __init__(self, store: RoomSummaryStore, events: EventStore) -> None:
        self._store = store
        self._events = events

    async def load(self, room_id: str, user_id: str | None) -> RoomInfo | None:
        """The room's summary state (with `user_id`'s membership), or None when the server
        is not in the room."""
        row = await self._store.summary_state(room_id, SUMMARY_TYPES, user_id)
        if row is None:
            return None
        found = await self._events.get_events(row.state.values())
        events = {}
        for key, event_id in row.state.items():
            stored = found.get(event_id)
            if stored is not None:
                # A redacted state event counts with its pruned content, as clients see it.
                redacted = stored.redacted_by is not None
                events[key] = stored.event.redacted() if redacted else stored.event
        return RoomInfo(row, events)

    async def accessible(self, info: RoomInfo, user_id: str | None) -> bool:
        """Whether `user_id` (None: an unauthenticated client) may see the room's summary."""
        if info.openly_visible():
            return True
        if user_id is None:
            return False
        if info.membership(user_id) in ("join", "invite"):
            return True
        return await self._store.joined_any(user_id, info.allowed_room_ids())

    async def summary(self, room_id: str, user_id: str | None) -> JsonDict:
        """``GET /room_summary/{roomIdOrAlias}`` for a room id.

        Args:
            user_id: the requester, or None when the request carries no access token.

        Raises:
            MatrixError: 404 when the room is unknown here or the user may not see it.
        """
        info = await self.load(room_id, user_id)
        if info is None or not await self.accessible(info, user_id):
            raise MatrixError("M_NOT_FOUND", "Room not found or is not accessible")
        entry = info.entry()
        if user_id is not None:
            entry["membership"] = info.membership(user_id) or "leave"
        return entry
