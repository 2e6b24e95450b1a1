"""The internal HTTP listener (``instance_map.<instance>``), served with hypercorn."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework

# As on the client listener: longer than the worker's pool keeps a connection idle, so a
# pooled connection is not closed under a request that reuses it.
KEEP_ALIVE_TIMEOUT_S = 75.0


async def run_internal_http(
    app: ASGIFramework,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on ``host:port`` until cancelled.

    Args:
        app: the internal app (`create_internal_app`), or any ASGI app.
        host: the address to bind (``instance_map.<instance>.host``).
        port: the port, 0 for any free one.

    Calls ``task_status.started(bound_port)`` once listening. Checkpoint: yes.

    Raises:
        OSError: the address cannot be bound.
    """
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.include_server_header = False
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_S

    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_serve(app, config, task_status=task_status, mode="asgi")

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve)
        bound = urlsplit(binds[0]).port
        assert bound is not None
        task_status.started(bound)
