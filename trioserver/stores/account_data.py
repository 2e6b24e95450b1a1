"""Account data: a user's global and per-room JSON objects by type, room tags among them.

Room tags are kept as the room's ``m.tag`` entry (``{"tags": {name: {...}}}``), which is
exactly what ``/sync`` delivers (spec "Room Tagging"), so a tag change is one row and one
stream position. Only the account data stream's writer (`AccountDataHandler`) writes here; it
passes the `StreamIdGenerator` whose `next_id` is called inside each transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import orjson

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.stores.database import Database, Txn

JsonDict = dict[str, Any]
# Global account data is stored under this room id (the primary key cannot hold NULL).
GLOBAL = ""
TAG_TYPE = "m.tag"
IGNORED_USER_LIST = "m.ignored_user_list"
_CHUNK = 500


@attrs.frozen
class AccountDataRow:
    """One account data entry; `room_id` is None for global account data."""

    room_id: str | None
    type: str
    content: JsonDict
    stream_id: int


def _max_stream_id_txn(txn: Txn) -> int:
    row = txn.execute("SELECT COALESCE(MAX(stream_id), 0) FROM account_data").fetchone()
    return 0 if row is None else int(row[0])


def _get_txn(txn: Txn, user_id: str, room_id: str, data_type: str) -> JsonDict | None:
    row = txn.execute(
        "SELECT content FROM account_data WHERE user_id = ? AND room_id = ? AND type = ?",
        (user_id, room_id, data_type),
    ).fetchone()
    if row is None:
        return None
    content: JsonDict = orjson.loads(row[0])
    return content


def _put_txn(
    txn: Txn,
    user_id: str,
    room_id: str,
    data_type: str,
    content: JsonDict,
    next_id: Callable[[], int],
) -> int:
    stream_id = next_id()
    txn.execute(
        "INSERT INTO account_data (user_id, room_id, type, content, stream_id)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user_id, room_id, type) DO UPDATE SET"
        " content = excluded.content, stream_id = excluded.stream_id",
        (user_id, room_id, data_type, orjson.dumps(content).decode(), stream_id),
    )
    return stream_id


def tags_of(content: JsonDict | None) -> JsonDict:
    """The tag map of an ``m.tag`` content (empty when unset or not an object)."""
    tags = None if content is None else content.get("tags")
    if not isinstance(tags, dict):
        return {}
    # Rows written before null orders were refused may hold one; the spec leaves it out.
    return {
        name: {k: v for k, v in tag.items() if not (k == "order" and v is None)}
        if isinstance(tag, dict)
        else tag
        for name, tag in tags.items()
    }


def _change_tag_txn(
    txn: Txn,
    user_id: str,
    room_id: str,
    tag: str,
    tag_content: JsonDict | None,
    next_id: Callable[[], int],
) -> int | None:
    tags = tags_of(_get_txn(txn, user_id, room_id, TAG_TYPE))
    if tag_content is None:
        if tag not in tags:
            return None
        del tags[tag]
    else:
        tags[tag] = tag_content
    return _put_txn(txn, user_id, room_id, TAG_TYPE, {"tags": tags}, next_id)


def _rows(raw: list[tuple[Any, ...]]) -> list[AccountDataRow]:
    return [
        AccountDataRow(None if room == GLOBAL else room, data_type, orjson.loads(content), sid)
        for room, data_type, content, sid in raw
    ]


def _global_since_txn(txn: Txn, user_id: str, since: int | None) -> list[AccountDataRow]:
    sql = (
        "SELECT room_id, type, content, stream_id FROM account_data"
        " WHERE user_id = ? AND room_id = ''"
    )
    params: list[str | int] = [user_id]
    if since is not None:
        sql += " AND stream_id > ?"
        params.append(since)
    return _rows(txn.execute(sql + " ORDER BY stream_id", params).fetchall())


def _rooms_since_txn(
    txn: Txn, user_id: str, room_ids: Sequence[str], since: int | None
) -> list[AccountDataRow]:
    rows: list[AccountDataRow] = []
    for start in range(0, len(room_ids), _CHUNK):
        chunk = room_ids[start : start + _CHUNK]
        sql = (
            "SELECT room_id, type, content, stream_id FROM account_data"
            f" WHERE user_id = ? AND room_id IN ({','.join('?' * len(chunk))})"
        )
        params: list[str | int] = [user_id, *chunk]
        if since is not None:
            sql += " AND stream_id > ?"
            params.append(since)
        rows.extend(_rows(txn.execute(sql + " ORDER BY stream_id", params).fetchall()))
    return rows


_MAX_CACHED_IGNORE_LISTS = 100_000


class AccountDataStore:
    """The account_data table."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Every /sync, /messages and /context asks whom the user ignores; the list changes
        # rarely and only through `put` (one instance per server: see nursery.py).
        self._ignored: dict[str, frozenset[str]] = {}
        self._ignored_generation = 0

    async def max_stream_id(self) -> int:
        """The highest account data stream id stored (0 when none). Checkpoint: yes."""
        return await self._db.run_read("account_data_max_stream_id", _max_stream_id_txn)

    async def get(self, user_id: str, room_id: str | None, data_type: str) -> JsonDict | None:
        """One entry's content (`room_id` None: global), or None. Checkpoint: yes."""
        return await self._db.run_read_inline(
            "get_account_data", _get_txn, user_id, room_id or GLOBAL, data_type
        )

    @property
    def ignored_generation(self) -> int:
        """Goes up whenever any user's ignore list changes (callers may cache on it)."""
        return self._ignored_generation

    def forget_ignored_nowait(self, user_id: str) -> None:
        """Drop the cached ignore list of `user_id` (another instance changed it)."""
        self._ignored_generation += 1
        self._ignored.pop(user_id, None)

    def ignored_users_nowait(self, user_id: str) -> frozenset[str] | None:
        """The cached ignore list of the user, or None when it is not cached (the events
        writer asks for every member of a room on every event). Not a checkpoint."""
        return self._ignored.get(user_id)

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """The users in the user's ``m.ignored_user_list`` (spec "Ignoring Users"); a
        malformed list ignores no one. Cached until `put` changes it. Checkpoint: yes."""
        cached = self._ignored.get(user_id)
        if cached is not None:
            await trio.lowlevel.checkpoint()
            return cached
        generation = self._ignored_generation
        content = await self.get(user_id, None, IGNORED_USER_LIST)
        listed = content.get("ignored_users") if content is not None else None
        ignored = (
            frozenset(user for user in listed if user != user_id)
            if isinstance(listed, dict)
            else frozenset()
        )
        # Not cached if a list changed while we read: the value may be the old one.
        if generation == self._ignored_generation:
            if len(self._ignored) >= _MAX_CACHED_IGNORE_LISTS:
                self._ignored.clear()
            self._ignored[user_id] = ignored
        return ignored

    async def put(
        self,
        user_id: str,
        room_id: str | None,
        data_type: str,
        content: JsonDict,
        next_id: Callable[[], int],
    ) -> int:
        """Set one entry (`room_id` None: global).

        Args:
            next_id: allocates the stream id (called once, inside the transaction).

        Returns:
            The change's stream id.

        Checkpoint: yes.
        """
        stream_id: int = await self._db.run_txn(
            "put_account_data", _put_txn, user_id, room_id or GLOBAL, data_type, content, next_id
        )
        if room_id is None and data_type == IGNORED_USER_LIST:
            self._ignored_generation += 1
            self._ignored.pop(user_id, None)
        return stream_id

    async def change_tag(
        self,
        user_id: str,
        room_id: str,
        tag: str,
        tag_content: JsonDict | None,
        next_id: Callable[[], int],
    ) -> int | None:
        """Add or replace (`tag_content` an object) or remove (None) one tag of a room.

        Returns:
            The change's stream id, or None when a removed tag was not there (no change).

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "change_tag", _change_tag_txn, user_id, room_id, tag, tag_content, next_id
        )

    async def global_since(self, user_id: str, since: int | None) -> list[AccountDataRow]:
        """Global entries changed after stream id `since` (all when None). Checkpoint: yes."""
        return await self._db.run_read_inline(
            "global_account_data", _global_since_txn, user_id, since
        )

    async def rooms_since(
        self, user_id: str, room_ids: Sequence[str], since: int | None
    ) -> list[AccountDataRow]:
        """Entries of `room_ids` changed after `since` (all when None). Checkpoint: yes."""
        if not room_ids:
            return []
        return await self._db.run_read_inline(
            "room_account_data", _rooms_since_txn, user_id, list(room_ids), since
        )
