"""Fetching a page to preview: guarded, bounded, redirects followed by hand.

Theory of operation
-------------------
A URL to preview is chosen by any user, so every request goes through `GuardedTransport`
(trioserver/guarded_http.py): the host is resolved and each address checked against
``media.url_preview_ip_range_blocklist`` / ``_allowlist`` before connecting. Redirects are
not left to httpx: each ``Location`` is a new request through the same transport, so every
hop is checked after its own DNS lookup, up to ``url_preview_max_redirects``. The whole fetch,
redirects included, has one deadline (``url_preview_timeout``), and at most
``url_preview_max_size`` bytes of body are read: a larger ``Content-Length`` is refused before
reading, a longer body as soon as it passes the cap (Synapse refuses rather than truncates).

Failures become the Matrix errors Synapse gives for them: 403 for a URL naming a blocked IP
address, 502 ``M_UNKNOWN`` when the host resolves to nothing permitted or cannot be fetched,
502 ``M_TOO_LARGE`` for a body over the cap. Never a 500.
"""

from __future__ import annotations

import logging
from email.message import EmailMessage
from typing import TYPE_CHECKING

import attrs
import httpx

import trio

from trioserver.errors import MatrixError
from trioserver.guarded_http import AddressBlocked, AddressPolicy, GuardedTransport, parse_networks

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.config import MediaConfig

logger = logging.getLogger(__name__)

# Some sites serve OpenGraph data only to crawlers; no version, to leak nothing.
USER_AGENT = "trioserver (bot; URL preview)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@attrs.frozen
class Fetched:
    """A fetched response.

    Attributes:
        url: the final URL, after redirects.
        content_type: the Content-Type header (``application/octet-stream`` when absent).
        body: at most the configured size cap.
        filename: from Content-Disposition, when given.
    """

    url: str
    content_type: str
    body: bytes
    filename: str | None


class PreviewFetcher:
    """Outbound GETs for URL previews. The httpx client is made on first use."""

    def __init__(self, config: MediaConfig) -> None:
        self._config = config
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        # Lazily: an idle server (most have previews off, or nobody asks) keeps no client,
        # connection pool or TLS context in memory.
        if self._client is None:
            policy = AddressPolicy(
                parse_networks(self._config.url_preview_ip_range_blocklist),
                parse_networks(self._config.url_preview_ip_range_allowlist),
            )
            transport = GuardedTransport(
                policy,
                verify_tls=self._config.url_preview_verify_tls,
                blocklist_key="media.url_preview_ip_range_blocklist",
                allowlist_key="media.url_preview_ip_range_allowlist",
            )
            self._client = httpx.AsyncClient(
                transport=transport,
                timeout=httpx.Timeout(self._config.url_preview_timeout),
                trust_env=False,
                follow_redirects=False,
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept-Language": ", ".join(self._config.url_preview_accept_language),
                    # Decoded sizes are what the cap counts; no brotli/zstd surprises.
                    # No compression: httpx would inflate each chunk in full before the size
                    # cap sees it, so a 1 MB gzip of 1 GB would be a memory bomb.
                    "Accept-Encoding": "identity",
                },
            )
        return self._client

    async def fetch(self, url: str, *, accept: Callable[[str], bool]) -> Fetched:
        """GET `url`, following redirects, within the time and size limits.

        Args:
            url: an absolute http(s) URL.
            accept: whether a Content-Type is worth reading; other bodies are refused
                (502, as Synapse) without being read.

        Raises:
            MatrixError: the fetch failed or was refused (see the module docstring).

        Checkpoint: yes.
        """
        try:
            with trio.fail_after(self._config.url_preview_timeout):
                return await self._follow(url, accept)
        except trio.TooSlowError:
            raise _bad_gateway(f"Timed out fetching {url}") from None
        except AddressBlocked as exc:
            logger.info("URL preview of %s refused: %s", url, exc)
            if exc.literal:
                raise MatrixError(
                    "M_UNKNOWN", "IP address blocked by IP blocklist entry", status=403
                ) from None
            raise _bad_gateway("DNS resolution failure during URL preview generation") from None
        except (httpx.HTTPError, UnicodeError) as exc:
            # UnicodeError: idna's, for a host (of a redirect, too) that is not IDNA.
            logger.info("URL preview of %s failed: %r", url, exc)
            raise _bad_gateway(f"Failed to download content: {type(exc).__name__}") from None

    async def _follow(self, url: str, accept: Callable[[str], bool]) -> Fetched:
        current = httpx.URL(url)
        for _hop in range(self._config.url_preview_max_redirects + 1):
            async with self._http().stream("GET", current) as response:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    current = _redirect_target(current, location)
                    continue
                if not 200 <= response.status_code < 300:
                    raise _bad_gateway(f"Got error {response.status_code}")
                content_type = response.headers.get("content-type", "application/octet-stream")
                if not accept(content_type):
                    raise _bad_gateway(
                        "Requested file's content type not allowed for this operation:"
                        f" {content_type}"
                    )
                body = await self._read_capped(response)
                return Fetched(str(current), content_type, body, _filename(response))
        raise _bad_gateway("Too many redirects")

    async def _read_capped(self, response: httpx.Response) -> bytes:
        limit = self._config.url_preview_max_size
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > limit:
                    # Stop reading: close the connection, then let the iteration fail on
                    # the closed stream. That ends each of httpx's nested async generators;
                    # leaving the loop instead would leave them suspended, to be finalised
                    # (with a ResourceWarning) by the garbage collector.
                    await response.aclose()
                else:
                    chunks.append(chunk)
        except httpx.HTTPError:  # ReadError, once closed
            if size <= limit:
                raise
        if size > limit:
            raise _too_large(limit)
        return b"".join(chunks)

    async def aclose(self) -> None:
        """Close the client, if one was made. Checkpoint: yes."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()


def _redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    try:
        target = current.join(location)
    except httpx.InvalidURL:
        raise _bad_gateway("Invalid redirect") from None
    # A host that is not IDNA raises a UnicodeError here; `fetch` answers it as for any hop.
    if target.scheme not in ("http", "https") or not target.host:
        raise _bad_gateway("Redirect to a URL that cannot be previewed")
    return target


def _filename(response: httpx.Response) -> str | None:
    header = response.headers.get("content-disposition")
    if header is None:
        return None
    message = EmailMessage()
    try:
        message["content-disposition"] = header
        name = message.get_filename()
    except (ValueError, IndexError):  # a malformed header: no name, not a failure
        return None
    return name or None


def _bad_gateway(message: str) -> MatrixError:
    return MatrixError("M_UNKNOWN", message, status=502)


def _too_large(limit: int) -> MatrixError:
    return MatrixError("M_TOO_LARGE", f"Requested file is too large > {limit} bytes", status=502)
