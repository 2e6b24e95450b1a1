"""Who a user may find in the user directory, read straight from room state and profiles.

A user is searchable by the requester (spec: ``POST /user_directory/search``; Synapse's
default ``search_all_users: false``) when they are joined to a room whose join rule is
``public`` or whose history visibility is ``world_readable``, or share a joined room with the
requester. The requester finds themselves only through public rooms, as in Synapse.
Deactivated accounts are never listed. Display names and avatars are the global profile.

The room-state conditions read the event JSON (``stores.dialect.json_text``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from trioserver.stores.dialect import json_text, like_any_case

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.stores.database import Database, Dialect, Txn


@attrs.frozen
class DirectoryUser:
    """One searchable user."""

    user_id: str
    display_name: str | None
    avatar_url: str | None


def _public_rooms(dialect: Dialect) -> str:
    return (
        "SELECT c.room_id FROM current_state_events AS c"
        " JOIN event_json AS j ON j.event_id = c.event_id"
        " WHERE c.state_key = '' AND ("
        "  (c.type = 'm.room.join_rules'"
        f"   AND {json_text(dialect, 'j.json', 'content', 'join_rule')} = 'public')"
        "  OR (c.type = 'm.room.history_visibility'"
        f"   AND {json_text(dialect, 'j.json', 'content', 'history_visibility')}"
        " = 'world_readable'))"
    )


def _visible_users(dialect: Dialect) -> str:
    return (
        "WITH visible(user_id) AS ("
        " SELECT c.state_key FROM current_state_events AS c"
        " WHERE c.type = 'm.room.member' AND c.membership = 'join'"
        f" AND c.room_id IN ({_public_rooms(dialect)})"
        " UNION"
        " SELECT c.state_key FROM local_current_membership AS l"
        " JOIN current_state_events AS c ON c.room_id = l.room_id"
        "  AND c.type = 'm.room.member' AND c.membership = 'join'"
        " WHERE l.user_id = ? AND l.membership = 'join' AND c.state_key != ?"
        ")"
        " SELECT v.user_id, p.displayname, p.avatar_url FROM visible AS v"
        " LEFT JOIN profiles AS p ON p.user_id = v.user_id"
        " LEFT JOIN users AS u ON u.user_id = v.user_id"
        " WHERE COALESCE(u.deactivated, 0) = 0"
    )


_VISIBLE_USERS: dict[Dialect, str] = {d: _visible_users(d) for d in ("sqlite", "postgres")}


def _like_pattern(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _search_txn(
    txn: Txn, requester: str, words: Sequence[str], max_rows: int
) -> list[DirectoryUser]:
    sql = _VISIBLE_USERS[txn.dialect]
    like = like_any_case(txn.dialect)
    params: list[object] = [requester, requester]
    for word in words:
        # LIKE is case-insensitive for ASCII only, so only ASCII words narrow the query here;
        # the caller matches every word exactly.
        sql += f" AND (v.user_id {like} ? ESCAPE '\\' OR p.displayname {like} ? ESCAPE '\\')"
        params += [_like_pattern(word), _like_pattern(word)]
    sql += " ORDER BY v.user_id LIMIT ?"
    params.append(max_rows)
    return [DirectoryUser(*row) for row in txn.execute(sql, params).fetchall()]


class UserDirectoryStore:
    """Reads for the user directory."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def candidates(
        self, requester: str, ascii_words: Sequence[str], max_rows: int
    ) -> list[DirectoryUser]:
        """Users `requester` may find whose user id or display name contains every word of
        `ascii_words` (case-insensitively), ordered by user id, at most `max_rows`.

        Checkpoint: yes.
        """
        return await self._db.run_read(
            "user_directory_candidates", _search_txn, requester, ascii_words, max_rows
        )
