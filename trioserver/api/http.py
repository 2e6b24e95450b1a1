"""The HTTP edge: a small ASGI application with a route table.

Theory of operation
-------------------
Every request is matched against the route table, read whole (up to the body limit),
authenticated when the route asks for it, and handed to the route's handler as a `Request`.
A handler returns a JSON-able dict (200) or a `Response`.

Media routes (``body="stream"``) are the exception in both directions: their request body is
not read here but handed over as `Request.body_stream`, chunk by chunk as it arrives, and a
`Response` may carry a `stream` that is sent chunk by chunk, so that memory does not grow with
a file's size. The HTTP server queues little per request (`trioserver.http_edge`: 256 KiB;
hypercorn, on TLS listeners: a few 64 KiB chunks), so a client sending faster than the handler
writes is held back by TCP, not buffered here.

Failures are rendered here, once: `MatrixError` becomes its errcode/status,
`InteractiveAuthRequired` a 401 UIA body, anything else a logged 500 ``M_UNKNOWN`` (a 500 is
always a bug). Every response carries the CORS headers browser clients need.

Why not quart-trio: measured on this machine, importing quart-trio adds 0.16 s and 13 MB to
start-up and serves 22-39% fewer requests per second on a trivial endpoint (BENCHMARKS.md,
bench/http_baseline.py); routing and JSON bodies are all the Client-Server API needs from a
framework, and they fit in this module.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from urllib.parse import unquote, unquote_plus

import attrs
import orjson

import trio

from trioserver.errors import InteractiveAuthRequired, MatrixError
from trioserver.handlers.auth import Requester

if TYPE_CHECKING:
    from hypercorn.typing import (
        ASGIReceiveCallable,
        ASGIReceiveEvent,
        ASGISendCallable,
        Scope,
    )

    from trioserver.internal.forwarding import Forwarder


logger = logging.getLogger(__name__)
# The access log (`http.log_access`): one line per request.
access_logger = logging.getLogger("trioserver.access")

JsonDict = dict[str, Any]
# "federation": a Server-Server API route, authenticated by an X-Matrix signature; the
# verified server name is `Request.origin`.
AuthMode = Literal["required", "optional", "none", "federation"]
# "whole": the edge reads the body (bounded by http.max_request_body_size); "stream": the handler
# reads `Request.body_stream` and enforces its own limit.
BodyMode = Literal["whole", "stream"]

# Client-Server API path prefixes; r0 is still used by older clients and bots.
CLIENT = "/_matrix/client/(?:r0|v3|unstable)"
CLIENT_V1 = "/_matrix/client/(?:v1|unstable)"
CLIENT_V3 = "/_matrix/client/(?:v3|unstable)"

_CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"X-Requested-With, Content-Type, Authorization, Date"),
]
_JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-cache, no-store, must-revalidate"),
    *_CORS_HEADERS,
]


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


@attrs.define(slots=True)
class Request:
    """One HTTP request, read whole (or, on ``body="stream"`` routes, as `body_stream`)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    client_ip: str | None
    scheme: str
    path_params: dict[str, str] = attrs.field(factory=dict)
    requester_or_none: Requester | None = None
    # The body's chunks as they arrive, on ``body="stream"`` routes (then `body` is empty).
    # It raises `ClientDisconnected` when the client goes away before the end.
    body_stream: AsyncIterator[bytes] | None = None
    # The requesting server, on ``auth="federation"`` routes (verified X-Matrix origin).
    origin_or_none: str | None = None
    # The query string as sent (still percent-encoded): X-Matrix signatures cover it.
    raw_query: str = ""
    _json: Any = None

    @property
    def requester(self) -> Requester:
        """The authenticated user; only for routes with ``auth="required"``."""
        assert self.requester_or_none is not None, "route was not declared auth='required'"
        return self.requester_or_none

    @property
    def origin(self) -> str:
        """The authenticated requesting server; only for routes with ``auth="federation"``."""
        assert self.origin_or_none is not None, "route was not declared auth='federation'"
        return self.origin_or_none

    def json(self) -> JsonDict:
        """The body as a JSON object.

        Raises:
            MatrixError: ``M_NOT_JSON`` when it is not JSON, ``M_BAD_JSON`` when not an object.
        """
        if self._json is None:
            try:
                parsed = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                raise MatrixError("M_NOT_JSON", "Content not JSON.") from None
            if not isinstance(parsed, dict):
                raise MatrixError("M_BAD_JSON", "Content must be a JSON object.")
            self._json = parsed
        result: JsonDict = self._json
        return result

    def json_or_empty(self) -> JsonDict:
        """Like `json`, but an empty body counts as ``{}`` (endpoints where it is optional)."""
        return self.json() if self.body.strip() else {}

    def query_param(self, name: str) -> str | None:
        """The last value of a query parameter, or None."""
        values = self.query.get(name)
        return values[-1] if values else None

    @property
    def host(self) -> str:
        """The Host header (without validation)."""
        return self.headers.get("host", "localhost")


