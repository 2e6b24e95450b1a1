"""The thumbnail service: which thumbnail answers a request, making it when it is missing.

Theory of operation:

- Pillow work runs in a worker thread behind one `trio.CapacityLimiter(1)`: at most one
  thumbnail is being decoded at a time, so thumbnailing never takes the database's threads nor
  both cores, however many uploads or requests arrive together.
- Files are written to a temporary name in their directory, fsynced and renamed, then the
  row is added: a row always names a complete file. A crash can lose a file whose row was
  committed only if the directory entry was not yet durable; a row whose file is missing is
  remade on the next request (as Synapse does), so that is self-healing.
- Layout: ``<media root>/thumbnails/<media_id[:2]>/<media_id>/<W>x<H>-<method>[-animated]-
  <sha256 prefix>.<ext>`` where W x H is the file's real size. Requests that end in the same
  image (``scale`` never upscales, so 640x480 and 800x600 of a small picture are the same)
  share one file; a file, once written, never changes.
- Concurrent identical requests do the work once: the first registers itself in
  ``_in_flight``; the others wait for it and then read the row it wrote.
- Without ``dynamic_thumbnails`` only the configured sizes are made (after upload, or on the
  first request if that did not happen) and a request is answered with the nearest one by
  Synapse's rules (`select_thumbnail`); an ``animated=true`` request gets that size
  animated, made on first use. With it, exactly the requested size is made and cached, up to
  `MAX_DYNAMIC_PER_MEDIA` sizes per media (then the nearest existing one answers).
- Media that cannot be thumbnailed (not an image, too many pixels, corrupt) answers None and
  is remembered (bounded), so a bad file is not decoded again on every request.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

import attrs

import trio

from trioserver.media.filestore import fsync_dir
from trioserver.media.headers import essence
from trioserver.media.thumbnail_types import (
    Method,
    ThumbnailError,
    ThumbnailImage,
    can_thumbnail,
)
from trioserver.stores.media_thumbnails import ThumbnailRow

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from trioserver.config import MediaConfig, ThumbnailSize
    from trioserver.stores.media_thumbnails import MediaThumbnailStore

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# A request never makes a thumbnail larger than this on a side (unless a configured size is).
MAX_REQUEST_SIDE = 2000
# With dynamic thumbnails, sizes made per media at most (then the nearest is served).
MAX_DYNAMIC_PER_MEDIA = 64
# Media ids remembered as impossible to thumbnail, at most.
_BAD_MEDIA_MEMORY = 1024
# Media ids are made by the server ([A-Za-z0-9_-]); anything else never becomes a path.
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif", "image/webp": "webp"}
# Sources whose animation an animated=true request may keep.
_ANIMATABLE = frozenset({"image/gif", "image/webp", "image/png", "image/apng"})


def _make_thumbnails(
    source: Path, *, sizes: Sequence[tuple[int, int, Method]], max_pixels: int
) -> list[ThumbnailImage]:
    # Pillow (about 3 MB, 50 ms to import) is imported on first use, and in the worker
    # thread: an import on the event loop would stall every request for that long.
    from trioserver.media.thumbnailer import make_thumbnails

    return make_thumbnails(source, sizes=sizes, max_pixels=max_pixels)


def _make_thumbnail(
    source: Path, *, width: int, height: int, method: Method, animated: bool, max_pixels: int
) -> ThumbnailImage:
    # As `_make_thumbnails`: Pillow is imported in the worker thread.
    from trioserver.media.thumbnailer import make_thumbnail

    return make_thumbnail(
        source, width=width, height=height, method=method, animated=animated, max_pixels=max_pixels
    )


@attrs.frozen
class StoredThumbnail:
    """A thumbnail file ready to be served.

    Attributes:
        path: the file (complete: it was renamed into place before it was recorded).
        length: its size in bytes.
    """

    path: Path
    content_type: str
    length: int
    width: int
    height: int


def select_thumbnail(
    rows: Sequence[ThumbnailRow], width: int, height: int, method: Method
) -> ThumbnailRow | None:
    """The stored thumbnail that best answers a `width` x `height` `method` request.

    Synapse's rules: only thumbnails made with the same method compete. For ``crop``, those at
    least as large on one side win over smaller ones, then the closest aspect ratio, then one
    covering both sides, then the closest area, then the smallest file. For ``scale``, those at
    least as large on one side win, then the closest area, then the smallest file. Ties keep
    the earlier row. When no thumbnail has the method, the largest of the others is used.
    """
    same = [r for r in rows if r.method == method]
    if not same:
        return max(rows, key=lambda r: r.width * r.height, default=None)

    def rank(r: ThumbnailRow) -> tuple[int, ...]:
        big_enough = 0 if r.width >= width or r.height >= height else 1
        size = abs((width - r.width) * (height - r.height))
        if method == "crop":
            aspect = abs(width * r.height - height * r.width)
            covers = 0 if width <= r.width and height <= r.height else 1
            return (big_enough, aspect, covers, size, r.length)
        return (big_enough, size, r.length)

    return min(same, key=rank)


@attrs.frozen
class ThumbnailStatistics:
    """What the service has done since it started.

    Attributes:
        made: thumbnails rendered by Pillow (cache hits and shared files not counted).
        refused: media found impossible to thumbnail (not an image, too large, corrupt).
    """

    made: int
    refused: int


class _Pending:
    """Work in progress for one key; others wait for it and then look again."""

    def __init__(self) -> None:
        self.done = trio.Event()


class ThumbnailService:
    """Makes, stores and picks the thumbnails of local media."""

    def __init__(
        self,
        store: MediaThumbnailStore,
        root: Path,
        config: MediaConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._dir = root / "thumbnails"
        self._config = config
        self._clock = clock
        self._limiter = trio.CapacityLimiter(1)
        self._in_flight: dict[tuple[object, ...], _Pending] = {}
        # Dynamic sizes being made per media: counted with the stored ones against the cap,
        # so that concurrent requests for new sizes cannot all pass it.
        self._dynamic_making: Counter[str] = Counter()
        self._bad: dict[str, None] = {}
        self._made = 0
        self._refused = 0
        self._max_side = max(
            [MAX_REQUEST_SIDE] + [max(s.width, s.height) for s in config.thumbnail_sizes]
        )

    def statistics(self) -> ThumbnailStatistics:
        """Counts of the work done so far."""
        return ThumbnailStatistics(made=self._made, refused=self._refused)

    async def generate_configured(self, media_id: str, source: Path, content_type: str) -> None:
        """Make the configured thumbnail sizes of a new upload (those not made yet).

        A file that is not an image, too large or corrupt is logged and skipped.

        Raises:
            OSError: the filesystem failed (the source is missing, the disk is full).

        Checkpoint: yes.
        """
        if can_thumbnail(content_type):
            await self._configured(media_id, source)

    async def thumbnail(
        self,
        media_id: str,
        source: Path,
        content_type: str,
        *,
        width: int,
        height: int,
        method: Method,
        animated: bool,
    ) -> StoredThumbnail | None:
        """The thumbnail answering a request, made now if needed.

        Args:
            source: the media's file.
            content_type: the media's type as uploaded.
            width: the width asked for (clamped to 1..`MAX_REQUEST_SIDE`).
            height: the height asked for (clamped likewise).
            animated: the client would like an animated thumbnail (spec v1.11).

        Returns:
            The thumbnail, or None when this media cannot be thumbnailed (not an image type,
            too many pixels, corrupt): the caller answers as Synapse does.

        Raises:
            OSError: the filesystem failed (the source is missing, the disk is full).

        Checkpoint: yes.
        """
        if not can_thumbnail(content_type) or not _SAFE_ID.fullmatch(media_id):
            return None
        width = min(max(width, 1), self._max_side)
        height = min(max(height, 1), self._max_side)
        animated = animated and essence(content_type) in _ANIMATABLE
        if self._config.dynamic_thumbnails:
            rows = await self._store.media_thumbnails(media_id)
            asked = (width, height, method, animated)
            made = next(
                (r for r in rows if (r.req_width, r.req_height, r.method, r.animated) == asked),
                None,
            )
            if made is not None:
                return await self._serve(media_id, source, made)
            # No await between this check and the count going up: a slot is taken at once.
            if len(rows) + self._dynamic_making[media_id] < MAX_DYNAMIC_PER_MEDIA:
                self._dynamic_making[media_id] += 1
                try:
                    return await self._exact(media_id, source, width, height, method, animated)
                finally:
                    self._dynamic_making[media_id] -= 1
                    if not self._dynamic_making[media_id]:
                        del self._dynamic_making[media_id]
            # Enough sizes of this media exist: a client asking for ever new sizes must not
            # fill the disk. The nearest of those answers.
            logger.info("media %s has %d thumbnails; serving the nearest", media_id, len(rows))
            same = [r for r in rows if r.animated == animated] or rows
            choice = select_thumbnail(same, width, height, method)
            if choice is not None:
                return await self._serve(media_id, source, choice)
            # The slots are all taken by sizes still being made: the configured sizes
            # (a fixed set) answer meanwhile.
        return await self._nearest(media_id, source, width, height, method, animated)

    async def _nearest(
        self, media_id: str, source: Path, width: int, height: int, method: Method, animated: bool
    ) -> StoredThumbnail | None:
        # The still thumbnails (made after upload) decide which size answers; an animated
        # request then gets that one size animated, made on first use: animating every
        # configured size of every GIF would be most of the work for little use.
        rows = await self._configured(media_id, source)
        choice = select_thumbnail(rows, width, height, method)
        if choice is not None and animated:
            return await self._exact(
                media_id, source, choice.req_width, choice.req_height, choice.method, True
            )
        return await self._serve(media_id, source, choice)

    async def _serve(
        self, media_id: str, source: Path, choice: ThumbnailRow | None
    ) -> StoredThumbnail | None:
        """The chosen thumbnail's file, made again if it was lost (a crash, deleted by hand)."""
        if choice is None:
            return None
        found = await self._existing(choice)
        if found is not None:
            return found
        return await self._exact(
            media_id, source, choice.req_width, choice.req_height, choice.method, choice.animated
        )

    async def delete_thumbnails(self, media_id: str) -> None:
        """Forget every thumbnail of the media and remove their files (purge, quarantine).

        A thumbnail being made at the same moment may still be written; callers delete the
        media first, so nothing serves it.

        Checkpoint: yes.
        """
        if not _SAFE_ID.fullmatch(media_id):
            return
        await self._store.delete_thumbnails(media_id)
        await trio.to_thread.run_sync(
            functools.partial(shutil.rmtree, self._media_dir(media_id), ignore_errors=True)
        )
        self._bad.pop(media_id, None)

    async def _exact(
        self, media_id: str, source: Path, width: int, height: int, method: Method, animated: bool
    ) -> StoredThumbnail | None:
        key = ("exact", media_id, width, height, method, animated)
        while True:
            if media_id in self._bad:
                return None
            row = await self._store.thumbnail(media_id, width, height, method, animated)
            found = None if row is None else await self._existing(row)
            if found is not None:
                return found
            pending = self._in_flight.get(key)
            if pending is None:
                break
            await pending.done.wait()
        with self._claim(key):
            made = await self._make(media_id, source, width, height, method, animated)
            return None if made is None else self._stored(made)

    async def _configured(self, media_id: str, source: Path) -> list[ThumbnailRow]:
        """The media's still thumbnails, after making any configured size missing."""
        key = ("configured", media_id)
        while True:
            if media_id in self._bad:
                return []
            rows = await self._still_rows(media_id)
            have = {(r.req_width, r.req_height, r.method) for r in rows}
            missing = [
                s
                for s in self._config.thumbnail_sizes
                if (s.width, s.height, s.method) not in have
            ]
            if not missing:
                return rows
            pending = self._in_flight.get(key)
            if pending is None:
                break
            await pending.done.wait()
        with self._claim(key):
            await self._make_sizes(media_id, source, missing)
        return await self._still_rows(media_id)

    async def _still_rows(self, media_id: str) -> list[ThumbnailRow]:
        return [r for r in await self._store.media_thumbnails(media_id) if not r.animated]

    async def _make_sizes(
        self, media_id: str, source: Path, sizes: Sequence[ThumbnailSize]
    ) -> None:
        # One decode for all of them (one worker call), then a file per distinct image and
        # a row per size.
        try:
            images = await self._in_worker(
                _make_thumbnails,
                source,
                sizes=[(s.width, s.height, s.method) for s in sizes],
                max_pixels=self._config.max_image_pixels,
            )
        except ThumbnailError as e:
            self._remember_bad(media_id, e)
            return
        self._made += len({id(image) for image in images})
        written: set[str] = set()
        for size, image in zip(sizes, images, strict=True):
            await self._save(media_id, size.width, size.height, size.method, False, image, written)

    async def _make(
        self, media_id: str, source: Path, width: int, height: int, method: Method, animated: bool
    ) -> ThumbnailRow | None:
        """Make one thumbnail, write its file and its row; None if the media is not an image."""
        try:
            image = await self._in_worker(
                _make_thumbnail,
                source,
                width=width,
                height=height,
                method=method,
                animated=animated,
                max_pixels=self._config.max_image_pixels,
            )
        except ThumbnailError as e:
            self._remember_bad(media_id, e)
            return None
        self._made += 1
        return await self._save(media_id, width, height, method, animated, image, set())

    async def _save(
        self,
        media_id: str,
        width: int,
        height: int,
        method: Method,
        animated: bool,
        image: ThumbnailImage,
        written: set[str],
    ) -> ThumbnailRow:
        """Write the file (unless in `written`), then the row for the request it answers."""
        # Named by content too: another request may make a slightly different image of the
        # same size (one decode for many sizes vs. one for this size), and a file must never
        # change under a row that gives its length. Identical images still share one file.
        digest = hashlib.sha256(image.data).hexdigest()[:16]
        suffix = "-animated" if animated else ""
        extension = _EXTENSIONS.get(image.content_type, "bin")
        name = f"{image.width}x{image.height}-{method}{suffix}-{digest}.{extension}"
        if name not in written:
            await trio.to_thread.run_sync(
                _write_atomically, self._media_dir(media_id), name, image.data
            )
            written.add(name)
        row = ThumbnailRow(
            media_id=media_id,
            req_width=width,
            req_height=height,
            method=method,
            animated=animated,
            width=image.width,
            height=image.height,
            content_type=image.content_type,
            length=len(image.data),
            file_name=name,
            created_ts=int(self._clock() * 1000),
        )
        await self._store.add_thumbnail(row)
        return row

    async def _in_worker(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        # The one thread Pillow may use (see the module docstring).
        return await trio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._limiter
        )

    def _remember_bad(self, media_id: str, error: ThumbnailError) -> None:
        logger.info("media %s cannot be thumbnailed: %s", media_id, error)
        self._refused += 1
        self._bad[media_id] = None
        while len(self._bad) > _BAD_MEDIA_MEMORY:
            del self._bad[next(iter(self._bad))]

    @contextlib.contextmanager
    def _claim(self, key: tuple[object, ...]) -> Iterator[None]:
        # Registered with no checkpoint since the caller found the key free.
        pending = self._in_flight[key] = _Pending()
        try:
            yield
        finally:
            del self._in_flight[key]
            pending.done.set()

    def _media_dir(self, media_id: str) -> Path:
        return self._dir / media_id[:2] / media_id

    def _stored(self, row: ThumbnailRow) -> StoredThumbnail:
        return StoredThumbnail(
            path=self._media_dir(row.media_id) / row.file_name,
            content_type=row.content_type,
            length=row.length,
            width=row.width,
            height=row.height,
        )

    async def _existing(self, row: ThumbnailRow) -> StoredThumbnail | None:
        stored = self._stored(row)
        return stored if await trio.Path(stored.path).is_file() else None


def _write_atomically(directory: Path, name: str, data: bytes) -> None:
    """Put `data` at `directory/name` whole or not at all (temporary file, fsync, rename)."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, directory / name)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    # The rename itself is durable once the directory is.
    fsync_dir(directory)
