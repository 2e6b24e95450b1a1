"""The real Redis the Redis replication tests use (issue 14).

``TRIOSERVER_TEST_REDIS`` names it (default ``redis://127.0.0.1:6379/0``); tests that need it
are skipped, saying so, when nothing answers there. Pub/sub channels are shared by every
database of a Redis server, so each test keeps to channels under its own `unique_prefix`.
"""

from __future__ import annotations

import socket
import uuid

import pytest

from trioserver.repl.redis_client import RedisConnection, open_redis
from trioserver.repl.resp import parse_redis_url
from trioserver.testing import TEST_REDIS_ENV, redis_url_for_tests

REDIS_URL = redis_url_for_tests()
REDIS = parse_redis_url(REDIS_URL)


def _redis_answers() -> bool:
    try:
        with socket.create_connection((REDIS.host, REDIS.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))
    except OSError:
        return False


requires_redis = pytest.mark.skipif(
    not _redis_answers(), reason=f"no Redis at {REDIS.display()} (set {TEST_REDIS_ENV})"
)


def unique_prefix() -> str:
    """A channel prefix no other test uses."""
    return f"trioserver-test-{uuid.uuid4().hex[:12]}"


async def admin() -> RedisConnection:
    """A plain connection to the test Redis (for CLIENT KILL, ACL, ...)."""
    return await open_redis(REDIS, client_name="trioserver-test-admin")


async def kill_clients(name_part: str) -> int:
    """Close every Redis connection whose client name contains `name_part`; how many."""
    async with await admin() as redis:
        listing = await redis.command("CLIENT", "LIST")
        ids = [
            fields["id"]
            for line in listing.decode().splitlines()
            for fields in (dict(f.split("=", 1) for f in line.split(" ") if "=" in f),)
            if name_part in fields.get("name", "")
        ]
        for client_id in ids:
            await redis.command("CLIENT", "KILL", "ID", client_id)
    return len(ids)
