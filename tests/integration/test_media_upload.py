"""Uploading and downloading media over real HTTP (spec "Content repository")."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client, assert_error, assert_ok, bearer
from tests.integration.media_helpers import (
    CLIENT_MEDIA,
    LEGACY,
    UPLOAD,
    call,
    download_path,
    split_mxc,
    upload,
)

MEDIA_ID = re.compile(r"[A-Za-z0-9_-]{24,}")


def stored_files(data_dir: Path) -> list[Path]:
    """Every file under the media store (content and temporary)."""
    return sorted(p for p in (data_dir / "media").rglob("*") if p.is_file())


async def test_upload_then_another_user_downloads_the_same_bytes(
    hs: InProcessServer, alice: Client, bob: Client
) -> None:
    data = bytes(range(256)) * 100
    uri = await upload(alice, data, "application/x-test", "blob.bin")
    server, media_id = split_mxc(uri)
    assert server == hs.server_name
    assert MEDIA_ID.fullmatch(media_id), media_id
    response = await call(bob, "GET", download_path(uri))
    assert response.status_code == 200, response.text
    assert response.content == data
    assert response.headers["content-type"] == "application/x-test"
    assert response.headers["content-length"] == str(len(data))
    assert response.headers["content-disposition"] == "attachment; filename=blob.bin"


async def test_upload_defaults_and_empty_body(alice: Client) -> None:
    # No Content-Type: application/octet-stream; an empty upload is allowed (as Synapse).
    uri = await upload(alice, b"", content_type=None)
    response = await call(alice, "GET", download_path(uri))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["content-disposition"] == "attachment"


async def test_the_r0_upload_path_works_too(alice: Client) -> None:
    response = await call(alice, "POST", "/_matrix/media/r0/upload", content=b"r0")
    uri = assert_ok(response)["content_uri"]
    assert (await call(alice, "GET", download_path(uri))).content == b"r0"


async def test_identical_uploads_get_their_own_ids_and_share_one_file(
    hs: InProcessServer, alice: Client, bob: Client
) -> None:
    first = await upload(alice, b"same bytes", "text/plain", "a.txt")
    second = await upload(bob, b"same bytes", "image/png", "b.png")
    assert first != second
    one = await call(alice, "GET", download_path(first))
    two = await call(alice, "GET", download_path(second))
    assert one.content == two.content == b"same bytes"
    # Each keeps its own metadata.
    assert one.headers["content-type"] == "text/plain; charset=UTF-8"
    assert two.headers["content-type"] == "image/png"
    content = [p for p in stored_files(Path(hs.config.data_dir)) if "content" in p.parts]
    assert [p.name for p in content] == [hashlib.sha256(b"same bytes").hexdigest()]


async def test_upload_and_download_need_a_valid_token(
    http: httpx.AsyncClient, alice: Client
) -> None:
    uri = await upload(alice, b"secret")
    for method, path in [
        ("POST", UPLOAD),
        ("POST", "/_matrix/media/v1/create"),
        ("GET", download_path(uri)),
        ("GET", download_path(uri, filename="x.txt")),
        ("GET", f"{CLIENT_MEDIA}/thumbnail/{uri[6:]}?width=32&height=32"),
        ("GET", f"{CLIENT_MEDIA}/config"),
        ("GET", f"{LEGACY}/config"),
    ]:
        response = await http.request(method, path, content=b"x")
        assert_error(response, 401, "M_MISSING_TOKEN")
        response = await http.request(method, path, content=b"x", headers=bearer("nope"))
        assert_error(response, 401, "M_UNKNOWN_TOKEN")


async def test_unknown_and_remote_media_are_not_found(alice: Client) -> None:
    uri = await upload(alice, b"here")
    server, media_id = split_mxc(uri)
    for path in [
        f"{CLIENT_MEDIA}/download/{server}/AAAAAAAAAAAAAAAAAAAAAAAA",
        f"{CLIENT_MEDIA}/download/{server}/{media_id}x",
        # No federation yet: another server's media is not found (Synapse, allow_remote=false).
        f"{CLIENT_MEDIA}/download/other.example/{media_id}",
        f"{CLIENT_MEDIA}/thumbnail/other.example/{media_id}?width=10&height=10",
    ]:
        assert_error(await call(alice, "GET", path), 404, "M_NOT_FOUND")


async def test_config_reports_the_upload_limit(alice: Client) -> None:
    for path in (f"{CLIENT_MEDIA}/config", f"{LEGACY}/config", "/_matrix/media/r0/config"):
        body = assert_ok(await call(alice, "GET", path))
        assert body == {"m.upload.size": 50 * 1024 * 1024}


async def test_head_sends_the_headers_only(alice: Client) -> None:
    uri = await upload(alice, b"x" * 1000, "image/png", "p.png")
    response = await call(alice, "HEAD", download_path(uri))
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-length"] == "1000"
    assert response.headers["content-type"] == "image/png"
    assert response.headers["content-disposition"] == "inline; filename=p.png"


async def test_a_bad_content_type_is_refused(alice: Client) -> None:
    # A byte outside printable ASCII could not be sent back as it came.
    headers = [*alice.headers.items(), ("Content-Type", "text/plain\u00e9")]
    raw = [(k.encode(), v.encode("latin-1")) for k, v in headers]
    response = await alice.http.post(UPLOAD, content=b"x", headers=raw)
    assert_error(response, 400, "M_INVALID_PARAM")


async def _chunks(total: int, chunk: int = 64 * 1024) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        size = min(chunk, total - sent)
        yield bytes([sent // chunk % 251]) * size
        sent += size


def _expected(total: int, chunk: int = 64 * 1024) -> bytes:
    return b"".join(
        bytes([i // chunk % 251]) * min(chunk, total - i) for i in range(0, total, chunk)
    )


async def test_a_20_mb_upload_is_streamed_and_served_whole(alice: Client) -> None:
    total = 20 * 1024 * 1024
    response = await call(alice, "POST", UPLOAD, content=_chunks(total))
    uri = assert_ok(response)["content_uri"]
    digest = hashlib.sha256()
    size = 0
    async with alice.http.stream("GET", download_path(uri), headers=alice.headers) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-length"] == str(total)
        async for chunk in streamed.aiter_bytes():
            digest.update(chunk)
            size += len(chunk)
    assert size == total
    assert digest.hexdigest() == hashlib.sha256(_expected(total)).hexdigest()


async def test_too_large_uploads_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    limit = 100_000
    async with (
        serve_in_process(tmp_path, media={"max_upload_size": limit}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        body = assert_ok(await call(alice, "GET", f"{CLIENT_MEDIA}/config"))
        assert body["m.upload.size"] == limit
        # Declared too large: refused before reading.
        response = await call(alice, "POST", UPLOAD, content=b"x" * (limit + 1))
        assert_error(response, 413, "M_TOO_LARGE")
        # Not declared (chunked): refused once the count passes the limit.
        response = await call(alice, "POST", UPLOAD, content=_chunks(limit * 3, 10_000))
        assert_error(response, 413, "M_TOO_LARGE")
        assert [p for p in stored_files(tmp_path) if "content" in p.parts or p.suffix] == []
        # Exactly at the limit is fine, and the connection still works afterwards.
        uri = await upload(alice, b"y" * limit)
        assert (await call(alice, "GET", download_path(uri))).content == b"y" * limit


async def test_uploads_are_rate_limited_per_user(tmp_path: Path) -> None:
    async with (
        serve_in_process(
            tmp_path,
            ratelimit={"enabled": True, "media_upload": {"per_second": 0.01, "burst_count": 2}},
        ) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        other = await hs.register_user("bob", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        bob = Client(http, other.user_id, other.access_token, other.device_id)
        await upload(alice, b"1")
        await upload(alice, b"2")
        body = assert_error(
            await call(alice, "POST", UPLOAD, content=b"3"), 429, "M_LIMIT_EXCEEDED"
        )
        assert body["retry_after_ms"] > 0
        await upload(bob, b"bob has his own bucket")
