"""`MainClient`: a worker's HTTP client to main's internal listener.

Theory of operation
-------------------
One `httpx.AsyncClient` per worker (it runs under trio) keeps a pool of keep-alive
connections to main, so a forwarded write costs no TCP handshake. Every request carries
``Authorization: Bearer <replication.secret>``. Anything that keeps an answer from arriving
(refused, reset, timed out, a malformed answer) raises `WriterUnavailable`, which the client
of the worker sees as 503 ``M_UNKNOWN``; an answer main gives (any status) is passed on as is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import httpx
import orjson

from trioserver.internal.errors import WriterUnavailable
from trioserver.internal.protocol import (
    CLIENT_ADDR_HEADER,
    CLIENT_PREFIX,
    FORWARDED_AUTHORIZATION,
    FORWARDED_HEADERS,
    POSITIONS_HEADER,
    PRESENCE_SYNC_PATH,
    STREAM_UPDATES_PREFIX,
)
from trioserver.repl.streams import UpdatePage

if TYPE_CHECKING:
    from collections.abc import Sequence

# Connecting to main on the same machine or LAN is quick; a slow connect means it is down,
# and the client should hear so long before `timeout_s`.
CONNECT_TIMEOUT_S = 5.0


@attrs.frozen
class ForwardedResponse:
    """Main's answer to a forwarded request."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes
    # Every replicated stream's token on main once the request was handled.
    positions: dict[str, int]


class MainClient:
    """The worker's client to main's internal HTTP listener (see the module docstring)."""

    def __init__(
        self, base_url: str, *, secret: str, instance_name: str, timeout_s: float = 120.0
    ) -> None:
        self._instance_name = instance_name
        self._client = httpx.AsyncClient(
            base_url=base_url,
            headers={"authorization": f"Bearer {secret}"},
            timeout=httpx.Timeout(timeout_s, connect=min(CONNECT_TIMEOUT_S, timeout_s)),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
            follow_redirects=False,
        )

    async def forward(
        self,
        method: str,
        path_and_query: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        client_addr: str,
    ) -> ForwardedResponse:
        """Send a client request to main and return its answer. Checkpoint: yes.

        Args:
            method: the client's method.
            path_and_query: the client's target, percent-encoding kept.
            headers: the client's headers; only `FORWARDED_HEADERS` are passed on.
            body: the client's body, read whole.
            client_addr: the client's IP address (empty when unknown).

        Raises:
            WriterUnavailable: main could not be reached or gave a malformed answer.
        """
        sent = [_forwarded_header(k, v) for k, v in headers if k.lower() in FORWARDED_HEADERS]
        if client_addr:
            sent.append((CLIENT_ADDR_HEADER, client_addr))
        response = await self._send(
            method, CLIENT_PREFIX + path_and_query, headers=sent, content=body
        )
        return ForwardedResponse(
            status=response.status_code,
            headers=tuple(response.headers.items()),
            body=response.content,
            positions=_positions(response.headers.get(POSITIONS_HEADER)),
        )

    async def stream_updates(self, stream: str, from_token: int, upto_token: int) -> UpdatePage:
        """Rows of one of main's streams in ``(from_token, upto_token]``. Checkpoint: yes.

        Raises:
            WriterUnavailable: main could not be reached or refused (e.g. an unknown stream).
        """
        params = {"from_token": str(from_token), "upto_token": str(upto_token)}
        response = await self._send("GET", STREAM_UPDATES_PREFIX + stream, params=params)
        body = _json_object(response, "stream_updates")
        try:
            updates = [(int(token), dict(row)) for token, row in body["updates"]]
            return UpdatePage(updates, int(body["upto_token"]), bool(body["limited"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise WriterUnavailable(f"malformed stream_updates answer ({exc!r})") from None

    async def presence_sync(
        self, user_id: str, state: str | None, syncing: bool
    ) -> dict[str, int]:
        """Tell main that `user_id` is (or stopped) syncing on this instance; main's stream
        positions after the change. Checkpoint: yes.

        Raises:
            WriterUnavailable: main could not be reached or refused.
        """
        payload = {
            "instance": self._instance_name,
            "user_id": user_id,
            "state": state,
            "syncing": syncing,
        }
        response = await self._send(
            "POST",
            PRESENCE_SYNC_PATH,
            content=orjson.dumps(payload),
            headers=[("content-type", "application/json")],
        )
        positions = _json_object(response, "presence_sync").get("positions", {})
        if not isinstance(positions, dict) or not all(
            isinstance(k, str) and type(v) is int for k, v in positions.items()
        ):
            raise WriterUnavailable("malformed presence_sync answer")
        return positions

    async def aclose(self) -> None:
        """Close the pooled connections. Checkpoint: yes."""
        await self._client.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        request = self._client.build_request(method, path, **kwargs)
        # httpx sends a bytes body through an async generator, which a cancelled request
        # (shutdown, a client gone) leaves unclosed; a plain iterator has nothing to leak.
        request.stream = _WholeBody(request.read())
        try:
            return await self._client.send(request)
        except httpx.TransportError as exc:
            # Connect errors, timeouts, resets, protocol errors: main did not answer.
            raise WriterUnavailable(f"{type(exc).__name__}: {exc}") from None


class _WholeBody(httpx.AsyncByteStream):
    """A request body sent as one chunk (its Content-Length is already set)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __aiter__(self) -> _OneChunk:
        return _OneChunk(self._body)


class _OneChunk:
    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    def __aiter__(self) -> _OneChunk:
        return self

    async def __anext__(self) -> bytes:
        if self._body is None:
            raise StopAsyncIteration
        body, self._body = self._body, None
        return body


def _forwarded_header(name: str, value: str) -> tuple[str, str]:
    # Authorization carries the internal secret; the client's travels under another name.
    if name.lower() == "authorization":
        return FORWARDED_AUTHORIZATION, value
    return name.lower(), value


def _positions(header: str | None) -> dict[str, int]:
    if header is None:
        raise WriterUnavailable("answer without stream positions")
    try:
        parsed = orjson.loads(header)
        positions = {str(k): int(v) for k, v in parsed.items()}
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        raise WriterUnavailable("malformed stream positions") from None
    return positions


def _json_object(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise WriterUnavailable(f"{what} answered {response.status_code}: {response.text[:200]}")
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise WriterUnavailable(f"{what} answered with something other than a JSON object")
    return body
