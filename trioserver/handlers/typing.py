"""Typing notifications (``PUT /rooms/{roomId}/typing/{userId}``), an in-memory stream.

Theory of operation
-------------------
Who is typing where lives only in memory, as in Synapse (spec "Typing Notifications": the
server does not remember who stopped typing). Each room's set of typing users carries the
typing stream position of its last change; a change (someone starts, stops, times out or
leaves the room) advances the stream by one and wakes the room's ``/sync`` waiters.

Expiry is one task, `run_timeouts`: it sleeps (in trio time, so MockClock drives it) until the
earliest deadline, or until a new deadline wakes it, and then removes every expired typist.

After a restart the stream starts again at 0, so a client's ``since`` may be ahead of the
current position; it is then answered as if it knew nothing, with every asked room, so that
clients drop typists they still remember from before the restart.

Replication (issue 13): the writer keeps the last `HISTORY_SIZE` changes (position, room) so
that a follower can catch up (`updates`): each row is the room's typists as they are now. A
follower older than the history gets a row for every room with typists. A follower
(``writer=False``) never changes typing itself: it applies the writer's rows
(`on_replicated`), each of which replaces a room's typists, and has no timeouts to run (the
writer's expiry sends rows too).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING

import trio

from trioserver.errors import MatrixError
from trioserver.stores.stream_updates import EventRow, TypingStreamRow
from trioserver.streams import NotStreamWriter

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from trioserver.handlers.notifier import Notifier
    from trioserver.stores.database import Database
    from trioserver.stores.events import StoredEvent
    from trioserver.stores.state import StateStore
    from trioserver.streams import StreamPositions

# Synapse's default and ceiling for the client's `timeout` (ms), against silly timeouts.
DEFAULT_TIMEOUT_MS = 30_000
MAX_TIMEOUT_MS = 120_000
# Changes the writer remembers for followers catching up (Synapse keeps a similar window).
HISTORY_SIZE = 10_000


class TypingHandler:
    """Typing notifications."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        positions: StreamPositions,
        state: StateStore,
        *,
        server_name: str,
        writer: bool = True,
    ) -> None:
        self._writer = writer
        self._db = db
        self._notifier = notifier
        self._positions = positions
        self._state = state
        self._server_name = server_name
        self._position = 0
        # room id -> user id -> trio time at which their typing expires.
        self._typing: dict[str, dict[str, float]] = {}
        # room id -> stream position of the room's last change.
        self._changed_at: dict[str, int] = {}
        self._wakeup = trio.Event()
        # (position, room id) of the latest changes, oldest first (for `updates`).
        self._history: deque[tuple[int, str]] = deque(maxlen=HISTORY_SIZE)

    async def load(self) -> None:
        """Register the typing stream's position (in memory; 0 at start). Checkpoint: yes."""
        self._positions.register("typing", self.position)
        await trio.lowlevel.checkpoint()

    def position(self) -> int:
        """The typing stream's current position."""
        return self._position

    async def set_typing(
        self, requester: str, room_id: str, user_id: str, typing: bool, timeout_ms: int
    ) -> None:
        """Mark `user_id` as typing in a room for `timeout_ms` (capped), or as not typing.

        Raises:
            MatrixError: 403 for someone else's typing state or when not joined to the room.
            NotStreamWriter: on an instance that does not write the typing stream.

        Checkpoint: yes.
        """
        if not self._writer:
            raise NotStreamWriter("this instance does not write the typing stream")
        if user_id != requester:
            raise MatrixError("M_FORBIDDEN", "Cannot set another user's typing state")
        membership = await self._state.local_membership(user_id, room_id)
        if membership is None or membership.membership != "join":
            raise MatrixError("M_FORBIDDEN", f"User {user_id} not in room {room_id}")
        if not typing:
            self._stop(room_id, user_id)
            return
        typists = self._typing.setdefault(room_id, {})
        was_typing = user_id in typists
        typists[user_id] = trio.current_time() + min(timeout_ms, MAX_TIMEOUT_MS) / 1000
        self._wakeup.set()
        if not was_typing:
            self._changed(room_id)

    def typing_for_rooms(self, room_ids: Iterable[str], since: int) -> dict[str, list[str]]:
        """Who is typing, for each of `room_ids` whose typing set changed after `since`.

        Args:
            room_ids: the rooms to report on.
            since: the client's typing position; 0 for an initial sync. A position ahead of
                the current one (a restart happened) reports every room, empty ones too, so
                that clients forget typists from before the restart.

        Returns:
            Room id -> user ids currently typing (the ``m.typing`` content's ``user_ids``).
        """
        if since > self._position:
            return {room: sorted(self._typing.get(room, ())) for room in room_ids}
        if since == 0:
            return {room: sorted(users) for room in room_ids if (users := self._typing.get(room))}
        return {
            room: sorted(self._typing.get(room, ()))
            for room in room_ids
            if self._changed_at.get(room, 0) > since
        }

    def updates(
        self, from_token: int, upto_token: int, limit: int
    ) -> tuple[list[tuple[int, TypingStreamRow]], int, bool]:
        """The writer's changes in ``(from, upto]`` for a follower: each changed room once,
        at its latest change, with its typists now.

        Returns:
            ``(rows, upto, limited)`` as `repl.streams.UpdatePage` has them. A `from_token`
            older than the history gives every room with typists, at the current position.
        """
        upto_token = min(upto_token, self._position)
        if upto_token <= from_token:
            return [], upto_token, False
        oldest = self._history[0][0] if self._history else self._position + 1
        if from_token < oldest - 1:
            rows = [
                (self._position, TypingStreamRow(room, sorted(users)))
                for room, users in self._typing.items()
            ]
            return rows, self._position, False
        latest: dict[str, int] = {}
        for position, room in self._history:
            if from_token < position <= upto_token:
                latest[room] = position
        ordered = sorted((position, room) for room, position in latest.items())
        limited = len(ordered) > limit
        if limited:
            ordered = ordered[:limit]
            upto_token = ordered[-1][0]
        rows = [
            (pos, TypingStreamRow(room, sorted(self._typing.get(room, ()))))
            for pos, room in ordered
        ]
        return rows, upto_token, limited

    def on_replicated(self, token: int, rows: Sequence[TypingStreamRow]) -> None:
        """A follower applies the writer's rows up to `token` (each replaces a room's
        typists) and wakes the rooms' waiters."""
        for row in rows:
            if row.user_ids:
                # No deadline here: the writer expires typists and sends a row for it.
                self._typing[row.room_id] = dict.fromkeys(row.user_ids, math.inf)
            else:
                self._typing.pop(row.room_id, None)
            self._changed_at[row.room_id] = token
        self._position = max(self._position, token)
        if rows:
            self._notifier.notify(rooms={row.room_id for row in rows})

    def reset(self, token: int) -> None:
        """The writer restarted (its typing stream is in memory): forget every typist and
        stand at `token`; clients whose ``since`` is ahead get every room again."""
        rooms = list(self._typing)
        self._typing.clear()
        self._changed_at.clear()
        self._position = token
        if rooms:
            self._notifier.notify(rooms=rooms)

    def on_new_events(self, stored: Sequence[StoredEvent]) -> None:
        """Stop the typing of users who left a room (a persister listener)."""
        for item in stored:
            event = item.event
            if (
                event.type == "m.room.member"
                and event.state_key is not None
                and event.content.get("membership") != "join"
            ):
                self._stop(event.room_id, event.state_key)

    def on_replicated_events(self, rows: Sequence[EventRow]) -> None:
        """`on_new_events` for events written by an events writer elsewhere (main follows
        them when ``[stream_writers] events`` is a worker)."""
        for row in rows:
            if row.type == "m.room.member" and row.state_key and row.membership != "join":
                self._stop(row.room_id, row.state_key)

    async def run_timeouts(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Expire typing notifications at their deadlines, until cancelled (STYLE S1)."""
        task_status.started()
        while True:
            self._wakeup = trio.Event()
            deadline = min(
                (until for typists in self._typing.values() for until in typists.values()),
                default=math.inf,
            )
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            self._expire(trio.current_time())

    def _expire(self, now: float) -> None:
        expired = [
            (room_id, user_id)
            for room_id, typists in self._typing.items()
            for user_id, until in typists.items()
            if until <= now
        ]
        for room_id, user_id in expired:
            self._stop(room_id, user_id)

    def _stop(self, room_id: str, user_id: str) -> None:
        typists = self._typing.get(room_id)
        if typists is None or user_id not in typists:
            return
        del typists[user_id]
        if not typists:
            del self._typing[room_id]
        self._changed(room_id)

    def _changed(self, room_id: str) -> None:
        self._position += 1
        self._changed_at[room_id] = self._position
        self._history.append((self._position, room_id))
        self._notifier.notify(rooms=[room_id])
