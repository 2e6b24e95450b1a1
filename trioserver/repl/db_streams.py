"""Writer and follower sides of the replicated streams (issue 13).

Theory of operation
-------------------
Streams kept in the shared database (events, receipts, account data, presence, to-device,
device lists, caches) are read the same way on both sides: `StreamUpdateStore.updates` by
token range. The writer side (`DbWriterStream`) reports the writing handler's position; the
follower side (`DbFollowerStream`) reports what it has applied and hands each batch of rows,
structured back into their row class, to an *applier*: the follower handler's
``on_replicated``, which does what the writer did after its commit (advance the position,
fix caches, wake ``/sync`` waiters). The rows are already in the database when they arrive,
so appliers never write.

Typing is in memory: its writer reads the handler's change history, and its follower
catches up through an injected `fetch` (main's internal ``stream_updates`` endpoint).

A follower's position only moves forwards for database streams (`reset` ignores a lower
token: the rows below it are committed and stay); typing's writer may restart at 0, and
then the follower forgets its typists.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import cattrs

import trio

from trioserver.repl.streams import JsonRow, UpdatePage
from trioserver.stores.stream_updates import EventRow, TypingStreamRow

if TYPE_CHECKING:
    from trioserver.handlers.notifier import Notifier
    from trioserver.handlers.typing import TypingHandler
    from trioserver.stores.events import EventCache
    from trioserver.stores.relations import RelationStore
    from trioserver.stores.stream_updates import StreamUpdateStore

_converter = cattrs.Converter()
Applier = Callable[[int, Sequence[Any]], Awaitable[None]]
Fetch = Callable[[str, int, int], Awaitable[UpdatePage]]


def to_page(rows: Sequence[tuple[int, Any]], upto_token: int, limited: bool) -> UpdatePage:
    """Rows (attrs instances) as a wire page of named-field JSON objects."""
    return UpdatePage([(t, _converter.unstructure(r)) for t, r in rows], upto_token, limited)


class DbWriterStream:
    """A database-backed stream as main serves it."""

    def __init__(self, name: str, store: StreamUpdateStore, position: Callable[[], int]) -> None:
        self._name = name
        self._store = store
        self._position = position

    @property
    def name(self) -> str:
        """The stream's name."""
        return self._name

    def current_token(self) -> int:
        """The writing handler's committed position."""
        return self._position()

    async def get_updates(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        """The rows in ``(from, upto]`` (see `StreamUpdateStore.updates`). Checkpoint: yes."""
        page = await self._store.updates(self._name, from_token, upto_token, limit)
        return to_page(page.rows, page.upto_token, page.limited)


class DbFollowerStream(DbWriterStream):
    """A database-backed stream as a worker applies it: it reads the same pages (from the
    shared database) to catch up, and its position is the follower handler's."""

    def __init__(
        self,
        name: str,
        store: StreamUpdateStore,
        row_type: type[Any],
        position: Callable[[], int],
        apply: Applier,
    ) -> None:
        super().__init__(name, store, position)
        self._row_type = row_type
        self._apply = apply

    async def apply(self, token: int, rows: Sequence[JsonRow]) -> None:
        """Structure the rows and hand them to the applier. Checkpoint: maybe.

        Raises:
            cattrs.BaseValidationError: a row does not have the stream's fields.
        """
        structured = [_converter.structure(row, self._row_type) for row in rows]
        await self._apply(token, structured)

    def reset(self, token: int) -> None:
        """Database streams never go back: what is below the writer's token is committed."""


class EventsFollower:
    """The events stream's position and post-commit work on a worker (no persister there).

    Register `position` as the "events" stream of `StreamPositions`, and use `on_replicated`
    as the events follower's applier.
    """

    def __init__(
        self, cache: EventCache, relations: RelationStore, notifier: Notifier, position: int
    ) -> None:
        self._cache = cache
        self._relations = relations
        self._notifier = notifier
        self._position = position
        self._listeners: list[Callable[[int, Sequence[EventRow]], None]] = []

    def add_listener(self, listener: Callable[[int, Sequence[EventRow]], None]) -> None:
        """Call ``listener(token, rows)`` after each applied batch (main, when another
        instance writes events: typing, presence activity and the pushers follow them)."""
        self._listeners.append(listener)

    async def load(self, store: StreamUpdateStore) -> None:
        """Start at the highest event committed when the worker starts (before serving);
        replication's catch-up takes it from there. Checkpoint: yes."""
        self._position = max(self._position, await store.max_event_stream_ordering())

    def position(self) -> int:
        """The events stream position applied up to."""
        return self._position

    async def on_replicated(self, token: int, rows: Sequence[EventRow]) -> None:
        """What the persister's `_after_commit` and the notifier listener do on main: drop
        redacted events from the cache, note rooms that have relations now, advance and wake
        the rooms and member-event targets. Checkpoint: yes."""
        self._cache.invalidate(row.redacts for row in rows if row.redacts is not None)
        for row in rows:
            if row.has_relation:
                self._relations.note_room_nowait(row.room_id)
        self._position = max(self._position, token)
        rooms = {row.room_id for row in rows}
        users = {row.state_key for row in rows if row.type == "m.room.member" and row.state_key}
        for listener in self._listeners:
            listener(token, rows)
        self._notifier.notify(rooms=rooms, users=users)
        await trio.lowlevel.checkpoint()


class TypingWriterStream:
    """The typing stream as main serves it (from the handler's memory)."""

    name = "typing"

    def __init__(self, typing: TypingHandler) -> None:
        self._typing = typing

    def current_token(self) -> int:
        """The typing stream's position."""
        return self._typing.position()

    async def get_updates(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        """Changed rooms in ``(from, upto]`` (see `TypingHandler.updates`). Checkpoint: yes."""
        await trio.lowlevel.checkpoint()
        return to_page(*self._typing.updates(from_token, upto_token, limit))


class TypingFollowerStream:
    """The typing stream on a worker: rows from RDATA, catch-up from main over HTTP."""

    name = "typing"

    def __init__(self, typing: TypingHandler, fetch: Fetch) -> None:
        self._typing = typing
        self._fetch = fetch

    def current_token(self) -> int:
        """The typing position applied up to."""
        return self._typing.position()

    async def get_updates(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        """Ask main (``fetch("typing", from, upto)``). Checkpoint: yes."""
        return await self._fetch(self.name, from_token, upto_token)

    async def apply(self, token: int, rows: Sequence[JsonRow]) -> None:
        """Replace the rows' rooms' typists and wake the rooms. Checkpoint: yes.

        Raises:
            cattrs.BaseValidationError: a row does not have the stream's fields.
        """
        structured = [_converter.structure(row, TypingStreamRow) for row in rows]
        self._typing.on_replicated(token, structured)
        await trio.lowlevel.checkpoint()

    def reset(self, token: int) -> None:
        """Main restarted: forget every typist (see `TypingHandler.reset`)."""
        self._typing.reset(token)
