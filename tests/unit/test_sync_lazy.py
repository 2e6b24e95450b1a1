"""The record of lazy-loaded members sent to each device (`handlers.sync_lazy`), as pure code."""

from __future__ import annotations

from trioserver.events import KNOWN_ROOM_VERSIONS
from trioserver.handlers.sync_lazy import SentMembers
from trioserver.stores.events import StoredEvent

from tests.unit.events.helpers import ALICE, Room

V10 = KNOWN_ROOM_VERSIONS["10"]
DEVICE = ("@me:x", "DEV")


def _member(room: Room, user: str, name: str = "") -> StoredEvent:
    content = {"membership": "join", "displayname": name}
    event = room.event("m.room.member", user, content, state_key=user)
    return StoredEvent(event, room.depth, room.depth, 1, None, None, None)


def test_sent_members_are_filtered_until_they_change() -> None:
    room = Room(V10)
    sent = SentMembers()
    first = _member(room, ALICE)
    assert sent.unsent(DEVICE, [first]) == [first]
    sent.record(DEVICE, [first])
    assert sent.unsent(DEVICE, [first]) == []
    assert sent.unsent(("@me:x", "OTHER"), [first]) == [first]
    renamed = _member(room, ALICE, "Alice")
    assert sent.unsent(DEVICE, [renamed]) == [renamed]
    sent.forget(DEVICE)
    assert sent.unsent(DEVICE, [first]) == [first]


def test_sent_members_are_per_room_and_bounded() -> None:
    one, two = Room(V10), Room(V10)
    two.room_id = "!two:hs.test"
    sent = SentMembers(max_devices=1, per_device=1)
    in_one, in_two = _member(one, ALICE), _member(two, ALICE)
    sent.record(DEVICE, [in_one])
    assert sent.unsent(DEVICE, [in_one, in_two]) == [in_two]
    sent.record(DEVICE, [in_two])  # the oldest entry makes room
    assert sent.unsent(DEVICE, [in_one, in_two]) == [in_one]
    sent.record(("@other:x", "D"), [in_one])  # the oldest device makes room
    assert sent.unsent(DEVICE, [in_two]) == [in_two]
