"""Cached URL previews (``url_previews``, sql/18_url_previews.sql).

A preview is stored with the time it was fetched and the time it expires. Asked for a URL at
a time `ts` (the spec's ``ts`` parameter: "the preferred point in time to return a preview
for"), the store returns the latest preview fetched at or before `ts`, else the earliest one
fetched after it, as Synapse does; the caller decides whether it is still fresh.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import orjson

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Txn


@attrs.frozen
class CachedPreview:
    """A stored preview.

    Attributes:
        download_ts: when the page was fetched (ms since the epoch).
        expires_ts: until when it may be served as current (ms since the epoch).
        og: the OpenGraph object served to clients.
    """

    download_ts: int
    expires_ts: int
    og: dict[str, Any]


def _preview_at_txn(txn: Txn, url: str, ts: int) -> CachedPreview | None:
    row = txn.execute(
        "SELECT download_ts, expires_ts, og FROM url_previews"
        " WHERE url = ? AND download_ts <= ? ORDER BY download_ts DESC LIMIT 1",
        (url, ts),
    ).fetchone()
    if row is None:
        row = txn.execute(
            "SELECT download_ts, expires_ts, og FROM url_previews"
            " WHERE url = ? AND download_ts > ? ORDER BY download_ts LIMIT 1",
            (url, ts),
        ).fetchone()
    if row is None:
        return None
    og = orjson.loads(row[2])
    return CachedPreview(int(row[0]), int(row[1]), og if isinstance(og, dict) else {})


def _store_preview_txn(txn: Txn, url: str, download_ts: int, expires_ts: int, og: bytes) -> None:
    txn.execute(
        "INSERT INTO url_previews (url, download_ts, expires_ts, og) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (url, download_ts) DO UPDATE SET expires_ts = excluded.expires_ts,"
        " og = excluded.og",
        (url, download_ts, expires_ts, og.decode()),
    )


def _delete_expired_txn(txn: Txn, now_ms: int) -> int:
    return txn.execute("DELETE FROM url_previews WHERE expires_ts <= ?", (now_ms,)).rowcount


class UrlPreviewStore:
    """The URL preview cache."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def preview_at(self, url: str, ts: int) -> CachedPreview | None:
        """The stored preview of `url` nearest before (else after) `ts`, or None.

        Args:
            url: the URL exactly as the client gave it.
            ts: ms since the epoch.

        Checkpoint: yes (an inline read: two indexed single-row lookups).
        """
        return await self._db.run_read_inline("preview_at", _preview_at_txn, url, ts)

    async def store_preview(
        self, url: str, download_ts: int, expires_ts: int, og: dict[str, Any]
    ) -> None:
        """Keep the preview of `url` fetched at `download_ts` until `expires_ts`.

        Checkpoint: yes.
        """
        await self._db.run_txn(
            "store_preview", _store_preview_txn, url, download_ts, expires_ts, orjson.dumps(og)
        )

    async def delete_expired(self, now_ms: int) -> int:
        """Delete every preview expired at `now_ms`.

        Returns:
            How many were deleted.

        Checkpoint: yes.
        """
        return await self._db.run_txn("delete_expired_previews", _delete_expired_txn, now_ms)
