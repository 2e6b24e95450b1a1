"""Room aliases and the public room directory."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioserver.handlers.send import SendHandler
    from trioserver.stores.directory import DirectoryStore
    from trioserver.stores.events import EventStore
    from trioserver.stores.state import StateStore


class DirectoryHandler:
    """Creates, resolves and deletes aliases; lists public rooms."""

    def __init__(
        self,
        directory: DirectoryStore,
        state: StateStore,
        events: EventStore,
        send: SendHandler,
        *,
        server_name: str,
    ) -> None:
        self._directory = directory
        self._state = state
        self._events = events
        self._send = send
        self._server_name = server_name
