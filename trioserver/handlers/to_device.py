"""Send-to-device messages, delivered once through /sync.

Theory of operation
-------------------
``PUT /sendToDevice`` stores one message per recipient device in the device inbox under one
to_device stream id, then wakes the recipients' waiting /sync requests. A device's /sync
returns its messages with stream ids in (since, now], and the *next* sync, whose ``since``
covers them, acknowledges them: `delete_delivered` then removes them (client-server API,
"Send-to-Device messaging", server behaviour). So a message is delivered until acknowledged,
even if a response is lost.

Only local recipients are served: messages to users of other servers are dropped until
federation exists (the spec says they should be forwarded over federation).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from canonicaljson import encode_canonical_json

from trioserver.errors import MatrixError
from trioserver.events import is_valid_user_id
from trioserver.stores.to_device import OutgoingMessages, ToDeviceStore
from trioserver.streams import StreamIdGenerator

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from trioserver.handlers.auth import Requester
    from trioserver.handlers.notifier import Notifier
    from trioserver.stores.database import Database
    from trioserver.stores.state import StateStore
    from trioserver.stores.stream_updates import ToDeviceStreamRow
    from trioserver.streams import StreamPositions

logger = logging.getLogger(__name__)

# Synapse refuses larger messages (they could not travel over federation in one EDU).
MAX_MESSAGE_SIZE = 65536
# Spec: "100 messages is recommended as a reasonable limit" per /sync response.
DEFAULT_SYNC_LIMIT = 100


class ToDeviceHandler:
    """Send-to-device messages, delivered once through /sync."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        positions: StreamPositions,
        state: StateStore,
        *,
        server_name: str,
        clock: Callable[[], float] = time.time,
        writer: bool = True,
    ) -> None:
        self._store = ToDeviceStore(db)
        # False on a worker (issue 13): positions come from replication (`on_replicated`).
        self._writer = writer
        self._notifier = notifier
        self._positions = positions
        self._server_suffix = ":" + server_name
        self._clock = clock
        self._ids: StreamIdGenerator | None = None

    async def load(self) -> None:
        """Read the stream position and register the to_device stream. Checkpoint: yes."""
        self._ids = StreamIdGenerator(await self._store.stream_position(), writer=self._writer)
        self._positions.register("to_device", self.position)

    def position(self) -> int:
        """The current position of the to_device stream."""
        return self._generator().current

    def _generator(self) -> StreamIdGenerator:
        assert self._ids is not None, "ToDeviceHandler.load() was not run"
        return self._ids

    async def send(
        self,
        requester: Requester,
        event_type: str,
        txn_id: str,
        messages: Mapping[str, Mapping[str, Mapping[str, Any]]],
    ) -> None:
        """Queue `messages` (user id -> device id or ``*`` -> content) for local devices.

        Retrying with the same transaction id does nothing (idempotent per device and path).
        Invalid and remote user ids, and unknown devices, are dropped silently (as Synapse
        does; remote delivery needs federation).

        Raises:
            MatrixError: 413 ``M_TOO_LARGE`` when a message's content is over 64 KiB.
            NotStreamWriter: on an instance that does not write the to_device stream.
        """
        self._generator().check_writer("to_device")
        local: dict[str, Mapping[str, Mapping[str, Any]]] = {}
        for user_id, by_device in messages.items():
            for content in by_device.values():
                if len(encode_canonical_json(content)) > MAX_MESSAGE_SIZE:
                    raise MatrixError(
                        "M_TOO_LARGE", f"To-device message for {user_id} is too large"
                    )
            if not is_valid_user_id(user_id):
                logger.info("dropping to-device message to invalid user id %r", user_id)
            elif not user_id.endswith(self._server_suffix):
                logger.info("dropping to-device message to remote user %s", user_id)
            elif by_device:
                local[user_id] = by_device
        outgoing = OutgoingMessages(
            sender=requester.user_id,
            sender_device=requester.device_id,
            event_type=event_type,
            txn_id=txn_id,
            messages=local,
            now_ms=int(self._clock() * 1000),
        )
        outcome = await self._store.add_messages(self._generator(), outgoing)
        if outcome.recipients:
            self._notifier.notify(users=outcome.recipients)

    def on_replicated(self, token: int, rows: Sequence[ToDeviceStreamRow]) -> None:
        """A follower applied the writer's messages up to `token`: wake the recipients."""
        self._generator().advance(token)
        self._notifier.notify(users={row.user_id for row in rows})

    async def messages_for(
        self,
        user_id: str,
        device_id: str,
        since: int,
        upto: int,
        limit: int = DEFAULT_SYNC_LIMIT,
    ) -> tuple[list[dict[str, Any]], int]:
        """A device's pending messages with stream id in (since, upto], oldest first.

        Args:
            user_id: the recipient.
            device_id: the recipient's device.
            since: the to_device position of the client's ``since`` token (0 for none).
            upto: the to_device position the response goes up to.
            limit: at most this many messages.

        Returns:
            The events (``sender``, ``type``, ``content``) and the position up to which they
            were returned: `upto`, or less when `limit` cut the list short (the next sync
            resumes from there). Checkpoint: yes.
        """
        if upto <= since:
            return [], upto
        return await self._store.messages_for(user_id, device_id, since, upto, max(limit, 0))

    async def delete_delivered(self, user_id: str, device_id: str, upto: int) -> None:
        """Forget a device's messages with stream id <= `upto` (the client acknowledged them
        by presenting a ``since`` token at or past `upto`). Checkpoint: yes."""
        await self._store.delete_delivered(user_id, device_id, upto)

    async def on_devices_changed(self, user_id: str) -> None:
        """After devices were created, renamed or deleted: drop deleted devices' messages.

        Checkpoint: yes.
        """
        await self._store.delete_for_missing_devices(user_id)
