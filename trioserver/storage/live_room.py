"""The events writer's in-memory view of a room: what the next event builds on.

Theory of operation
-------------------
Only the events writer changes a room's current state, so its in-memory `LiveRoom` is
authoritative: current state as events (the auth events of the next event come from it), the
forward extremities (the next event's ``prev_events``), the depth, and the current state group.

Events are built against a `RoomView`, an overlay on the `LiveRoom`. Everything a request
builds (e.g. the dozen events of ``/createRoom``) goes into the view; only when the whole request
has been built and authorised does `RoomView.commit` fold it into the room. A request that fails
halfway therefore leaves the room exactly as it was, without copying the room's state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from trioserver.events import Event, RoomVersion

if TYPE_CHECKING:
    from collections.abc import Iterator

    from trioserver.stores.database import Txn

StateKey = tuple[str, str]
MEMBER = "m.room.member"


@attrs.define
class LiveRoom:
    """A room as the writer knows it right now."""

    room_id: str
    room_version: RoomVersion
    state: dict[StateKey, Event]
    extremities: list[Event]
    depth: int
    state_group: int | None
    chain_length: int

    def local_user_joined(self, server_suffix: str) -> bool:
        """Whether any user of this server is joined (seed 4's question)."""
        return any(
            key[0] == MEMBER and key[1].endswith(server_suffix) and event.membership == "join"
            for key, event in self.state.items()
        )


@attrs.define
class RoomView:
    """Uncommitted changes on top of a `LiveRoom`."""

    room: LiveRoom
    overlay: dict[StateKey, Event] = attrs.field(factory=dict)
    extremities: list[Event] = attrs.field(factory=list)
    depth: int = 0
    state_group: int | None = None
    chain_length: int = 0

    @classmethod
    def of(cls, room: LiveRoom) -> RoomView:
        """A view with no changes yet."""
        return cls(
            room, {}, list(room.extremities), room.depth, room.state_group, room.chain_length
        )

    def get(self, key: StateKey) -> Event | None:
        """The current state event for `key`, or None."""
        event = self.overlay.get(key)
        return event if event is not None else self.room.state.get(key)

    def items(self) -> Iterator[tuple[StateKey, Event]]:
        """The full current state (base state overridden by the overlay)."""
        for key, event in self.room.state.items():
            yield key, self.overlay.get(key, event)
        for key, event in self.overlay.items():
            if key not in self.room.state:
                yield key, event

    def apply(self, event: Event, state_group: int | None, chain_length: int) -> None:
        """Record a built event as the new head of the room."""
        if event.state_key is not None:
            self.overlay[(event.type, event.state_key)] = event
        self.extremities = [event]
        self.depth = max(self.depth, event.depth)
        self.state_group = state_group
        self.chain_length = chain_length

    def commit(self) -> None:
        """Fold the changes into the room."""
        self.room.state.update(self.overlay)
        self.room.extremities = self.extremities
        self.room.depth = self.depth
        self.room.state_group = self.state_group
        self.room.chain_length = self.chain_length


@attrs.frozen
class StoredRoomHead:
    """What the database says about a room's head, to build a `LiveRoom` from."""

    room_version: str
    state_ids: dict[StateKey, str]
    extremity_ids: list[str]
    depth: int
    state_group: int | None
    chain_length: int


def load_room_head_txn(txn: Txn, room_id: str) -> StoredRoomHead | None:
    """Read a room's head; None when the room is unknown."""
    row = txn.execute("SELECT room_version FROM rooms WHERE room_id = ?", (room_id,)).fetchone()
    if row is None:
        return None
    state_rows = txn.execute(
        "SELECT type, state_key, event_id FROM current_state_events WHERE room_id = ?",
        (room_id,),
    ).fetchall()
    extremities = txn.execute(
        "SELECT event_id FROM event_forward_extremities WHERE room_id = ?", (room_id,)
    ).fetchall()
    head = txn.execute(
        "SELECT e.topological_ordering, e.state_group, COALESCE(g.chain_length, 0)"
        " FROM events AS e LEFT JOIN state_groups AS g ON g.id = e.state_group"
        " WHERE e.room_id = ? AND e.outlier = 0 AND e.rejected IS NULL"
        " ORDER BY e.topological_ordering DESC, e.stream_ordering DESC LIMIT 1",
        (room_id,),
    ).fetchone()
    depth, group, chain = head if head is not None else (0, None, 0)
    return StoredRoomHead(
        room_version=str(row[0]),
        state_ids={(t, k): e for t, k, e in state_rows},
        extremity_ids=[r[0] for r in extremities],
        depth=depth,
        state_group=group,
        chain_length=chain,
    )
