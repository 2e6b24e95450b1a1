"""Local media metadata: the ``local_media`` table (sql/16_media.sql).

A row is either *pending* (an id handed out by ``POST /create``, no content yet, with an
expiry) or *complete* (its content file exists: see `trioserver.media.filestore`). A pending
row becomes complete at most once (`complete_pending`), which is what makes a second
``PUT /upload`` of the same id a 409.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Row, Txn

_COLUMNS = (
    "media_id, uploader, created_ts, state, expires_ts, content_type, upload_name, length,"
    " sha256, quarantined"
)


@attrs.frozen
class MediaRow:
    """One local media id.

    Attributes:
        created_ts: ms since the epoch when the id was made.
        expires_ts: for a pending id, when it stops being usable (ms); else None.
        content_type, upload_name, length, sha256: None while pending (upload_name may
            stay None: it is optional).
        authenticated: uploaded after the unauthenticated-media freeze.
    """

    media_id: str
    uploader: str
    created_ts: int
    state: Literal["pending", "complete"]
    expires_ts: int | None
    content_type: str | None
    upload_name: str | None
    length: int | None
    sha256: str | None
    quarantined: bool


@attrs.frozen
class NewContent:
    """What an upload stored: its type, name and file."""

    content_type: str
    upload_name: str | None
    length: int
    sha256: str


def _media_row(row: Row) -> MediaRow:
    return MediaRow(
        media_id=row[0],
        uploader=row[1],
        created_ts=int(row[2]),
        state=row[3],
        expires_ts=None if row[4] is None else int(row[4]),
        content_type=row[5],
        upload_name=row[6],
        length=None if row[7] is None else int(row[7]),
        sha256=row[8],
        quarantined=bool(row[9]),
    )


def _get_media_txn(txn: Txn, media_id: str) -> MediaRow | None:
    row = txn.execute(
        f"SELECT {_COLUMNS} FROM local_media WHERE media_id = ?", (media_id,)
    ).fetchone()
    return None if row is None else _media_row(row)


def _insert_complete_txn(
    txn: Txn, media_id: str, uploader: str, now_ms: int, content: NewContent
) -> None:
    txn.execute(
        "INSERT INTO local_media (media_id, uploader, created_ts, state, content_type,"
        " upload_name, length, sha256) VALUES (?, ?, ?, 'complete', ?, ?, ?, ?)",
        (
            media_id,
            uploader,
            now_ms,
            content.content_type,
            content.upload_name,
            content.length,
            content.sha256,
        ),
    )


def _pending_count_txn(txn: Txn, uploader: str, now_ms: int) -> tuple[int, int | None]:
    row = txn.execute(
        "SELECT COUNT(*), MIN(expires_ts) FROM local_media"
        " WHERE uploader = ? AND state = 'pending' AND expires_ts > ?",
        (uploader, now_ms),
    ).fetchone()
    assert row is not None
    return int(row[0]), None if row[1] is None else int(row[1])


def _insert_pending_txn(
    txn: Txn,
    media_id: str,
    uploader: str,
    now_ms: int,
    expires_ts: int,
    max_pending: int,
) -> int | None:
    # Counting and inserting in one transaction: two concurrent /create calls cannot both
    # take the last free slot.
    count, first_expiry = _pending_count_txn(txn, uploader, now_ms)
    if count >= max_pending:
        return first_expiry if first_expiry is not None else now_ms
    txn.execute(
        "INSERT INTO local_media (media_id, uploader, created_ts, state, expires_ts)"
        " VALUES (?, ?, ?, 'pending', ?)",
        (media_id, uploader, now_ms, expires_ts),
    )
    return None


def _complete_pending_txn(txn: Txn, media_id: str, now_ms: int, content: NewContent) -> bool:
    txn.execute(
        "UPDATE local_media SET state = 'complete', expires_ts = NULL, content_type = ?,"
        " upload_name = ?, length = ?, sha256 = ?"
        " WHERE media_id = ? AND state = 'pending' AND expires_ts > ?",
        (
            content.content_type,
            content.upload_name,
            content.length,
            content.sha256,
            media_id,
            now_ms,
        ),
    )
    return txn.rowcount == 1


def _delete_expired_txn(txn: Txn, now_ms: int) -> list[str]:
    rows = txn.execute(
        "SELECT media_id FROM local_media WHERE state = 'pending' AND expires_ts <= ?",
        (now_ms,),
    ).fetchall()
    txn.execute("DELETE FROM local_media WHERE state = 'pending' AND expires_ts <= ?", (now_ms,))
    return [row[0] for row in rows]


class MediaStore:
    """Reads and writes of ``local_media``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def get_media(self, media_id: str) -> MediaRow | None:
        """The row of `media_id`, or None (one indexed read; a checkpoint)."""
        return await self._db.run_read_inline("get_media", _get_media_txn, media_id)

    async def insert_complete(
        self,
        media_id: str,
        uploader: str,
        now_ms: int,
        content: NewContent,
    ) -> None:
        """Record an upload whose file is already durable (a checkpoint).

        Raises:
            sqlite3.IntegrityError: `media_id` exists (ids are random: never in practice).
        """
        await self._db.run_txn(
            "insert_complete_media",
            _insert_complete_txn,
            media_id,
            uploader,
            now_ms,
            content,
        )

    async def insert_pending(
        self,
        media_id: str,
        uploader: str,
        now_ms: int,
        expires_ts: int,
        *,
        max_pending: int,
    ) -> int | None:
        """Reserve `media_id` for `uploader` unless they hold `max_pending` unused ids.

        Returns:
            None when reserved; else when (ms) the user's first pending id expires.
        """
        return await self._db.run_txn(
            "insert_pending_media",
            _insert_pending_txn,
            media_id,
            uploader,
            now_ms,
            expires_ts,
            max_pending,
        )

    async def complete_pending(self, media_id: str, now_ms: int, content: NewContent) -> bool:
        """Give a pending, unexpired id its content (a checkpoint).

        Returns:
            False when it was not pending any more (completed meanwhile, or expired).
        """
        return await self._db.run_txn(
            "complete_pending_media", _complete_pending_txn, media_id, now_ms, content
        )

    async def delete_expired(self, now_ms: int) -> list[str]:
        """Forget the pending ids that expired by `now_ms`; returns their ids."""
        return await self._db.run_txn("delete_expired_media", _delete_expired_txn, now_ms)
