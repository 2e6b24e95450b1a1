"""A real trioserver inside your test: `serve_in_process` and the `homeserver` pytest fixture.

    async with serve_in_process() as hs:
        user = await hs.register_user("alice")
        # talk to hs.base_url with any HTTP client, as user.access_token

The server runs in the caller's trio run on a free loopback port, with a temporary data dir
(a real SQLite file) that is deleted afterwards. Registration is open, rate limiting is off and
bcrypt is at its cheapest cost, which suits tests; pass overrides to change any of it.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs

import trio

from trioserver.config import Config, config_from_mapping
from trioserver.handlers.shared_secret import registration_mac
from trioserver.nursery import RunningServer, serve
from trioserver.setup_files import ensure_data_files

_TEST_DEFAULTS: dict[str, Any] = {
    "server_name": "localhost",
    "http": {"bind_addresses": ["127.0.0.1"], "port": 0},
    "registration": {"enabled": True, "bcrypt_rounds": 4, "shared_secret": "test-secret"},
    "ratelimit": {"enabled": False},
    "database": {"synchronous": "normal"},
}


@attrs.frozen
class RegisteredUser:
    """A user created through the server's own API."""

    user_id: str
    access_token: str
    device_id: str
    password: str


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _post_json(base_url: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
    # A blocking stdlib client, run in a thread: the helper must not depend on an async HTTP
    # library of the caller's choosing.
    host_port = base_url.split("://", 1)[1]
    conn = http.client.HTTPConnection(host_port, timeout=30)
    try:
        payload = None if body is None else json.dumps(body)
        method = "GET" if body is None else "POST"
        conn.request(method, path, body=payload, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data: dict[str, Any] = json.loads(response.read() or b"{}")
        if response.status != 200:
            raise RuntimeError(f"{method} {path} failed with {response.status}: {data}")
        return data
    finally:
        conn.close()


@attrs.frozen
class InProcessServer:
    """A running in-process server."""

    config: Config
    running: RunningServer

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:43123``."""
        return self.running.base_urls[0]

    @property
    def server_name(self) -> str:
        """The server name in user ids."""
        return self.config.server_name

    async def register_user(
        self, localpart: str, password: str = "password", *, admin: bool = False
    ) -> RegisteredUser:
        """Create a user (with the shared-secret admin API) and log them in."""
        secret = self.config.registration.shared_secret
        if secret is None:
            raise RuntimeError("register_user needs registration.shared_secret to be set")
        path = "/_synapse/admin/v1/register"
        nonce = (await trio.to_thread.run_sync(_post_json, self.base_url, path, None))["nonce"]
        body = {
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": registration_mac(secret, nonce, localpart, password, admin, None),
        }
        result = await trio.to_thread.run_sync(_post_json, self.base_url, path, body)
        return RegisteredUser(
            result["user_id"], result["access_token"], result["device_id"], password
        )


@asynccontextmanager
async def serve_in_process(
    data_dir: str | Path | None = None, **overrides: Any
) -> AsyncIterator[InProcessServer]:
    """Run a full trioserver in this trio run for the duration of the block.

    Args:
        data_dir: where to keep the data (default: a temporary dir removed afterwards).
            Reuse a directory to test what survives a restart.
        overrides: config keys, as in the TOML file (nested tables as dicts), e.g.
            ``enable_ephemeral_messages=True`` or ``registration={"enabled": False}``.

    Yields:
        An `InProcessServer` with `base_url`, `server_name` and `register_user`.
    """
    with tempfile.TemporaryDirectory(prefix="trioserver-test-") as tmp:
        directory = Path(data_dir) if data_dir is not None else Path(tmp)
        raw = _merge(_TEST_DEFAULTS, overrides)
        config = config_from_mapping(raw, base_dir=directory)
        await ensure_data_files(config)
        async with trio.open_nursery() as nursery:
            running: RunningServer = await nursery.start(serve, config)
            try:
                yield InProcessServer(config, running)
            finally:
                nursery.cancel_scope.cancel()
