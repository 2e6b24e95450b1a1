"""Fixtures for integration tests: a real server over real HTTP on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from trio.testing import MockClock

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client


@pytest.fixture
def db_clock() -> MockClock:
    """Virtual time that jumps only once the run loop has been idle for 50 ms of real time.

    trio's plain ``autojump_clock`` jumps as soon as every task is blocked, which includes
    waiting for a database thread: virtual time would then race ahead of work in progress.
    """
    return MockClock(autojump_threshold=0.05)


@pytest.fixture
async def hs() -> AsyncIterator[InProcessServer]:
    async with serve_in_process() as server:
        yield server


@pytest.fixture
async def http(hs: InProcessServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hs.base_url, timeout=30) as client:
        yield client


@pytest.fixture
async def alice(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("alice", "alicepw")
    return Client(http, user.user_id, user.access_token, user.device_id)


@pytest.fixture
async def bob(hs: InProcessServer, http: httpx.AsyncClient) -> Client:
    user = await hs.register_user("bob", "bobpw")
    return Client(http, user.user_id, user.access_token, user.device_id)
