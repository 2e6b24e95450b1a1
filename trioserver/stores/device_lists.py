"""The device_lists stream: who changed their devices or keys, and who shares rooms with whom.

Theory of operation
-------------------
Every change to a user's device list (a device created, renamed or deleted) or keys (device
keys, cross-signing keys, signatures) writes rows to ``device_lists_stream`` in the same
transaction as the change, under one stream id taken from the writer's generator. A row with
``only_for`` set concerns only that user (signatures made with their user-signing key, which
nobody else may see: client-server API, "Cross-signing").

Readers ask which users changed between two positions *and* share a room with the reader
(both joined, per ``GET /keys/changes``), and, from room memberships, whom the reader started
or stopped sharing rooms with (the ``changed``/``left`` rules of "Tracking the device list
for a user").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable

    from trioserver.stores.database import Database, Txn
    from trioserver.streams import StreamIdGenerator


@attrs.frozen
class SharingChanges:
    """Whom a user started and stopped sharing a joined room with, between two positions."""

    newly_shared: frozenset[str]
    no_longer_shared: frozenset[str]


def record_change_txn(
    txn: Txn, stream_id: int, user_ids: Iterable[str], only_for: str | None = None
) -> None:
    """Write device_lists rows for `user_ids` at `stream_id` (inside a write transaction)."""
    txn.executemany(
        "INSERT INTO device_lists_stream (stream_id, user_id, only_for) VALUES (?, ?, ?)",
        [(stream_id, user_id, only_for) for user_id in user_ids],
    )


def _max_stream_id_txn(txn: Txn) -> int:
    row = txn.execute("SELECT MAX(stream_id) FROM device_lists_stream").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def _record_change_txn(txn: Txn, ids: StreamIdGenerator, user_id: str) -> int:
    stream_id = ids.next_id()
    record_change_txn(txn, stream_id, [user_id])
    return stream_id


def users_sharing_room_txn(txn: Txn, user_id: str) -> set[str]:
    """Users joined to a room the local user `user_id` is joined to (including them)."""
    rows = txn.execute(
        "SELECT DISTINCT c.state_key FROM local_current_membership AS l"
        " JOIN current_state_events AS c ON c.room_id = l.room_id"
        "  AND c.type = 'm.room.member' AND c.membership = 'join'"
        " WHERE l.user_id = ? AND l.membership = 'join'",
        (user_id,),
    ).fetchall()
    return {row[0] for row in rows} | {user_id}


def _shares_room_txn(txn: Txn, user_id: str, other: str) -> bool:
    row = txn.execute(
        "SELECT 1 FROM local_current_membership AS l"
        " JOIN current_state_events AS c ON c.room_id = l.room_id"
        "  AND c.type = 'm.room.member' AND c.state_key = ? AND c.membership = 'join'"
        " WHERE l.user_id = ? AND l.membership = 'join' LIMIT 1",
        (other, user_id),
    ).fetchone()
    return row is not None


def _changed_users_txn(txn: Txn, user_id: str, since: int, upto: int) -> set[str]:
    rows = txn.execute(
        "SELECT DISTINCT user_id, only_for FROM device_lists_stream"
        " WHERE stream_id > ? AND stream_id <= ? AND (only_for IS NULL OR only_for = ?)",
        (since, upto, user_id),
    ).fetchall()
    changed: set[str] = set()
    for other, only_for in rows:
        if other in changed:
            continue
        if only_for == user_id or other == user_id or _shares_room_txn(txn, user_id, other):
            changed.add(other)
    return changed


def _rooms_joined_at_txn(txn: Txn, user_id: str, position: int) -> set[str]:
    # The membership in force at an events-stream position is the latest one at or before it.
    rows = txn.execute(
        "SELECT m.room_id FROM room_memberships AS m"
        " WHERE m.user_id = ? AND m.membership = 'join' AND m.event_stream_ordering = ("
        "  SELECT MAX(m2.event_stream_ordering) FROM room_memberships AS m2"
        "  WHERE m2.user_id = m.user_id AND m2.room_id = m.room_id"
        "  AND m2.event_stream_ordering <= ?)",
        (user_id, position),
    ).fetchall()
    return {row[0] for row in rows}


def _members_ever_txn(txn: Txn, room_ids: Iterable[str], upto: int) -> set[str]:
    users: set[str] = set()
    for room_id in room_ids:
        rows = txn.execute(
            "SELECT DISTINCT user_id FROM room_memberships"
            " WHERE room_id = ? AND event_stream_ordering <= ?",
            (room_id, upto),
        ).fetchall()
        users.update(row[0] for row in rows)
    return users


def _membership_changed_txn(txn: Txn, user_id: str, since: int, upto: int) -> bool:
    # One probe of room_memberships_by_room_stream per room the user has ever been in.
    row = txn.execute(
        "SELECT 1 FROM room_memberships"
        " WHERE event_stream_ordering > ? AND event_stream_ordering <= ? AND room_id IN"
        " (SELECT room_id FROM local_current_membership WHERE user_id = ?) LIMIT 1",
        (since, upto, user_id),
    ).fetchone()
    return row is not None


def _sharing_changes_txn(txn: Txn, user_id: str, since: int, upto: int) -> SharingChanges:
    # Memberships that changed in (since, upto] in rooms the user has ever been in.
    rows = txn.execute(
        "SELECT DISTINCT room_id, user_id FROM room_memberships"
        " WHERE event_stream_ordering > ? AND event_stream_ordering <= ? AND room_id IN"
        " (SELECT room_id FROM local_current_membership WHERE user_id = ?)",
        (since, upto, user_id),
    ).fetchall()
    if not rows:
        return SharingChanges(frozenset(), frozenset())
    own_rooms = {room_id for room_id, member in rows if member == user_id}
    candidates = {member for _, member in rows} | _members_ever_txn(txn, own_rooms, upto)
    candidates.discard(user_id)
    mine_before = _rooms_joined_at_txn(txn, user_id, since)
    mine_after = _rooms_joined_at_txn(txn, user_id, upto)
    newly: set[str] = set()
    gone: set[str] = set()
    for other in candidates:
        before = bool(mine_before & _rooms_joined_at_txn(txn, other, since))
        after = bool(mine_after & _rooms_joined_at_txn(txn, other, upto))
        if after and not before:
            newly.add(other)
        elif before and not after:
            gone.add(other)
    return SharingChanges(frozenset(newly), frozenset(gone))


class DeviceListStore:
    """Reads of the device_lists stream and of who shares rooms with whom."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def max_stream_id(self) -> int:
        """The highest device_lists stream id written. Checkpoint: yes."""
        return await self._db.run_read("device_lists_max_stream_id", _max_stream_id_txn)

    async def record_change(self, ids: StreamIdGenerator, user_id: str) -> int:
        """Record that `user_id`'s device list changed; the stream id. Checkpoint: yes."""
        return await self._db.run_txn(
            "record_device_list_change", _record_change_txn, ids, user_id
        )

    async def changed_users(self, user_id: str, since: int, upto: int) -> set[str]:
        """Users whose devices or keys changed in (since, upto] that `user_id` may see: the
        user themselves, users sharing a joined room with them now, and changes meant only
        for them. Checkpoint: yes."""
        if upto <= since:
            return set()
        return await self._db.run_read_inline(
            "device_lists_changed_users", _changed_users_txn, user_id, since, upto
        )

    async def users_sharing_room(self, user_id: str) -> set[str]:
        """Users joined to a room the local user is joined to, and the user. Checkpoint: yes."""
        return await self._db.run_read("users_sharing_room", users_sharing_room_txn, user_id)

    async def sharing_changes(self, user_id: str, since: int, upto: int) -> SharingChanges:
        """Whom a local user started or stopped sharing a joined room with between two
        events-stream positions. Checkpoint: yes."""
        if upto <= since:
            return SharingChanges(frozenset(), frozenset())
        # Nearly every sync's range holds messages, not memberships: a bounded inline probe
        # answers those without the thread hop the full computation below takes.
        changed = await self._db.run_read_inline(
            "device_lists_membership_changed", _membership_changed_txn, user_id, since, upto
        )
        if not changed:
            return SharingChanges(frozenset(), frozenset())
        return await self._db.run_read(
            "device_lists_sharing_changes", _sharing_changes_txn, user_id, since, upto
        )
