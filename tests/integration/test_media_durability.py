"""Media survives restarts and ``kill -9``; a crash mid-upload leaves nothing that is served.

The kill tests run `trioserver run` as a real child process (the helpers of test_cli) and
SIGKILL it: an acknowledged upload must be on disk and in the database (fsynced file, renamed,
row committed), and an upload cut short must leave only a temporary file, never a row.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

import trio

from trioserver.config import load_config
from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.media_helpers import (
    UPLOAD,
    call,
    create,
    download_path,
    put_path,
    upload,
)
from tests.integration.server_db import server_db
from tests.integration.test_cli import admin_register_body, server_process, shared_secret


async def test_media_and_pending_ids_survive_a_restart(tmp_path: Path) -> None:
    async with (
        serve_in_process(tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        uri = await upload(alice, b"kept across restarts", "text/plain", "kept.txt")
        pending = (await create(alice))["content_uri"]
    async with (
        serve_in_process(tmp_path) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        response = await call(alice, "GET", download_path(uri))
        assert response.status_code == 200
        assert response.content == b"kept across restarts"
        assert response.headers["content-disposition"] == "inline; filename=kept.txt"
        assert_ok(await call(alice, "PUT", put_path(pending), content=b"after restart"))
        assert (await call(alice, "GET", download_path(pending))).content == b"after restart"


async def _register(http: httpx.AsyncClient, data_dir: Path, name: str) -> dict[str, str]:
    body = await admin_register_body(http, shared_secret(data_dir), name, "pw")
    result: dict[str, str] = assert_ok(await http.post("/_synapse/admin/v1/register", json=body))
    return result


def _auth(user: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {user['access_token']}"}


async def test_an_acknowledged_upload_survives_kill_9(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data = os.urandom(3 * 1024 * 1024)
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            user = await _register(http, data_dir, "kim")
            response = await http.post(
                UPLOAD, content=data, headers={**_auth(user), "Content-Type": "image/png"}
            )
            uri = assert_ok(response)["content_uri"]
        # No graceful stop: nothing may depend on a flush at exit.
        server.process.send_signal(signal.SIGKILL)
        with trio.fail_after(20):
            await server.process.wait()
    async with (
        server_process("--data-dir", data_dir, cwd=tmp_path) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
    ):
        response = await http.get(download_path(uri), headers=_auth(user))
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["content-type"] == "image/png"


async def _upload_forever(http: httpx.AsyncClient, user: dict[str, str]) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"half of an upload " * 20_000
        await trio.sleep_forever()

    # The server is killed under it (what the test is about); the test then cancels it.
    with contextlib.suppress(httpx.TransportError):
        await http.post(UPLOAD, content=body(), headers=_auth(user))


async def _wait_for_temp_file(data_dir: Path) -> None:
    # The server's temporary file is the only sign of its progress: poll it (bounded).
    with trio.fail_after(20):
        while True:
            files = _temp_files(data_dir)
            if files and files[0].stat().st_size > 0:
                return
            await trio.sleep(0.05)


def _temp_files(data_dir: Path) -> list[Path]:
    tmp = data_dir / "media" / "tmp"
    return [p for p in tmp.iterdir() if p.is_file()] if tmp.is_dir() else []


async def test_kill_9_mid_upload_leaves_only_a_temporary_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with (
        server_process("--data-dir", data_dir, cwd=tmp_path) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
        trio.open_nursery() as nursery,
    ):
        user = await _register(http, data_dir, "lee")
        nursery.start_soon(_upload_forever, http, user)
        # The server writes what arrived to its temporary file, then it dies.
        await _wait_for_temp_file(data_dir)
        server.process.send_signal(signal.SIGKILL)
        with trio.fail_after(20):
            await server.process.wait()
        nursery.cancel_scope.cancel()
    (partial,) = _temp_files(data_dir)
    content = data_dir / "media" / "content"
    assert [p for p in content.rglob("*") if p.is_file()] == []
    # The database the child process ran on (its generated config names it).
    with server_db(load_config(data_dir / "trioserver.toml")) as db:
        assert db.rows("SELECT COUNT(*) FROM local_media") == [(0,)]
    # A temporary file an hour old belongs to no upload in progress: removed at start. A
    # young one may be another process's upload in progress: kept.
    young = partial.with_name("young.part")
    young.write_bytes(b"in progress elsewhere")
    hour_ago = time.time() - 3700
    os.utime(partial, (hour_ago, hour_ago))
    async with (
        server_process("--data-dir", data_dir, cwd=tmp_path) as server,
        httpx.AsyncClient(base_url=server.base_url, timeout=30) as http,
    ):
        # The server still answers uploads normally.
        login = await _register(http, data_dir, "max")
        response = await http.post(UPLOAD, content=b"fine", headers=_auth(login))
        uri = assert_ok(response)["content_uri"]
        assert (await http.get(download_path(uri), headers=_auth(login))).content == b"fine"
        missing = download_path(uri)[:-3] + "zzz"
        assert_error(await http.get(missing, headers=_auth(login)), 404, "M_NOT_FOUND")
    assert _temp_files(data_dir) == [young]


async def test_a_client_that_goes_away_mid_upload_leaves_nothing(tmp_path: Path) -> None:
    async with serve_in_process(tmp_path) as hs:
        user = await hs.register_user("alice", "pw")
        port = hs.base_url.rsplit(":", 1)[1]
        stream = await trio.open_tcp_stream("127.0.0.1", int(port))
        async with stream:
            await stream.send_all(
                b"POST /_matrix/media/v3/upload HTTP/1.1\r\n"
                + f"Host: 127.0.0.1:{port}\r\n".encode()
                + f"Authorization: Bearer {user.access_token}\r\n".encode()
                + b"Content-Length: 1000000\r\n\r\n"
                + b"p" * 400_000
            )
            await _wait_for_temp_file(tmp_path)
        # The connection is closed with most of the body unsent: the upload is dropped.
        with trio.fail_after(20):
            while True:
                if not _temp_files(tmp_path):
                    break
                await trio.sleep(0.05)
        with server_db(hs.config) as db:
            assert db.rows("SELECT COUNT(*) FROM local_media") == [(0,)]
