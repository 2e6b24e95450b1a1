"""Sending events through an events writer on another instance (issue 13).

Theory of operation
-------------------
When ``[stream_writers] events`` names a worker instance, main's handlers still decide what
to send (`EventIntent`s: membership rules, room creation, profile fan-out...), but only the
writer builds, authorises and persists events (seed 2). `RemoteEventSubmitter` is main's
`EventSubmitter`: it posts the intents to the writer's internal ``submit_events`` endpoint,
with main's stream positions at that moment. The writer first waits until its own
replication has applied those (what the request's earlier writes changed on main, e.g. push
rules or an ignore list, is then what the writer evaluates the events with), hands the intents
to its persister and answers, once they are committed, with the event ids
and the writer's events position. The submitter then waits until its own replication client
has applied that position, so the caller reads what it wrote (the events, their stream
orderings, the woken ``/sync`` waiters) exactly as on the writer, and loads the stored events
from the shared database.

A submission is never resent: when the writer does not answer, the events may or may not
have been written, and the client retries (a send's transaction id makes that idempotent).
A refusal by the writer (auth rules, a bad redaction, ...) comes back as the same Matrix
error, status included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from trioserver.errors import MatrixError
from trioserver.events import KNOWN_ROOM_VERSIONS
from trioserver.internal.errors import WriterUnavailable
from trioserver.storage.intents import EventIntent, NewRoom, TxnKey

if TYPE_CHECKING:
    from trioserver.internal.client import MainClient
    from trioserver.storage.intents import EventSubmitter
    from trioserver.stores.events import EventStore, StoredEvent

# How long the submitter waits for its replication to apply a committed write.
APPLY_TIMEOUT_S = 30.0

WaitForPositions = Callable[[Mapping[str, int], float], Awaitable[bool]]


def submission_to_json(
    room_id: str | None,
    intents: list[EventIntent],
    new_room: NewRoom | None,
    on_left_room: bool,
    positions: Mapping[str, int],
) -> dict[str, Any]:
    """The JSON body of a ``submit_events`` request."""
    return {
        "positions": dict(positions),
        "room_id": room_id,
        "intents": [_intent_to_json(intent) for intent in intents],
        "new_room": None
        if new_room is None
        else {"room_version": new_room.room_version.identifier, "room_id": new_room.room_id},
        "on_left_room": on_left_room,
    }


def submission_from_json(
    body: object,
) -> tuple[str | None, list[EventIntent], NewRoom | None, bool, dict[str, int]]:
    """`submission_to_json`'s inverse, checked.

    Raises:
        MatrixError: M_BAD_JSON when a field is missing or of the wrong type.
    """
    if not isinstance(body, dict):
        raise _bad("a JSON object")
    room_id, intents, new_room = body.get("room_id"), body.get("intents"), body.get("new_room")
    on_left_room = body.get("on_left_room", False)
    if room_id is not None and not isinstance(room_id, str):
        raise _bad("room_id: a string or null")
    if not isinstance(intents, list) or not intents:
        raise _bad("intents: a non-empty list")
    if not isinstance(on_left_room, bool):
        raise _bad("on_left_room: a boolean")
    positions = body.get("positions", {})
    if not isinstance(positions, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in positions.items()
    ):
        raise _bad("positions: stream names and tokens")
    room: NewRoom | None = None
    if new_room is not None:
        if not isinstance(new_room, dict):
            raise _bad("new_room: an object or null")
        version = KNOWN_ROOM_VERSIONS.get(str(new_room.get("room_version")))
        new_room_id = new_room.get("room_id")
        if version is None or (new_room_id is not None and not isinstance(new_room_id, str)):
            raise _bad("new_room: a known room_version and a room_id string or null")
        room = NewRoom(version, new_room_id)
    intents_ = [_intent_from_json(item) for item in intents]
    return room_id, intents_, room, on_left_room, positions


class RemoteEventSubmitter:
    """Main's `EventSubmitter` when the events writer is another instance."""

    def __init__(self, writer: MainClient, events: EventStore) -> None:
        """
        Args:
            writer: the client to the events writer's internal listener.
            events: where the written events are read back from.

        `connect` is called once this instance's replication exists (it is built after the
        handlers that submit).
        """
        self._writer = writer
        self._events = events
        self._wait_for_positions: WaitForPositions | None = None
        self._positions: Callable[[], dict[str, int]] | None = None

    def connect(
        self, wait_for_positions: WaitForPositions, positions: Callable[[], dict[str, int]]
    ) -> None:
        """Args: `wait_for_positions` of this instance's replication clients (``(positions,
        timeout_s) -> applied``), and this instance's stream positions (sent along)."""
        self._wait_for_positions = wait_for_positions
        self._positions = positions

    async def submit(
        self,
        room_id: str | None,
        intents: list[EventIntent],
        new_room: NewRoom | None = None,
        *,
        on_left_room: bool = False,
    ) -> list[StoredEvent]:
        """Have the writer persist `intents` (see `EventPersister.submit`). Checkpoint: yes.

        Raises:
            MatrixError: the writer's refusal, as it gave it; M_UNKNOWN 503 when the writer
                did not answer or this instance did not see the write in time.
        """
        wait, positions = self._wait_for_positions, self._positions
        assert wait is not None  # see connect
        assert positions is not None
        payload = submission_to_json(room_id, intents, new_room, on_left_room, positions())
        try:
            event_ids, position = await self._writer.submit_events(orjson.dumps(payload))
        except WriterUnavailable:
            raise MatrixError(
                "M_UNKNOWN", "The events writer is unavailable; try again", status=503
            ) from None
        # Raises ReplicationUnavailable (503) when this instance is cut off from the writer.
        if not await wait({"events": position}, APPLY_TIMEOUT_S):
            raise MatrixError(
                "M_UNKNOWN", "Sent, but not replicated here in time; try again", status=503
            )
        found = await self._events.get_events(event_ids)
        return [found[event_id] for event_id in event_ids if event_id in found]


