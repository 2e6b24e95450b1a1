"""The media repository: uploads, asynchronous uploads, and finding media to serve.

Theory of operation
-------------------
An upload is streamed into `MediaFileStore` (durable, content-addressed) and only then
recorded in ``local_media``: a 200 means file fsynced, renamed, and row committed. A body over
``media.max_upload_size`` is refused with 413 ``M_TOO_LARGE`` from its Content-Length before a
byte is read, or as soon as the count passes the limit; nothing is stored then.

``POST /create`` reserves an id (a *pending* row with an expiry) that only its creator may
fill, once, with ``PUT /upload/{server}/{id}``. A download of a pending id waits (up to the
request's ``timeout_ms``) on a `trio.Event` for that id, set when the PUT completes, so the
waiter answers as soon as the content is there; after the timeout it is 504
``M_NOT_YET_UPLOADED``. Expired pending ids are deleted by `run_expiry` and are also treated
as unknown wherever they are used before that.

Thumbnails of the configured sizes are made after an upload by `run_thumbnails`, which reads
completed uploads from a bounded channel (never in the request path: a full queue skips the
pre-generation, and the thumbnail is made on demand instead).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import secrets
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import attrs

import trio

from trioserver.errors import MatrixError
from trioserver.media.filestore import FileTooLarge
from trioserver.stores.media import MediaRow, NewContent

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterator, Mapping

    from trioserver.config import MediaConfig
    from trioserver.media.filestore import MediaFileStore
    from trioserver.stores.media import MediaStore

logger = logging.getLogger(__name__)

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Download waits for a pending upload: Synapse's default and a cap on what a client may ask.
DEFAULT_TIMEOUT_MS = 20_000
MAX_TIMEOUT_MS = 60_000
# Uploads one user may stream at once: each holds a connection, a temporary file and its
# descriptor for as long as its client takes to send the body (a client sending one byte a
# second must not be able to exhaust the server's file descriptors).
MAX_UPLOADS_IN_PROGRESS = 8
# Completed uploads waiting for their configured thumbnails.
_THUMBNAIL_QUEUE = 256
# How often expired pending ids are deleted (at most; sooner for short expiry times).
_EXPIRY_INTERVAL_S = 60.0
# How often a download waiting for a pending upload reads its row again (see _wait_uploaded).
_CROSS_INSTANCE_POLL_S = 1.0
# A Content-Type we store and later send back: RFC 9110 `media-type` (type "/" subtype, then
# parameters of tokens or quoted strings), nothing else. A looser value such as
# "image/png; x=,text/html" could be read by a browser as text/html while we call it an image.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_CONTENT_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*(?:{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))?)*"
)
_MAX_CONTENT_TYPE = 255


class StoredThumbnailLike(Protocol):
    """What the thumbnail service returns (`trioserver.media.thumbnails.StoredThumbnail`)."""

    @property
    def path(self) -> Path: ...
    @property
    def content_type(self) -> str: ...
    @property
    def length(self) -> int: ...


class ThumbnailProvider(Protocol):
    """The part of `trioserver.media.thumbnails.ThumbnailService` the repository uses."""

    async def generate_configured(self, media_id: str, source: Path, content_type: str) -> None:
        """Make the configured sizes (never raises for a bad image)."""

    async def thumbnail(
        self,
        media_id: str,
        source: Path,
        content_type: str,
        *,
        width: int,
        height: int,
        method: Literal["crop", "scale"],
        animated: bool,
    ) -> StoredThumbnailLike | None:
        """A thumbnail file, or None when this media cannot be thumbnailed."""


@attrs.frozen
class ServableMedia:
    """A complete media item and the file holding its bytes."""

    row: MediaRow
    path: Path

    @property
    def content_type(self) -> str:
        """The type it was uploaded with."""
        return self.row.content_type or DEFAULT_CONTENT_TYPE

    @property
    def length(self) -> int:
        """Its size in bytes."""
        return self.row.length or 0


def not_found() -> MatrixError:
    """The one answer for media that is unknown, remote, expired, frozen or quarantined."""
    return MatrixError("M_NOT_FOUND", "Not found")


def parse_content_type(headers: Mapping[str, str]) -> str:
    """The upload's Content-Type header (default ``application/octet-stream``).

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` for one we could not send back as it came.
    """
    value = headers.get("content-type", "").strip()
    if not value:
        return DEFAULT_CONTENT_TYPE
    if len(value) > _MAX_CONTENT_TYPE or _CONTENT_TYPE.fullmatch(value) is None:
        raise MatrixError("M_INVALID_PARAM", "Invalid Content-Type header")
    return value


@attrs.frozen
class _ThumbnailJob:
    """A completed upload whose configured thumbnails are to be made."""

    media_id: str
    source: Path
    content_type: str


class MediaRepository:
    """Local media: storing uploads and finding them for downloads and thumbnails."""

    def __init__(
        self,
        store: MediaStore,
        files: MediaFileStore,
        config: MediaConfig,
        *,
        server_name: str,
        thumbnails: ThumbnailProvider,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._files = files
        self._config = config
        self._server_name = server_name
        self._thumbnails = thumbnails
        self._clock = clock
        # media id -> set when its pending upload completes (or it expires).
        self._uploaded: dict[str, trio.Event] = {}
        self._in_progress: Counter[str] = Counter()
        self._to_thumbnail, self._thumbnail_queue = trio.open_memory_channel[_ThumbnailJob](
            _THUMBNAIL_QUEUE
        )

    @property
    def config(self) -> MediaConfig:
        """The ``[media]`` settings."""
        return self._config

    @property
    def server_name(self) -> str:
        """Our server name (the authority of our mxc URIs)."""
        return self._server_name

    async def load(self) -> None:
        """At start-up: create the storage directories, remove stale temporary files."""
        await trio.to_thread.run_sync(self._files.prepare)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _mxc(self, media_id: str) -> str:
        return f"mxc://{self._server_name}/{media_id}"

    @contextlib.contextmanager
    def _upload_slot(self, uploader: str) -> Iterator[None]:
        if self._in_progress[uploader] >= MAX_UPLOADS_IN_PROGRESS:
            raise MatrixError(
                "M_LIMIT_EXCEEDED",
                f"At most {MAX_UPLOADS_IN_PROGRESS} uploads at once",
                extra={"retry_after_ms": 1000},
                headers={"Retry-After": "1"},
            )
        self._in_progress[uploader] += 1
        try:
            yield
        finally:
            self._in_progress[uploader] -= 1
            if not self._in_progress[uploader]:
                del self._in_progress[uploader]

    def check_declared_length(self, headers: Mapping[str, str]) -> None:
        """Refuse a body whose Content-Length is over the limit, before reading it.

        Raises:
            MatrixError: 413 ``M_TOO_LARGE``.
        """
        declared = headers.get("content-length", "").strip()
        if declared.isdigit() and int(declared) > self._config.max_upload_size:
            raise _too_large(self._config.max_upload_size)

    async def _store_file(
        self, chunks: AsyncIterable[bytes], content_type: str, upload_name: str | None
    ) -> NewContent:
        try:
            stored = await self._files.write_stream(chunks, limit=self._config.max_upload_size)
        except FileTooLarge:
            raise _too_large(self._config.max_upload_size) from None
        return NewContent(content_type, upload_name, stored.length, stored.sha256)

    async def upload(
        self,
        uploader: str,
        content_type: str,
        upload_name: str | None,
        chunks: AsyncIterable[bytes],
    ) -> str:
        """Store an upload (``POST /upload``) and return its ``mxc://`` URI.

        Raises:
            MatrixError: 413 ``M_TOO_LARGE`` (nothing stored).
        """
        with self._upload_slot(uploader):
            content = await self._store_file(chunks, content_type, upload_name)
        media_id = secrets.token_urlsafe(18)  # 24 URL-safe characters
        now_ms = self._now_ms()
        await self._store.insert_complete(media_id, uploader, now_ms, content)
        self._uploaded_nowait(media_id, content)
        return self._mxc(media_id)

    async def store_preview_image(self, uploader: str, data: bytes, content_type: str) -> str:
        """Keep a URL preview's image as local media (clients then never contact the page's
        site, which would tell it who reads the link); returns the mxc URI.

        Raises:
            MatrixError: 413 ``M_TOO_LARGE`` when over ``max_upload_size``.
        """

        async def one_chunk() -> AsyncIterator[bytes]:
            yield data

        return await self.upload(uploader, content_type, None, one_chunk())

    async def create(self, uploader: str) -> tuple[str, int]:
        """Reserve a media id for a later ``PUT /upload`` (``POST /create``).

        Returns:
            The ``mxc://`` URI and when it expires unused (ms since the epoch).

        Raises:
            MatrixError: 429 ``M_LIMIT_EXCEEDED`` when the user holds too many unused ids.
        """
        media_id = secrets.token_urlsafe(18)
        now_ms = self._now_ms()
        expires_ts = now_ms + int(self._config.unused_expiration_time * 1000)
        first_expiry = await self._store.insert_pending(
            media_id,
            uploader,
            now_ms,
            expires_ts,
            max_pending=self._config.max_pending_uploads,
        )
        if first_expiry is not None:
            retry_after_ms = max(first_expiry - now_ms, 0)
            raise MatrixError(
                "M_LIMIT_EXCEEDED",
                "You have too many uploads pending",
                extra={"retry_after_ms": retry_after_ms},
                headers={"Retry-After": str(math.ceil(retry_after_ms / 1000))},
            )
        return self._mxc(media_id), expires_ts

    async def check_can_upload_to(self, uploader: str, server_name: str, media_id: str) -> None:
        """Refuse a ``PUT /upload`` before its body is read.

        Raises:
            MatrixError: 404 for another server or an unknown or expired id, 403
                ``M_FORBIDDEN`` for someone else's id, 409 ``M_CANNOT_OVERWRITE_MEDIA``
                once it has content.
        """
        if server_name != self._server_name:
            raise not_found()
        row = await self._store.get_media(media_id)
        if row is None:
            raise not_found()
        if row.uploader != uploader:
            raise MatrixError("M_FORBIDDEN", "Only the creator of the media ID can upload to it")
        if row.state == "complete":
            raise _cannot_overwrite()
        if row.expires_ts is not None and row.expires_ts <= self._now_ms():
            raise MatrixError("M_NOT_FOUND", "Media ID has expired")

    async def upload_to(
        self,
        uploader: str,
        media_id: str,
        content_type: str,
        upload_name: str | None,
        chunks: AsyncIterable[bytes],
    ) -> None:
        """Give a pending id its content (``PUT /upload/{server}/{id}``).

        The caller has checked the id with `check_can_upload_to` (before reading the body, so
        that 403/404/409 come before 413); whether it is still pending and unexpired is
        checked again when the content is recorded.

        Raises:
            MatrixError: 413 ``M_TOO_LARGE``; 404 or 409 when the id expired or was filled
                while the body arrived.
        """
        with self._upload_slot(uploader):
            content = await self._store_file(chunks, content_type, upload_name)
        if not await self._store.complete_pending(media_id, self._now_ms(), content):
            # Lost a race with another PUT, or it expired while the body arrived. The file
            # just written stays (content-addressed, possibly shared): harmless.
            row = await self._store.get_media(media_id)
            if row is not None and row.state == "complete":
                raise _cannot_overwrite()
            raise MatrixError("M_NOT_FOUND", "Media ID has expired")
        self._uploaded_nowait(media_id, content)

    def _uploaded_nowait(self, media_id: str, content: NewContent) -> None:
        waiting = self._uploaded.pop(media_id, None)
        if waiting is not None:
            waiting.set()
        job = _ThumbnailJob(media_id, self._files.path_of(content.sha256), content.content_type)
        try:
            self._to_thumbnail.send_nowait(job)
        except trio.WouldBlock:
            # A burst of uploads: their thumbnails will be made on demand instead.
            logger.info("thumbnail queue full; not pre-generating for %s", media_id)

    async def get_local(
        self, server_name: str, media_id: str, *, timeout_ms: int, legacy: bool = False
    ) -> ServableMedia:
        """The complete media `media_id`, waiting up to `timeout_ms` for a pending upload.

        Args:
            legacy: for the unauthenticated ``/_matrix/media/v3`` endpoints, which serve only
                media created before ``media.unauthenticated_media_before_ts``.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` (remote server — no federation yet — unknown,
                expired, quarantined or frozen), 504 ``M_NOT_YET_UPLOADED``.
        """
        if server_name != self._server_name:
            raise not_found()
        row = await self._store.get_media(media_id)
        if row is None or row.quarantined:
            raise not_found()
        if legacy and row.created_ts >= self._config.unauthenticated_media_before_ts:
            raise not_found()
        if row.state == "pending":
            row = await self._wait_uploaded(row, timeout_ms)
        assert row.sha256 is not None
        return ServableMedia(row, self._files.path_of(row.sha256))

    async def _wait_uploaded(self, row: MediaRow, timeout_ms: int) -> MediaRow:
        with trio.move_on_after(timeout_ms / 1000):
            while row.state == "pending":
                if row.expires_ts is not None and row.expires_ts <= self._now_ms():
                    raise not_found()
                # Registered before the row is read again: a PUT completing in between sets
                # this event, so it cannot be missed.
                event = self._uploaded.setdefault(row.media_id, trio.Event())
                fresh = await self._store.get_media(row.media_id)
                if fresh is None or fresh.quarantined:
                    raise not_found()
                row = fresh
                if row.state == "pending":
                    # The PUT may complete on another instance of the deployment (issue 13),
                    # which cannot set this event: look at the row again now and then.
                    with trio.move_on_after(_CROSS_INSTANCE_POLL_S):
                        await event.wait()
        if row.state == "pending":
            raise MatrixError("M_NOT_YET_UPLOADED", "Media has not been uploaded yet", status=504)
        return row

    async def thumbnail(
        self,
        media: ServableMedia,
        *,
        width: int,
        height: int,
        method: Literal["crop", "scale"],
        animated: bool,
    ) -> StoredThumbnailLike | None:
        """A thumbnail of `media`, or None when it cannot be thumbnailed.

        Raises:
            MatrixError: 404 ``M_NOT_FOUND`` when the media's file is gone (as a download).
        """
        try:
            return await self._thumbnails.thumbnail(
                media.row.media_id,
                media.path,
                media.content_type,
                width=width,
                height=height,
                method=method,
                animated=animated,
            )
        except FileNotFoundError:
            # The row is there but its file is not (removed by hand, a database restored
            # without its media).
            raise not_found() from None

    async def run_thumbnails(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Make the configured thumbnails of each completed upload, one at a time."""
        task_status.started()
        async for job in self._thumbnail_queue:
            try:
                await self._thumbnails.generate_configured(
                    job.media_id, job.source, job.content_type
                )
            except OSError:
                # Per job (a file gone, a full disk): the thumbnails will be made on demand;
                # the next uploads' must not wait for a supervisor restart.
                logger.warning("thumbnails of %s not made", job.media_id, exc_info=True)

    async def run_expiry(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Delete expired pending ids now and then; their waiters answer 404."""
        interval = min(_EXPIRY_INTERVAL_S, self._config.unused_expiration_time)
        task_status.started()
        while True:
            expired = await self._store.delete_expired(self._now_ms())
            for media_id in expired:
                waiting = self._uploaded.pop(media_id, None)
                if waiting is not None:
                    waiting.set()
            await trio.sleep(interval)


def _too_large(limit: int) -> MatrixError:
    return MatrixError("M_TOO_LARGE", f"Cannot upload files larger than {limit} bytes")


def _cannot_overwrite() -> MatrixError:
    return MatrixError("M_CANNOT_OVERWRITE_MEDIA", "Media ID already has content", status=409)
