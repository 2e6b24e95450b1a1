"""Outbound federation requests: `FederationClient`.

Theory of operation
-------------------
A request to a destination (a server name) goes, within one deadline (``timeout``, default
``federation.request_timeout``) that covers discovery, connecting, sending and reading:

1. the destination is checked: federation enabled, a valid server name, and in
   ``federation.domain_whitelist`` when that is set (`DestinationNotAllowed`);
2. discovery (`trioserver.federation.discovery`) says where to connect, which ``Host`` header
   to send and which name the certificate must be valid for;
3. the request target (path and query) is built exactly as it goes on the wire, and that
   string is what the ``X-Matrix`` signature covers (Server-Server API, "Request
   Authentication"); the signature names the destination as given, never the delegated name;
4. `trioserver.federation.connections` resolves the host, checks the addresses against
   ``federation.ip_range_blocklist`` and connects, pooling connections per route;
5. the response is read whole, undecoded, up to ``max_response_bytes``: a larger
   ``Content-Length`` is refused before reading, a longer body as soon as it passes the cap,
   and a compressed one (never asked for) outright.

A 2xx answer's JSON body is returned. Any other status is a `RemoteError` carrying the
remote's Matrix error; everything else that goes wrong between here and the remote (DNS, a
refused or deny-listed address, TLS, a timeout, a body too big or not JSON) is
`DestinationUnreachable`. A hostile remote therefore costs at most the deadline and the size
cap. Redirects are not followed.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import orjson

import trio

from trioserver.federation.connections import (
    federation_http_client,
    phase_timeout,
    read_capped,
)
from trioserver.federation.discovery import (
    DiscoveryError,
    InvalidServerName,
    ResolvedServer,
    ServerResolver,
    parse_server_name,
)
from trioserver.federation.request_auth import authorization_header
from trioserver.federation.well_known import HttpWellKnownFetcher

if TYPE_CHECKING:
    from signedjson.types import SigningKey

    from trioserver.config import FederationConfig

USER_AGENT = f"trioserver/{importlib.metadata.version('trioserver')}"
DEFAULT_MAX_RESPONSE_BYTES = 50 * 1024 * 1024

Query = Mapping[str, str | Sequence[str]]


class FederationError(Exception):
    """A federation request failed; the subclasses say how."""


class RemoteError(FederationError):
    """The destination answered with a non-2xx status.

    Attributes:
        status: the HTTP status.
        errcode: the ``errcode`` of its Matrix error JSON, None when it sent none.
        message: the ``error`` of that JSON, if any.
        body: the parsed JSON body, None when it was not JSON.
    """

    def __init__(self, status: int, errcode: str | None, message: str | None, body: Any) -> None:
        super().__init__(f"{status} {errcode or ''} {message or ''}".strip())
        self.status = status
        self.errcode = errcode
        self.message = message
        self.body = body


class DestinationUnreachable(FederationError):
    """No usable answer came from the destination: DNS failed, no permitted address (the
    reason names ``federation.ip_range_blocklist``), the connection or TLS failed, the
    deadline passed, or the response was too big or not JSON."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DestinationNotAllowed(FederationError):
    """The request was not sent: federation is off, the destination is not a valid server
    name, or it is not in ``federation.domain_whitelist``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def fed_path(template: str, *segments: str) -> str:
    """A request path from a ``str.format`` template, each segment percent-encoded whole.

    ``fed_path("/_matrix/federation/v1/send/{}", txn_id)``; a ``/`` in a segment is encoded.
    """
    return template.format(*(quote(segment, safe="") for segment in segments))


def encode_query(query: Query) -> str:
    """``k=v&k=v2`` with every key and value percent-encoded whole; a sequence value repeats
    its key, in order."""
    pairs: list[str] = []
    for key, value in query.items():
        values = [value] if isinstance(value, str) else value
        pairs.extend(f"{quote(key, safe='')}={quote(v, safe='')}" for v in values)
    return "&".join(pairs)


def _encode_json(content: Any) -> bytes:
    # orjson, falling back to dict/list for other mappings and sequences; the signature
    # covers the parsed object, so any exact JSON encoding of it verifies.
    return orjson.dumps(content, default=_plain_json)


def _plain_json(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple | frozenset):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


class FederationClient:
    """Signed requests to other homeservers (see the module docstring).

    Args:
        config: the ``[federation]`` section.
        server_name: this server's name, the ``origin`` of signatures.
        signing_key: this server's signing key.
        resolver: server discovery (default: well-known over this client's connections,
            SRV by DNS).
        max_response_bytes: the default cap on a response body.

    Raises:
        OSError, ssl.SSLError: ``federation.ca_file`` cannot be loaded.
    """

    def __init__(
        self,
        config: FederationConfig,
        *,
        server_name: str,
        signing_key: SigningKey,
        resolver: ServerResolver | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._config = config
        self._server_name = server_name
        self._signing_key = signing_key
        self._max_response_bytes = max_response_bytes
        self._http = federation_http_client(config, user_agent=USER_AGENT)
        self._resolver = (
            resolver
            if resolver is not None
            else ServerResolver(fetch_well_known=HttpWellKnownFetcher(self._http))
        )

    async def request(
        self,
        destination: str,
        method: str,
        path: str,
        *,
        query: Query | None = None,
        content: Any = None,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- ends as DestinationUnreachable
        max_response_bytes: int | None = None,
    ) -> Any:
        """Send one request and return the JSON body of its 2xx answer.

        Args:
            destination: the server name (its signature's ``destination``).
            method: ``GET``, ``PUT``, ...
            path: the percent-encoded path, from ``/_matrix/`` (see `fed_path`).
            query: query parameters (encoded by `encode_query`).
            content: the JSON body; None sends none.
            signed: send an ``X-Matrix`` Authorization header (off for the key API).
            timeout: seconds for the whole request (default ``federation.request_timeout``).
            max_response_bytes: the cap on the response body.

        Raises:
            DestinationNotAllowed, DestinationUnreachable, RemoteError: see their docstrings.
            ValueError: `path` does not start with ``/``.

        Checkpoint: yes.
        """
        self._check_destination(destination)
        if not path.startswith("/"):
            raise ValueError(f"federation path {path!r} does not start with /")
        seconds = self._config.request_timeout if timeout is None else timeout
        limit = self._max_response_bytes if max_response_bytes is None else max_response_bytes
        deadline = trio.current_time() + seconds
        try:
            with trio.fail_at(deadline):
                server = await self._resolver.resolve(destination)
                url = httpx.URL(
                    scheme="https",
                    host=server.connect_host,
                    port=server.connect_port,
                    path=path,
                    query=encode_query(query).encode("ascii") if query else None,
                )
                request = self._build(destination, server, method, url, content, signed)
                request.extensions["timeout"] = phase_timeout(deadline).as_dict()
                return await self._send(request, limit)
        except (trio.TooSlowError, httpx.TimeoutException):
            raise DestinationUnreachable(f"{destination}: no answer within {seconds} s") from None
        except DiscoveryError as exc:
            raise DestinationUnreachable(f"{destination}: {exc}") from None
        except httpx.HTTPError as exc:  # connect, TLS, deny-list, read, protocol, timeouts
            raise DestinationUnreachable(f"{destination}: {_describe(exc)}") from None
        except httpx.InvalidURL as exc:  # a discovered host httpx refuses (SRV, well-known)
            raise DestinationUnreachable(f"{destination}: {exc}") from None

    async def get_json(
        self,
        destination: str,
        path: str,
        *,
        query: Query | None = None,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- ends as DestinationUnreachable
        max_response_bytes: int | None = None,
    ) -> Any:
        """A GET; see `request`."""
        return await self.request(
            destination,
            "GET",
            path,
            query=query,
            signed=signed,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
        )

    async def put_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        query: Query | None = None,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- ends as DestinationUnreachable
        max_response_bytes: int | None = None,
    ) -> Any:
        """A PUT of `content`; see `request`."""
        return await self.request(
            destination,
            "PUT",
            path,
            query=query,
            content=content,
            signed=signed,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
        )

    async def post_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        query: Query | None = None,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- ends as DestinationUnreachable
        max_response_bytes: int | None = None,
    ) -> Any:
        """A POST of `content`; see `request`."""
        return await self.request(
            destination,
            "POST",
            path,
            query=query,
            content=content,
            signed=signed,
            timeout=timeout,
            max_response_bytes=max_response_bytes,
        )

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    def _check_destination(self, destination: str) -> None:
        if not self._config.enabled:
            raise DestinationNotAllowed("federation is off (federation.enabled)")
        try:
            parse_server_name(destination)
        except InvalidServerName as exc:
            raise DestinationNotAllowed(str(exc)) from None
        allowed = self._config.domain_whitelist
        if allowed is not None and destination not in allowed:
            raise DestinationNotAllowed(f"{destination} is not in federation.domain_whitelist")

    def _build(
        self,
        destination: str,
        server: ResolvedServer,
        method: str,
        url: httpx.URL,
        content: Any,
        signed: bool,
    ) -> httpx.Request:
        headers = {"Host": server.host_header, "Accept": "application/json"}
        if signed:
            # The target exactly as it goes on the wire: httpx percent-encodes what the
            # caller left unencoded (a space, non-ASCII), so sign its result, not `path`.
            uri = url.raw_path.decode("ascii")
            headers["Authorization"] = authorization_header(
                method=method,
                uri=uri,
                origin=self._server_name,
                destination=destination,
                signing_key=self._signing_key,
                content=content,
            )
        request = self._http.build_request(
            method, url, headers=headers, extensions={"sni_hostname": server.tls_server_name}
        )
        if content is not None:
            body = _encode_json(content)
            request.headers["Content-Type"] = "application/json"
            request.headers["Content-Length"] = str(len(body))
            request.stream = _BodyStream(body)
        return request

    async def _send(self, request: httpx.Request, limit: int) -> Any:
        response = await self._http.send(request, stream=True)
        try:
            body = await _read_body(response, limit)
        finally:
            await response.aclose()
        if 200 <= response.status_code < 300:
            try:
                return orjson.loads(body)
            except orjson.JSONDecodeError:
                raise DestinationUnreachable(
                    f"{request.headers['Host']}: {response.status_code} answer is not JSON"
                ) from None
        raise _remote_error(response.status_code, body)


async def _read_body(response: httpx.Response, limit: int) -> bytes:
    host = response.request.headers["Host"]
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise DestinationUnreachable(f"{host}: response is compressed ({encoding})")
    body = await read_capped(response, limit)
    if body is None:
        raise DestinationUnreachable(f"{host}: response is over {limit} bytes")
    return body


def _remote_error(status: int, body: bytes) -> RemoteError:
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return RemoteError(status, None, None, None)
    errcode = parsed.get("errcode") if isinstance(parsed, dict) else None
    message = parsed.get("error") if isinstance(parsed, dict) else None
    return RemoteError(
        status,
        errcode if isinstance(errcode, str) else None,
        message if isinstance(message, str) else None,
        parsed,
    )


def _describe(exc: httpx.HTTPError) -> str:
    # httpx's errors often say nothing themselves (a timeout; TLS failures arrive as trio's
    # BrokenResourceError around the ssl error): name the class, then the causes that speak.
    texts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(texts) < 3:
        text = str(cause)
        if text and text not in texts:
            texts.append(text)
        cause = cause.__cause__ or cause.__context__
    return f"{type(exc).__name__}: {'; '.join(texts)}" if texts else type(exc).__name__


class _BodyStream(httpx.AsyncByteStream):
    """A request body sent in one piece.

    httpx's own byte stream iterates with an async generator, which a send that fails
    midway (the remote closing the connection) leaves suspended for the garbage collector;
    under trio that is a ResourceWarning. A plain iterator has nothing to leave behind.
    """

    def __init__(self, body: bytes) -> None:
        self._body = body
        self._sent = False

    def __aiter__(self) -> _BodyStream:
        self._sent = False
        return self

    async def __anext__(self) -> bytes:
        if self._sent:
            raise StopAsyncIteration
        self._sent = True
        return self._body
