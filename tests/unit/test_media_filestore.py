"""The content-addressed file store (`trioserver.media.filestore`) on a real directory."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trioserver.media.filestore import FileTooLarge, MediaFileStore, open_chunks


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def files_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file())


async def test_a_file_is_stored_under_its_sha256_in_shards(tmp_path: Path) -> None:
    store = MediaFileStore(tmp_path)
    data = [b"a" * 300_000, b"b" * 300_000, b"c"]
    stored = await store.write_stream(chunks(*data), limit=1_000_000)
    digest = hashlib.sha256(b"".join(data)).hexdigest()
    assert stored.sha256 == digest
    assert stored.length == 600_001
    assert stored.path == tmp_path / "content" / digest[:2] / digest[2:4] / digest
    assert store.path_of(digest) == stored.path
    assert stored.path.read_bytes() == b"".join(data)
    assert files_under(tmp_path / "tmp") == []
    reader = await open_chunks(stored.path, chunk_size=100_000)
    read = [chunk async for chunk in reader]
    await reader.aclose()
    assert b"".join(read) == b"".join(data)
    assert max(len(c) for c in read) == 100_000


async def test_identical_content_shares_one_file(tmp_path: Path) -> None:
    store = MediaFileStore(tmp_path)
    first = await store.write_stream(chunks(b"same"), limit=10)
    second = await store.write_bytes(b"same")
    assert first == second
    assert files_under(tmp_path) == [first.path]


async def test_over_the_limit_nothing_is_kept(tmp_path: Path) -> None:
    store = MediaFileStore(tmp_path)
    with pytest.raises(FileTooLarge):
        await store.write_stream(chunks(b"12345", b"678"), limit=7)
    assert files_under(tmp_path) == []
    empty = await store.write_stream(chunks(), limit=0)
    assert empty.length == 0
    assert empty.path.read_bytes() == b""


async def test_a_failing_body_leaves_nothing(tmp_path: Path) -> None:
    store = MediaFileStore(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 400_000
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await store.write_stream(broken(), limit=10_000_000)
    assert files_under(tmp_path) == []


async def test_opening_a_missing_file_fails_before_any_response(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await open_chunks(MediaFileStore(tmp_path).path_of("ab" * 32))


def test_prepare_removes_only_stale_temporary_files(tmp_path: Path) -> None:
    store = MediaFileStore(tmp_path)
    store.prepare()
    stale = tmp_path / "tmp" / "old.part"
    fresh = tmp_path / "tmp" / "new.part"
    stale.write_bytes(b"old")
    fresh.write_bytes(b"new")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert store.prepare() == 1
    assert files_under(tmp_path / "tmp") == [fresh]
