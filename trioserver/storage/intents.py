"""What handlers hand to the events writer: intents, new rooms and the submitter protocol.

Every instance's handlers describe events with these types, but only the events writer runs
`storage.persistence` (and its store, `stores.persist_events`). Keeping the shared types here,
importing nothing heavier than attrs, lets a worker build its handlers without loading the
writer's code (issue 13: a worker's idle memory).
"""

from __future__ import annotations

import secrets
import string
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from trioserver.events import RoomVersion
from trioserver.streams import NotStreamWriter

if TYPE_CHECKING:
    from trioserver.stores.events import StoredEvent


@attrs.frozen
class TxnKey:
    """A client's transaction id for an idempotent send."""

    user_id: str
    device_id: str
    txn_id: str


@attrs.frozen
class EventIntent:
    """An event a handler wants sent; the writer fills in everything else."""

    type: str
    sender: str
    content: dict[str, Any]
    state_key: str | None = None
    redacts: str | None = None
    txn_key: TxnKey | None = None


@attrs.frozen
class NewRoom:
    """A request creates this room; its first intent is the ``m.room.create`` event.

    `room_id` names the room in advance (room upgrades to versions 1-11, whose tombstone names
    the new room before it exists); None picks a fresh id. Version 12 ignores it: the id comes
    from the create event.
    """

    room_version: RoomVersion
    room_id: str | None = None


class EventSubmitter(Protocol):
    """Where handlers send events: the persister on the events writer, `NoEventWriter`
    elsewhere (a worker forwards every request that writes events to the writer)."""

    async def submit(
        self,
        room_id: str | None,
        intents: list[EventIntent],
        new_room: NewRoom | None = None,
        *,
        on_left_room: bool = False,
    ) -> list[StoredEvent]: ...


class NoEventWriter:
    """The event submitter of an instance that is not the events writer (seed 2).

    Every request that writes events is forwarded to the writer before it reaches a handler
    (`trioserver.internal.forwarding`), so this is never called; if a bug routed a write here
    it fails loudly instead of writing with ids of its own.
    """

    async def submit(
        self,
        room_id: str | None,
        intents: list[EventIntent],
        new_room: NewRoom | None = None,
        *,
        on_left_room: bool = False,
    ) -> list[StoredEvent]:
        raise NotStreamWriter("this instance does not write the events stream")


def random_room_id(server_name: str) -> str:
    """A fresh random room id of this server (room versions before 12)."""
    localpart = "".join(secrets.choice(string.ascii_letters) for _ in range(18))
    return f"!{localpart}:{server_name}"
