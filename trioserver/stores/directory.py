"""Room aliases and the public room directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn


@attrs.frozen
class AliasRow:
    """A local alias and who created it."""

    room_alias: str
    room_id: str
    creator: str


@attrs.frozen
class PublicRoomRow:
    """A published room: its joined member count and some of its current state."""

    room_id: str
    joined_members: int
    # event type -> event id of the current state event with an empty state key
    state: dict[str, str]


def _create_alias_txn(txn: Txn, alias: str, room_id: str, creator: str) -> bool:
    txn.execute(
        "INSERT INTO room_aliases (room_alias, room_id, creator) VALUES (?, ?, ?)"
        " ON CONFLICT (room_alias) DO NOTHING",
        (alias, room_id, creator),
    )
    return txn.rowcount > 0


def _get_alias_txn(txn: Txn, alias: str) -> AliasRow | None:
    row = txn.execute(
        "SELECT room_alias, room_id, creator FROM room_aliases WHERE room_alias = ?", (alias,)
    ).fetchone()
    return None if row is None else AliasRow(*row)


def _delete_alias_txn(txn: Txn, alias: str) -> bool:
    txn.execute("DELETE FROM room_aliases WHERE room_alias = ?", (alias,))
    return txn.rowcount > 0


def _aliases_for_room_txn(txn: Txn, room_id: str) -> list[str]:
    rows = txn.execute(
        "SELECT room_alias FROM room_aliases WHERE room_id = ? ORDER BY room_alias", (room_id,)
    ).fetchall()
    return [row[0] for row in rows]


def _move_aliases_txn(txn: Txn, old_room_id: str, new_room_id: str) -> int:
    txn.execute(
        "UPDATE room_aliases SET room_id = ? WHERE room_id = ?", (new_room_id, old_room_id)
    )
    return txn.rowcount


def _set_public_txn(txn: Txn, room_id: str, public: bool) -> bool:
    txn.execute("UPDATE rooms SET is_public = ? WHERE room_id = ?", (int(public), room_id))
    return txn.rowcount > 0


def _is_public_txn(txn: Txn, room_id: str) -> bool | None:
    row = txn.execute("SELECT is_public FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
    return None if row is None else bool(row[0])


def _public_room_ids_txn(txn: Txn) -> list[str]:
    rows = txn.execute("SELECT room_id FROM rooms WHERE is_public = 1").fetchall()
    return [row[0] for row in rows]


def _public_rooms_txn(txn: Txn, state_types: Sequence[str]) -> list[PublicRoomRow]:
    counts = txn.execute(
        "SELECT r.room_id, COUNT(c.state_key) FROM rooms AS r"
        " LEFT JOIN current_state_events AS c ON c.room_id = r.room_id"
        " AND c.type = 'm.room.member' AND c.membership = 'join'"
        " WHERE r.is_public = 1 GROUP BY r.room_id"
    ).fetchall()
    rows = {room_id: PublicRoomRow(room_id, count, {}) for room_id, count in counts}
    marks = ",".join("?" * len(state_types))
    for room_id, event_type, event_id in txn.execute(
        "SELECT r.room_id, c.type, c.event_id FROM rooms AS r"
        " JOIN current_state_events AS c ON c.room_id = r.room_id"
        f" WHERE r.is_public = 1 AND c.state_key = '' AND c.type IN ({marks})",
        list(state_types),
    ).fetchall():
        if room_id in rows:
            rows[room_id].state[event_type] = event_id
    return list(rows.values())


def _is_admin_txn(txn: Txn, user_id: str) -> bool:
    row = txn.execute("SELECT admin FROM users WHERE user_id = ?", (user_id,)).fetchone()
    return row is not None and bool(row[0])


class DirectoryStore:
    """Aliases and directory visibility."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create_alias(self, alias: str, room_id: str, creator: str) -> bool:
        """Map `alias` to `room_id`; False when the alias is taken. Checkpoint: yes."""
        return await self._db.run_txn("create_alias", _create_alias_txn, alias, room_id, creator)

    async def get_alias(self, alias: str) -> AliasRow | None:
        """What an alias points at, or None. Checkpoint: yes."""
        return await self._db.run_read_inline("get_alias", _get_alias_txn, alias)

    async def delete_alias(self, alias: str) -> bool:
        """Remove an alias; False when it did not exist. Checkpoint: yes."""
        return await self._db.run_txn("delete_alias", _delete_alias_txn, alias)

    async def aliases_for_room(self, room_id: str) -> list[str]:
        """The local aliases of a room. Checkpoint: yes."""
        return await self._db.run_read_inline("aliases_for_room", _aliases_for_room_txn, room_id)

    async def move_aliases(self, old_room_id: str, new_room_id: str) -> int:
        """Point every alias of `old_room_id` at `new_room_id` (room upgrades).

        Returns:
            How many aliases moved.

        Checkpoint: yes.
        """
        return await self._db.run_txn("move_aliases", _move_aliases_txn, old_room_id, new_room_id)

    async def set_public(self, room_id: str, public: bool) -> bool:
        """Publish or unpublish a room; False for an unknown room. Checkpoint: yes."""
        return await self._db.run_txn("set_room_public", _set_public_txn, room_id, public)

    async def is_public(self, room_id: str) -> bool | None:
        """Whether the room is published; None for an unknown room. Checkpoint: yes."""
        return await self._db.run_read_inline("is_room_public", _is_public_txn, room_id)

    async def public_room_ids(self) -> list[str]:
        """Every published room. Checkpoint: yes."""
        return await self._db.run_read("public_room_ids", _public_room_ids_txn)

    async def public_rooms(self, state_types: Sequence[str]) -> list[PublicRoomRow]:
        """Every published room with its joined member count and current state ids.

        Args:
            state_types: the state event types (with an empty state key) to include.

        Checkpoint: yes.
        """
        return await self._db.run_read("public_rooms", _public_rooms_txn, state_types)

    async def is_admin(self, user_id: str) -> bool:
        """Whether `user_id` is a local server admin (``users.admin``). Checkpoint: yes."""
        return await self._db.run_read_inline("is_server_admin", _is_admin_txn, user_id)