@attrs.frozen
class Response:
    """A non-default response: another status, headers, or a non-JSON body.

    `raw` is a small body sent at once; `stream` a large one sent chunk by chunk (with
    `content_length` when it is known: otherwise the transfer is chunked). The edge closes
    `stream` (``aclose``) when it is done with it, also when the client has gone away.
    """

    body: Any = attrs.field(factory=dict)
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    raw: bytes | None = None
    content_type: str = "application/json"
    stream: AsyncIterable[bytes] | None = None
    content_length: int | None = None


D = TypeVar("D")
Handler = Callable[[D, Request], Awaitable[JsonDict | Response]]


@attrs.frozen
class Route(Generic[D]):
    """A method and path pattern bound to a handler."""

    method: str
    pattern: re.Pattern[str]
    handler: Handler[D]
    auth: AuthMode
    # Spec "Guest Access": guests may call only the endpoints the module (and Synapse) allow.
    guest: bool = False
    body: BodyMode = "whole"
    # Issue 13: a POST/PUT/DELETE that writes no replicated stream, so a worker answers it
    # itself; every other write is forwarded to main (see `trioserver.internal.forwarding`).
    local: bool = False
    # Issue 13: a read that must still be answered by main, because main keeps what it
    # hands out in memory (the shared-secret registration nonce).
    on_main: bool = False
    # (segments, literal last segment) of the paths it matches; see `RouteTable`.
    shape: tuple[int, str | None] | None = None


_PARAM = re.compile(r"\{(\w+)(?::(\w+))?\}")


def route(
    method: str,
    template: str,
    handler: Handler[D],
    *,
    auth: AuthMode,
    guest: bool = False,
    body: BodyMode = "whole",
    local: bool = False,
    on_main: bool = False,
) -> Route[D]:
    """Build a route from a path template.

    ``{name}`` matches one path segment; ``{name:path}`` matches the rest of the path and
    ``{name:opt}`` one segment that may be empty (state keys). Values are percent-decoded.
    Guest accounts get 403 ``M_GUEST_ACCESS_FORBIDDEN`` unless `guest` is set. With
    ``body="stream"`` the handler gets the body as `Request.body_stream` (see the module
    docstring). `local` marks a write a worker answers itself (it writes no replicated
    stream); GET/HEAD routes are answered locally unless `on_main` is set.
    """

    def to_regex(match: re.Match[str]) -> str:
        name, kind = match.group(1), match.group(2)
        body = {None: "[^/]+", "path": ".*", "opt": "[^/]*"}[kind]
        return f"(?P<{name}>{body})"

    pattern = re.compile("^" + _PARAM.sub(to_regex, template) + r"\Z")
    return Route(method, pattern, handler, auth, guest, body, local, on_main, _shape(template))


_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9_-]+\Z")
_GROUP_WITH_SLASH = re.compile(r"\([^)]*/")


