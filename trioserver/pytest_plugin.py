"""pytest plugin (registered through the ``pytest11`` entry point): the `homeserver` fixture.

For pytest-trio users::

    async def test_my_bot(homeserver):
        alice = await homeserver.register_user("alice")
        ...  # talk to homeserver.base_url

Each test gets a fresh server with its own temporary data dir.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from trioserver.testing import InProcessServer, serve_in_process

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


@pytest.fixture
async def homeserver() -> AsyncIterator[InProcessServer]:
    """A fresh trioserver running in the test's trio run (needs pytest-trio)."""
    async with serve_in_process() as server:
        yield server
