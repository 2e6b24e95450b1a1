"""Main's internal HTTP app: what workers ask of main (design of issue 13).

Theory of operation
-------------------
Served only on main's internal listener (``instance_map.main``), never on the client
listener. Every request must carry ``Authorization: Bearer <replication.secret>`` (401 without
a bearer token, 403 with a wrong one; compared in constant time). Three endpoints:

- ``CLIENT_PREFIX + <path>`` (any method): a client request a worker forwarded. It is handed
  to main's client app in-process, with the scope the client would have produced: the
  stripped path, the query, the forwarded headers (the client's ``Authorization`` restored
  from `FORWARDED_AUTHORIZATION`) and the client's address from `CLIENT_ADDR_HEADER` (the one
  place that header is trusted). The answer is held until complete, then sent with
  `POSITIONS_HEADER`: read after the handler returned, those positions cover every row the
  request wrote, so a worker that waits for them reads its client's writes.
- ``GET STREAM_UPDATES_PREFIX + <stream>?from_token=A&upto_token=B``: a page of a writer
  stream, for workers catching up on streams kept in memory (typing).
- ``POST PRESENCE_SYNC_PATH``: a user started or stopped syncing on a worker.
- ``POST INVALIDATE_PATH``: an events writer that is not main changed a cached fact (an
  expired event): main writes the caches-stream row.

An events writer that is not main serves its own internal app with one endpoint,
``POST SUBMIT_EVENTS_PATH`` (`trioserver.internal.remote_events`). An endpoint whose part is
not given answers 404.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

import orjson

from trioserver.api.http import JsonDict, Response, _read_body, _run_lifespan, _send_response
from trioserver.errors import MatrixError
from trioserver.internal.protocol import (
    BACKFILL_PATH,
    CLIENT_ADDR_HEADER,
    CLIENT_PREFIX,
    FORWARDED_AUTHORIZATION,
    INVALIDATE_PATH,
    POSITIONS_HEADER,
    PRESENCE_SYNC_PATH,
    STREAM_UPDATES_PREFIX,
    SUBMIT_EVENTS_PATH,
)
from trioserver.repl.streams import PAGE_SIZE, WriterStream

if TYPE_CHECKING:
    from hypercorn.typing import (
        ASGIFramework,
        ASGIReceiveCallable,
        ASGISendCallable,
        ASGISendEvent,
        HTTPResponseStartEvent,
        HTTPScope,
        Scope,
    )

logger = logging.getLogger(__name__)

# presence_sync and invalidate bodies are a few fields.
_MAX_BODY = 64 * 1024
# A submission is a request's events (a room's initial state at most, or a profile change's
# member events in every room of the user): bounded like a client request body.
_MAX_SUBMISSION = 16 * 1024 * 1024

PresenceSync = Callable[[str, str, "str | None", bool], Awaitable[None]]
SubmitEvents = Callable[[JsonDict], Awaitable[JsonDict]]
Invalidate = Callable[[str, list[str]], Awaitable[None]]
# (room id, limit) -> the ids of the events stored (`federation.backfill.Backfiller`).
Backfill = Callable[[str, int], Awaitable[list[str]]]


def create_internal_app(
    *,
    secret: str,
    positions: Callable[[], dict[str, int]],
    client_app: ASGIFramework | None = None,
    writer_streams: Mapping[str, WriterStream] | None = None,
    presence_sync: PresenceSync | None = None,
    invalidate: Invalidate | None = None,
    submit_events: SubmitEvents | None = None,
    backfill: Backfill | None = None,
) -> InternalApp:
    """An instance's internal app (see the module docstring).

    Args:
        secret: ``replication.secret``.
        positions: every replicated stream's current token on this instance.
        client_app: main's client-server app, which forwarded requests are dispatched into.
        writer_streams: main's writer streams by name (for ``stream_updates``).
        presence_sync: ``(instance, user_id, state, syncing)``: mark a user as syncing (or
            stopped) on an instance.
        invalidate: ``(cache, keys)``: write a caches-stream invalidation (main).
        submit_events: persist a submission (an events writer that is not main).
        backfill: fetch a room's older history from other servers (main, issue 15).
    """
    return InternalApp(
        secret,
        positions,
        client_app,
        writer_streams or {},
        presence_sync,
        invalidate,
        submit_events,
        backfill,
    )


class InternalApp:
    """The ASGI app `create_internal_app` builds."""

    def __init__(
        self,
        secret: str,
        positions: Callable[[], dict[str, int]],
        client_app: ASGIFramework | None,
        writer_streams: Mapping[str, WriterStream],
        presence_sync: PresenceSync | None,
        invalidate: Invalidate | None,
        submit_events: SubmitEvents | None,
        backfill: Backfill | None = None,
    ) -> None:
        self._secret = secret.encode()
        self._client_app = client_app
        self._positions = positions
        self._streams = writer_streams
        self._presence_sync = presence_sync
        self._invalidate = invalidate
        self._submit_events = submit_events
        self._backfill = backfill

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            self._check_secret(scope)
            if scope["path"].startswith(CLIENT_PREFIX + "/") and self._client_app is not None:
                await self._forwarded(self._client_app, scope, receive, send)
                return
            response = await self._respond(scope, receive)
        except MatrixError as err:
            response = Response(err.to_json(), status=err.status)
        except Exception:
            # Boundary: one internal request (STYLE S4).
            logger.exception("internal request %s %s failed", scope["method"], scope["path"])
            response = Response({"errcode": "M_UNKNOWN", "error": "Internal server error"}, 500)
        await _send_response(send, response, head=False)

    def _check_secret(self, scope: HTTPScope) -> None:
        header = _header(scope, b"authorization")
        scheme, _, token = (header or "").partition(" ")
        if header is None or scheme.lower() != "bearer" or not token.strip():
            raise MatrixError("M_MISSING_TOKEN", "Missing replication secret", status=401)
        if not hmac.compare_digest(token.strip().encode(), self._secret):
            raise MatrixError("M_FORBIDDEN", "Wrong replication secret", status=403)

    async def _respond(self, scope: HTTPScope, receive: ASGIReceiveCallable) -> Response:
        path, method = scope["path"], scope["method"]
        if path.startswith(STREAM_UPDATES_PREFIX) and method == "GET":
            return Response(await self._stream_updates(scope))
        if path == SUBMIT_EVENTS_PATH and method == "POST" and self._submit_events is not None:
            raw = await _read_body(scope, receive, _MAX_SUBMISSION)
            return Response(await self._submit_events(_json_body(raw)))
        if path == INVALIDATE_PATH and method == "POST" and self._invalidate is not None:
            await self._invalidation(self._invalidate, await _read_body(scope, receive, _MAX_BODY))
            return Response({})
        if path == BACKFILL_PATH and method == "POST" and self._backfill is not None:
            request = _json_body(await _read_body(scope, receive, _MAX_BODY))
            room_id, limit = request.get("room_id"), request.get("limit")
            if not isinstance(room_id, str) or type(limit) is not int:
                raise MatrixError("M_BAD_JSON", "Expected room_id and limit")
            return Response({"event_ids": await self._backfill(room_id, limit)})
        if path == PRESENCE_SYNC_PATH and method == "POST" and self._presence_sync is not None:
            body = await _read_body(scope, receive, _MAX_BODY)
            before = self._positions()
            await self._presence(self._presence_sync, body)
            # The worker waits for these before its /sync goes on, so the token that sync
            # answers with covers the presence change it made.
            return Response({"positions": _moved(before, self._positions())})
        raise MatrixError("M_UNRECOGNIZED", "Unrecognized request", status=404)

    async def _stream_updates(self, scope: HTTPScope) -> JsonDict:
        stream = self._streams.get(scope["path"].removeprefix(STREAM_UPDATES_PREFIX))
        if stream is None:
            raise MatrixError("M_UNRECOGNIZED", "Unknown stream", status=400)
        query = _query(scope)
        from_token, upto_token = _token(query, "from_token"), _token(query, "upto_token")
        page = await stream.get_updates(from_token, upto_token, PAGE_SIZE)
        return {
            "updates": [[token, row] for token, row in page.updates],
            "upto_token": page.upto_token,
            "limited": page.limited,
        }

    async def _invalidation(self, invalidate: Invalidate, raw: bytes) -> None:
        body = _json_body(raw)
        cache, keys = body.get("cache"), body.get("keys")
        if not (
            isinstance(cache, str)
            and isinstance(keys, list)
            and all(isinstance(key, str) for key in keys)
        ):
            raise MatrixError("M_BAD_JSON", "Expected cache and keys")
        await invalidate(cache, keys)

    async def _presence(self, presence_sync: PresenceSync, raw: bytes) -> None:
        body = _json_body(raw)
        instance, user_id = body.get("instance"), body.get("user_id")
        state, syncing = body.get("state"), body.get("syncing")
        if not (
            isinstance(instance, str)
            and isinstance(user_id, str)
            and (state is None or isinstance(state, str))
            and isinstance(syncing, bool)
        ):
            raise MatrixError("M_BAD_JSON", "Expected instance, user_id, state, syncing")
        await presence_sync(instance, user_id, state, syncing)

    async def _forwarded(
        self,
        client_app: ASGIFramework,
        scope: HTTPScope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
    ) -> None:
        captured = _CapturedResponse()
        before = self._positions()
        await client_app(_client_scope(scope), receive, captured.send)
        # Read only now: the handler has returned, so these cover everything it wrote.
        moved = _moved(before, self._positions())
        headers = [*captured.headers, (POSITIONS_HEADER.encode(), orjson.dumps(moved))]
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": captured.status,
            "headers": headers,
        }
        await send(start)
        await send(
            {"type": "http.response.body", "body": b"".join(captured.body), "more_body": False}
        )


class _CapturedResponse:
    """What the client app sent, held until it is complete."""

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []

    async def send(self, message: ASGISendEvent) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            self.body.append(message.get("body", b""))


def _moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    # Only the streams that moved while a request ran: the worker waits for those alone (a
    # read-only or refused request names none and is answered at once).
    return {name: token for name, token in after.items() if token > before.get(name, 0)}


def _client_scope(scope: HTTPScope) -> HTTPScope:
    # The scope the client's own request to main would have had.
    headers: list[tuple[bytes, bytes]] = []
    client_addr = None
    for name, value in scope["headers"]:
        if name == CLIENT_ADDR_HEADER.encode():
            client_addr = value.decode("latin-1")
        elif name == FORWARDED_AUTHORIZATION.encode():
            headers.append((b"authorization", value))
        elif name != b"authorization":
            headers.append((name, value))
    client = (client_addr, 0) if client_addr else scope["client"]
    path = scope["path"].removeprefix(CLIENT_PREFIX)
    raw_path = scope["raw_path"].removeprefix(CLIENT_PREFIX.encode())
    return {**scope, "path": path, "raw_path": raw_path, "headers": headers, "client": client}


def _json_body(raw: bytes) -> JsonDict:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise MatrixError("M_NOT_JSON", "Content not JSON.") from None
    if not isinstance(body, dict):
        raise MatrixError("M_BAD_JSON", "Content must be a JSON object.")
    return body


def _header(scope: HTTPScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _query(scope: HTTPScope) -> dict[str, str]:
    return dict(parse_qsl(scope["query_string"].decode("latin-1")))


def _token(query: dict[str, str], name: str) -> int:
    value = query.get(name, "")
    if not value.isascii() or not value.isdigit() or int(value) >= 2**63:
        raise MatrixError("M_INVALID_PARAM", f"{name} must be a non-negative integer")
    return int(value)
