"""PersistEventStore: every write of event persistence, in one transaction per batch (seed 2).

Theory of operation
-------------------
Only the instance that the config names as the events-stream writer constructs this class
(`nursery.py`); everything else reads. The controller (`storage.persistence`) has already built,
authorised and ordered the events and worked out what each changes; this module only turns
that into rows, all in one transaction, so that a batch is either wholly stored or not at all.

Per event: ``events``, ``event_json``, ``event_edges``, a new state group when it changed state,
``room_memberships`` for member events, ``redactions`` for redactions that name a target (seed 5),
the client's transaction id, ``event_expiry`` for self-destructing messages (issue 5), and
the push actions the writer evaluated, which also drive the unread counts (issue 11).
Per batch: the search index rows of searchable events, and the removal of those of the events
its redactions apply to (issue 11, `stores.search`).
Per batch: ``event_relations`` and ``threads`` (issue 11), and a redaction that applies drops
its target from them.
Per room, last (it reads what the per-event step wrote): forward extremities,
``current_state_events`` with its delta stream, and ``local_current_membership``
(seed 6). When the batch leaves no local user joined, the room's current state is deleted and
every removed key recorded in the delta stream (seed 4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import orjson

from trioserver.storage.intents import TxnKey
from trioserver.stores import relations_index, search
from trioserver.stores.events import StoredEvent
from trioserver.stores.push_actions import (
    EventPush,
    PushActionWrite,
    insert_push_actions_txn,
    redact_push_actions_txn,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.events import Event
    from trioserver.stores.database import Database, Txn

# Longest chain of state-group deltas before the writer stores a full snapshot again: reading
# a group reads at most this many deltas.
MAX_STATE_CHAIN = 50


@attrs.frozen
class NewStateGroup:
    """A state group created by a state event."""

    id: int
    room_id: str
    prev_group: int | None
    chain_length: int
    # The whole state when prev_group is None, else only what changed.
    entries: dict[tuple[str, str], str]


@attrs.frozen
class EventWrite:
    """One event to store, with everything the controller decided about it."""

    stored: StoredEvent
    received_ts: int
    new_state_group: NewStateGroup | None = None
    txn_key: TxnKey | None = None
    expiry_ts: int | None = None
    # Set when this is a redaction whose target is known and which the rules let apply.
    applies_redaction_to: str | None = None
    # Who the event notifies (local members' push rules, evaluated by the writer).
    push: EventPush | None = None
    # Issue 15: a received event kept out of the timeline (an auth-chain or state event, or
    # one rejected or soft-failed; `storage.received_events`).
    outlier: bool = False
    # An out-of-band membership of a local user (an invite from another server): an outlier
    # that still changes the user's `local_current_membership`, and is news for them.
    out_of_band: bool = False


@attrs.frozen
class StateChange:
    """A current-state key changed by the batch: its final event (None: removed)."""

    type: str
    state_key: str
    event_id: str | None
    membership: str | None
    stream_ordering: int


@attrs.frozen
class RoomWrite:
    """What the batch changes about one room as a whole."""

    room_id: str
    extremities: tuple[str, ...]
    state_changes: tuple[StateChange, ...]
    min_stream_ordering: int
    # Set for the batch that creates the room.
    new_room_version: str | None = None
    creator: str | None = None
    created_ts: int = 0
    # Seed 4: after this batch no local user is joined any more.
    server_left: bool = False
    # Out-of-band memberships of local users (`EventWrite.out_of_band`): they change
    # `local_current_membership` only, not the room's current state.
    out_of_band: tuple[StateChange, ...] = ()
    # Backfilled events held as outliers, joining the timeline: (event id, state group), and
    # the state groups they need.
    promoted: tuple[tuple[str, int], ...] = ()
    new_groups: tuple[NewStateGroup, ...] = ()


def _insert_event_txn(txn: Txn, write: EventWrite) -> None:
    stored = write.stored
    event = stored.event
    txn.execute(
        "INSERT INTO events (stream_ordering, event_id, room_id, type, state_key, sender,"
        " topological_ordering, origin_server_ts, received_ts, membership, state_group,"
        " replaces_state, rejected, outlier) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stored.stream_ordering,
            event.event_id,
            event.room_id,
            event.type,
            event.state_key,
            event.sender,
            stored.topological_ordering,
            event.origin_server_ts,
            write.received_ts,
            event.membership,
            stored.state_group,
            stored.replaces_state,
            stored.rejected,
            1 if write.outlier else 0,
        ),
    )
    txn.execute(
        "INSERT INTO event_json (event_id, room_id, json, unsigned) VALUES (?, ?, ?, ?)",
        (
            event.event_id,
            event.room_id,
            orjson.dumps(event.get_pdu_json()).decode(),
            orjson.dumps(event.unsigned).decode() if event.unsigned else None,
        ),
    )
    txn.executemany(
        "INSERT INTO event_edges (event_id, prev_event_id) VALUES (?, ?)",
        # An event from another server may name a prev_event twice: one edge.
        [(event.event_id, prev) for prev in dict.fromkeys(event.prev_event_ids)],
    )


def _insert_state_group_txn(txn: Txn, group: NewStateGroup) -> None:
    txn.execute(
        "INSERT INTO state_groups (id, room_id, prev_group, chain_length) VALUES (?, ?, ?, ?)",
        (group.id, group.room_id, group.prev_group, group.chain_length),
    )
    txn.executemany(
        "INSERT INTO state_group_state (state_group, type, state_key, event_id)"
        " VALUES (?, ?, ?, ?)",
        [(group.id, t, k, e) for (t, k), e in group.entries.items()],
    )


def _insert_event_metadata_txn(txn: Txn, write: EventWrite) -> None:
    event = write.stored.event
    if event.type == "m.room.member" and event.state_key is not None:
        content = event.content
        name, avatar = content.get("displayname"), content.get("avatar_url")
        txn.execute(
            "INSERT INTO room_memberships (event_id, user_id, sender, room_id, membership,"
            " display_name, avatar_url, event_stream_ordering) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                event.event_id,
                event.state_key,
                event.sender,
                event.room_id,
                event.membership or "",
                name if isinstance(name, str) else None,
                avatar if isinstance(avatar, str) else None,
                write.stored.stream_ordering,
            ),
        )
    # Seed 5: only a redaction that names a target gets a row.
    if event.type == "m.room.redaction" and event.redacts is not None:
        txn.execute(
            "INSERT INTO redactions (event_id, redacts, received_ts) VALUES (?, ?, ?)"
            " ON CONFLICT (event_id) DO NOTHING",
            (event.event_id, event.redacts, write.received_ts),
        )
    if write.applies_redaction_to is not None:
        txn.execute(
            "UPDATE events SET redacted_by = ? WHERE event_id = ? AND redacted_by IS NULL",
            (event.event_id, write.applies_redaction_to),
        )
    if write.txn_key is not None:
        key = write.txn_key
        txn.execute(
            "INSERT INTO event_txn_ids (user_id, device_id, room_id, txn_id, event_id,"
            " inserted_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (
                key.user_id,
                key.device_id,
                event.room_id,
                key.txn_id,
                event.event_id,
                write.received_ts,
            ),
        )
    if write.expiry_ts is not None:
        txn.execute(
            "INSERT INTO event_expiry (event_id, expiry_ts) VALUES (?, ?)",
            (event.event_id, write.expiry_ts),
        )


def _update_room_txn(txn: Txn, room: RoomWrite, server_name: str) -> None:
    txn.execute("DELETE FROM event_forward_extremities WHERE room_id = ?", (room.room_id,))
    txn.executemany(
        "INSERT INTO event_forward_extremities (room_id, event_id) VALUES (?, ?)",
        [(room.room_id, event_id) for event_id in room.extremities],
    )
    if room.server_left:
        _delete_current_state_txn(txn, room)
    else:
        _update_current_state_txn(txn, room)
    _update_local_membership_txn(txn, room.room_id, room.state_changes, server_name)
    _update_local_membership_txn(txn, room.room_id, room.out_of_band, server_name)


def _update_current_state_txn(txn: Txn, room: RoomWrite) -> None:
    for change in room.state_changes:
        key = (room.room_id, change.type, change.state_key)
        txn.execute(
            "INSERT INTO current_state_delta_stream"
            " (stream_id, room_id, type, state_key, event_id, prev_event_id)"
            " VALUES (?, ?, ?, ?, ?, (SELECT event_id FROM current_state_events"
            "  WHERE room_id = ? AND type = ? AND state_key = ?))",
            (room.min_stream_ordering, *key, change.event_id, *key),
        )
        if change.event_id is None:
            txn.execute(
                "DELETE FROM current_state_events"
                " WHERE room_id = ? AND type = ? AND state_key = ?",
                key,
            )
            continue
        txn.execute(
            "INSERT INTO current_state_events"
            " (room_id, type, state_key, event_id, membership, event_stream_ordering)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (room_id, type, state_key) DO UPDATE SET"
            " event_id = excluded.event_id, membership = excluded.membership,"
            " event_stream_ordering = excluded.event_stream_ordering",
            (*key, change.event_id, change.membership, change.stream_ordering),
        )


def _delete_current_state_txn(txn: Txn, room: RoomWrite) -> None:
    # Seed 4: the server has left, so its copy of the room's state is stale from now on. Record
    # every key as removed (consumers such as the user directory see them go), then drop it.
    txn.execute(
        "INSERT INTO current_state_delta_stream"
        " (stream_id, room_id, type, state_key, event_id, prev_event_id)"
        " SELECT ?, room_id, type, state_key, NULL, event_id"
        " FROM current_state_events WHERE room_id = ?",
        (room.min_stream_ordering, room.room_id),
    )
    txn.execute("DELETE FROM current_state_events WHERE room_id = ?", (room.room_id,))


def _update_local_membership_txn(
    txn: Txn, room_id: str, changes: Sequence[StateChange], server_name: str
) -> None:
    # Seed 6: the latest membership of each local user, kept even after the server has left
    # (so that a kick or ban of the last local user is still recorded).
    suffix = ":" + server_name
    for change in changes:
        if change.type != "m.room.member" or not change.state_key.endswith(suffix):
            continue
        txn.execute(
            "DELETE FROM local_current_membership WHERE room_id = ? AND user_id = ?",
            (room_id, change.state_key),
        )
        if change.event_id is not None and change.membership is not None:
            txn.execute(
                "INSERT INTO local_current_membership"
                " (room_id, user_id, event_id, membership, event_stream_ordering)"
                " VALUES (?, ?, ?, ?, ?)",
                (
                    room_id,
                    change.state_key,
                    change.event_id,
                    change.membership,
                    change.stream_ordering,
                ),
            )


def _persist_batch_txn(
    txn: Txn, events: Sequence[EventWrite], rooms: Sequence[RoomWrite], server_name: str
) -> None:
    # New rooms first: events join the `rooms` table when they are read back.
    for room in rooms:
        if room.new_room_version is not None:
            txn.execute(
                "INSERT INTO rooms (room_id, room_version, creator, created_ts)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (room_id) DO NOTHING",
                (room.room_id, room.new_room_version, room.creator, room.created_ts),
            )
    for room in rooms:
        for group in room.new_groups:
            _insert_state_group_txn(txn, group)
        txn.executemany(
            "UPDATE events SET outlier = 0, state_group = ? WHERE event_id = ? AND outlier = 1",
            [(group_id, event_id) for event_id, group_id in room.promoted],
        )
    for write in events:
        _insert_event_txn(txn, write)
        if write.new_state_group is not None:
            _insert_state_group_txn(txn, write.new_state_group)
        _insert_event_metadata_txn(txn, write)
    # Issue 11: the search and relations indexes, after every event of the batch (a
    # redaction may apply to an event of the same batch), each one batched statement.
    redacted = [w.applies_redaction_to for w in events if w.applies_redaction_to is not None]
    search.index_events_txn(txn, (w.stored for w in events), redacted)
    relations_index.index_relations_txn(txn, [write.stored for write in events])
    if redacted:
        relations_index.unindex_events_txn(txn, redacted)
    _push_actions_txn(txn, events)
    for room in rooms:
        _update_room_txn(txn, room, server_name)


def _push_actions_txn(txn: Txn, events: Sequence[EventWrite]) -> None:
    insert_push_actions_txn(
        txn,
        [
            PushActionWrite(
                w.stored.room_id,
                w.stored.event_id,
                w.stored.stream_ordering,
                w.stored.topological_ordering,
                w.received_ts,
                w.push,
            )
            for w in events
            if w.push is not None
        ],
    )
    # Synapse drops a redacted event's push actions: it no longer counts as unread.
    for write in events:
        if write.applies_redaction_to is not None:
            redact_push_actions_txn(txn, write.applies_redaction_to)


def _min_stream_txn(txn: Txn) -> int:
    row = txn.execute("SELECT COALESCE(MIN(stream_ordering), 0) FROM events").fetchone()
    assert row is not None
    return int(row[0])


def _max_ids_txn(txn: Txn) -> tuple[int, int]:
    stream = txn.execute("SELECT COALESCE(MAX(stream_ordering), 0) FROM events").fetchone()
    group = txn.execute("SELECT COALESCE(MAX(id), 0) FROM state_groups").fetchone()
    assert stream is not None
    assert group is not None
    return int(stream[0]), int(group[0])


class PersistEventStore:
    """The write side of event persistence. Exists only on the events writer."""

    def __init__(self, db: Database, *, server_name: str, is_writer: bool) -> None:
        if not is_writer:
            # Seed 2: constructing the writer store anywhere else is a configuration bug.
            raise RuntimeError("PersistEventStore may only exist on the events writer")
        self._db = db
        self._server_name = server_name

    async def persist_batch(
        self, events: Sequence[EventWrite], rooms: Sequence[RoomWrite]
    ) -> None:
        """Store a batch of events and their room updates in one transaction.

        Raises:
            Whatever the database raises; then nothing of the batch is stored.

        Checkpoint: yes.
        """
        await self._db.run_txn(
            "persist_events", _persist_batch_txn, events, rooms, self._server_name
        )

    async def min_stream_ordering(self) -> int:
        """The smallest stream ordering stored (backfilled history counts down from 0)."""
        return await self._db.run_txn("min_stream", _min_stream_txn)

    async def max_ids(self) -> tuple[int, int]:
        """The largest stream ordering and state group id stored (0 when none).

        The writer allocates both in memory from here on. Checkpoint: yes.
        """
        return await self._db.run_txn("max_ids", _max_ids_txn)


def state_change_for(event: Event, stream_ordering: int) -> StateChange:
    """The current-state change a state event makes."""
    assert event.state_key is not None
    return StateChange(
        event.type, event.state_key, event.event_id, event.membership, stream_ordering
    )
