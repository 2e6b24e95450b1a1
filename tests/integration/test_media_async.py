"""Asynchronous uploads: ``POST /create`` then ``PUT /upload/{server}/{id}`` (spec v1.7+)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

import trio

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.media_helpers import (
    CLIENT_MEDIA,
    call,
    create,
    download_path,
    put_path,
    split_mxc,
    thumbnail_path,
)


async def test_create_then_put_then_download(alice: Client, bob: Client) -> None:
    before_ms = int(time.time() * 1000)
    body = await create(alice)
    uri = body["content_uri"]
    # Synapse's default: an unused id lasts a day.
    assert before_ms + 86_000_000 < body["unused_expires_at"] < before_ms + 87_000_000
    response = await call(
        alice,
        "PUT",
        put_path(uri),
        {"Content-Type": "text/plain"},
        content=b"later",
        params={"filename": "later.txt"},
    )
    assert assert_ok(response) == {}
    got = await call(bob, "GET", download_path(uri))
    assert got.status_code == 200
    assert got.content == b"later"
    assert got.headers["content-disposition"] == "inline; filename=later.txt"


async def test_put_errors(alice: Client, bob: Client) -> None:
    uri = (await create(alice))["content_uri"]
    server, media_id = split_mxc(uri)
    # Only the creator may upload.
    response = await call(bob, "PUT", put_path(uri), content=b"bob's")
    assert_error(response, 403, "M_FORBIDDEN")
    # Unknown ids and other servers' ids are not found.
    response = await call(alice, "PUT", put_path(f"mxc://{server}/{'B' * 24}"), content=b"x")
    assert_error(response, 404, "M_NOT_FOUND")
    response = await call(alice, "PUT", put_path(f"mxc://other.example/{media_id}"), content=b"x")
    assert_error(response, 404, "M_NOT_FOUND")
    assert_ok(await call(alice, "PUT", put_path(uri), content=b"first"))
    # Content, once there, is never replaced.
    response = await call(alice, "PUT", put_path(uri), content=b"second")
    assert_error(response, 409, "M_CANNOT_OVERWRITE_MEDIA")
    assert (await call(alice, "GET", download_path(uri))).content == b"first"
    # An id from POST /upload has content too.
    uploaded = assert_ok(await call(alice, "POST", "/_matrix/media/v3/upload", content=b"u"))
    response = await call(alice, "PUT", put_path(uploaded["content_uri"]), content=b"x")
    assert_error(response, 409, "M_CANNOT_OVERWRITE_MEDIA")


async def test_download_of_a_pending_id_waits_for_the_put(alice: Client, bob: Client) -> None:
    uri = (await create(alice))["content_uri"]
    results: list[httpx.Response] = []

    async def wait_for_it() -> None:
        results.append(await call(bob, "GET", download_path(uri), params={"timeout_ms": "30000"}))

    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_it)
        await trio.sleep(0.2)
        assert results == []
        assert_ok(await call(alice, "PUT", put_path(uri), content=b"arrived"))
    # Woken by the PUT, not by the 30 s timeout.
    assert time.monotonic() - started < 5
    (response,) = results
    assert response.status_code == 200
    assert response.content == b"arrived"


async def test_a_pending_id_times_out_with_not_yet_uploaded(alice: Client) -> None:
    uri = (await create(alice))["content_uri"]
    started = time.monotonic()
    response = await call(alice, "GET", download_path(uri), params={"timeout_ms": "300"})
    assert_error(response, 504, "M_NOT_YET_UPLOADED")
    assert 0.25 < time.monotonic() - started < 5
    response = await call(
        alice, "GET", thumbnail_path(uri), params={"width": 32, "height": 32, "timeout_ms": 0}
    )
    assert_error(response, 504, "M_NOT_YET_UPLOADED")
    response = await call(alice, "GET", download_path(uri), params={"timeout_ms": "soon"})
    assert_error(response, 400, "M_INVALID_PARAM")


async def test_too_many_pending_ids(tmp_path: Path) -> None:
    async with (
        serve_in_process(tmp_path, media={"max_pending_uploads": 2}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        first = await create(alice)
        await create(alice)
        response = await call(alice, "POST", "/_matrix/media/v1/create")
        body = assert_error(response, 429, "M_LIMIT_EXCEEDED")
        assert 0 < body["retry_after_ms"] <= 86_400_000
        # Filling one frees its slot.
        assert_ok(await call(alice, "PUT", put_path(first["content_uri"]), content=b"x"))
        await create(alice)
        other = await hs.register_user("bob", "pw")
        bob = Client(http, other.user_id, other.access_token, other.device_id)
        await create(bob)


async def test_unused_ids_expire(tmp_path: Path) -> None:
    async with (
        serve_in_process(
            tmp_path, media={"unused_expiration_time": 0.3, "max_pending_uploads": 1}
        ) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        uri = (await create(alice))["content_uri"]
        # A download waiting on it gives up when it expires (no content will come).
        response = await call(alice, "GET", download_path(uri), params={"timeout_ms": "5000"})
        assert_error(response, 404, "M_NOT_FOUND")
        response = await call(alice, "PUT", put_path(uri), content=b"too late")
        assert_error(response, 404, "M_NOT_FOUND")
        # The expired id no longer counts against the limit.
        await create(alice)
        server, media_id = split_mxc(uri)
        response = await call(alice, "GET", f"{CLIENT_MEDIA}/download/{server}/{media_id}")
        assert_error(response, 404, "M_NOT_FOUND")


async def test_whose_id_it_is_is_checked_before_the_size(tmp_path: Path) -> None:
    # As Synapse: another user's id is 403 even for a body over the limit, the owner's 413.
    async with (
        serve_in_process(tmp_path, media={"max_upload_size": 10}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        owner = await hs.register_user("alice", "pw")
        other = await hs.register_user("bob", "pw")
        alice = Client(http, owner.user_id, owner.access_token, owner.device_id)
        bob = Client(http, other.user_id, other.access_token, other.device_id)
        uri = (await create(alice))["content_uri"]
        response = await call(bob, "PUT", put_path(uri), content=b"x" * 100)
        assert_error(response, 403, "M_FORBIDDEN")
        response = await call(alice, "PUT", put_path(uri), content=b"x" * 100)
        assert_error(response, 413, "M_TOO_LARGE")
