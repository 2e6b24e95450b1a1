"""The internal HTTP listener (``instance_map.<instance>``), on the plain-HTTP edge."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import trio

from trioserver.http_edge import open_listeners, serve_http

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
    listeners = await open_listeners([host], port)
    bound: int = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_http, app, listeners))
        task_status.started(bound)
