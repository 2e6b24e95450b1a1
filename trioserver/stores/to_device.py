"""Send-to-device messages: the device inbox and the to_device stream.

Theory of operation
-------------------
Each sendToDevice request that delivers anything takes one to_device stream id (allocated in
the write transaction, so ids commit in order) and stores at most one message per recipient
device under it. A device's /sync reads its messages in stream order and deletes them once
the client's next ``since`` acknowledges them (client-server API, "Send-to-Device messaging",
server behaviour). The highest id handed out is kept in ``to_device_stream_position``
because delivered rows are deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs
import orjson

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn
    from trioserver.streams import StreamIdGenerator

# How long a sendToDevice transaction id is remembered (Synapse keeps them for 30 minutes).
TXN_ID_LIFETIME_MS = 24 * 3600 * 1000
WILDCARD = "*"


@attrs.frozen
class SendOutcome:
    """What storing a sendToDevice request did.

    Attributes:
        stream_id: the stream id the messages took (None when nothing was stored).
        recipients: the users who got at least one message.
        duplicate: the transaction id was seen before; nothing was stored.
    """

    stream_id: int | None
    recipients: frozenset[str]
    duplicate: bool = False


@attrs.frozen
class OutgoingMessages:
    """One sendToDevice request, as the store needs it."""

    sender: str
    sender_device: str
    event_type: str
    txn_id: str
    # recipient user id -> device id (or "*") -> content
    messages: Mapping[str, Mapping[str, Mapping[str, Any]]]
    now_ms: int


def _position_txn(txn: Txn) -> int:
    row = txn.execute("SELECT MAX(position) FROM to_device_stream_position").fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


def _existing_devices_txn(txn: Txn, user_id: str) -> set[str]:
    rows = txn.execute("SELECT device_id FROM devices WHERE user_id = ?", (user_id,))
    return {row[0] for row in rows.fetchall()}


def _resolve_targets(
    by_device: Mapping[str, Mapping[str, Any]], existing: set[str]
) -> dict[str, Mapping[str, Any]]:
    # "*" means every known device (spec: PUT /sendToDevice); a message addressed to a device
    # by name wins over "*" for that device. Unknown devices are dropped silently, as Synapse
    # does.
    targets: dict[str, Mapping[str, Any]] = {}
    if WILDCARD in by_device:
        targets = dict.fromkeys(existing, by_device[WILDCARD])
    for device_id, content in by_device.items():
        if device_id != WILDCARD and device_id in existing:
            targets[device_id] = content
    return targets


def _add_messages_txn(txn: Txn, ids: StreamIdGenerator, send: OutgoingMessages) -> SendOutcome:
    txn.execute(
        "DELETE FROM to_device_txns WHERE inserted_ts < ?", (send.now_ms - TXN_ID_LIFETIME_MS,)
    )
    txn.execute(
        "INSERT INTO to_device_txns (user_id, device_id, event_type, txn_id, inserted_ts)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (send.sender, send.sender_device, send.event_type, send.txn_id, send.now_ms),
    )
    if txn.rowcount == 0:
        return SendOutcome(None, frozenset(), duplicate=True)
    rows: list[tuple[str, str, str]] = []
    for user_id, by_device in send.messages.items():
        targets = _resolve_targets(by_device, _existing_devices_txn(txn, user_id))
        for device_id, content in targets.items():
            message = {"sender": send.sender, "type": send.event_type, "content": content}
            rows.append((user_id, device_id, orjson.dumps(message).decode()))
    if not rows:
        return SendOutcome(None, frozenset())
    stream_id = ids.next_id()
    txn.executemany(
        "INSERT INTO device_inbox (user_id, device_id, stream_id, message_json)"
        " VALUES (?, ?, ?, ?)",
        [(user_id, device_id, stream_id, message) for user_id, device_id, message in rows],
    )
    txn.execute("UPDATE to_device_stream_position SET position = ?", (stream_id,))
    return SendOutcome(stream_id, frozenset(user_id for user_id, _, _ in rows))


def _messages_for_txn(
    txn: Txn, user_id: str, device_id: str, since: int, upto: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    rows = txn.execute(
        "SELECT stream_id, message_json FROM device_inbox"
        " WHERE user_id = ? AND device_id = ? AND stream_id > ? AND stream_id <= ?"
        " ORDER BY stream_id LIMIT ?",
        (user_id, device_id, since, upto, limit + 1),
    ).fetchall()
    if len(rows) <= limit:
        return [orjson.loads(message) for _, message in rows], upto
    # More are waiting: stop after the last one returned, so a later sync resumes there.
    kept = rows[:limit]
    position = int(kept[-1][0]) if kept else since
    return [orjson.loads(message) for _, message in kept], position


def _has_delivered_txn(txn: Txn, user_id: str, device_id: str, upto: int) -> bool:
    row = txn.execute(
        "SELECT 1 FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?"
        " LIMIT 1",
        (user_id, device_id, upto),
    ).fetchone()
    return row is not None


def _delete_delivered_txn(txn: Txn, user_id: str, device_id: str, upto: int) -> int:
    txn.execute(
        "DELETE FROM device_inbox WHERE user_id = ? AND device_id = ? AND stream_id <= ?",
        (user_id, device_id, upto),
    )
    return txn.rowcount


def _delete_for_missing_devices_txn(txn: Txn, user_id: str) -> int:
    # Messages for, and transaction ids of, devices that no longer exist.
    txn.execute(
        "DELETE FROM device_inbox WHERE user_id = ? AND device_id NOT IN"
        " (SELECT device_id FROM devices WHERE user_id = ?)",
        (user_id, user_id),
    )
    deleted = txn.rowcount
    txn.execute(
        "DELETE FROM to_device_txns WHERE user_id = ? AND device_id NOT IN"
        " (SELECT device_id FROM devices WHERE user_id = ?)",
        (user_id, user_id),
    )
    return deleted


class ToDeviceStore:
    """The device inbox (written only by the to_device stream's writer)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def stream_position(self) -> int:
        """The highest to_device stream id ever handed out. Checkpoint: yes."""
        return await self._db.run_read_inline("to_device_position", _position_txn)

    async def add_messages(self, ids: StreamIdGenerator, send: OutgoingMessages) -> SendOutcome:
        """Store a sendToDevice request's messages for local devices, once per transaction id.

        Args:
            ids: the to_device stream's id generator (an id is taken only if something is
                stored).
            send: the request; its recipients must all be local users.

        Returns:
            What was stored. Checkpoint: yes.
        """
        return await self._db.run_txn("add_to_device_messages", _add_messages_txn, ids, send)

    async def messages_for(
        self, user_id: str, device_id: str, since: int, upto: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """A device's messages with stream id in (since, upto], oldest first, at most `limit`.

        Returns:
            The events and the position up to which they were returned (`upto` unless
            limited). Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "to_device_messages_for", _messages_for_txn, user_id, device_id, since, upto, limit
        )

    async def delete_delivered(self, user_id: str, device_id: str, upto: int) -> int:
        """Delete a device's messages with stream id <= `upto`; how many. Checkpoint: yes."""
        # Most syncs acknowledge nothing; check on a reader before taking the writer.
        if not await self._db.run_read_inline(
            "has_delivered_to_device", _has_delivered_txn, user_id, device_id, upto
        ):
            return 0
        return await self._db.run_txn(
            "delete_delivered_to_device", _delete_delivered_txn, user_id, device_id, upto
        )

    async def delete_for_missing_devices(self, user_id: str) -> int:
        """Drop inbox rows of the user's deleted devices; how many. Checkpoint: yes."""
        return await self._db.run_txn(
            "delete_to_device_of_missing_devices", _delete_for_missing_devices_txn, user_id
        )
