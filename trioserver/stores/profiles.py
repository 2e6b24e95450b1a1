"""Global profiles: display names and avatars of local users."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn


@attrs.frozen
class Profile:
    """A user's display name and avatar URL (either may be unset)."""

    displayname: str | None
    avatar_url: str | None


def _get_profile_txn(txn: Txn, user_id: str) -> Profile | None:
    row = txn.execute(
        "SELECT p.displayname, p.avatar_url FROM users AS u"
        " LEFT JOIN profiles AS p USING (user_id) WHERE u.user_id = ?",
        (user_id,),
    ).fetchone()
    return None if row is None else Profile(row[0], row[1])


def _set_field_txn(txn: Txn, user_id: str, field: str, value: str | None) -> None:
    assert field in ("displayname", "avatar_url")
    txn.execute(
        f"INSERT INTO profiles (user_id, {field}) VALUES (?, ?)"
        f" ON CONFLICT (user_id) DO UPDATE SET {field} = excluded.{field}",
        (user_id, value),
    )


class ProfileStore:
    """Profiles of local users."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_profile(self, user_id: str) -> Profile | None:
        """The profile of a local user; None when there is no such user. Checkpoint: yes."""
        return await self._db.run_read_inline("get_profile", _get_profile_txn, user_id)

    async def set_displayname(self, user_id: str, displayname: str | None) -> None:
        """Set (or clear, with None) the display name. Checkpoint: yes."""
        await self._db.run_txn(
            "set_displayname", _set_field_txn, user_id, "displayname", displayname
        )

    async def set_avatar_url(self, user_id: str, avatar_url: str | None) -> None:
        """Set (or clear, with None) the avatar URL. Checkpoint: yes."""
        await self._db.run_txn("set_avatar_url", _set_field_txn, user_id, "avatar_url", avatar_url)
