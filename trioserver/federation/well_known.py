"""``/.well-known/matrix/server``: fetching it, judging the answer, and how long to cache it.

Server-Server API (v1.16), "Resolving server names", step 3: a regular HTTPS GET of
``https://<hostname>/.well-known/matrix/server``, 30x redirects followed while avoiding loops,
the answer cached per its cache headers (`cache_period`; the cache is the resolver's). The
fetch goes through the federation HTTP client, so the hostname's addresses pass
``federation.ip_range_blocklist`` and its certificate is verified, on every redirect hop too.
A redirect may only lead to another https URL; the whole fetch (redirects included) has one
deadline, and at most `MAX_BODY_BYTES` of body are read (Synapse's cap), undecoded: a
compressed body is refused, since inflating it could outgrow any cap before it is checked.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any

import attrs
import httpx
import orjson

import trio

from trioserver.events.identifiers import is_valid_server_name
from trioserver.federation.connections import phase_timeout, read_capped

WELL_KNOWN_PATH = "/.well-known/matrix/server"
MAX_BODY_BYTES = 50 * 1024
MAX_REDIRECTS = 5
FETCH_TIMEOUT = 10.0
# Spec: cache for the response's headers, "a sensible default" of 24 h, at most 48 h. At
# least 5 min (Synapse too): a remote sending no-store must not make every request fetch it.
DEFAULT_CACHE_PERIOD = 24 * 3600.0
MAX_CACHE_PERIOD = 48 * 3600.0
MIN_CACHE_PERIOD = 5 * 60.0
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class WellKnownUnavailable(Exception):
    """A ``/.well-known/matrix/server`` fetch got no HTTP answer to use: no connection, a
    timeout, a refused redirect, or a body over the size cap."""


@attrs.frozen
class WellKnownResponse:
    """The final (non-redirect) HTTP answer to a well-known fetch.

    Attributes:
        headers: header names in lower case.
        body: the body when the status is 200, else empty.
    """

    status: int
    headers: Mapping[str, str]
    body: bytes


def parse_well_known(response: WellKnownResponse) -> str | None:
    """The delegated server name of a well-known answer, or None when the answer is invalid
    (not 200, not a JSON object, no ``m.server`` string, not a valid server name)."""
    if response.status != 200:
        return None
    try:
        body: Any = orjson.loads(response.body)
    except orjson.JSONDecodeError:
        return None
    server = body.get("m.server") if isinstance(body, dict) else None
    if not isinstance(server, str) or not is_valid_server_name(server):
        return None
    return server


def cache_period(headers: Mapping[str, str], *, now: float | None = None) -> float:
    """How long to keep a valid well-known answer, from its ``Cache-Control`` or ``Expires``
    (against its ``Date``, else `now`, the wall clock), within the spec's bounds.

    `headers` names are lower case.
    """
    period = _header_period(headers, time.time() if now is None else now)
    if period is None:
        return DEFAULT_CACHE_PERIOD
    return min(MAX_CACHE_PERIOD, max(MIN_CACHE_PERIOD, period))


def _header_period(headers: Mapping[str, str], now: float) -> float | None:
    control = headers.get("cache-control")
    if control is not None:
        directives = {}
        for part in control.split(","):
            key, _, value = part.strip().partition("=")
            directives[key.strip().lower()] = value.strip().strip('"')
        if "no-store" in directives or "no-cache" in directives:
            return 0.0
        max_age = directives.get("max-age", "")
        if max_age.isdigit():
            return float(max_age)
    expires = headers.get("expires")
    if expires is None:
        return None
    expires_at = _http_date(expires)
    if expires_at is None:
        return 0.0  # RFC 9111 5.3: an invalid Expires means already expired
    date = _http_date(headers.get("date", ""))
    return expires_at - (date if date is not None else now)


def _http_date(value: str) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None


class HttpWellKnownFetcher:
    """The default `WellKnownFetcher`: GET over `client`, the federation client's (guarded,
    TLS-verifying) httpx client.

    Args:
        port: the HTTPS port asked (443; tests point it at a server on another port).
        timeout: seconds the whole fetch may take, redirects included.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        port: int = 443,
        timeout: float = FETCH_TIMEOUT,
        max_redirects: int = MAX_REDIRECTS,
        max_bytes: int = MAX_BODY_BYTES,
    ) -> None:
        self._client = client
        self._port = port
        self._timeout = timeout
        self._max_redirects = max_redirects
        self._max_bytes = max_bytes

    async def __call__(self, hostname: str) -> WellKnownResponse:
        """The final answer for `hostname`.

        Raises:
            WellKnownUnavailable: see its docstring.

        Checkpoint: yes.
        """
        try:
            url = httpx.URL(
                scheme="https",
                host=hostname,
                port=None if self._port == 443 else self._port,
                path=WELL_KNOWN_PATH,
            )
            deadline = trio.current_time() + self._timeout
            with trio.fail_at(deadline):
                return await self._follow(url, deadline)
        except trio.TooSlowError:
            raise WellKnownUnavailable(f"no answer within {self._timeout} s") from None
        except httpx.HTTPError as exc:  # connect, TLS, deny-list, read, protocol
            raise WellKnownUnavailable(f"{type(exc).__name__}: {exc}") from None
        except httpx.InvalidURL as exc:
            raise WellKnownUnavailable(f"invalid URL: {exc}") from None

    async def _follow(self, url: httpx.URL, deadline: float) -> WellKnownResponse:
        seen = {url}
        for _hop in range(self._max_redirects + 1):
            timeout = phase_timeout(deadline)
            async with self._client.stream("GET", url, timeout=timeout) as response:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    url = url.join(location)
                    if url.scheme != "https":
                        raise WellKnownUnavailable(f"redirected to {url.scheme}, not https")
                    if url in seen:
                        raise WellKnownUnavailable(f"redirect loop at {url}")
                    seen.add(url)
                    continue
                headers = {k.lower(): v for k, v in response.headers.items()}
                body = await self._body(response) if response.status_code == 200 else b""
                return WellKnownResponse(response.status_code, headers, body)
        raise WellKnownUnavailable(f"more than {self._max_redirects} redirects")

    async def _body(self, response: httpx.Response) -> bytes:
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise WellKnownUnavailable(f"body is compressed ({encoding})")
        body = await read_capped(response, self._max_bytes)
        if body is None:
            raise WellKnownUnavailable(f"body is over {self._max_bytes} bytes")
        return body
