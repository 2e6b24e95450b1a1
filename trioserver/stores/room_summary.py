"""The little of a room's current state that a room summary shows (spaces, room previews)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn

SPACE_CHILD = "m.space.child"


@attrs.frozen
class SummaryStateRow:
    """A room this server is in, with the state ids a summary reads.

    Attributes:
        room_version: the room's version.
        joined_members: how many users are joined now.
        state: (type, state key) -> event id, for the requested types with an empty state key,
            every ``m.space.child`` event, and the requester's own membership event.
    """

    room_id: str
    room_version: str
    joined_members: int
    state: dict[tuple[str, str], str]


def _summary_state_txn(
    txn: Txn, room_id: str, types: Sequence[str], user_id: str | None
) -> SummaryStateRow | None:
    room = txn.execute(
        "SELECT room_version,"
        " (SELECT COUNT(*) FROM current_state_events"
        "  WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join')"
        " FROM rooms WHERE room_id = ?",
        (room_id, room_id),
    ).fetchone()
    if room is None:
        return None
    marks = ",".join("?" * len(types))
    rows = txn.execute(
        "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ? AND ("
        f" (state_key = '' AND type IN ({marks})) OR type = ?"
        " OR (type = 'm.room.member' AND state_key = ?))",
        (room_id, *types, SPACE_CHILD, user_id or ""),
    ).fetchall()
    state = {(t, k): e for t, k, e in rows}
    if ("m.room.create", "") not in state:
        # The server has left the room (its current state is gone): it cannot summarise it.
        return None
    return SummaryStateRow(room_id, str(room[0]), int(room[1]), state)


def _joined_any_txn(txn: Txn, user_id: str, room_ids: Sequence[str]) -> bool:
    marks = ",".join("?" * len(room_ids))
    row = txn.execute(
        "SELECT 1 FROM local_current_membership WHERE user_id = ? AND membership = 'join'"
        f" AND room_id IN ({marks}) LIMIT 1",
        (user_id, *room_ids),
    ).fetchone()
    return row is not None


class RoomSummaryStore:
    """Reads for room summaries and the space hierarchy."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def summary_state(
        self, room_id: str, types: Sequence[str], user_id: str | None
    ) -> SummaryStateRow | None:
        """The room's version, joined member count and summary state ids.

        Args:
            types: the state types (with an empty state key) to include.
            user_id: whose membership event to include too (None: nobody's).

        Returns:
            None when the server is not in the room (unknown, or left).

        Checkpoint: yes.
        """
        # Not inline: counting a big room's members is not a microsecond read.
        return await self._db.run_read(
            "room_summary_state", _summary_state_txn, room_id, types, user_id
        )

    async def joined_any(self, user_id: str, room_ids: Sequence[str]) -> bool:
        """Whether a local user is joined to at least one of `room_ids`. Checkpoint: yes."""
        if not room_ids:
            return False
        return await self._db.run_read_inline(
            "joined_any_room", _joined_any_txn, user_id, room_ids
        )
