"""``GET /preview_url``: a URL's OpenGraph preview, fetched once and cached.

Theory of operation
-------------------
A preview is looked up in the ``url_previews`` cache first (`UrlPreviewStore.preview_at`: the
stored preview nearest the client's ``ts``, served while it has not expired at that time).
Otherwise the page is fetched (`PreviewFetcher`: guarded, bounded) and turned into
OpenGraph: an HTML page through `parse_open_graph` (in a worker thread: parsing megabytes of
HTML must not stall the event loop), an image into ``og:image`` of a local copy, anything
else (JSON: oEmbed, which we do not follow) into ``{}``. The result is stored for an hour,
Synapse's fixed expiry.

Concurrent requests for one URL share one fetch (Synapse does the same): the first request
leads, the others wait for its result. If the leader is cancelled (its client went away) the
waiters do not inherit the cancellation: one of them leads a new attempt.

Images (the page's ``og:image``, or the URL itself) are kept as local media through
`store_image` so clients never fetch from the remote site (which would reveal who reads the
room). Without it (`None`) no image is fetched and ``og:image`` is left out.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver.errors import MatrixError

if TYPE_CHECKING:
    from trioserver.config import MediaConfig
    from trioserver.media.preview.fetch import Fetched, PreviewFetcher
    from trioserver.stores.url_previews import UrlPreviewStore

logger = logging.getLogger(__name__)

# Image bytes and their content type in, the mxc:// URI of the stored copy out.
StoreImage = Callable[[bytes, str], Awaitable[str]]

# Synapse fixes a preview's lifetime at one hour (it does not read Cache-Control).
PREVIEW_LIFETIME_MS = 60 * 60 * 1000
# How often expired previews are deleted.
EXPIRY_INTERVAL = 600.0


def is_image(content_type: str) -> bool:
    """Whether a Content-Type is an image (previewed as itself)."""
    return content_type.lower().startswith("image/")


def _previewable(content_type: str) -> bool:
    # Synapse reads HTML, images and JSON (for oEmbed); anything else is refused unread.
    from trioserver.media.preview.opengraph import is_html  # see `_preview`

    return is_html(content_type) or is_image(content_type) or _is_json(content_type)


def _is_json(content_type: str) -> bool:
    return content_type.lower().startswith("application/json")


def check_preview_url(url: str) -> None:
    """Refuse a URL that cannot be previewed.

    Raises:
        MatrixError: 400 ``M_INVALID_PARAM`` unless it is an absolute http(s) URL with a host.
    """
    # Imported on first use, like the fetcher: httpx (with http.client, urllib.request and
    # http.cookiejar) costs a few MB of RSS on every instance, previews or not.
    import httpx

    try:
        parsed = httpx.URL(url)
        host = parsed.host  # decoded here: an ``xn--`` label that is not IDNA raises
    except (httpx.InvalidURL, UnicodeError):  # idna's errors are UnicodeErrors
        raise MatrixError("M_INVALID_PARAM", "Invalid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise MatrixError("M_INVALID_PARAM", "Only http and https URLs can be previewed")
    if not host:
        raise MatrixError("M_INVALID_PARAM", "Invalid URL: no host")


@attrs.define
class _Flight:
    """One fetch in progress, shared by the requests for its URL."""

    done: trio.Event = attrs.field(factory=trio.Event)
    result: dict[str, Any] | None = None
    error: MatrixError | None = None


class PreviewHandler:
    """URL previews: the cache, the coalescing of fetches, and OpenGraph building."""

    def __init__(
        self,
        store: UrlPreviewStore,
        config: MediaConfig,
        *,
        store_image: StoreImage | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._config = config
        self._fetcher: PreviewFetcher | None = None
        self._store_image = store_image
        self._clock = clock
        self._flights: dict[str, _Flight] = {}

    async def preview(self, url: str, ts: int | None = None) -> dict[str, Any]:
        """The OpenGraph preview of `url` (as the client gave it).

        Args:
            ts: the preferred time of the preview, ms since the epoch (default: now).

        Raises:
            MatrixError: the URL is invalid (400), refused (403) or cannot be fetched (502).

        Checkpoint: yes.
        """
        check_preview_url(url)
        when = ts if ts is not None else self._now_ms()
        while True:
            flight = self._flights.get(url)
            if flight is None:
                return await self._lead(url, when)
            await flight.done.wait()
            if flight.result is not None:
                return dict(flight.result)
            if flight.error is not None:
                err = flight.error
                raise MatrixError(err.errcode, err.message, status=err.status)
            # The leader was cancelled (or failed with a bug, logged there): try again.

    async def _lead(self, url: str, ts: int) -> dict[str, Any]:
        flight = self._flights[url] = _Flight()
        try:
            flight.result = await self._cached_or_fetched(url, ts)
        except MatrixError as err:
            flight.error = err
            raise
        finally:
            del self._flights[url]
            flight.done.set()
        return dict(flight.result)

    async def _cached_or_fetched(self, url: str, ts: int) -> dict[str, Any]:
        cached = await self._store.preview_at(url, ts)
        if cached is not None and cached.expires_ts > ts:
            return cached.og
        # Imported on the first preview, like the fetcher: the HTML parser (and its tables of
        # entities) is memory an instance that never previews does not need (issue 13).
        from trioserver.media.preview.opengraph import is_html, parse_open_graph

        fetched_ts = self._now_ms()
        page = await self._fetch().fetch(url, accept=_previewable)
        if is_image(page.content_type):
            og = await self._image_fields(page)
            if page.filename:
                og["og:description"] = page.filename
        elif is_html(page.content_type):
            og = await trio.to_thread.run_sync(
                parse_open_graph, page.body, page.url, page.content_type
            )
            await self._add_page_image(og)
        else:
            og = {}
        await self._store.store_preview(url, fetched_ts, fetched_ts + PREVIEW_LIFETIME_MS, og)
        return og

    async def _add_page_image(self, og: dict[str, Any]) -> None:
        """Replace the page's ``og:image`` URL by a local copy (or drop it)."""
        image_url = og.pop("og:image", None)
        if not isinstance(image_url, str) or self._store_image is None:
            return
        try:
            image = await self._fetch().fetch(image_url, accept=is_image)
            og.update(await self._image_fields(image))
        except MatrixError as err:
            # The page's preview is still worth having without its image (as Synapse).
            logger.info("URL preview image %s not kept: %s", image_url, err.message)

    async def _image_fields(self, image: Fetched) -> dict[str, Any]:
        content_type = image.content_type.split(";", 1)[0].strip()
        fields: dict[str, Any] = {
            "og:image:type": content_type,
            "matrix:image:size": len(image.body),
        }
        size = await trio.to_thread.run_sync(_image_size, image.body)
        if size is not None:
            fields["og:image:width"], fields["og:image:height"] = size
        if self._store_image is not None:
            fields["og:image"] = await self._store_image(image.body, content_type)
        return fields

    async def run_expiry(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The subsystem: delete expired previews every `EXPIRY_INTERVAL` seconds; on the way
        out, close the outbound HTTP client (STYLE S1).

        Checkpoint: yes (runs until cancelled).
        """
        task_status.started()
        try:
            while True:
                deleted = await self._store.delete_expired(self._now_ms())
                if deleted:
                    logger.debug("deleted %d expired URL previews", deleted)
                await trio.sleep(EXPIRY_INTERVAL)
        finally:
            # Shielded: the final close of pooled connections, bounded by a short deadline.
            if self._fetcher is not None:
                with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
                    await self._fetcher.aclose()

    def _fetch(self) -> PreviewFetcher:
        if self._fetcher is None:
            # Imported when the first page is fetched: the fetcher's guarded transport and
            # httpx are not worth their memory on an instance that never fetches one.
            from trioserver.media.preview.fetch import PreviewFetcher

            self._fetcher = PreviewFetcher(self._config)
        return self._fetcher

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)


_IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")


def _image_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the image's header (Pillow decodes no pixels for this)."""
    # Imported on first use: Pillow costs ~2 MB of RSS, for a feature most servers leave off.
    import PIL.Image

    try:
        # Only the common web formats: other Pillow plugins raise other errors (DDS:
        # NotImplementedError) and are not worth a decoder anyway.
        with PIL.Image.open(io.BytesIO(data), formats=_IMAGE_FORMATS) as image:
            width, height = image.size
    except (PIL.UnidentifiedImageError, PIL.Image.DecompressionBombError, OSError, ValueError):
        return None
    return int(width), int(height)
