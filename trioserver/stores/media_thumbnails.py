"""The rows describing the thumbnails of local media (``local_media_thumbnails``).

A row is keyed by the request it answers (media id, requested width and height, method,
animated) and says what the file is (its real size, type, length and name). Files are written
before their rows (see `trioserver.media.thumbnails`), so a row always names a complete file;
a file without a row is only ever an orphan, never served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

if TYPE_CHECKING:
    from trioserver.stores.database import Database, Row, Txn

_COLUMNS = (
    "media_id, req_width, req_height, method, animated, width, height, content_type, length,"
    " file_name, created_ts"
)


@attrs.frozen
class ThumbnailRow:
    """One stored thumbnail.

    Attributes:
        req_width: the width asked for (the cache key, with `req_height`, `method` and
            `animated`).
        width: the file's real width (``scale`` keeps the aspect ratio and never upscales).
        animated: made for an ``animated=true`` request (the file is animated only when the
            source was).
        file_name: the file's name inside the media's thumbnail directory.
        created_ts: when it was made, in ms since the epoch.
    """

    media_id: str
    req_width: int
    req_height: int
    method: Literal["crop", "scale"]
    animated: bool
    width: int
    height: int
    content_type: str
    length: int
    file_name: str
    created_ts: int


def _thumbnail_row(row: Row) -> ThumbnailRow:
    return ThumbnailRow(
        media_id=row[0],
        req_width=int(row[1]),
        req_height=int(row[2]),
        method="crop" if row[3] == "crop" else "scale",
        animated=bool(row[4]),
        width=int(row[5]),
        height=int(row[6]),
        content_type=row[7],
        length=int(row[8]),
        file_name=row[9],
        created_ts=int(row[10]),
    )


def _add_thumbnail_txn(txn: Txn, row: ThumbnailRow) -> None:
    # A regenerated thumbnail (its file was lost) replaces the old row.
    txn.execute(
        f"INSERT INTO local_media_thumbnails ({_COLUMNS})"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (media_id, req_width, req_height, method, animated) DO UPDATE SET"
        " width = excluded.width, height = excluded.height,"
        " content_type = excluded.content_type, length = excluded.length,"
        " file_name = excluded.file_name, created_ts = excluded.created_ts",
        (
            row.media_id,
            row.req_width,
            row.req_height,
            row.method,
            int(row.animated),
            row.width,
            row.height,
            row.content_type,
            row.length,
            row.file_name,
            row.created_ts,
        ),
    )


def _media_thumbnails_txn(txn: Txn, media_id: str) -> list[ThumbnailRow]:
    rows = txn.execute(
        f"SELECT {_COLUMNS} FROM local_media_thumbnails WHERE media_id = ?"
        " ORDER BY req_width, req_height, method, animated",
        (media_id,),
    ).fetchall()
    return [_thumbnail_row(r) for r in rows]


def _thumbnail_txn(
    txn: Txn, media_id: str, width: int, height: int, method: str, animated: bool
) -> ThumbnailRow | None:
    row = txn.execute(
        f"SELECT {_COLUMNS} FROM local_media_thumbnails WHERE media_id = ? AND req_width = ?"
        " AND req_height = ? AND method = ? AND animated = ?",
        (media_id, width, height, method, int(animated)),
    ).fetchone()
    return None if row is None else _thumbnail_row(row)


def _delete_thumbnails_txn(txn: Txn, media_id: str) -> list[ThumbnailRow]:
    rows = _media_thumbnails_txn(txn, media_id)
    txn.execute("DELETE FROM local_media_thumbnails WHERE media_id = ?", (media_id,))
    return rows


class MediaThumbnailStore:
    """The thumbnails made of local media."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add_thumbnail(self, row: ThumbnailRow) -> None:
        """Record a thumbnail whose file is already in place (replacing one for the same request).

        Checkpoint: yes.
        """
        await self._db.run_txn("add_media_thumbnail", _add_thumbnail_txn, row)

    async def media_thumbnails(self, media_id: str) -> list[ThumbnailRow]:
        """Every thumbnail of the media, smallest request first.

        A handful of rows per media id, read through its primary key. Checkpoint: yes.
        """
        return await self._db.run_read_inline("media_thumbnails", _media_thumbnails_txn, media_id)

    async def thumbnail(
        self,
        media_id: str,
        width: int,
        height: int,
        method: Literal["crop", "scale"],
        animated: bool,
    ) -> ThumbnailRow | None:
        """The thumbnail made for exactly this request, if any.

        Args:
            width: the requested width (not the file's).
            height: the requested height.

        Checkpoint: yes.
        """
        return await self._db.run_read_inline(
            "media_thumbnail", _thumbnail_txn, media_id, width, height, method, animated
        )

    async def delete_thumbnails(self, media_id: str) -> list[ThumbnailRow]:
        """Forget every thumbnail of the media; the rows removed (their files are the caller's).

        Checkpoint: yes.
        """
        return await self._db.run_txn("delete_media_thumbnails", _delete_thumbnails_txn, media_id)