def _intent_to_json(intent: EventIntent) -> dict[str, Any]:
    txn = intent.txn_key
    return {
        "type": intent.type,
        "sender": intent.sender,
        "content": intent.content,
        "state_key": intent.state_key,
        "redacts": intent.redacts,
        "txn_key": None if txn is None else [txn.user_id, txn.device_id, txn.txn_id],
    }


def _intent_from_json(item: object) -> EventIntent:
    if not isinstance(item, dict):
        raise _bad("intents: objects")
    kind, sender, content = item.get("type"), item.get("sender"), item.get("content")
    state_key, redacts, txn = item.get("state_key"), item.get("redacts"), item.get("txn_key")
    if not (isinstance(kind, str) and isinstance(sender, str) and isinstance(content, dict)):
        raise _bad("intents: type, sender and content")
    if not all(value is None or isinstance(value, str) for value in (state_key, redacts)):
        raise _bad("intents: state_key and redacts are strings or null")
    txn_key = None
    if txn is not None:
        if not (isinstance(txn, list) and len(txn) == 3 and all(isinstance(t, str) for t in txn)):
            raise _bad("intents: txn_key is [user_id, device_id, txn_id] or null")
        txn_key = TxnKey(*txn)
    return EventIntent(kind, sender, content, state_key, redacts, txn_key)


def _bad(what: str) -> MatrixError:
    return MatrixError("M_BAD_JSON", f"submit_events: expected {what}")


class SubmissionHandler:
    """The events writer's side of ``submit_events``: persist, then answer ids and position."""

    def __init__(
        self,
        persister: EventSubmitter,
        position: Callable[[], int],
        wait_for_positions: WaitForPositions,
    ) -> None:
        """
        Args:
            persister: this instance's persister.
            position: its events stream position.
            wait_for_positions: of this instance's replication clients (main's streams).
        """
        self._persister = persister
        self._position = position
        self._wait_for_positions = wait_for_positions

    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        """Persist the submission `body` (a JSON object). Checkpoint: yes.

        Raises:
            MatrixError: a malformed submission, or the persister's refusal.
        """
        room_id, intents, new_room, on_left_room, positions = submission_from_json(body)
        # Raises ReplicationUnavailable (503) when this instance is cut off from main.
        if not await self._wait_for_positions(positions, APPLY_TIMEOUT_S):
            raise MatrixError(
                "M_UNKNOWN", "The events writer has not caught up with main; try again", status=503
            )
        stored = await self._persister.submit(
            room_id, intents, new_room, on_left_room=on_left_room
        )
        # Read after the commit: the position covers every event just written.
        return {"event_ids": [item.event_id for item in stored], "position": self._position()}
