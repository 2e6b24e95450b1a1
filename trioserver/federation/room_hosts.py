"""Which servers are in a room: read from its current state, cached per room.

Theory of operation
-------------------
`RoomHosts` sees every committed timeline event, in stream order (`note`), and answers which
servers have a joined member of a room (`hosts`). An answer is cached with the state group of
the event it was read for. The entry is dropped by any state event of the room, and by any
event whose state group differs from the entry's: a message received from another server that
merges forks of the room can change its state through state resolution without being a state
event, and it then gets a state group of its own. Messages that change nothing share their
group (`trioserver.stores.persist_events`), so a busy room is read once per state change.

When the room has no current state any more (this server's last member left: seed 4 drops
it), the members are read from the state after the event instead, so the servers still in the
room hear of the leave. That answer is not cached.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from trioserver.stores.events import StoredEvent
    from trioserver.stores.federation_sender import FederationSenderStore
    from trioserver.stores.state import StateStore

MEMBER = "m.room.member"
MAX_CACHED_ROOMS = 10_000


@attrs.frozen
class _Entry:
    hosts: frozenset[str]
    state_group: int | None


def _server_of(user_id: str) -> str:
    return user_id.partition(":")[2]


class RoomHosts:
    """Servers with a joined member per room, cached; see the module docstring."""

    def __init__(
        self,
        state: StateStore,
        store: FederationSenderStore,
        *,
        max_rooms: int = MAX_CACHED_ROOMS,
    ) -> None:
        self._state = state
        self._store = store
        self._max_rooms = max_rooms
        self._rooms: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    def note(self, stored: StoredEvent) -> frozenset[str] | None:
        """Take note of a committed event (all of them, in stream order); drop the room's
        entry when the event may have changed who is in it.

        Returns:
            The servers cached before the event when its entry was dropped, else None.
        """
        entry = self._rooms.get(stored.room_id)
        if entry is None:
            return None
        if stored.event.is_state() or stored.state_group != entry.state_group:
            del self._rooms[stored.room_id]
            return entry.hosts
        return None

    async def hosts(self, stored: StoredEvent) -> frozenset[str]:
        """The servers (this one included) with a joined member of the event's room, after
        the event. Checkpoint: when not cached."""
        room_id = stored.room_id
        entry = self._rooms.get(room_id)
        if entry is not None:
            self._rooms.move_to_end(room_id)
            return entry.hosts
        users = await self._state.joined_users(room_id)
        if not users and stored.state_group is not None:
            state = await self._state.state_for_group(stored.state_group)
            members = [event_id for (kind, _), event_id in state.items() if kind == MEMBER]
            joined = await self._store.joined_members(members)
            return frozenset(_server_of(user) for user in joined)
        hosts = frozenset(_server_of(user) for user in users)
        self._rooms[room_id] = _Entry(hosts, stored.state_group)
        if len(self._rooms) > self._max_rooms:
            self._rooms.popitem(last=False)
        return hosts
