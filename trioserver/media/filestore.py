"""Media files on disk: content-addressed, written through a temporary file, never half served.

Theory of operation
-------------------
A file's name is the sha256 of its bytes, in two levels of sharded directories:
``root/content/ab/cd/abcd…`` (256 by 256 directories keep each one small). Identical uploads
therefore share one file, and a file never changes once it exists.

`MediaFileStore.write_stream` writes the chunks, as they arrive, to a new file in
``root/tmp`` while hashing them; only once the whole body is in, it fsyncs the file, renames
it to its content path and fsyncs that directory. So at every instant the content path either
does not exist or holds the complete, durable bytes: a crash mid-upload (even ``kill -9``)
leaves only a temporary file, which nothing serves and `remove_stale_temp_files` deletes at
the next start. The caller commits the database row *after* `write_stream` returns, so a
committed row always names a file that exists (and an orphaned file, from a crash between
rename and commit, is harmless).

Disk writes run in worker threads (one hop per `_WRITE_BATCH` bytes, not per chunk), so a
slow disk never stalls the event loop; memory held per upload is bounded by that batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol

import attrs

import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

logger = logging.getLogger(__name__)

# Bytes gathered before one write (one thread hop).
_WRITE_BATCH = 256 * 1024
# Bytes read per chunk when serving a file: each read is one worker-thread hop, so small
# chunks cost CPU (measured with bench/media.py, a 100 MB download: 64 KiB 156 MB/s, 256 KiB
# 291 MB/s, 1 MiB 532 MB/s); each download in flight holds about one chunk.
READ_CHUNK = 512 * 1024
# Temporary files older than this at start-up belong to uploads that died with a process.
STALE_TEMP_SECONDS = 3600.0


class FileTooLarge(Exception):
    """Raised by `MediaFileStore.write_stream` when the body exceeds its limit.

    Nothing is kept: the temporary file is removed before this propagates.
    """


@attrs.frozen
class StoredFile:
    """A file written to the store: its content hash, size and final path."""

    sha256: str
    length: int
    path: Path


class MediaFileStore:
    """The content files under `root` (``data_dir/media`` by default)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._tmp = root / "tmp"
        self._content = root / "content"

    @property
    def root(self) -> Path:
        """The storage directory (thumbnails live under it too)."""
        return self._root

    def path_of(self, sha256: str) -> Path:
        """Where the file with this content hash is (whether or not it exists)."""
        return self._content / sha256[0:2] / sha256[2:4] / sha256

    def prepare(self) -> int:
        """Create the directories and remove stale temporary files (blocking; at start-up).

        Returns:
            How many stale temporary files were removed.
        """
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._content.mkdir(parents=True, exist_ok=True)
        return remove_stale_temp_files(self._tmp, older_than=STALE_TEMP_SECONDS)

    async def write_stream(self, chunks: AsyncIterable[bytes], *, limit: int) -> StoredFile:
        """Store the bytes of `chunks` durably and return where they are.

        Checkpoints: awaits `chunks` and a worker thread per write batch.

        Raises:
            FileTooLarge: more than `limit` bytes arrived (nothing is kept).
        """
        temp = self._tmp / f"{secrets.token_hex(16)}.part"
        handle = await trio.to_thread.run_sync(_open_exclusive, temp)
        try:
            sha256, length = await _copy_in(chunks, handle, limit)
            await trio.to_thread.run_sync(_sync_and_close, handle)
            final = self.path_of(sha256)
            await trio.to_thread.run_sync(_move_into_place, temp, final)
        except BaseException:
            # Shielded: the temporary file must go even when the request is being cancelled.
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_discard, handle, temp)
                # A generator left unfinished (over the limit) is closed now, not by the GC.
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()
            raise
        return StoredFile(sha256=sha256, length=length, path=final)

    async def write_bytes(self, data: bytes) -> StoredFile:
        """`write_stream` for bytes already in memory (no limit: the caller checked it)."""

        async def one_chunk() -> AsyncIterator[bytes]:
            yield data

        return await self.write_stream(one_chunk(), limit=len(data))


class _AsyncReader(Protocol):
    """What `trio.open_file` returns for a binary file, as far as `FileChunks` uses it."""

    async def read(self, size: int = -1, /) -> bytes: ...
    async def aclose(self) -> None: ...


class FileChunks:
    """An open file's bytes as an async iterator of chunks, for a streamed response.

    Opened before the response starts (`open_chunks`), so that a missing file is an error the
    handler can still answer with a 404, not a response cut short. `aclose` closes the file;
    the HTTP edge calls it when the response is done, sent whole or not (HEAD, a client gone).
    """

    def __init__(self, handle: _AsyncReader, chunk_size: int) -> None:
        self._handle = handle
        self._chunk_size = chunk_size

    def __aiter__(self) -> FileChunks:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self._handle.read(self._chunk_size)
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def aclose(self) -> None:
        """Close the file (a checkpoint)."""
        await self._handle.aclose()


async def open_chunks(path: Path, *, chunk_size: int = READ_CHUNK) -> FileChunks:
    """Open `path` for a streamed response (each read runs in a worker thread).

    Raises:
        FileNotFoundError: it does not exist.
    """
    return FileChunks(await trio.open_file(path, "rb"), chunk_size)


async def _copy_in(chunks: AsyncIterable[bytes], handle: BinaryIO, limit: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    length = 0
    pending: list[bytes] = []
    pending_size = 0
    async for chunk in chunks:
        length += len(chunk)
        if length > limit:
            raise FileTooLarge(f"more than {limit} bytes")
        pending.append(chunk)
        pending_size += len(chunk)
        if pending_size >= _WRITE_BATCH:
            await trio.to_thread.run_sync(_hash_and_write, digest, handle, b"".join(pending))
            pending, pending_size = [], 0
    if pending:
        await trio.to_thread.run_sync(_hash_and_write, digest, handle, b"".join(pending))
    return digest.hexdigest(), length


def _hash_and_write(digest: hashlib._Hash, handle: BinaryIO, data: bytes) -> None:
    # In the worker thread, with the write: hashlib releases the GIL for large buffers, so
    # the hashing runs beside the event loop instead of on it (measured: bench/media.py).
    digest.update(data)
    handle.write(data)


def _open_exclusive(path: Path) -> BinaryIO:
    # In the worker thread, with the open: `tmp/` may be gone (removed by hand).
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("xb")


def _sync_and_close(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` durable (after a rename into it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _move_into_place(temp: Path, final: Path) -> None:
    if final.exists():
        # Same content: the new copy is not needed. The existing file may belong to an
        # upload still finishing (renamed, directory not yet synced): sync its entry here
        # too, so this upload is as durable as if it had written the file itself.
        temp.unlink()
        fsync_dir(final.parent)
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    # The shard directories may be new: their own entries must be durable too.
    fsync_dir(final.parent.parent)
    fsync_dir(final.parent.parent.parent)
    os.replace(temp, final)
    fsync_dir(final.parent)


def _discard(handle: BinaryIO, temp: Path) -> None:
    handle.close()
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()


def remove_stale_temp_files(tmp: Path, *, older_than: float) -> int:
    """Delete the files in `tmp` not modified for `older_than` seconds (blocking).

    Younger ones may belong to an upload in progress in another process sharing the store.
    """
    if not tmp.is_dir():
        return 0
    cutoff = time.time() - older_than
    removed = 0
    for entry in tmp.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
    if removed:
        logger.info("removed %d stale temporary media files from %s", removed, tmp)
    return removed
