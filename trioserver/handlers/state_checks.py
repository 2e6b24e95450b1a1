"""Checks the client API puts on the content of some state events before they are sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.events import is_valid_room_alias

if TYPE_CHECKING:
    from trioserver.stores.directory import DirectoryStore


class StateContentChecker:
    """Refuses state content that the spec says the server must not accept."""

    def __init__(self, directory: DirectoryStore, *, server_name: str) -> None:
        self._directory = directory
        self._server_suffix = ":" + server_name

    async def check(
        self, room_id: str, event_type: str, state_key: str, content: dict[str, Any]
    ) -> None:
        """Raise a 400 for content the server must refuse."""
        if event_type == "m.room.canonical_alias" and state_key == "":
            await self._check_canonical_alias(room_id, content)

    async def _check_canonical_alias(self, room_id: str, content: dict[str, Any]) -> None:
        # Spec m.room.canonical_alias: "the server ... should validate that the aliases point
        # to the room"; Synapse answers 400 M_BAD_ALIAS (unknown or elsewhere) and
        # M_INVALID_PARAM (malformed).
        aliases: list[Any] = []
        if content.get("alias") is not None:
            aliases.append(content["alias"])
        alt = content.get("alt_aliases")
        if alt is not None:
            if not isinstance(alt, list):
                raise MatrixError("M_INVALID_PARAM", "alt_aliases must be a list")
            aliases.extend(alt)
        for alias in aliases:
            if not isinstance(alias, str) or not is_valid_room_alias(alias):
                raise MatrixError("M_INVALID_PARAM", f"Invalid alias: {alias!r}")
            if not alias.endswith(self._server_suffix):
                continue  # remote aliases would need a federation query
            row = await self._directory.get_alias(alias)
            if row is None or row.room_id != room_id:
                raise MatrixError("M_BAD_ALIAS", f"Room alias {alias} does not point to the room")
