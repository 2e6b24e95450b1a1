"""Room state: state groups (state at each event), current state and memberships.

A state group is either a full snapshot or a delta on its `prev_group`; chains are bounded by
the writer (see `persist_events.MAX_STATE_CHAIN`), so resolving a group reads at most that many
small deltas, in one recursive query. Resolved groups are immutable and cached.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn

StateMap = Mapping[tuple[str, str], str]


@attrs.frozen
class MembershipRow:
    """A user's membership of a room, as of the given event."""

    room_id: str
    user_id: str
    event_id: str
    membership: str
    stream_ordering: int


def _state_group_txn(txn: Txn, group: int) -> dict[tuple[str, str], str]:
    rows = txn.execute(
        "WITH RECURSIVE chain(id, prev, depth) AS ("
        "  SELECT id, prev_group, 0 FROM state_groups WHERE id = ?"
        "  UNION ALL"
        "  SELECT g.id, g.prev_group, chain.depth + 1"
        "  FROM state_groups AS g JOIN chain ON g.id = chain.prev"
        ")"
        " SELECT s.type, s.state_key, s.event_id FROM chain"
        " JOIN state_group_state AS s ON s.state_group = chain.id"
        " ORDER BY chain.depth DESC",
        (group,),
    ).fetchall()
    state: dict[tuple[str, str], str] = {}
    # Oldest first, so that newer deltas overwrite older entries.
    for event_type, state_key, event_id in rows:
        state[(event_type, state_key)] = event_id
    return state


def _current_state_txn(txn: Txn, room_id: str) -> dict[tuple[str, str], str]:
    rows = txn.execute(
        "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
        (room_id,),
    ).fetchall()
    return {(t, k): e for t, k, e in rows}


def _current_state_entries_txn(
    txn: Txn, room_id: str, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    found: dict[tuple[str, str], str] = {}
    for event_type, state_key in keys:
        row = txn.execute(
            "SELECT event_id FROM current_state_events"
            " WHERE room_id = ? AND type = ? AND state_key = ?",
            (room_id, event_type, state_key),
        ).fetchone()
        if row is not None:
            found[(event_type, state_key)] = row[0]
    return found


def _local_memberships_txn(
    txn: Txn, user_id: str, memberships: Sequence[str] | None
) -> list[MembershipRow]:
    sql = (
        "SELECT room_id, user_id, event_id, membership, event_stream_ordering"
        " FROM local_current_membership WHERE user_id = ?"
    )
    params: list[str] = [user_id]
    if memberships is not None:
        sql += f" AND membership IN ({','.join('?' * len(memberships))})"
        params.extend(memberships)
    return [MembershipRow(*row) for row in txn.execute(sql, params).fetchall()]


def _local_membership_txn(txn: Txn, user_id: str, room_id: str) -> MembershipRow | None:
    row = txn.execute(
        "SELECT room_id, user_id, event_id, membership, event_stream_ordering"
        " FROM local_current_membership WHERE user_id = ? AND room_id = ?",
        (user_id, room_id),
    ).fetchone()
    return None if row is None else MembershipRow(*row)


def _joined_users_txn(txn: Txn, room_id: str) -> list[str]:
    rows = txn.execute(
        "SELECT state_key FROM current_state_events"
        " WHERE room_id = ? AND type = 'm.room.member' AND membership = 'join'",
        (room_id,),
    ).fetchall()
    return [row[0] for row in rows]


def _room_version_txn(txn: Txn, room_id: str) -> str | None:
    row = txn.execute("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
    return None if row is None else str(row[0])


class StateStore:
    """Reads of room state and memberships."""

    def __init__(self, db: Database, *, server_name: str, cache_size: int = 2_000) -> None:
        self._db = db
        self._server_suffix = ":" + server_name
        self._groups: collections.OrderedDict[int, StateMap] = collections.OrderedDict()
        self._cache_size = cache_size

    async def state_for_group(self, group: int) -> StateMap:
        """The full state map of a state group (immutable; shared). Checkpoint: if uncached."""
        cached = self._groups.get(group)
        if cached is not None:
            self._groups.move_to_end(group)
            return cached
        state = await self._db.run_read("state_for_group", _state_group_txn, group)
        self._groups[group] = state
        if len(self._groups) > self._cache_size:
            self._groups.popitem(last=False)
        return state

    async def current_state(self, room_id: str) -> dict[tuple[str, str], str]:
        """The room's current state map (empty once the server has left). Checkpoint: yes."""
        return await self._db.run_read("current_state", _current_state_txn, room_id)

    async def current_state_entries(
        self, room_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], str]:
        """The event ids of a few (type, state key) entries of the room's current state (a
        key lookup each, not the whole map). Checkpoint: yes."""
        return await self._db.run_read_inline(
            "current_state_entries", _current_state_entries_txn, room_id, keys
        )

    async def joined_users(self, room_id: str) -> list[str]:
        """Users whose current membership is join. Checkpoint: yes."""
        return await self._db.run_read("joined_users", _joined_users_txn, room_id)

    async def room_version(self, room_id: str) -> str | None:
        """The room's version, or None for an unknown room. Checkpoint: yes."""
        return await self._db.run_read_inline("room_version", _room_version_txn, room_id)

    async def local_memberships(
        self, user_id: str, memberships: Sequence[str] | None = None
    ) -> list[MembershipRow]:
        """A local user's latest membership in every room (seed 6), optionally filtered.

        Raises:
            ValueError: `user_id` is not a local user (the table only knows local users).

        Checkpoint: yes.
        """
        self._check_local(user_id)
        return await self._db.run_read_inline(
            "local_memberships", _local_memberships_txn, user_id, memberships
        )

    async def local_membership(self, user_id: str, room_id: str) -> MembershipRow | None:
        """A local user's latest membership of one room. Checkpoint: yes."""
        self._check_local(user_id)
        return await self._db.run_read_inline(
            "local_membership", _local_membership_txn, user_id, room_id
        )

    def _check_local(self, user_id: str) -> None:
        if not user_id.endswith(self._server_suffix):
            raise ValueError(f"{user_id} is not a local user")
