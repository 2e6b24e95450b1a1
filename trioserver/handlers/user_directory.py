"""Searching for users (``/user_directory/search``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioserver.handlers.notifier import Notifier
    from trioserver.stores.database import Database
    from trioserver.stores.state import StateStore
    from trioserver.streams import StreamPositions


class UserDirectoryHandler:
    """Searching for users."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        positions: StreamPositions,
        state: StateStore,
        *,
        server_name: str,
    ) -> None:
        self._db = db
        self._notifier = notifier
        self._positions = positions
        self._state = state
        self._server_name = server_name

    async def load(self) -> None:
        """Read what the handler needs at start (e.g. its stream position). Checkpoint: yes."""
