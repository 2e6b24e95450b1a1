"""A real push gateway for tests: an HTTP server on loopback that records what pushers POST.

    async with open_push_gateway() as gateway:
        ... set a pusher with data.url = gateway.url ...
        request = await gateway.next()      # the JSON body of the next POST
        gateway.script = [FAIL, HANG, ok({"rejected": ["key"]})]   # answers, in order

Each request takes the next answer of `script`; once it is empty, `{"rejected": []}` with 200.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

PUSH_PATH = "/_matrix/push/v1/notify"


@attrs.frozen
class Answer:
    """How the gateway answers one request: a status and JSON body, or never (`hang`)."""

    status: int = 200
    body: Any = attrs.field(factory=lambda: {"rejected": []})
    hang: bool = False


def ok(body: Any) -> Answer:
    """200 with this JSON body."""
    return Answer(200, body)


FAIL = Answer(500, {"errcode": "M_UNKNOWN", "error": "gateway broke"})
HANG = Answer(hang=True)


@attrs.frozen
class Received:
    """One request the gateway got."""

    path: str
    body: dict[str, Any]
    at: float  # trio.current_time() when it arrived

    @property
    def notification(self) -> dict[str, Any]:
        """The ``notification`` object of the body."""
        notification: dict[str, Any] = self.body["notification"]
        return notification


@attrs.define(eq=False)
class PushGateway:
    """The running gateway; see the module docstring."""

    port: int = 0
    script: list[Answer] = attrs.field(factory=list)
    # When set, answers every request instead of `script` (given the request's body).
    answer_for: Callable[[dict[str, Any]], Answer] | None = None
    received: list[Received] = attrs.field(factory=list)
    _send: trio.MemorySendChannel[Received] | None = None
    _receive: trio.MemoryReceiveChannel[Received] | None = None

    def __attrs_post_init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[Received](1000)

    @property
    def url(self) -> str:
        """The pusher ``data.url`` that reaches this gateway."""
        return f"http://127.0.0.1:{self.port}{PUSH_PATH}"

    async def next(self, within: float = 15.0) -> Received:
        """The next request (waiting up to `within` seconds for it)."""
        assert self._receive is not None
        with trio.fail_after(within):
            return await self._receive.receive()

    def drain(self) -> None:
        """Forget the requests not yet taken with `next`."""
        assert self._receive is not None
        while True:
            try:
                self._receive.receive_nowait()
            except trio.WouldBlock:
                return

    async def nothing_within(self, seconds: float) -> bool:
        """Whether no request arrives within `seconds`."""
        assert self._receive is not None
        with trio.move_on_after(seconds):
            await self._receive.receive()
            return False
        return True

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI application."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        received = Received(scope["path"], json.loads(b"".join(chunks)), trio.current_time())
        self.received.append(received)
        assert self._send is not None
        self._send.send_nowait(received)
        if self.answer_for is not None:
            answer = self.answer_for(received.body)
        else:
            answer = self.script.pop(0) if self.script else Answer()
        if answer.hang:
            await trio.sleep_forever()
        payload = json.dumps(answer.body).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def open_push_gateway() -> AsyncIterator[PushGateway]:
    """Run a `PushGateway` on a free loopback port for the duration of the block."""
    gateway = PushGateway()
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    async with trio.open_nursery() as nursery:

        async def serve(*, task_status: trio.TaskStatus[list[str]]) -> None:
            await hypercorn_serve(
                gateway.app,
                config,
                shutdown_trigger=trio.sleep_forever,
                task_status=task_status,
                mode="asgi",
            )

        binds: list[str] = await nursery.start(serve)
        gateway.port = int(binds[0].rsplit(":", 1)[1])
        try:
            yield gateway
        finally:
            nursery.cancel_scope.cancel()
