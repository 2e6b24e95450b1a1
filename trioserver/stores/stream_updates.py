"""The rows of each database-backed replicated stream, read by token range (issue 13).

Theory of operation
-------------------
Replication sends, for each stream, the rows with a token in ``(from, upto]`` (`repl.streams`).
Tables that keep only the latest row per key (receipts, account data, presence) answer with
the keys whose latest change falls in the range: an overwritten change has no row of its own
any more, which is fine because the row that overwrote it says everything a follower needs.

Every query here reads ``limit + 1`` rows: when there are more than `limit`, the page is cut
after the `limit`-th row's token and completed with every row of that token, so a token's rows
never straddle two pages (a follower stands at a token only once it has all its rows).

Rows are the wire rows (cattrs unstructures them to named-field JSON objects, STYLE S8).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Row, Txn
    from trioserver.streams import StreamIdGenerator

R = TypeVar("R")


@attrs.frozen
class RowPage(Generic[R]):
    """Rows of one stream in ``(from, upto_token]``, each with its token, in token order."""

    rows: Sequence[tuple[int, R]]
    upto_token: int
    limited: bool


@attrs.frozen
class EventRow:
    """A new event: what a follower needs to wake ``/sync`` and fix its caches.

    Attributes:
        membership: for ``m.room.member`` events, the membership.
        redacts: for a redaction, the event it redacts (its cached copy is stale now).
        has_relation: whether the event relates to another (the room has relations now).
        sender: who sent it (main counts local users' messages as presence activity when
            the events writer is another instance).
    """

    event_id: str
    room_id: str
    type: str
    state_key: str | None
    membership: str | None
    redacts: str | None
    has_relation: bool
    sender: str = ""


@attrs.frozen
class ReceiptStreamRow:
    """A receipt changed (a follower reads receipts from the database)."""

    room_id: str
    receipt_type: str
    user_id: str
    event_id: str
    thread_id: str | None


@attrs.frozen
class AccountDataStreamRow:
    """An account data entry changed; `room_id` None for global account data."""

    user_id: str
    room_id: str | None
    data_type: str


@attrs.frozen
class PresenceStreamRow:
    """A user's presence as stored (followers keep presence in memory: the whole state)."""

    user_id: str
    state: str
    status_msg: str | None
    last_active_ts: int
    currently_active: bool


@attrs.frozen
class ToDeviceStreamRow:
    """A message for a device is waiting in its inbox."""

    user_id: str
    device_id: str


@attrs.frozen
class DeviceListStreamRow:
    """A user's devices or keys changed; `only_for`: the one user to tell (a signature of
    another user's master key is private to its signer), None for everyone sharing a room."""

    user_id: str
    only_for: str | None


@attrs.frozen
class TypingStreamRow:
    """Who is typing in a room now (typing is in memory only; defined here beside the other
    rows)."""

    room_id: str
    user_ids: list[str]


@attrs.frozen
class CacheRow:
    """A cache to invalidate: the keys, or None for all of it."""

    cache: str
    keys: list[str] | None


def _page_txn(
    txn: Txn,
    sql: str,
    from_token: int,
    upto_token: int,
    limit: int,
    make: Callable[[Row], R],
) -> RowPage[R]:
    """`sql` selects the token first, then the row's columns, with two placeholders for
    ``token > ? AND token <= ?``, ordered by token; a LIMIT is appended."""
    limit = max(limit, 1)
    found = txn.execute(sql + " LIMIT ?", (from_token, upto_token, limit + 1)).fetchall()
    if len(found) <= limit:
        return RowPage([(int(r[0]), make(r)) for r in found], upto_token, False)
    last = int(found[limit - 1][0])
    # Complete the last token's rows (they may go past the limit); nothing after it.
    rows = [r for r in found if int(r[0]) < last]
    rows += txn.execute(sql, (last - 1, last)).fetchall()
    return RowPage([(int(r[0]), make(r)) for r in rows], last, True)


_EVENTS_SQL = """
    SELECT e.stream_ordering, e.event_id, e.room_id, e.type, e.state_key, e.membership,
        (SELECT d.redacts FROM redactions d WHERE d.event_id = e.event_id),
        EXISTS (SELECT 1 FROM event_relations r WHERE r.event_id = e.event_id),
        e.sender
    FROM events e
    WHERE e.stream_ordering > ? AND e.stream_ordering <= ?
    ORDER BY e.stream_ordering
"""


def _event_row(r: Row) -> EventRow:
    redacts = r[6] if isinstance(r[6], str) else None
    return EventRow(r[1], r[2], r[3], r[4], r[5], redacts, bool(r[7]), r[8])


_RECEIPTS_SQL = """
    SELECT stream_id, room_id, receipt_type, user_id, event_id, thread_id FROM receipts
    WHERE stream_id > ? AND stream_id <= ? ORDER BY stream_id
"""


def _receipt_row(r: Row) -> ReceiptStreamRow:
    return ReceiptStreamRow(r[1], r[2], r[3], r[4], r[5] or None)


_ACCOUNT_DATA_SQL = """
    SELECT stream_id, user_id, room_id, type FROM account_data
    WHERE stream_id > ? AND stream_id <= ? ORDER BY stream_id
"""


def _account_data_row(r: Row) -> AccountDataStreamRow:
    return AccountDataStreamRow(r[1], r[2] or None, r[3])


_PRESENCE_SQL = """
    SELECT stream_id, user_id, state, status_msg, last_active_ts, currently_active
    FROM presence WHERE stream_id > ? AND stream_id <= ? ORDER BY stream_id
"""


