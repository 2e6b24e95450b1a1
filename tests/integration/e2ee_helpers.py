"""Helpers for the send-to-device, keys and user-directory tests.

`served_env` runs the real HTTP API on the components of a `writer_env`, so a test can make
requests over real HTTP and also call the query API that /sync uses (``env.deps``).
Key helpers build real ed25519-signed device and cross-signing keys with signedjson.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
from signedjson.key import generate_signing_key, get_verify_key
from signedjson.sign import sign_json
from signedjson.types import SigningKey
from unpaddedbase64 import encode_base64

import trio

from trioserver.api.app import create_app
from trioserver.api.deps import ApiDeps
from trioserver.nursery import run_http_api

from tests.integration.client import Client, assert_ok
from tests.integration.writer_env import WriterEnv, trio_wall_clock, writer_env


@attrs.define
class ServedEnv:
    """A writer_env with the HTTP API listening on loopback."""

    env: WriterEnv
    http: httpx.AsyncClient

    @property
    def deps(self) -> ApiDeps:
        return self.env.components.deps

    async def client(self, localpart: str, device_id: str | None = None) -> Client:
        """Log `localpart` in (registering them first if needed) on a new or given device."""
        if await self.deps.accounts.is_available(localpart):
            await self.deps.accounts.register(localpart, "pw", login=False)
        extra = {} if device_id is None else {"device_id": device_id}
        return await Client.login(self.http, localpart, "pw", **extra)


@asynccontextmanager
async def served_env(
    tmp_path: Path, *, clock: Callable[[], float] = trio_wall_clock, **overrides: Any
) -> AsyncIterator[ServedEnv]:
    """Components on a SQLite file in `tmp_path` with the client API served over HTTP."""
    config: dict[str, Any] = {
        "http": {"port": 0, "bind_addresses": ["127.0.0.1"]},
        "ratelimit": {"enabled": False},
        **overrides,
    }
    async with writer_env(tmp_path, clock=clock, **config) as env, trio.open_nursery() as nursery:
        shutdown = trio.Event()
        running = await nursery.start(
            run_http_api, create_app(env.components.deps), env.config.http, shutdown.wait
        )
        async with httpx.AsyncClient(base_url=running.base_urls[0], timeout=30) as http:
            yield ServedEnv(env, http)
        nursery.cancel_scope.cancel()


def public_key(key: SigningKey) -> str:
    """The unpadded base64 public part of an ed25519 signing key."""
    return encode_base64(get_verify_key(key).encode())


@attrs.define
class Device:
    """A client device with a real ed25519 identity key."""

    client: Client
    signing_key: SigningKey = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        # The key version is the device id, so signatures are named ed25519:<device id>.
        self.signing_key = generate_signing_key(self.client.device_id)

    def device_keys(self) -> dict[str, Any]:
        """Self-signed device keys for /keys/upload."""
        device_id = self.client.device_id
        keys = {
            "user_id": self.client.user_id,
            "device_id": device_id,
            "algorithms": ["m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"],
            "keys": {
                f"curve25519:{device_id}": "curve" + device_id,
                f"ed25519:{device_id}": public_key(self.signing_key),
            },
        }
        return sign_json(keys, self.client.user_id, self.signing_key)

    def one_time_key(self, key: str, *, fallback: bool = False) -> dict[str, Any]:
        """A signed curve25519 key object."""
        body: dict[str, Any] = {"key": key}
        if fallback:
            body["fallback"] = True
        return sign_json(body, self.client.user_id, self.signing_key)

    async def upload(self, **body: Any) -> dict[str, Any]:
        """POST /keys/upload; the response body."""
        return assert_ok(await self.client.post("/keys/upload", body))


@attrs.define
class CrossSigning:
    """A user's three cross-signing keys."""

    user_id: str
    master: SigningKey = attrs.field(factory=lambda: cross_signing_key())
    self_signing: SigningKey = attrs.field(factory=lambda: cross_signing_key())
    user_signing: SigningKey = attrs.field(factory=lambda: cross_signing_key())

    def key_object(self, usage: str, *, signed_by_master: bool = True) -> dict[str, Any]:
        """The public key object for `usage` (``master``, ``self_signing``, ``user_signing``)."""
        key = getattr(self, usage)
        body = {
            "user_id": self.user_id,
            "usage": [usage],
            "keys": {f"ed25519:{public_key(key)}": public_key(key)},
        }
        if usage != "master" and signed_by_master:
            body = sign_json(body, self.user_id, self.master)
        return body

    def upload_body(self) -> dict[str, Any]:
        """A /keys/device_signing/upload body with all three keys."""
        return {
            "master_key": self.key_object("master"),
            "self_signing_key": self.key_object("self_signing"),
            "user_signing_key": self.key_object("user_signing"),
        }


def cross_signing_key() -> SigningKey:
    """A new ed25519 key whose version is its public key (key id ``ed25519:<public key>``)."""
    key = generate_signing_key("new")
    key.version = public_key(key)
    return key
