"""Reporting content: events, rooms and users (spec "Reporting content")."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.handlers.auth import Requester
    from trioserver.handlers.room_reads import RoomReadHandler
    from trioserver.stores.events import EventStore
    from trioserver.stores.reports import ReportStore

# Synapse refuses longer reasons for user reports; the same bound applies to every kind here
# so that a report cannot be used to store large blobs.
MAX_REASON_LENGTH = 1000


def check_reason(reason: str | None) -> None:
    """Refuse an oversize reason with 400 ``M_INVALID_PARAM``."""
    if reason is not None and len(reason) > MAX_REASON_LENGTH:
        raise MatrixError(
            "M_INVALID_PARAM", f"'reason' must be at most {MAX_REASON_LENGTH} characters"
        )


class ReportsHandler:
    """Checks reports and stores them for server admins."""

    def __init__(
        self,
        store: ReportStore,
        room_reads: RoomReadHandler,
        events: EventStore,
        *,
        server_name: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._room_reads = room_reads
        self._events = events
        self._server_suffix = ":" + server_name
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def report_event(
        self,
        requester: Requester,
        room_id: str,
        event_id: str,
        reason: str | None,
        content: dict[str, Any],
    ) -> None:
        """Store a report of an event the requester can see.

        Raises:
            MatrixError: 404 when the event is unknown, in another room, redacted, or not
                visible to the requester (Synapse; spec: "not found or you are not joined").
        """
        check_reason(reason)
        # Raises 404 for unknown events and for events the user may not see.
        access = await self._room_reads.access(requester.user_id, room_id)
        await self._room_reads.visible_event(access, room_id, event_id)
        stored = await self._events.get_event(event_id)
        if stored is None or stored.redacted_by is not None:
            raise MatrixError(
                "M_NOT_FOUND",
                "Unable to report event: it does not exist or you aren't able to see it.",
            )
        await self._store.add_event_report(
            room_id, event_id, requester.user_id, reason, content, self._now_ms()
        )

    async def report_room(self, requester: Requester, room_id: str, reason: str) -> None:
        """Store a report of a room.

        Raises:
            MatrixError: 404 for a room this server does not know (Synapse).
        """
        check_reason(reason)
        if not await self._store.add_room_report(
            room_id, requester.user_id, reason, self._now_ms()
        ):
            raise MatrixError("M_NOT_FOUND", "Room does not exist")

    async def report_user(self, requester: Requester, user_id: str, reason: str) -> None:
        """Store a report of a local user.

        Reports of unknown or remote users are accepted and dropped, so that the answer does
        not tell whether an account exists (spec: servers "MAY return 200 responses
        regardless"; Synapse does).
        """
        check_reason(reason)
        if user_id.endswith(self._server_suffix):
            await self._store.add_user_report(user_id, requester.user_id, reason, self._now_ms())
