"""The internal HTTP listener (``instance_map.<instance>``), served with hypercorn."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from hypercorn.trio import serve as hypercorn_serve

from trioserver.listeners import host_port, hypercorn_config

if TYPE_CHECKING:
    from hypercorn.typing import ASGIFramework


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
    config = hypercorn_config([host_port(host, port)])

    async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
        await hypercorn_serve(app, config, task_status=task_status, mode="asgi")

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(serve)
        bound = urlsplit(binds[0]).port
        assert bound is not None
        task_status.started(bound)