def _shape(template: str) -> tuple[int, str | None] | None:
    """How many segments every path the template matches has, and its last segment when that
    is literal; None when the count varies (``{name:path}``, a group spanning a slash)."""
    if ":path}" in template or _GROUP_WITH_SLASH.search(template):
        return None
    segments = template.split("/")
    last = segments[-1]
    return len(segments), (last if _LITERAL_SEGMENT.match(last) else None)


def parse_query(query: str) -> dict[str, list[str]]:
    """A query string's values per name, as ``parse_qs(query, keep_blank_values=True)``.

    A client repeats the same long parameters (a /sync ``filter`` as JSON) on every request;
    their decoded text is kept, which made the stdlib's parser a tenth of a small /sync.
    """
    parsed: dict[str, list[str]] = {}
    for field in query.split("&"):
        if field:
            name, _, value = field.partition("=")
            parsed.setdefault(_unquote_plus(name), []).append(_unquote_plus(value))
    return parsed


_CACHED_QUERY_VALUE_CHARS = 4096


def _unquote_plus(text: str) -> str:
    if "%" not in text and "+" not in text:
        return text
    if len(text) > _CACHED_QUERY_VALUE_CHARS:  # bounds the cache at a few MB
        return unquote_plus(text)
    return _unquote_plus_cached(text)


@functools.lru_cache(maxsize=1024)
def _unquote_plus_cached(text: str) -> str:
    return unquote_plus(text)


class RouteTable(Generic[D]):
    """The routes a path can match, in table order, found without trying every pattern.

    A linear scan of some 300 regexes was the largest fixed cost of a small request. Routes
    are grouped by their paths' segment count and literal last segment (`_shape`); a path is
    only tried against its group, the same count's routes ending in a parameter, and the
    routes of varying length. The first match in table order wins, as in a full scan.
    """

    def __init__(self, routes: Iterable[Route[D]]) -> None:
        self.routes = list(routes)
        variable = [n for n, r in enumerate(self.routes) if r.shape is None]
        by_count: dict[int, list[int]] = {}
        by_last: dict[tuple[int, str], list[int]] = {}
        for n, candidate in enumerate(self.routes):
            if candidate.shape is None:
                continue
            count, last = candidate.shape
            by_count.setdefault(count, [])
            if last is None:
                by_count[count].append(n)
            else:
                by_last.setdefault((count, last), []).append(n)
        self._variable = [self.routes[n] for n in variable]
        self._by_count = {
            count: [self.routes[n] for n in sorted([*found, *variable])]
            for count, found in by_count.items()
        }
        self._by_last = {
            key: [self.routes[n] for n in sorted([*found, *by_count[key[0]], *variable])]
            for key, found in by_last.items()
        }

    def candidates(self, path: str) -> list[Route[D]]:
        """The routes that may match `path`, in table order."""
        count = path.count("/") + 1
        found = self._by_last.get((count, path[path.rfind("/") + 1 :]))
        if found is None:
            found = self._by_count.get(count, self._variable)
        return found


# Resolves an access token to its user (401 M_UNKNOWN_TOKEN when it is not valid).
Authenticator = Callable[[str], Awaitable["Requester"]]
# Told of every authenticated request (must not block: it runs on every request).
SeenHook = Callable[["Requester", Request], None]
# Verifies a Server-Server request's X-Matrix signature; the origin server's name (401
# M_UNAUTHORIZED when it does not verify, 403 when federation with it is not allowed).
ServerAuthenticator = Callable[[Request], Awaitable[str]]


def extract_access_token(request: Request) -> str | None:
    """The access token from ``Authorization: Bearer`` or the ``access_token`` parameter.

    Raises:
        MatrixError: 401 ``M_MISSING_TOKEN`` for an Authorization header of another scheme.
    """
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise MatrixError("M_MISSING_TOKEN", "Invalid Authorization header.", status=401)
        return token.strip()
    return request.query_param("access_token")


