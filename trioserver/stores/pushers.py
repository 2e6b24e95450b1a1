"""Pushers and the reads their delivery needs (spec "Push Notifications").

A pusher is keyed by (app_id, pushkey, user_id) and remembers the device that created it and
the events stream position it has been handled up to. Delivery reads the notifying push
actions of ``event_push_actions`` (written at persist time by the push rules evaluation, see
`stores.push_actions`) after that position, and the user's badge from the unread counts of
``event_push_summary``: rooms (or notifications) unread since the read receipt,
plus pending invites (Synapse's badge).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import orjson

from trioserver.stores.dialect import greatest

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Row, Txn

_PUSHER_COLUMNS = (
    "id, user_id, device_id, kind, app_id, app_display_name, device_display_name, pushkey,"
    " pushkey_ts, lang, data, profile_tag, last_stream_ordering"
)


@attrs.frozen
class NewPusher:
    """A pusher as ``POST /pushers/set`` gives it.

    Attributes:
        data: the ``data`` object as given (``url``, ``format`` and anything else).
        pushkey_ts: when it was set, in ms since the epoch.
    """

    user_id: str
    device_id: str
    kind: str
    app_id: str
    app_display_name: str
    device_display_name: str
    pushkey: str
    pushkey_ts: int
    lang: str
    data: dict[str, Any]
    profile_tag: str


@attrs.frozen
class PusherRow:
    """A stored pusher.

    Attributes:
        id: its row id (stable across updates by ``/pushers/set``).
        last_stream_ordering: events up to this stream position have been handled.
    """

    id: int
    user_id: str
    device_id: str
    kind: str
    app_id: str
    app_display_name: str
    device_display_name: str
    pushkey: str
    pushkey_ts: int
    lang: str
    data: dict[str, Any]
    profile_tag: str
    last_stream_ordering: int


@attrs.frozen
class PushAction:
    """A notifying push action of one user for one event.

    Attributes:
        actions: the push rule actions, e.g. ``["notify", {"set_tweak": "sound", ...}]``.
    """

    event_id: str
    room_id: str
    stream_ordering: int
    actions: list[Any]


def _pusher_row(row: Row) -> PusherRow:
    data = orjson.loads(row[10])
    return PusherRow(
        id=int(row[0]),
        user_id=row[1],
        device_id=row[2],
        kind=row[3],
        app_id=row[4],
        app_display_name=row[5],
        device_display_name=row[6],
        pushkey=row[7],
        pushkey_ts=int(row[8]),
        lang=row[9],
        data=data if isinstance(data, dict) else {},
        profile_tag=row[11],
        last_stream_ordering=int(row[12]),
    )


def _set_pusher_txn(txn: Txn, new: NewPusher) -> int:
    # A new or changed pusher starts at the stream's end: it is never pushed old events.
    position = _stream_end_txn(txn)
    txn.execute(
        "INSERT INTO pushers (user_id, device_id, kind, app_id, app_display_name,"
        " device_display_name, pushkey, pushkey_ts, lang, data, profile_tag,"
        " last_stream_ordering) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET device_id = excluded.device_id,"
        " kind = excluded.kind, app_display_name = excluded.app_display_name,"
        " device_display_name = excluded.device_display_name, pushkey_ts = excluded.pushkey_ts,"
        " lang = excluded.lang, data = excluded.data, profile_tag = excluded.profile_tag,"
        " last_stream_ordering = excluded.last_stream_ordering, failing_since_ts = NULL",
        (
            new.user_id,
            new.device_id,
            new.kind,
            new.app_id,
            new.app_display_name,
            new.device_display_name,
            new.pushkey,
            new.pushkey_ts,
            new.lang,
            orjson.dumps(new.data).decode(),
            new.profile_tag,
            position,
        ),
    )
    found = txn.execute(
        "SELECT id FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id = ?",
        (new.app_id, new.pushkey, new.user_id),
    ).fetchone()
    assert found is not None
    return int(found[0])


def _delete_pusher_txn(txn: Txn, app_id: str, pushkey: str, user_id: str) -> bool:
    txn.execute(
        "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id = ?",
        (app_id, pushkey, user_id),
    )
    return txn.rowcount > 0


def _delete_other_users_txn(txn: Txn, app_id: str, pushkey: str, user_id: str) -> list[str]:
    rows = txn.execute(
        "SELECT DISTINCT user_id FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?",
        (app_id, pushkey, user_id),
    ).fetchall()
    txn.execute(
        "DELETE FROM pushers WHERE app_id = ? AND pushkey = ? AND user_id != ?",
        (app_id, pushkey, user_id),
    )
    return [str(r[0]) for r in rows]


def _delete_without_device_txn(txn: Txn, user_id: str) -> int:
    txn.execute(
        "DELETE FROM pushers WHERE user_id = ? AND device_id NOT IN"
        " (SELECT device_id FROM devices WHERE user_id = ?)",
        (user_id, user_id),
    )
    return txn.rowcount


def _user_pushers_txn(txn: Txn, user_id: str) -> list[PusherRow]:
    rows = txn.execute(
        f"SELECT {_PUSHER_COLUMNS} FROM pushers WHERE user_id = ? ORDER BY id", (user_id,)
    ).fetchall()
    return [_pusher_row(r) for r in rows]


def _all_pushers_txn(txn: Txn) -> list[PusherRow]:
    rows = txn.execute(f"SELECT {_PUSHER_COLUMNS} FROM pushers ORDER BY id").fetchall()
    return [_pusher_row(r) for r in rows]


def _advance_pusher_txn(
    txn: Txn, pusher_id: int, stream_ordering: int, success_ms: int | None
) -> None:
    # Only forwards: a concurrent /pushers/set reset the position to the stream's end.
    txn.execute(
        f"UPDATE pushers SET last_stream_ordering = {greatest(txn)}(last_stream_ordering, ?),"
        " last_success_ts = COALESCE(?, last_success_ts) WHERE id = ?",
        (stream_ordering, success_ms, pusher_id),
    )


def _set_failing_txn(txn: Txn, pusher_id: int, since_ms: int | None) -> None:
    txn.execute("UPDATE pushers SET failing_since_ts = ? WHERE id = ?", (since_ms, pusher_id))


def _actions_after_txn(txn: Txn, user_id: str, after: int, limit: int) -> list[PushAction]:
    rows = txn.execute(
        "SELECT event_id, room_id, stream_ordering, actions FROM event_push_actions"
        " WHERE user_id = ? AND notif = 1 AND stream_ordering > ?"
        " ORDER BY stream_ordering LIMIT ?",
        (user_id, after, limit),
    ).fetchall()
    result = []
    for row in rows:
        actions = orjson.loads(row[3])
        result.append(
            PushAction(row[0], row[1], int(row[2]), actions if isinstance(actions, list) else [])
        )
    return result


def _stream_end_txn(txn: Txn) -> int:
    row = txn.execute("SELECT COALESCE(MAX(stream_ordering), 0) FROM events").fetchone()
    return 0 if row is None else int(row[0])


def _users_notified_txn(txn: Txn, after: int, up_to: int) -> set[str]:
    rows = txn.execute(
        "SELECT DISTINCT user_id FROM event_push_actions"
        " WHERE stream_ordering > ? AND stream_ordering <= ? AND notif = 1",
        (after, up_to),
    ).fetchall()
    return {str(r[0]) for r in rows}


# The unread notification counts the events writer keeps per (room, user, thread) and read
# receipts recompute (stores/push_actions.py), summed per joined room.
_UNREAD_BY_ROOM = """
SELECT m.room_id, SUM(s.notif_count)
FROM local_current_membership AS m
JOIN event_push_summary AS s ON s.room_id = m.room_id AND s.user_id = m.user_id
WHERE m.user_id = ? AND m.membership = 'join' AND s.notif_count > 0
GROUP BY m.room_id
"""


def _badge_txn(txn: Txn, user_id: str, by_room: bool) -> int:
    row = txn.execute(
        "SELECT COUNT(*) FROM local_current_membership WHERE user_id = ? AND membership = ?",
        (user_id, "invite"),
    ).fetchone()
    badge = 0 if row is None else int(row[0])
    for _room_id, count in txn.execute(_UNREAD_BY_ROOM, (user_id,)).fetchall():
        if count:
            badge += 1 if by_room else int(count)
    return badge


class PusherStore:
    """Pushers, their delivery positions, and the push actions and badges they deliver."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def set_pusher(self, new: NewPusher) -> int:
        """Create the pusher, or update the user's pusher with the same app id and pushkey.

        Either way it starts at the current end of the events stream.

        Returns:
            The pusher's id.

        Checkpoint: yes.
        """
        return await self._db.run_txn("set_pusher", _set_pusher_txn, new)

    async def delete_pusher(self, app_id: str, pushkey: str, user_id: str) -> bool:
        """Delete one of the user's pushers; False when there was none.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "delete_pusher", _delete_pusher_txn, app_id, pushkey, user_id
        )

    async def delete_other_users_pushers(
        self, app_id: str, pushkey: str, user_id: str
    ) -> list[str]:
        """Delete the pushers with this app id and pushkey of every user except `user_id`.

        Returns:
            The users who lost a pusher.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "delete_other_users_pushers", _delete_other_users_txn, app_id, pushkey, user_id
        )

    async def delete_pushers_without_device(self, user_id: str) -> int:
        """Delete the user's pushers whose device no longer exists; how many went.

        Checkpoint: yes.
        """
        return await self._db.run_txn(
            "delete_pushers_without_device", _delete_without_device_txn, user_id
        )

    async def user_pushers(self, user_id: str) -> list[PusherRow]:
        """The user's pushers, oldest first. Checkpoint: yes."""
        return await self._db.run_read_inline("user_pushers", _user_pushers_txn, user_id)

    async def all_pushers(self) -> list[PusherRow]:
        """Every pusher of every user, oldest first. Checkpoint: yes."""
        return await self._db.run_read("all_pushers", _all_pushers_txn)

    async def advance_pusher(
        self, pusher_id: int, stream_ordering: int, success_ms: int | None
    ) -> None:
        """Record that the pusher has handled the events stream up to `stream_ordering`.

        Args:
            success_ms: when the gateway took the notification of that position (None: there
                was nothing to push, or it was given up).

        Checkpoint: yes.
        """
        await self._db.run_txn(
            "advance_pusher", _advance_pusher_txn, pusher_id, stream_ordering, success_ms
        )

    async def set_pusher_failing(self, pusher_id: int, since_ms: int | None) -> None:
        """Record since when deliveries to the pusher fail (None: they work again).

        Checkpoint: yes.
        """
        await self._db.run_txn("set_pusher_failing", _set_failing_txn, pusher_id, since_ms)

    async def notify_actions_after(
        self, user_id: str, after: int, limit: int = 50
    ) -> list[PushAction]:
        """The user's notifying push actions after stream position `after`, in stream order.

        Checkpoint: yes.
        """
        # Not inline: rows are keyed by stream position, so a pusher far behind scans every
        # user's rows after its position to find its own.
        return await self._db.run_read(
            "notify_actions_after", _actions_after_txn, user_id, after, limit
        )

    async def stream_end(self) -> int:
        """The events stream position of the latest stored event. Checkpoint: yes."""
        return await self._db.run_read_inline("events_stream_end", _stream_end_txn)

    async def users_notified_between(self, after: int, up_to: int) -> set[str]:
        """The users with notifying push actions in the stream range (`after`, `up_to`].

        Checkpoint: yes.
        """
        return await self._db.run_read("users_notified_between", _users_notified_txn, after, up_to)

    async def badge(self, user_id: str, *, by_room: bool) -> int:
        """The user's badge: pending invites plus the joined rooms with unread notifications
        (`by_room`) or the number of those notifications.

        Checkpoint: yes.
        """
        return await self._db.run_read("push_badge", _badge_txn, user_id, by_room)
