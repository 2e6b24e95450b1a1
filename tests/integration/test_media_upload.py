"""Uploading and downloading media over real HTTP (spec "Content repository")."""

from __future__ import annotations

import hashlib
import re
import time
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
    thumbnail_path,
    upload,
)
from tests.integration.server_db import server_db

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
    # Only an RFC 9110 media type: a browser could read this one as text/html, shown inline.
    for spoof in ("image/png; x=,text/html", "image/png, text/html", "image", "image/png; x"):
        response = await call(alice, "POST", UPLOAD, {"Content-Type": spoof}, content=b"x")
        assert_error(response, 400, "M_INVALID_PARAM")
    for fine in ('text/plain; charset="utf-8"', "application/vnd.example+json", "text/plain;"):
        await upload(alice, b"x", fine)


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


async def test_quarantined_media_is_not_found(hs: InProcessServer, alice: Client) -> None:
    uri = await upload(alice, b"bad", "image/png")
    _, media_id = split_mxc(uri)
    # No admin API yet: an operator sets the flag in the database.
    with server_db(hs.config) as db:
        db.execute("UPDATE local_media SET quarantined = 1 WHERE media_id = ?", (media_id,))
    assert_error(await call(alice, "GET", download_path(uri)), 404, "M_NOT_FOUND")
    response = await call(
        alice, "GET", f"{CLIENT_MEDIA}/thumbnail/{uri[6:]}", params={"width": 8, "height": 8}
    )
    assert_error(response, 404, "M_NOT_FOUND")


async def test_media_of_a_deactivated_user_stays_downloadable(alice: Client, bob: Client) -> None:
    uri = await upload(alice, b"still here", "text/plain")
    body = {"auth": {"type": "m.login.password", "user": alice.user_id, "password": "alicepw"}}
    assert_ok(await alice.post("/account/deactivate", body))
    response = await call(bob, "GET", download_path(uri))
    assert response.status_code == 200
    assert response.content == b"still here"


async def test_guests_may_download_but_not_upload(tmp_path: Path) -> None:
    async with (
        serve_in_process(tmp_path, registration={"allow_guest_access": True}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        uri = await upload(alice, b"for guests", "text/plain")
        response = await http.post(
            "/_matrix/client/v3/register", params={"kind": "guest"}, json={}
        )
        body = assert_ok(response)
        guest = Client(http, body["user_id"], body["access_token"], body["device_id"])
        assert (await call(guest, "GET", download_path(uri))).content == b"for guests"
        response = await call(guest, "POST", UPLOAD, content=b"x")
        assert_error(response, 403, "M_GUEST_ACCESS_FORBIDDEN")


async def test_a_row_whose_file_is_gone_is_not_found(hs: InProcessServer, alice: Client) -> None:
    uri = await upload(alice, b"removed by hand", "text/plain")
    (path,) = [p for p in stored_files(Path(hs.config.data_dir)) if "content" in p.parts]
    path.unlink()
    assert_error(await call(alice, "GET", download_path(uri)), 404, "M_NOT_FOUND")


async def test_old_v1_media_paths_and_a_trailing_slash(tmp_path: Path) -> None:
    # Old clients still use /_matrix/media/v1/...; Synapse serves those paths as the legacy
    # ones (and a download path ending in "/" as one without a file name).
    freeze_ms = int(time.time() * 1000) + 3_600_000
    async with (
        serve_in_process(tmp_path, media={"unauthenticated_media_before_ts": freeze_ms}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        body = assert_ok(await call(alice, "POST", "/_matrix/media/v1/upload", content=b"v1"))
        server, media_id = split_mxc(body["content_uri"])
        response = await http.get(f"/_matrix/media/v1/download/{server}/{media_id}")
        assert response.content == b"v1"
        response = await call(alice, "GET", f"{CLIENT_MEDIA}/download/{server}/{media_id}/")
        assert response.status_code == 200
        assert response.headers["content-disposition"] == "attachment"
        assert_ok(await call(alice, "GET", "/_matrix/media/v1/config"))


async def test_a_filename_that_is_not_utf8_is_refused(alice: Client) -> None:
    response = await alice.http.post(
        f"{UPLOAD}?filename=%FF%FE.txt", headers=alice.headers, content=b"x"
    )
    assert_error(response, 400, "M_INVALID_PARAM")
    uri = await upload(alice, b"x", "text/plain", "caf\u00e9 \ufffd?.txt".replace("\ufffd", "e"))
    response = await call(alice, "GET", download_path(uri))
    assert "filename*=utf-8''caf%C3%A9" in response.headers["content-disposition"]


async def test_a_thumbnail_of_media_whose_file_is_gone_is_not_found(tmp_path: Path) -> None:
    import io

    from PIL import Image

    image = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 10)).save(image, "PNG")
    async with (
        serve_in_process(tmp_path, media={"dynamic_thumbnails": True}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        uri = await upload(alice, image.getvalue(), "image/png")
        (path,) = [p for p in stored_files(tmp_path) if "content" in p.parts]
        path.unlink()
        params = {"width": "17", "height": "13", "method": "crop"}
        response = await call(alice, "GET", thumbnail_path(uri), params=params)
        assert_error(response, 404, "M_NOT_FOUND")
        # The server goes on making thumbnails of later uploads.
        other = await upload(alice, image.getvalue() + b"\0", "image/png")
        response = await call(alice, "GET", thumbnail_path(other), params=params)
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"


async def test_uploads_in_progress_are_bounded_per_user(
    hs: InProcessServer, alice: Client, bob: Client
) -> None:
    # Each upload in progress holds a connection and a temporary file for as long as its
    # client takes: one user cannot hold more than a few at once.
    import trio

    from trioserver.handlers.media import MAX_UPLOADS_IN_PROGRESS

    host, port = hs.base_url.removeprefix("http://").rsplit(":", 1)
    request = (
        f"POST {UPLOAD} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice.token}\r\n"
        "Content-Length: 1000\r\n\r\n"
    ).encode()
    slow = []
    for _ in range(MAX_UPLOADS_IN_PROGRESS):
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(request + b"x")
        slow.append(stream)
    with trio.fail_after(10):
        while True:  # the slow ones reach the handler in their own time
            response = await call(alice, "POST", UPLOAD, content=b"one more")
            if response.status_code == 429:
                break
            await trio.sleep(0.05)
    assert_error(response, 429, "M_LIMIT_EXCEEDED")
    # Others are not affected, and alice may upload again once hers are done.
    await upload(bob, b"bob's")
    for stream in slow:
        await stream.send_all(b"x" * 999)
        await stream.receive_some(65536)
        await stream.aclose()
    await upload(alice, b"alice again")