class MatrixApp(Generic[D]):
    """The ASGI application: routes requests to handlers with `deps`."""

    def __init__(
        self,
        deps: D,
        routes: Iterable[Route[D]],
        *,
        authenticate: Authenticator,
        max_body_size: int,
        log_access: bool = False,
        on_authenticated: SeenHook | None = None,
        forwarder: Forwarder | None = None,
        instance_name: str | None = None,
        authenticate_server: ServerAuthenticator | None = None,
    ) -> None:
        self._deps = deps
        self._authenticate_server = authenticate_server
        # On a worker (issue 13): where non-local writes go; None on main.
        self._forwarder = forwarder
        # Which process of a pool answered (`run --workers` shares one client port): for
        # operators reading a trace, and for the pool's tests.
        self._instance_header = (
            None
            if instance_name is None
            else (b"x-trioserver-instance", instance_name.encode("latin-1"))
        )
        self._log_access = log_access
        self._routes = RouteTable(routes)
        self._authenticate = authenticate
        self._on_authenticated = on_authenticated
        self._max_body_size = max_body_size
        self._request_ids = itertools.count(1)

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _run_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self._instance_header is not None:
            send = _adding_header(send, self._instance_header)
        if self._log_access:
            await self._respond_logged(scope, receive, send)
            return
        response = await self._respond(scope, receive)
        await _send_response(send, response, head=scope["method"] == "HEAD")

    async def _respond_logged(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        assert scope["type"] == "http"
        started = time.perf_counter()
        response = await self._respond(scope, receive)
        # Logged before sending: the line exists once the client has its answer (and also
        # when the client has gone away). The duration is the time to compute the response.
        access_logger.info(
            '%s "%s %s" %d %.1fms',
            scope["client"][0] if scope["client"] is not None else "-",
            scope["method"],
            _loggable_target(scope),
            response.status,
            (time.perf_counter() - started) * 1000,
        )
        await _send_response(send, response, head=scope["method"] == "HEAD")

    async def _respond(self, scope: Scope, receive: ASGIReceiveCallable) -> Response:
        assert scope["type"] == "http"
        method = scope["method"]
        if method == "OPTIONS":
            # CORS preflight: any path, no auth (the CORS headers are added to every response).
            return Response(status=204, raw=b"")
        request_id = next(self._request_ids)
        body_stream: _BodyStream | None = None
        try:
            raw_path = _request_path(scope)
            try:
                match, target = self._match(method, raw_path)
            except MatrixError:
                # Read the body all the same (bounded), so the client reads the 404.
                await _read_body(scope, receive, self._max_body_size)
                raise
            if self._forwarder is not None and _is_forwarded(method, target):
                # Before local auth: main authenticates the request as the client sent it.
                body = await _read_body(scope, receive, self._max_body_size)
                return await self._forwarder.forward(
                    method,
                    _path_and_query(scope),
                    [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
                    body,
                    scope["client"][0] if scope["client"] is not None else None,
                )
            if target.body == "stream":
                body_stream = _BodyStream(receive, _declared_length(scope))
                body = b""
            else:
                body = await _read_body(scope, receive, self._max_body_size)
            raw_query = scope["query_string"].decode("latin-1")
            request = Request(
                method=method,
                path=raw_path,
                query=parse_query(raw_query),
                headers={k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]},
                body=body,
                client_ip=scope["client"][0] if scope["client"] is not None else None,
                scheme=scope["scheme"],
                path_params={k: unquote(v) for k, v in match.groupdict().items()},
                body_stream=body_stream,
                raw_query=raw_query,
            )
            if target.auth == "federation":
                request.origin_or_none = await self._origin(request)
            else:
                request.requester_or_none = await self._requester(request, target.auth)
            if request.requester_or_none is not None and request.requester_or_none.is_guest:
                _check_guest_allowed(target)
            result = await target.handler(self._deps, request)
            return result if isinstance(result, Response) else Response(result)
        except MatrixError as err:
            return _error_response(err)
        except InteractiveAuthRequired as uia:
            return Response(uia.body, status=401)
        except ClientDisconnected:
            # Nobody reads this answer; it is only logged (status 499, as nginx does).
            return Response({"errcode": "M_UNKNOWN", "error": "Client disconnected"}, 499)
        except Exception:
            logger.exception("request %d %s %s failed", request_id, method, scope["path"])
            return Response({"errcode": "M_UNKNOWN", "error": "Internal server error"}, 500)
        finally:
            if body_stream is not None:
                # An answer before the whole body was read (413, 403, ...): read and drop
                # the rest (bounded), or the client may see a reset instead of the answer.
                await body_stream.drain()

    async def _origin(self, request: Request) -> str:
        if self._authenticate_server is None:
            raise MatrixError("M_UNRECOGNIZED", "Federation is disabled", status=404)
        return await self._authenticate_server(request)

    async def _requester(self, request: Request, mode: AuthMode) -> Requester | None:
        if mode == "none":
            return None
        token = extract_access_token(request)
        if token is None:
            if mode == "optional":
                return None
            raise MatrixError("M_MISSING_TOKEN", "Missing access token.", status=401)
        requester = await self._authenticate(token)
        if self._on_authenticated is not None:
            self._on_authenticated(requester, request)
        return requester

    def _match(self, method: str, path: str) -> tuple[re.Match[str], Route[D]]:
        path_matched = False
        for candidate in self._routes.candidates(path):
            match = candidate.pattern.match(path)
            if match is None:
                continue
            if candidate.method == method or (method == "HEAD" and candidate.method == "GET"):
                return match, candidate
            path_matched = True
        if path_matched:
            raise MatrixError("M_UNRECOGNIZED", "Unrecognized request", status=405)
        raise MatrixError("M_UNRECOGNIZED", "Unrecognized request", status=404)


# The methods that may write a stream; the others are always answered where they arrive.
_WRITE_METHODS = frozenset({"POST", "PUT", "DELETE"})


def _is_forwarded(method: str, target: Route[Any]) -> bool:
    return target.on_main or (method in _WRITE_METHODS and not target.local)


def _path_and_query(scope: Scope) -> str:
    # The target as the client sent it (percent-encoding kept), for forwarding.
    assert scope["type"] == "http"
    query = scope["query_string"].decode("latin-1")
    return _request_path(scope) + ("?" + query if query else "")


def _check_guest_allowed(target: Route[Any]) -> None:
    # The one place guests are held to the endpoints of spec "Guest Access" (the route table
    # marks them); a few handlers refine it (which membership, which profile field).
    if not target.guest:
        raise MatrixError("M_GUEST_ACCESS_FORBIDDEN", "Guest access not allowed", status=403)


# An access token in the query string (spec: "Using access tokens") must not reach the log.
_ACCESS_TOKEN_VALUE = re.compile(r"(^|&)(access_token=)[^&]*")


def _request_path(scope: Scope) -> str:
    # The path as sent (still percent-encoded, so that an encoded "/" in a segment stays
    # inside it), without a query string.
    assert scope["type"] == "http"
    raw = scope["raw_path"].decode("ascii", "replace") or scope["path"]
    return raw.split("?", 1)[0]


def _loggable_target(scope: Scope) -> str:
    assert scope["type"] == "http"
    path = _request_path(scope)
    query = scope["query_string"].decode("latin-1")
    if not query:
        return path
    return path + "?" + _ACCESS_TOKEN_VALUE.sub(r"\1\2<redacted>", query)


def _error_response(err: MatrixError) -> Response:
    return Response(err.to_json(), status=err.status, headers=tuple(err.headers.items()))


class _BodyStream:
    """A request body as an async iterator of chunks (``body="stream"`` routes)."""

    # What is read and dropped after an early answer, at most, and for how long.
    DRAIN_BYTES = 64 * 1024 * 1024
    DRAIN_SECONDS = 10.0
    # A client that sends nothing for this long is given up on (nginx's client_body_timeout),
    # so that a stalled upload does not hold its connection and temporary file for ever.
    IDLE_SECONDS = 60.0

    def __init__(self, receive: ASGIReceiveCallable, declared_length: int | None) -> None:
        self._receive = receive
        self._declared_length = declared_length
        self._done = False

    def __aiter__(self) -> _BodyStream:
        return self

    async def __anext__(self) -> bytes:
        while not self._done:
            message = None
            with trio.move_on_after(self.IDLE_SECONDS):
                message = await self._receive()
            if message is None:
                self._done = True  # nothing to drain: the connection is closed after the 408
                raise MatrixError("M_UNKNOWN", "Timed out reading the request body", status=408)
            if message["type"] == "http.disconnect":
                self._done = True
                raise ClientDisconnected
            assert message["type"] == "http.request"
            self._done = not message.get("more_body", False)
            chunk = message.get("body", b"")
            if chunk:
                return chunk
        raise StopAsyncIteration

    async def drain(self) -> None:
        if self._declared_length is not None and self._declared_length > self.DRAIN_BYTES:
            # Not worth reading: the connection is closed after the answer instead.
            return
        drained = 0
        with trio.move_on_after(self.DRAIN_SECONDS):
            while not self._done and drained <= self.DRAIN_BYTES:
                message = await self._receive()
                if message["type"] != "http.request":
                    return
                self._done = not message.get("more_body", False)
                drained += len(message.get("body", b""))


def _declared_length(scope: Scope) -> int | None:
    assert scope["type"] == "http"
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


async def _read_body(scope: Scope, receive: ASGIReceiveCallable, limit: int) -> bytes:
    assert scope["type"] == "http"
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise MatrixError("M_TOO_LARGE", "Request body too large")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        assert message["type"] == "http.request"
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            await _discard_rest(receive, message, size, limit)
            raise MatrixError("M_TOO_LARGE", "Request body too large")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _discard_rest(
    receive: ASGIReceiveCallable, message: ASGIReceiveEvent, size: int, limit: int
) -> None:
    # Read (and drop) what the client is still sending, up to a bound, so that a client that
    # streams a body without Content-Length reads our 413 instead of a reset connection.
    drain_limit = max(4 * limit, 8 * 1024 * 1024)
    while message.get("more_body", False) and size <= drain_limit:
        message = await receive()
        if message["type"] != "http.request":
            return
        size += len(message.get("body", b""))


async def _send_response(send: ASGISendCallable, response: Response, *, head: bool) -> None:
    if response.stream is not None:
        await _send_stream(send, response, response.stream, head=head)
        return
    if response.raw is not None:
        body = response.raw
        headers = [(b"content-type", response.content_type.encode()), *_CORS_HEADERS]
    else:
        body = orjson.dumps(response.body)
        headers = list(_JSON_HEADERS)
    headers.extend((k.lower().encode(), v.encode()) for k, v in response.headers)
    if response.status != 204:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body, "more_body": False})


def _adding_header(send: ASGISendCallable, header: tuple[bytes, bytes]) -> ASGISendCallable:
    async def send_with_header(message: Any) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message["headers"], header]}
        await send(message)

    return send_with_header


async def _send_stream(
    send: ASGISendCallable, response: Response, stream: AsyncIterable[bytes], *, head: bool
) -> None:
    headers = [(b"content-type", response.content_type.encode()), *_CORS_HEADERS]
    headers.extend((k.lower().encode(), v.encode()) for k, v in response.headers)
    if response.content_length is not None:
        headers.append((b"content-length", str(response.content_length).encode()))
    try:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if not head:
            async for chunk in stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            with trio.CancelScope(shield=True):  # closing a file must not be cut short
                await close()


async def _run_lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    # Our subsystems start in the nursery, not in ASGI lifespan; just acknowledge.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
