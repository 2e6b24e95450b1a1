"""The `trioserver` command, run as real processes: generate-config, run, register-user."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from signedjson.key import read_signing_keys

import trio
import trio.testing

from tests.integration.client import V3, assert_error, assert_ok, login

COMMAND = [sys.executable, "-m", "trioserver"]
STARTUP_TIMEOUT_S = 20
EXIT_TIMEOUT_S = 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run a `trioserver` command to completion (bounded), capturing its output."""
    with trio.fail_after(60):
        return await trio.run_process(
            [*COMMAND, *map(str, args)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )


@attrs.define
class ServerProcess:
    """A `trioserver run` child process."""

    process: trio.Process
    base_url: str
    port: int
    stdout_path: Path
    stderr_path: Path

    def output(self) -> str:
        return self.stdout_path.read_text() + self.stderr_path.read_text()

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send `signum` and wait (bounded) for the exit status."""
        self.process.send_signal(signum)
        with trio.fail_after(EXIT_TIMEOUT_S):
            return await self.process.wait()

    async def wait_for_output(self, text: str) -> None:
        """Poll the process's output until `text` appears (bounded)."""
        # The output is a file the child writes; there is nothing to wait on but the file.
        with trio.fail_after(EXIT_TIMEOUT_S):
            while True:
                if text in self.output():
                    return
                await trio.sleep(0.02)


async def launch_server(
    args: Sequence[str | Path],
    *,
    cwd: Path,
    port: int,
    label: str,
    env: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start `trioserver run *args` and wait until /versions answers on `port`.

    The process is killed if it exits or does not answer in time.
    """
    stdout_path = cwd / f"{label}.out"
    stderr_path = cwd / f"{label}.err"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            [*COMMAND, "run", *map(str, args)],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            cwd=cwd,
            env=None if env is None else dict(env),
        )
    base_url = f"http://127.0.0.1:{port}"
    server = ServerProcess(process, base_url, port, stdout_path, stderr_path)
    try:
        async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
            with trio.fail_after(STARTUP_TIMEOUT_S):
                while True:
                    if process.poll() is not None:
                        raise AssertionError(f"{list(args)} exited early:\n{server.output()}")
                    try:
                        if (await http.get("/_matrix/client/versions")).status_code == 200:
                            return server
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.05)
    except BaseException:
        process.kill()
        raise


@asynccontextmanager
async def server_process(*args: str | Path, cwd: Path) -> AsyncIterator[ServerProcess]:
    """Start `trioserver run --port <free port> *args` and wait until /versions answers.

    The process is killed on the way out if it is still running.
    """
    port = free_port()
    server = await launch_server(
        ["--port", str(port), *args], cwd=cwd, port=port, label=f"run-{port}"
    )
    process = server.process
    try:
        yield server
    finally:
        if process.poll() is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


def shared_secret(data_dir: Path) -> str:
    config = tomllib.loads((data_dir / "trioserver.toml").read_text())
    secret: str = config["registration"]["shared_secret"]
    return secret


async def admin_register_body(
    http: httpx.AsyncClient, secret: str, username: str, password: str
) -> dict[str, Any]:
    """A signed shared-secret registration body with a fresh nonce."""
    nonce = assert_ok(await http.get("/_synapse/admin/v1/register"))["nonce"]
    mac = hmac.new(secret.encode(), digestmod=hashlib.sha1)
    mac.update(f"{nonce}\0{username}\0{password}\0notadmin".encode())
    return {"nonce": nonce, "username": username, "password": password, "mac": mac.hexdigest()}


def use_cheap_bcrypt(data_dir: Path) -> None:
    """Lower bcrypt's cost in a generated config, to keep tests fast."""
    path = data_dir / "trioserver.toml"
    text = path.read_text()
    assert "bcrypt_rounds = 12" in text
    path.write_text(text.replace("bcrypt_rounds = 12", "bcrypt_rounds = 4"))


KEY_LINE = re.compile(r"ed25519 a_[A-Za-z0-9_]{4} [A-Za-z0-9+/]{43}")


async def test_generate_config(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    result = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "example.org", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert b"example.org" in result.stdout

    config = tomllib.loads((data_dir / "trioserver.toml").read_text())
    assert config["server_name"] == "example.org"
    assert isinstance(config["registration"]["shared_secret"], str)
    assert len(config["registration"]["shared_secret"]) >= 32
    assert config["registration"]["enabled"] is False

    key_text = (data_dir / "signing.key").read_text()
    assert KEY_LINE.fullmatch(key_text.strip()), key_text
    with (data_dir / "signing.key").open() as stream:
        keys = read_signing_keys(stream)
    assert len(keys) == 1
    assert keys[0].alg == "ed25519"
    assert keys[0].version == key_text.split()[1]
    assert os.stat(data_dir / "signing.key").st_mode & 0o077 == 0
    assert (data_dir / "homeserver.db").stat().st_size > 0

    # Running it again changes nothing.
    config_text = (data_dir / "trioserver.toml").read_text()
    again = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "example.org", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    assert (data_dir / "signing.key").read_text() == key_text
    assert (data_dir / "trioserver.toml").read_text() == config_text


async def test_generate_config_refuses_another_server_name(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "example.org", cwd=tmp_path
    )
    assert first.returncode == 0, first.stderr
    second = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "other.org", cwd=tmp_path
    )
    assert second.returncode != 0
    assert b"other.org" in second.stderr
    assert tomllib.loads((data_dir / "trioserver.toml").read_text())["server_name"] == (
        "example.org"
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_run_creates_everything_and_stops_on_signal(tmp_path: Path, signum: int) -> None:
    data_dir = tmp_path / "data"
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        for name in ("trioserver.toml", "signing.key", "homeserver.db"):
            assert (data_dir / name).exists(), name
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            body = assert_ok(await http.get("/_matrix/client/versions"))
            assert "v1.1" in body["versions"]
            # The generated config keeps registration closed.
            response = await http.post(f"{V3}/register", json={"username": "x"})
            assert_error(response, 403, "M_FORBIDDEN")
        assert await server.stop(signum) == 0, server.output()
    assert server.base_url in server.output()
    config = tomllib.loads((data_dir / "trioserver.toml").read_text())
    assert config["server_name"] == "localhost"
    # --port overrides the config for this run only.
    assert config["http"]["port"] == 8008


async def test_second_start_reuses_config_key_and_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        use_cheap_bcrypt(data_dir)  # read only at the next start
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            body = await admin_register_body(http, shared_secret(data_dir), "quinn", "quinnpw")
            user = assert_ok(await http.post("/_synapse/admin/v1/register", json=body))
        assert await server.stop() == 0, server.output()
    key_text = (data_dir / "signing.key").read_text()
    config_text = (data_dir / "trioserver.toml").read_text()

    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.get(
                f"{V3}/account/whoami",
                headers={"Authorization": f"Bearer {user['access_token']}"},
            )
            assert assert_ok(response)["user_id"] == "@quinn:localhost"
            assert_ok(await login(http, "quinn", "quinnpw"))
        assert await server.stop() == 0, server.output()
    assert "Wrote a new config file" not in server.output()
    assert (data_dir / "signing.key").read_text() == key_text
    assert (data_dir / "trioserver.toml").read_text() == config_text


async def read_http_response(stream: trio.SocketStream) -> tuple[int, dict[str, Any]]:
    """Read one HTTP/1.1 response with a Content-Length body; return status and JSON."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some()
        assert chunk, f"connection closed early: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")[1:]
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = await stream.receive_some()
        assert chunk, f"connection closed early: {body!r}"
        body += chunk
    return status, json.loads(body)


async def test_request_in_flight_during_sigterm_completes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            body = await admin_register_body(http, shared_secret(data_dir), "rita", "ritapw")
        payload = json.dumps(body).encode()
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            # Send the headers only; "100 Continue" proves the server has started the request.
            await stream.send_all(
                b"POST /_synapse/admin/v1/register HTTP/1.1\r\n"
                + f"Host: 127.0.0.1:{server.port}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(payload)}\r\n".encode()
                + b"Expect: 100-continue\r\n\r\n"
            )
            with trio.fail_after(10):
                interim = await stream.receive_some()
            assert interim.startswith(b"HTTP/1.1 100"), interim
            server.process.send_signal(signal.SIGTERM)
            await server.wait_for_output("received SIGTERM")
            # The server is shutting down; the request it already started still completes.
            await stream.send_all(payload)
            with trio.fail_after(EXIT_TIMEOUT_S):
                status, result = await read_http_response(stream)
        assert status == 200, result
        assert result["user_id"] == "@rita:localhost"
        with trio.fail_after(EXIT_TIMEOUT_S):
            assert await server.process.wait() == 0, server.output()

    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.get(
                f"{V3}/account/whoami",
                headers={"Authorization": f"Bearer {result['access_token']}"},
            )
            assert assert_ok(response)["user_id"] == "@rita:localhost"
            assert_ok(await login(http, "rita", "ritapw"))
        assert await server.stop() == 0, server.output()


async def test_requests_racing_sigterm_are_done_or_never_acknowledged(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    outcomes: dict[str, httpx.Response | None] = {}
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        secret = shared_secret(data_dir)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            bodies = [await admin_register_body(http, secret, f"racer{n}", "pw") for n in range(4)]

            async def send(body: dict[str, Any]) -> None:
                try:
                    response = await http.post("/_synapse/admin/v1/register", json=body)
                except httpx.TransportError:
                    response = None
                outcomes[body["username"]] = response

            async with trio.open_nursery() as nursery:
                for body in bodies:
                    nursery.start_soon(send, body)
                # Let the requests start, then stop the server while they run.
                await trio.testing.wait_all_tasks_blocked()
                server.process.send_signal(signal.SIGTERM)
        with trio.fail_after(EXIT_TIMEOUT_S):
            assert await server.process.wait() == 0, server.output()

    acknowledged = [name for name, r in outcomes.items() if r is not None]
    for name in acknowledged:
        response = outcomes[name]
        assert response is not None
        assert response.status_code == 200, response.text
    async with server_process("--data-dir", data_dir, cwd=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            for name in acknowledged:
                assert_ok(await login(http, name, "pw"))
        assert await server.stop() == 0, server.output()


async def test_register_user_command(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    generated = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "example.org", cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    use_cheap_bcrypt(data_dir)
    config = data_dir / "trioserver.toml"

    result = await run_cli(
        "register-user", "--config", config, "--user", "carol", "--password", "pw", "--admin",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert b"@carol:example.org" in result.stdout

    taken = await run_cli(
        "register-user", "--config", config, "--user", "Carol", "--password", "x", cwd=tmp_path
    )
    assert taken.returncode != 0
    assert b"taken" in taken.stderr
    invalid = await run_cli(
        "register-user", "--config", config, "--user", "bad name", "--password", "x",
        cwd=tmp_path,
    )  # fmt: skip
    assert invalid.returncode != 0
    assert b"User ID" in invalid.stderr

    async with server_process("--config", config, cwd=tmp_path) as server:
        # register-user also works while the server is running.
        while_running = await run_cli(
            "register-user", "--config", config, "--user", "dan", "--password", "danpw",
            cwd=tmp_path,
        )  # fmt: skip
        assert while_running.returncode == 0, while_running.stderr
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            body = assert_ok(await login(http, "carol", "pw"))
            assert body["user_id"] == "@carol:example.org"
            assert_error(await login(http, "carol", "x"), 403, "M_FORBIDDEN")
            assert_ok(await login(http, "@dan:example.org", "danpw"))
        assert await server.stop() == 0, server.output()


@pytest.mark.parametrize(
    ("replace", "by", "named"),
    [
        ("port = 8008", 'port = "8008"', "config.http.port"),
        ("port = 8008", "port = true", "config.http.port"),
        ("port = 8008", "port = 8008\nprot = 1", "prot"),
        ("enabled = false", 'enabled = "no"', "config.registration.enabled"),
        ('server_name = "localhost"', 'server_name = "localhost"\nsever_name = "x"', "sever_name"),
        ("[rooms]", "[roomz]", "roomz"),
    ],
)
async def test_bad_config_stops_run(tmp_path: Path, replace: str, by: str, named: str) -> None:
    data_dir = tmp_path / "data"
    generated = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "localhost", cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    path = data_dir / "trioserver.toml"
    text = path.read_text()
    assert replace in text
    path.write_text(text.replace(replace, by, 1))
    result = await run_cli("run", "--data-dir", data_dir, "--port", str(free_port()), cwd=tmp_path)
    assert result.returncode != 0
    assert named.encode() in result.stderr, result.stderr


async def test_missing_config_file_stops_run(tmp_path: Path) -> None:
    result = await run_cli("run", "--config", tmp_path / "nope.toml", cwd=tmp_path)
    assert result.returncode != 0
    assert b"nope.toml" in result.stderr


async def test_server_name_cannot_change(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    generated = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "example.org", cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    port = str(free_port())

    flag = await run_cli(
        "run", "--data-dir", data_dir, "--server-name", "other.org", "--port", port, cwd=tmp_path
    )
    assert flag.returncode != 0
    assert b"other.org" in flag.stderr

    path = data_dir / "trioserver.toml"
    path.write_text(path.read_text().replace('"example.org"', '"other.org"'))
    edited = await run_cli("run", "--data-dir", data_dir, "--port", port, cwd=tmp_path)
    assert edited.returncode != 0
    assert b"example.org" in edited.stderr
    assert b"other.org" in edited.stderr
