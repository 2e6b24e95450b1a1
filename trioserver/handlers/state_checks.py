"""Checks the client API puts on the content of some state events before they are sent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trioserver.errors import MatrixError
from trioserver.events import is_valid_room_alias, is_valid_room_id

if TYPE_CHECKING:
    from trioserver.stores.directory import DirectoryStore

THIRD_PARTY_INVITE = "m.room.third_party_invite"


def third_party_invites_unsupported() -> MatrixError:
    """The answer to any third-party invite (``/invite`` by 3PID, ``invite_3pid``, the state
    event itself).

    A third-party invite needs an identity server to look the address up and to sign the
    invite; this server talks to none, so such an invite could never be redeemed. 403
    M_FORBIDDEN is what Synapse answers when 3PID lookups are denied by configuration, and it
    tells the client that retrying will not help (a 400 would suggest a malformed request).
    """
    return MatrixError(
        "M_FORBIDDEN", "Third-party invites are not supported on this server", status=403
    )


def check_tombstone(room_id: str, content: dict[str, Any]) -> None:
    """Spec m.room.tombstone: ``replacement_room`` names another room (Synapse answers 400)."""
    replacement = content.get("replacement_room")
    if not isinstance(replacement, str) or not is_valid_room_id(replacement):
        raise MatrixError("M_BAD_JSON", "m.room.tombstone needs a room id in replacement_room")
    if replacement == room_id:
        raise MatrixError(
            "M_BAD_JSON", "A tombstone cannot name the room it is sent in as its replacement"
        )


class StateContentChecker:
    """Refuses state content that the spec says the server must not accept."""

    def __init__(self, directory: DirectoryStore, *, server_name: str) -> None:
        self._directory = directory
        self._server_suffix = ":" + server_name

    async def check(
        self, room_id: str, event_type: str, state_key: str, content: dict[str, Any]
    ) -> None:
        """Raise a 400 (403 for third-party invites) for content the server must refuse."""
        if event_type == "m.room.canonical_alias" and state_key == "":
            await self._check_canonical_alias(room_id, content)
        elif event_type == "m.room.tombstone":
            check_tombstone(room_id, content)
        elif event_type == THIRD_PARTY_INVITE or (
            event_type == "m.room.member" and "third_party_invite" in content
        ):
            raise third_party_invites_unsupported()

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
