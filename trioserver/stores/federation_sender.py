"""What the federation sender keeps about destination servers, and its catch-up reads.

A destination's row (`DestinationRow`) holds its backoff and how far along the events stream
it is known to be served (`sql/22_federation_sender.sql`). The catch-up read answers "what
must a destination that was unreachable hear now": for each room it shares with this server,
the newest event this server sent there since that position (Synapse sends the same; the
destination fetches anything older it lacks with ``/get_missing_events``).

Server names are compared exactly with a suffix test (`_ends_with`), not with ``LIKE``:
SQLite's ``LIKE`` ignores case, and a server name is not a pattern.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Txn

_CHUNK = 500


@attrs.frozen
class DestinationRow:
    """One destination's stored retry state and progress (times in ms since the epoch)."""

    destination: str
    retry_last_ts: int = 0
    retry_interval: int = 0
    failure_ts: int | None = None
    last_successful_stream_ordering: int | None = None


@attrs.frozen
class CatchUpEvent:
    """An event a destination missed: the newest one this server sent in a room."""

    room_id: str
    event_id: str
    stream_ordering: int


def _ends_with(column: str) -> str:
    """A condition true when `column` ends with the text of the second parameter; the first
    parameter is that text's length minus one (see `_suffix_params`).

    ``substr`` from 1-based position ``length - (n - 1)`` is the last n characters in both
    dialects; on a shorter value both return a string shorter than the suffix, never equal.
    """
    return f"substr({column}, length({column}) - CAST(? AS INTEGER)) = ?"


def _suffix_params(server_name: str) -> tuple[int, str]:
    suffix = ":" + server_name
    return len(suffix) - 1, suffix


def _all_destinations_txn(txn: Txn) -> list[DestinationRow]:
    rows = txn.execute(
        "SELECT destination, retry_last_ts, retry_interval, failure_ts,"
        " last_successful_stream_ordering FROM federation_destinations"
    ).fetchall()
    return [DestinationRow(*row) for row in rows]


def _store_destinations_txn(txn: Txn, rows: Sequence[DestinationRow]) -> None:
    txn.executemany(
        "INSERT INTO federation_destinations (destination, retry_last_ts, retry_interval,"
        " failure_ts, last_successful_stream_ordering) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (destination) DO UPDATE SET retry_last_ts = excluded.retry_last_ts,"
        " retry_interval = excluded.retry_interval, failure_ts = excluded.failure_ts,"
        " last_successful_stream_ordering = excluded.last_successful_stream_ordering",
        [
            (
                r.destination,
                r.retry_last_ts,
                r.retry_interval,
                r.failure_ts,
                r.last_successful_stream_ordering,
            )
            for r in rows
        ],
    )


def _destination_rooms_txn(
    txn: Txn, destination: str, since: int
) -> tuple[list[str], list[tuple[str, str]]]:
    """Rooms where `destination` has a joined member now, and (room, member event) pairs
    for rooms where it has none but one of its users' memberships changed after `since`
    (a leave, kick or ban it must still hear of)."""
    rows = txn.execute(
        "SELECT room_id, state_key, membership, event_id, event_stream_ordering"
        " FROM current_state_events WHERE type = 'm.room.member' AND " + _ends_with("state_key"),
        _suffix_params(destination),
    ).fetchall()
    joined: set[str] = set()
    changed: dict[str, tuple[int, str]] = {}
    for room_id, state_key, membership, event_id, stream in rows:
        # Exactly this server: the suffix test alone would also match "@u:x:dest".
        if state_key.partition(":")[2] != destination:
            continue
        if membership == "join":
            joined.add(room_id)
        elif stream > since and stream > changed.get(room_id, (-1, ""))[0]:
            changed[room_id] = (stream, event_id)
    departed = [(room, ev) for room, (_, ev) in changed.items() if room not in joined]
    return sorted(joined), departed


