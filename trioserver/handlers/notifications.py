"""``GET /notifications``: the events that notified a user, newest first (spec "Push
Notifications", "Listing Notifications").

The list is the user's stored push actions (`stores.push_actions`): what notified them and has
not been read yet, and highlights whether read or not (a read receipt deletes the other rows it
passes, as Synapse does). Each event is checked against the user's current view of its room
(history visibility, ignored users); a redacted event has no actions left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from trioserver.errors import MatrixError
from trioserver.handlers.serialize import SerializeOptions

if TYPE_CHECKING:
    from trioserver.handlers.auth import Requester
    from trioserver.handlers.room_reads import RoomReadHandler
    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.push_actions import Notification, PushActionStore

JsonDict = dict[str, Any]
DEFAULT_LIMIT = 50
MAX_LIMIT = 1_000
_MAX_TOKEN = 2**62


@attrs.frozen
class NotificationsQuery:
    """The parameters of ``GET /notifications``."""

    from_token: str | None
    limit: int
    only_highlight: bool


def parse_from_token(token: str | None) -> int | None:
    """The stream position a ``from`` token names.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for anything but a token we gave out.
    """
    if token is None:
        return None
    if not token.isascii() or not token.isdigit() or int(token) > _MAX_TOKEN:
        raise MatrixError("M_INVALID_PARAM", f"Invalid from token: {token!r}")
    return int(token)


class NotificationsHandler:
    """Lists a user's notifications."""

    def __init__(
        self, push_actions: PushActionStore, events: EventStore, room_reads: RoomReadHandler
    ) -> None:
        self._push_actions = push_actions
        self._events = events
        self._room_reads = room_reads

    async def notifications(self, requester: Requester, query: NotificationsQuery) -> JsonDict:
        """One page of the user's notifications, newest first.

        Returns:
            ``{"notifications": [...], "next_token"?}``; ``next_token`` only when there may
            be more (spec: "If this is absent, there are no more results").

        Raises:
            MatrixError: 400 for a bad ``from`` token.
        """
        before = parse_from_token(query.from_token)
        rows = await self._push_actions.notifications(
            requester.user_id,
            before=before,
            limit=query.limit,
            only_highlight=query.only_highlight,
        )
        body: JsonDict = {"notifications": await self._render(requester, rows)}
        if len(rows) == query.limit and rows:
            body["next_token"] = str(rows[-1].stream_ordering)
        return body

    async def _render(self, requester: Requester, rows: list[Notification]) -> list[JsonDict]:
        # One visibility pass per room and one serialisation for the page, not one per row.
        found = await self._events.get_events(row.event_id for row in rows)
        by_room: dict[str, list[StoredEvent]] = {}
        for row in rows:
            stored = found.get(row.event_id)
            if stored is not None and stored.redacted_by is None:
                by_room.setdefault(row.room_id, []).append(stored)
        visible: dict[str, tuple[StoredEvent, str]] = {}
        for room_id, items in by_room.items():
            access = await self._room_reads.access(requester.user_id, room_id)
            for stored, membership in await self._room_reads.visibility.filter(
                items, access.viewer
            ):
                visible[stored.event_id] = (stored, membership)
        shown = [row for row in rows if row.event_id in visible]
        options = SerializeOptions(user_id=requester.user_id, device_id=requester.device_id)
        events = await self._room_reads.serializer.serialize(
            [visible[row.event_id][0] for row in shown],
            options,
            {event_id: membership for event_id, (_, membership) in visible.items()},
        )
        return [
            {
                "actions": row.actions,
                "event": event,
                "profile_tag": None,
                "read": row.read,
                "room_id": row.room_id,
                "ts": row.ts,
            }
            for row, event in zip(shown, events, strict=True)
        ]
