"""`MainClient`: a worker's HTTP client to main's internal listener.

Theory of operation
-------------------
One `InternalTransport` per worker (plain HTTP/1.1 on httptools, `transport.py`) keeps a pool of
keep-alive connections to main, so a forwarded write costs no TCP handshake. Every request carries
``Authorization: Bearer <replication.secret>``. Anything that keeps an answer from arriving
(refused, reset, timed out, a malformed answer) raises `WriterUnavailable`, which the client
of the worker sees as 503 ``M_UNKNOWN``; an answer main gives (any status) is passed on as is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit

import attrs
import orjson

from trioserver.errors import MatrixError
from trioserver.internal.errors import WriterUnavailable
from trioserver.internal.protocol import (
    BACKFILL_PATH,
    CLIENT_ADDR_HEADER,
    CLIENT_PREFIX,
    FORWARDED_AUTHORIZATION,
    FORWARDED_HEADERS,
    INVALIDATE_PATH,
    POSITIONS_HEADER,
    PRESENCE_SYNC_PATH,
    STREAM_UPDATES_PREFIX,
    SUBMIT_EVENTS_PATH,
)
from trioserver.internal.transport import InternalTransport, RawResponse, TransportError
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
        self._authorization = ("authorization", f"Bearer {secret}")
        url = urlsplit(base_url)
        if url.hostname is None or url.port is None:
            raise ValueError(f"main's internal address needs a host and a port: {base_url}")
        self._transport = InternalTransport(
            url.hostname,
            url.port,
            timeout_s=timeout_s,
            connect_timeout_s=min(CONNECT_TIMEOUT_S, timeout_s),
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
        response = await self._send(method, CLIENT_PREFIX + path_and_query, sent, body)
        return ForwardedResponse(
            status=response.status,
            headers=response.headers,
            body=response.body,
            positions=_positions_header(response.header(POSITIONS_HEADER)),
        )

    async def stream_updates(self, stream: str, from_token: int, upto_token: int) -> UpdatePage:
        """Rows of one of main's streams in ``(from_token, upto_token]``. Checkpoint: yes.

        Raises:
            WriterUnavailable: main could not be reached or refused (e.g. an unknown stream).
        """
        query = urlencode({"from_token": from_token, "upto_token": upto_token})
        response = await self._send("GET", f"{STREAM_UPDATES_PREFIX}{stream}?{query}", [], b"")
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
            [("content-type", "application/json")],
            orjson.dumps(payload),
        )
        return _positions(_json_object(response, "presence_sync").get("positions", {}))

    async def submit_events(self, payload: bytes) -> tuple[list[str], int]:
        """Have the events writer persist a submission (`remote_events.submission_to_json`);
        the written event ids and the writer's events position after them. Checkpoint: yes.

        Raises:
            MatrixError: the writer refused the events (its errcode and status).
            WriterUnavailable: the writer could not be reached or gave a malformed answer.
        """
        response = await self._send(
            "POST", SUBMIT_EVENTS_PATH, [("content-type", "application/json")], payload
        )
        if 400 <= response.status < 500:
            raise _matrix_error(response)
        body = _json_object(response, "submit_events")
        event_ids, position = body.get("event_ids"), body.get("position")
        if not (
            isinstance(event_ids, list)
            and all(isinstance(e, str) for e in event_ids)
            and type(position) is int
        ):
            raise WriterUnavailable("malformed submit_events answer")
        return event_ids, position

    async def invalidate(self, cache: str, keys: Sequence[str]) -> None:
        """Have main write a caches-stream invalidation. Checkpoint: yes.

        Raises:
            WriterUnavailable: main could not be reached or refused.
        """
        payload = orjson.dumps({"cache": cache, "keys": list(keys)})
        response = await self._send(
            "POST", INVALIDATE_PATH, [("content-type", "application/json")], payload
        )
        _json_object(response, "invalidate")

    async def backfill(self, room_id: str, limit: int) -> list[str]:
        """Have main fetch a room's older history from other servers; the ids of the events
        it stored (in the shared database once this returns). Checkpoint: yes.

        Raises:
            WriterUnavailable: main could not be reached or gave a malformed answer.
        """
        payload = orjson.dumps({"room_id": room_id, "limit": limit})
        response = await self._send(
            "POST", BACKFILL_PATH, [("content-type", "application/json")], payload
        )
        event_ids = _json_object(response, "backfill").get("event_ids")
        if not isinstance(event_ids, list) or not all(isinstance(e, str) for e in event_ids):
            raise WriterUnavailable("malformed backfill answer")
        return event_ids

    async def aclose(self) -> None:
        """Close the pooled connections. Checkpoint: yes."""
        await self._transport.aclose()

    async def _send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> RawResponse:
        try:
            return await self._transport.request(
                method, target, [self._authorization, *headers], body
            )
        except TransportError as exc:
            # Refused, reset, timed out, not HTTP: main did not answer.
            raise WriterUnavailable(str(exc)) from None


def _forwarded_header(name: str, value: str) -> tuple[str, str]:
    # Authorization carries the internal secret; the client's travels under another name.
    if name.lower() == "authorization":
        return FORWARDED_AUTHORIZATION, value
    return name.lower(), value


def _positions_header(header: str | None) -> dict[str, int]:
    if header is None:
        raise WriterUnavailable("answer without stream positions")
    try:
        parsed = orjson.loads(header)
    except orjson.JSONDecodeError:
        raise WriterUnavailable("malformed stream positions") from None
    return _positions(parsed)


def _positions(parsed: object) -> dict[str, int]:
    """Stream name -> token, as main sends them (in a header or an answer's body)."""
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in parsed.items()
    ):
        raise WriterUnavailable("malformed stream positions")
    return parsed


def _matrix_error(response: RawResponse) -> MatrixError:
    # The writer's own refusal, passed on as it is (a client error, not an outage).
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("errcode"), str):
        return MatrixError(
            "M_UNKNOWN", "The events writer refused the request", status=response.status
        )
    extra = {k: v for k, v in body.items() if k not in ("errcode", "error")}
    return MatrixError(
        body["errcode"], str(body.get("error", "")), status=response.status, extra=extra or None
    )


def _json_object(response: RawResponse, what: str) -> dict[str, Any]:
    if response.status != 200:
        text = response.body[:200].decode("utf-8", "replace")
        raise WriterUnavailable(f"{what} answered {response.status}: {text}")
    try:
        body = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        body = None
    if not isinstance(body, dict):
        raise WriterUnavailable(f"{what} answered with something other than a JSON object")
    return body