def _newest_local_events_txn(
    txn: Txn, rooms: Sequence[str], server_name: str, since: int
) -> list[CatchUpEvent]:
    found: list[CatchUpEvent] = []
    for start in range(0, len(rooms), _CHUNK):
        chunk = rooms[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        # The newest accepted timeline event this server sent in each room (max
        # stream_ordering per room, joined back to its id).
        rows = txn.execute(
            "SELECT e.room_id, e.event_id, e.stream_ordering FROM events AS e JOIN ("
            " SELECT room_id, MAX(stream_ordering) AS newest FROM events"
            f" WHERE room_id IN ({marks}) AND stream_ordering > ? AND outlier = 0"
            " AND rejected IS NULL AND " + _ends_with("sender") + " GROUP BY room_id"
            ") AS n ON e.stream_ordering = n.newest",
            [*chunk, since, *_suffix_params(server_name)],
        ).fetchall()
        found.extend(CatchUpEvent(*row) for row in rows)
    return found


def _local_events_among_txn(
    txn: Txn, pairs: Sequence[tuple[str, str]], server_name: str
) -> list[CatchUpEvent]:
    found: list[CatchUpEvent] = []
    for start in range(0, len(pairs), _CHUNK):
        chunk = [event_id for _, event_id in pairs[start : start + _CHUNK]]
        marks = ",".join("?" * len(chunk))
        rows = txn.execute(
            "SELECT room_id, event_id, stream_ordering FROM events"
            f" WHERE event_id IN ({marks}) AND outlier = 0 AND rejected IS NULL"
            " AND " + _ends_with("sender"),
            [*chunk, *_suffix_params(server_name)],
        ).fetchall()
        found.extend(CatchUpEvent(*row) for row in rows)
    return found


def _catch_up_events_txn(
    txn: Txn, destination: str, server_name: str, since: int, limit: int
) -> list[CatchUpEvent]:
    joined, departed = _destination_rooms_txn(txn, destination, since)
    found = _newest_local_events_txn(txn, joined, server_name, since)
    found += _local_events_among_txn(txn, departed, server_name)
    found.sort(key=lambda e: e.stream_ordering)
    return found[:limit]


def _newest_local_stream_txn(txn: Txn, server_name: str) -> int | None:
    # Walks the events stream back from its end to the first event of this server's.
    row = txn.execute(
        "SELECT stream_ordering FROM events WHERE outlier = 0 AND rejected IS NULL AND "
        + _ends_with("sender")
        + " ORDER BY stream_ordering DESC LIMIT 1",
        _suffix_params(server_name),
    ).fetchone()
    return None if row is None else int(row[0])


def _joined_members_txn(txn: Txn, event_ids: Sequence[str]) -> list[str]:
    users: list[str] = []
    for start in range(0, len(event_ids), _CHUNK):
        chunk = event_ids[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = txn.execute(
            f"SELECT state_key FROM events WHERE event_id IN ({marks})"
            " AND type = 'm.room.member' AND membership = 'join'",
            chunk,
        ).fetchall()
        users.extend(str(row[0]) for row in rows)
    return users


class FederationSenderStore:
    """Destination retry state and progress, and the reads catch-up needs."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def all_destinations(self) -> list[DestinationRow]:
        """Every destination with a stored row (the sender loads them once at start).

        Checkpoint: yes.
        """
        return await self._db.run_read("all_federation_destinations", _all_destinations_txn)

    async def store_destinations(self, rows: Sequence[DestinationRow]) -> None:
        """Insert or replace the rows of these destinations, in one transaction.

        Checkpoint: yes.
        """
        if rows:
            await self._db.run_txn(
                "store_federation_destinations", _store_destinations_txn, list(rows)
            )

    async def catch_up_events(
        self, destination: str, server_name: str, since: int, *, limit: int
    ) -> list[CatchUpEvent]:
        """What `destination` missed after stream position `since`, oldest first.

        For each room where it has a joined member, the newest accepted event that
        `server_name` (this server) sent there after `since`; for each room where it has
        none any more but its membership changed after `since`, that membership event if
        this server sent it (so a kicked server hears of its kick).

        Args:
            destination: the server that missed events.
            server_name: this server's name (only its own events are sent).
            since: the destination's ``last_successful_stream_ordering``.
            limit: at most this many events, the oldest ones: sending them and moving
                `since` to the last one's position makes progress.

        Checkpoint: yes. Reads every current membership of the destination's users (no
        index serves a suffix match): a cost paid once per recovery, not per event.
        """
        return await self._db.run_read(
            "federation_catch_up_events",
            _catch_up_events_txn,
            destination,
            server_name,
            since,
            limit,
        )

    async def newest_local_stream(self, server_name: str) -> int | None:
        """The stream position of the newest accepted timeline event `server_name` (this
        server) sent, None if there is none: a destination served up to there missed
        nothing.

        Checkpoint: yes.
        """
        return await self._db.run_read(
            "federation_newest_local_stream", _newest_local_stream_txn, server_name
        )

    async def joined_members(self, member_event_ids: Sequence[str]) -> list[str]:
        """The users whose membership event, among `member_event_ids`, is a join.

        For the members of a room in the state at an event (its state group), when the
        room's current state is gone because this server left it.

        Checkpoint: yes.
        """
        return await self._db.run_read(
            "federation_joined_members", _joined_members_txn, list(member_event_ids)
        )