def _presence_row(r: Row) -> PresenceStreamRow:
    return PresenceStreamRow(r[1], r[2], r[3], int(r[4]), bool(r[5]))


_TO_DEVICE_SQL = """
    SELECT stream_id, user_id, device_id FROM device_inbox
    WHERE stream_id > ? AND stream_id <= ? ORDER BY stream_id
"""


def _to_device_row(r: Row) -> ToDeviceStreamRow:
    return ToDeviceStreamRow(r[1], r[2])


_DEVICE_LISTS_SQL = """
    SELECT stream_id, user_id, only_for FROM device_lists_stream
    WHERE stream_id > ? AND stream_id <= ? ORDER BY stream_id
"""


def _device_list_row(r: Row) -> DeviceListStreamRow:
    return DeviceListStreamRow(r[1], r[2])


_CACHES_SQL = """
    SELECT stream_id, cache_name, keys_json FROM cache_invalidations
    WHERE stream_id > ? AND stream_id <= ? ORDER BY stream_id
"""


def _cache_row(r: Row) -> CacheRow:
    keys = None if r[2] is None else [str(k) for k in json.loads(r[2])]
    return CacheRow(r[1], keys)


def _insert_invalidation_txn(
    txn: Txn, ids: StreamIdGenerator, name: str, keys_json: str | None, now_ms: int
) -> int:
    stream_id = ids.next_id()
    txn.execute(
        "INSERT INTO cache_invalidations (stream_id, cache_name, keys_json, invalidation_ts)"
        " VALUES (?, ?, ?, ?)",
        (stream_id, name, keys_json, now_ms),
    )
    return stream_id


def _prune_invalidations_txn(txn: Txn, before_ms: int) -> int:
    # Keep the newest row whatever its age: it is where the stream's position is read from.
    txn.execute(
        "DELETE FROM cache_invalidations WHERE invalidation_ts < ?"
        " AND stream_id < (SELECT MAX(stream_id) FROM cache_invalidations)",
        (before_ms,),
    )
    return txn.rowcount


def _max_invalidation_txn(txn: Txn) -> int:
    row = txn.execute("SELECT COALESCE(MAX(stream_id), 0) FROM cache_invalidations").fetchone()
    return 0 if row is None else int(row[0])


def _max_event_stream_txn(txn: Txn) -> int:
    row = txn.execute("SELECT COALESCE(MAX(stream_ordering), 0) FROM events").fetchone()
    return 0 if row is None else int(row[0])


_STREAMS: dict[str, tuple[str, Callable[[Row], Any]]] = {
    "events": (_EVENTS_SQL, _event_row),
    "receipts": (_RECEIPTS_SQL, _receipt_row),
    "account_data": (_ACCOUNT_DATA_SQL, _account_data_row),
    "presence": (_PRESENCE_SQL, _presence_row),
    "to_device": (_TO_DEVICE_SQL, _to_device_row),
    "device_lists": (_DEVICE_LISTS_SQL, _device_list_row),
    "caches": (_CACHES_SQL, _cache_row),
}
# The streams this store can read (typing is in memory).
DB_STREAMS = tuple(_STREAMS)


class StreamUpdateStore:
    """Reads replicated streams' rows by token range, and writes the caches stream."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def add_commit_hook(self, hook: Callable[[], None]) -> None:
        """Call `hook` after every write transaction (see `Database.add_commit_hook`)."""
        self._db.add_commit_hook(hook)

    async def updates(
        self, stream: str, from_token: int, upto_token: int, limit: int
    ) -> RowPage[Any]:
        """The rows of `stream` (one of `DB_STREAMS`) with token in ``(from, upto]``.

        Returns:
            At most about `limit` rows (a token's rows are never split); when limited,
            ``upto_token`` is the last row's token.

        Raises:
            KeyError: `stream` is not kept in the database.

        Checkpoint: yes.
        """
        sql, make = _STREAMS[stream]
        if upto_token <= from_token:
            return RowPage([], upto_token, False)
        return await self._db.run_read(
            f"{stream}_stream_updates", _page_txn, sql, from_token, upto_token, limit, make
        )

    async def max_event_stream_ordering(self) -> int:
        """The events stream's highest committed position (0 when none). Checkpoint: yes."""
        return await self._db.run_read("max_event_stream_ordering", _max_event_stream_txn)

    async def max_invalidation_id(self) -> int:
        """The caches stream's highest stream id (0 when none). Checkpoint: yes."""
        return await self._db.run_read("max_cache_invalidation", _max_invalidation_txn)

    async def add_invalidation(
        self, ids: StreamIdGenerator, name: str, keys: Sequence[str] | None
    ) -> int:
        """Store an invalidation of cache `name` (`keys` None: all of it); its stream id.

        Raises:
            NotStreamWriter: `ids` is a follower's (before the transaction writes anything).

        Checkpoint: yes.
        """
        ids.check_writer("caches")
        keys_json = None if keys is None else json.dumps(list(keys))
        now_ms = int(time.time() * 1000)
        return await self._db.run_txn(
            "add_cache_invalidation", _insert_invalidation_txn, ids, name, keys_json, now_ms
        )

    async def prune_invalidations(self, before_ms: int) -> int:
        """Delete invalidations older than `before_ms` (the newest is kept); how many.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "prune_cache_invalidations", _prune_invalidations_txn, before_ms
        )
