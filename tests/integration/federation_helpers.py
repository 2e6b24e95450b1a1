"""Servers that federate with each other over real TLS on loopback (issue 15).

Each server is a full in-process trioserver named ``localhost:PORT``, its Server-Server API on
a TLS listener of its own at PORT with a certificate from a test CA (`trustme`) that every
server trusts (``federation.ca_file``); the client API stays plain HTTP for the test's
clients. Loopback is allowed as a federation destination (``ip_range_allowlist``), as it
never is by default.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import httpx
import trustme

import trio

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.frozen
class TlsFiles:
    """A certificate authority and one server certificate for localhost, as files."""

    ca_path: str
    cert_path: str
    key_path: str


def make_test_ca(directory: Path) -> TlsFiles:
    """Write a fresh test CA and a localhost/127.0.0.1 certificate into `directory`."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = TlsFiles(
        str(directory / "ca.pem"), str(directory / "cert.pem"), str(directory / "key.pem")
    )
    ca.cert_pem.write_to_path(paths.ca_path)
    cert.private_key_pem.write_to_path(paths.key_path)
    with open(paths.cert_path, "wb") as out:
        for blob in cert.cert_chain_pems:
            out.write(blob.bytes())
    return paths


def federation_overrides(tls: TlsFiles, port: int) -> dict[str, Any]:
    """Config keys of a server named ``localhost:port`` federating over TLS at `port`."""
    return {
        "server_name": f"localhost:{port}",
        "federation": {
            "port": port,
            "bind_addresses": ["127.0.0.1"],
            "tls_certificate_path": tls.cert_path,
            "tls_private_key_path": tls.key_path,
            "ca_file": tls.ca_path,
            "ip_range_allowlist": ["127.0.0.0/8"],
            "request_timeout": 10.0,
        },
    }


@attrs.frozen
class FederatedServer:
    """One server of a federation test, with an HTTP client for its client API."""

    hs: InProcessServer
    http: httpx.AsyncClient

    @property
    def name(self) -> str:
        """The server name (``localhost:PORT``)."""
        return self.hs.server_name

    async def user(self, localpart: str) -> Client:
        """Register a user and return a client logged in as them."""
        user = await self.hs.register_user(localpart, f"{localpart}-pw")
        return Client(self.http, user.user_id, user.access_token, user.device_id)


def _merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra`'s keys, tables merged one level deep (``federation={...}``)."""
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


@asynccontextmanager
async def federated_server(
    tls: TlsFiles,
    port: int,
    data_dir: Path | None = None,
    *,
    via_worker: bool = False,
    **overrides: Any,
) -> AsyncIterator[FederatedServer]:
    """One server named ``localhost:port`` (the same `data_dir` and `port` restart it).

    A single process whatever TRIOSERVER_TEST_VIA_WORKER says (federation is main's, as the
    events writer); with `via_worker`, main and a worker answering the test's clients.
    """
    async with (
        serve_in_process(
            data_dir,
            via_worker=via_worker,
            events_on_worker=False,
            **_merged(federation_overrides(tls, port), overrides),
        ) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        yield FederatedServer(hs, http)


@asynccontextmanager
async def fresh_tls() -> AsyncIterator[TlsFiles]:
    """A fresh test CA and certificate, in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="trioserver-fed-") as tmp:
        yield make_test_ca(Path(tmp))


@asynccontextmanager
async def federating_servers(
    count: int = 2, **overrides: Any
) -> AsyncIterator[list[FederatedServer]]:
    """`count` servers that federate with each other, for the duration of the block."""
    async with fresh_tls() as tls, AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(federated_server(tls, free_port(), **overrides))
            for _ in range(count)
        ]
        yield servers


async def wait_for(
    predicate: Callable[[], Awaitable[Any]], what: str, seconds: float = 30.0
) -> Any:
    """Poll `predicate` until it is true (its value), failing after `seconds`."""
    with trio.move_on_after(seconds):
        while True:
            result = await predicate()
            if result:
                return result
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def joined_members(client: Client, room_id: str) -> set[str]:
    """The room's joined members as `client`'s server sees them (empty when refused)."""
    response = await client.get(f"/rooms/{quote(room_id)}/joined_members")
    if response.status_code != 200:
        return set()
    return set(response.json()["joined"])


async def texts(client: Client, room_id: str, limit: int = 100) -> list[str]:
    """The bodies of the room's latest messages, oldest first, as `client` sees them."""
    params = {"dir": "b", "limit": limit}
    response = await client.get(f"/rooms/{quote(room_id)}/messages", params=params)
    if response.status_code != 200:
        return []
    return [
        e["content"].get("body")
        for e in reversed(response.json()["chunk"])
        if e["type"] == "m.room.message"
    ]
