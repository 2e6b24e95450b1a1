"""A loopback TCP proxy that tests cut and heal, to play a network partition or a restart of
the service behind it (main's replication listener, PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs

import trio


@attrs.define
class CuttableProxy:
    """A loopback TCP proxy to `target_port` that can be cut and healed.

    While cut, every connection through it is closed and new ones are accepted and closed at
    once (as a network partition looks to a reconnecting client).
    """

    listener: trio.SocketListener
    target_port: int | None = None
    refusing: bool = False
    connections: set[trio.CancelScope] = attrs.field(factory=set)
    accepted: int = 0

    @property
    def port(self) -> int:
        port: int = self.listener.socket.getsockname()[1]
        return port

    def route_to(self, target_port: int) -> int:
        """Forward to `target_port`; the proxy's own port (for the workers' config)."""
        self.target_port = target_port
        return self.port

    def cut(self) -> None:
        self.refusing = True
        for scope in list(self.connections):
            scope.cancel()

    def heal(self) -> None:
        self.refusing = False

    async def serve(self, nursery: trio.Nursery) -> None:
        while True:
            stream = await self.listener.accept()
            if self.refusing or self.target_port is None:
                await stream.aclose()
                continue
            self.accepted += 1
            nursery.start_soon(self._forward, stream)

    async def _forward(self, downstream: trio.SocketStream) -> None:
        assert self.target_port is not None
        with trio.CancelScope() as scope:
            self.connections.add(scope)
            try:
                async with downstream:
                    upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
                    async with upstream, trio.open_nursery() as pipes:
                        pipes.start_soon(_copy, downstream, upstream, pipes.cancel_scope)
                        pipes.start_soon(_copy, upstream, downstream, pipes.cancel_scope)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass  # one side went away: the connection is over
            finally:
                self.connections.discard(scope)


async def _copy(
    source: trio.SocketStream, sink: trio.SocketStream, both: trio.CancelScope
) -> None:
    # Either side's end (end-of-file, a reset, a close) ends the connection both ways. The
    # error is swallowed here, in the pipe, because the pipes' nursery would wrap it in an
    # ExceptionGroup that `_forward`'s except clause does not match.
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass
    both.cancel()


@asynccontextmanager
async def running_proxy(target_port: int | None = None) -> AsyncIterator[CuttableProxy]:
    """A `CuttableProxy` serving for the duration of the block."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listeners[0], trio.open_nursery() as nursery:
        proxy = CuttableProxy(listeners[0], target_port)
        nursery.start_soon(proxy.serve, nursery)
        yield proxy
        nursery.cancel_scope.cancel()
