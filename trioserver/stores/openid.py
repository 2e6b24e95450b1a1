"""OpenID tokens: short-lived proofs of a user's identity for third parties."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn


def _add_token_txn(txn: Txn, token: str, user_id: str, valid_until_ms: int, now_ms: int) -> None:
    # Expired tokens are never valid again: drop them while we write anyway.
    txn.execute("DELETE FROM open_id_tokens WHERE valid_until_ms <= ?", (now_ms,))
    txn.execute(
        "INSERT INTO open_id_tokens (token, user_id, valid_until_ms) VALUES (?, ?, ?)",
        (token, user_id, valid_until_ms),
    )


def _user_for_token_txn(txn: Txn, token: str, now_ms: int) -> str | None:
    row = txn.execute(
        "SELECT user_id FROM open_id_tokens WHERE token = ? AND valid_until_ms > ?",
        (token, now_ms),
    ).fetchone()
    return None if row is None else str(row[0])


class OpenIdStore:
    """OpenID tokens with their expiry."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_token(self, token: str, user_id: str, valid_until_ms: int, now_ms: int) -> None:
        """Store a token valid until `valid_until_ms` (and forget the expired ones).

        Args:
            token: the random token.
            user_id: whose identity it proves.
            valid_until_ms: the first millisecond at which it no longer works.
            now_ms: the current time.

        Checkpoint: yes.
        """
        await self._db.run_txn(
            "add_open_id_token", _add_token_txn, token, user_id, valid_until_ms, now_ms
        )

    async def user_for_token(self, token: str, now_ms: int) -> str | None:
        """The user a token names, or None when it is unknown or expired at `now_ms`.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "user_for_open_id_token", _user_for_token_txn, token, now_ms
        )
