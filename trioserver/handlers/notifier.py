"""Waking long-polling `/sync` requests when something arrives for them.

Theory of operation
-------------------
A waiting request registers a `Listener` under its user id and the rooms it is in, then sleeps
on a `trio.Event` (no CPU while it waits). A writer that has committed something calls
`notify` with the rooms and users it concerns; every listener registered under one of those
keys is woken, recomputes its response, and either answers or waits again.

No wake-up is lost: a request registers its listener and checks the current stream positions
in the same step, with no checkpoint in between (`Notifier.listen` followed by
`current_token`). Anything committed after that check notifies the registered listener, and
anything committed before it is already visible in the check. Writers call `notify` only after
their transaction has committed and their stream position has advanced.

When the server stops, `shut_down` releases every listener, and every later `listen` yields one
that is already released: a long-poll then answers at once with what it has (an empty sync
response still carries a valid ``next_batch``), so the graceful drain does not wait for its
timeout.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator

    from trioserver.stores.events import StoredEvent
    from trioserver.streams import StreamPositions, StreamToken


class Listener:
    """One waiting request."""

    __slots__ = ("_event", "_news", "keys")

    def __init__(self, keys: frozenset[str]) -> None:
        self._event = trio.Event()
        self._news = False
        self.keys = keys

    def wake(self) -> None:
        """Let the request go on: something arrived for it."""
        self._news = True
        self._event.set()

    def release(self) -> None:
        """Let the request answer now with what it has: the server is stopping."""
        self._event.set()

    async def wait(self, timeout_s: float) -> bool:
        """Sleep until woken (True), or until `timeout_s` passes or the listener is released
        (False: answer with what there is). Checkpoint: yes."""
        # Callers compute the timeout from a deadline; one already past means "do not wait".
        with trio.move_on_after(max(0.0, timeout_s)):
            await self._event.wait()
        return self._news


def _room_key(room_id: str) -> str:
    return "room " + room_id


def _user_key(user_id: str) -> str:
    return "user " + user_id


class Notifier:
    """Registry of waiting requests by user and room."""

    def __init__(self, positions: StreamPositions) -> None:
        self._positions = positions
        self._listeners: dict[str, set[Listener]] = {}
        self._wake_listeners: list[Callable[[], None]] = []
        self._shutting_down = False

    def current_token(self) -> StreamToken:
        """The current position of every stream."""
        return self._positions.current_token()

    @contextmanager
    def listen(self, user_id: str, room_ids: Iterable[str]) -> Iterator[Listener]:
        """Register a listener for a user and their rooms for the duration of the block."""
        keys = frozenset([_user_key(user_id), *(_room_key(r) for r in room_ids)])
        listener = Listener(keys)
        if self._shutting_down:
            listener.release()
        for key in keys:
            self._listeners.setdefault(key, set()).add(listener)
        try:
            yield listener
        finally:
            for key in keys:
                waiting = self._listeners.get(key)
                if waiting is not None:
                    waiting.discard(listener)
                    if not waiting:
                        del self._listeners[key]

    async def wait_for_change(
        self, user_id: str, room_ids: Iterable[str], seen: StreamToken, deadline: float
    ) -> tuple[bool, StreamToken]:
        """The long-poll wait of ``/sync`` and ``/events``: until something for the user or
        their rooms commits, or trio time reaches `deadline`, or the server stops.

        The listener is registered before the positions are compared with `seen`, with no
        checkpoint in between, so a change committed meanwhile is never missed.

        Returns:
            Whether to look again (something changed since `seen`), and the current token.

        Checkpoint: yes.
        """
        with self.listen(user_id, room_ids) as listener:
            latest = self.current_token()
            if latest != seen:
                await trio.lowlevel.checkpoint()
                return True, latest
            woken = await listener.wait(deadline - trio.current_time())
        return woken, self.current_token()

    def notify(self, *, rooms: Iterable[str] = (), users: Iterable[str] = ()) -> None:
        """Wake every request waiting on one of these rooms or users.

        Call after the change has committed and its stream position has advanced.
        """
        keys = [_room_key(r) for r in rooms] + [_user_key(u) for u in users]
        for key in keys:
            for listener in self._listeners.get(key, ()):
                listener.wake()
        for callback in self._wake_listeners:
            callback()

    def add_wake_listener(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every `notify` (once its listeners are woken).

        Every writer calls `notify` once a stream position has advanced, so this is how the
        replication server learns it has rows to send (`ReplicationServer.poke`). The callback
        must be sync and cheap, and must not raise: it runs inside the writer's `notify`.
        """
        self._wake_listeners.append(callback)

    def shut_down(self) -> None:
        """Release every waiting request, and from now on every new one at once.

        Called when the server starts its graceful stop: a long-poll answers instead of
        holding the drain until its timeout.
        """
        self._shutting_down = True
        for group in self._listeners.values():
            for listener in group:
                listener.release()

    def listener_count(self) -> int:
        """How many distinct requests are waiting (for tests and metrics)."""
        return len({id(lst) for group in self._listeners.values() for lst in group})


def notify_events(notifier: Notifier, stored: Iterable[StoredEvent]) -> None:
    """Wake requests for newly persisted events: the room's, and a member event's target."""
    rooms: set[str] = set()
    users: set[str] = set()
    for item in stored:
        rooms.add(item.event.room_id)
        if item.event.type == "m.room.member" and item.event.state_key is not None:
            users.add(item.event.state_key)
    notifier.notify(rooms=rooms, users=users)
