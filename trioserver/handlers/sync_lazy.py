"""Lazy-loaded members in /sync (``lazy_load_members``, spec "Lazy-loading room members").

Theory of operation
-------------------
With lazy loading a room entry's ``state`` carries only the ``m.room.member`` events the client
needs to show the timeline: those of the timeline's senders, as of the timeline's start. What
else goes in follows Synapse (SyTest tests/31sync/15lazy-members.pl checks it):

- a *full* entry (initial sync, newly joined room, ``full_state``): the non-member state, the
  senders' members and the syncing user's own;
- a *gappy* (limited) incremental entry: every state change in the gap, members included (the
  client cannot tell who joined or left in it otherwise), plus the senders' members;
- any other incremental entry: only the senders' members.

Member events already in the timeline are not repeated. Unless ``include_redundant_members``
is set, a member event this device was already sent is not sent again: `SentMembers` records,
per (user, device), the member events each sync delivered, per room (Synapse's record is not
per room, so a user's member event in one room evicts theirs in another). Like Synapse's, the
record is kept in memory only and is forgotten on an initial sync; a forgotten entry costs a
redundant member event, never a missing one.

The record is trusted only for a sync from a ``since`` this instance itself gave the device
(one of its last `ANSWERS_KEPT` ``next_batch`` tokens, `answered`; clients, SyTest among them,
may sync again from an older token of theirs). A ``since`` this instance never gave out comes
from another instance of the deployment (issue 13), which may have started the device over:
the client may then hold less than the record says, so it is forgotten.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from trioserver.stores.events import StoredEvent

MEMBER = "m.room.member"
MAX_DEVICES = 10_000
MAX_MEMBERS_PER_DEVICE = 1_000
# How many of its own next_batch tokens per device an instance recognises as a since.
ANSWERS_KEPT = 8


class SentMembers:
    """Which member event of each (room, user) a device was last sent, per (user, device)."""

    def __init__(
        self, max_devices: int = MAX_DEVICES, per_device: int = MAX_MEMBERS_PER_DEVICE
    ) -> None:
        self._devices: collections.OrderedDict[
            tuple[str, str], collections.OrderedDict[tuple[str, str], str]
        ] = collections.OrderedDict()
        self._max_devices = max_devices
        self._per_device = per_device
        # (user, device) -> the last next_batch tokens this instance answered that device with.
        self._answered: collections.OrderedDict[tuple[str, str], collections.deque[object]] = (
            collections.OrderedDict()
        )

    def start(self, key: tuple[str, str], since: object | None) -> None:
        """A sync from `since` begins: keep the record only if we gave the device `since`."""
        if since is None or since not in self._answered.get(key, ()):
            self.forget(key)

    def answered(self, key: tuple[str, str], next_batch: object) -> None:
        """The sync was answered with `next_batch`."""
        tokens = self._answered.get(key)
        if tokens is None:
            tokens = self._answered[key] = collections.deque(maxlen=ANSWERS_KEPT)
            if len(self._answered) > self._max_devices:
                self._answered.popitem(last=False)
        self._answered.move_to_end(key)
        tokens.append(next_batch)

    def forget(self, key: tuple[str, str]) -> None:
        """A new sync sequence (no ``since``): the client starts from nothing."""
        self._devices.pop(key, None)

    def unsent(self, key: tuple[str, str], events: Sequence[StoredEvent]) -> list[StoredEvent]:
        """`events` without the member events this device already has."""
        sent = self._devices.get(key)
        if not sent:
            return list(events)
        return [
            s for s in events if s.event.type != MEMBER or sent.get(_member_key(s)) != s.event_id
        ]

    def record(self, key: tuple[str, str], events: Iterable[StoredEvent]) -> None:
        """Note the member events among `events` as delivered to this device."""
        sent = self._devices.get(key)
        if sent is None:
            sent = self._devices[key] = collections.OrderedDict()
            if len(self._devices) > self._max_devices:
                self._devices.popitem(last=False)
        self._devices.move_to_end(key)
        for stored in events:
            if stored.event.type == MEMBER:
                sent[_member_key(stored)] = stored.event_id
                sent.move_to_end(_member_key(stored))
        while len(sent) > self._per_device:
            sent.popitem(last=False)


def _member_key(stored: StoredEvent) -> tuple[str, str]:
    return stored.event.room_id, stored.event.state_key or ""


def select_state(
    state: Sequence[StoredEvent],
    senders_members: Sequence[StoredEvent],
    *,
    full: bool,
    in_timeline: set[str],
) -> list[StoredEvent]:
    """The lazy-loaded ``state`` of an entry, before de-duplication.

    Args:
        state: the entry's state without lazy loading (everything at the timeline's start for
            a full entry, the gap's changes for a gappy one, nothing otherwise).
        senders_members: the member events of the timeline's senders (and, for a full entry,
            the syncing user) at the timeline's start.
        full: a full entry: its other members are left out.
    """
    kept = [s for s in state if not full or s.event.type != MEMBER]
    have = {s.event_id for s in kept}
    kept.extend(s for s in senders_members if s.event_id not in have)
    result = [s for s in kept if s.event_id not in in_timeline]
    result.sort(key=lambda s: s.stream_ordering)
    return result
