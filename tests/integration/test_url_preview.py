"""GET /preview_url over real HTTP: a real server previewing pages of a real local web site.

The site is a small h11 server on 127.0.0.1 that counts the requests it gets, so the tests
can see what the homeserver fetched (and what it did not). 127.0.0.1 is allowlisted;
127.0.0.2 and ::1 are loopback addresses still blocked by the default blocklist.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import h11
import httpx
import PIL.Image
import pytest

import trio

from trioserver.config import MediaConfig
from trioserver.media.preview.handler import PreviewHandler
from trioserver.stores.url_previews import UrlPreviewStore
from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import assert_error, assert_ok, bearer
from tests.integration.server_db import store_database

V1 = "/_matrix/client/v1/media/preview_url"
LEGACY = "/_matrix/media/v3/preview_url"
MAX_SIZE = 64 * 1024
TIMEOUT = 0.5

PAGE = b"""<!DOCTYPE html>
<html><head><title>A  test page</title>
<meta property="og:description" content="Described by OpenGraph">
<meta property="og:image" content="/pic.png">
</head><body><p>Body text</p></body></html>"""


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    PIL.Image.new("RGB", (width, height), (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


@attrs.define
class Page:
    """What the site answers for one path."""

    body: bytes = b""
    status: int = 200
    headers: list[tuple[str, str]] = attrs.field(factory=list)
    content_type: str = "text/html; charset=utf-8"
    delay: float = 0.0  # seconds before answering
    repeat: int = 1  # the body is sent this many times, without Content-Length
    declared_length: int | None = None  # a Content-Length to claim instead of the real one


@attrs.define
class Site:
    """A local web site: pages by path, and a count of requests per path."""

    pages: dict[str, Page] = attrs.field(factory=dict)
    hits: Counter[str] = attrs.field(factory=Counter)
    request_headers: list[dict[str, str]] = attrs.field(factory=list)
    port: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                await self._respond(stream, conn, event)
            return

    async def _respond(
        self, stream: trio.SocketStream, conn: h11.Connection, req: h11.Request
    ) -> None:
        path = req.target.decode()
        self.hits[path] += 1
        self.request_headers.append({k.decode(): v.decode() for k, v in req.headers})
        page = self.pages.get(path, Page(b"not here", status=404))
        await trio.sleep(page.delay)
        headers = [("content-type", page.content_type), ("connection", "close"), *page.headers]
        if page.declared_length is not None:
            headers.append(("content-length", str(page.declared_length)))
        elif page.repeat == 1:
            headers.append(("content-length", str(len(page.body))))
        try:
            await stream.send_all(
                conn.send(h11.Response(status_code=page.status, headers=headers))
            )
            for _ in range(page.repeat):
                await stream.send_all(conn.send(h11.Data(data=page.body)))
            if page.declared_length is None:
                await stream.send_all(conn.send(h11.EndOfMessage()))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the homeserver stopped reading (size cap, timeout): expected


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    site = Site()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, site.handle, 0, host="127.0.0.1"))
        site.port = listeners[0].socket.getsockname()[1]
        yield site
        nursery.cancel_scope.cancel()


PREVIEW_MEDIA = {
    "url_preview_enabled": True,
    "url_preview_ip_range_allowlist": ["127.0.0.1/32"],
    "url_preview_max_size": MAX_SIZE,
    "url_preview_timeout": TIMEOUT,
    "url_preview_max_redirects": 3,
    "url_preview_accept_language": ["fr", "en;q=0.5"],
}


@pytest.fixture
async def previews() -> AsyncIterator[InProcessServer]:
    async with serve_in_process(media=PREVIEW_MEDIA) as server:
        yield server


@pytest.fixture
async def token(previews: InProcessServer) -> str:
    return (await previews.register_user("alice", "alicepw")).access_token


async def preview(server: InProcessServer, token: str, url: str, **params: Any) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
        return await http.get(V1, params={"url": url, **params}, headers=bearer(token))


async def test_disabled_previews_answer_like_an_unknown_endpoint(hs: InProcessServer) -> None:
    token = (await hs.register_user("alice", "alicepw")).access_token
    async with httpx.AsyncClient(base_url=hs.base_url) as http:
        for path in (V1, LEGACY, "/_matrix/media/r0/preview_url"):
            params = {"url": "http://example.org/"}
            assert_error(
                await http.get(path, params=params, headers=bearer(token)), 404, "M_UNRECOGNIZED"
            )
            # The token is checked first, as in Synapse.
            assert_error(await http.get(path, params=params), 401, "M_MISSING_TOKEN")


async def test_html_page_preview(previews: InProcessServer, token: str, site: Site) -> None:
    site.pages["/page"] = Page(PAGE)
    image = png(40, 30)
    site.pages["/pic.png"] = Page(image, content_type="image/png")
    og = assert_ok(await preview(previews, token, site.url("/page")))
    # The page's image is kept as local media: clients never contact the site themselves.
    mxc = og.pop("og:image")
    assert og == {
        "og:title": "A test page",
        "og:description": "Described by OpenGraph",
        "og:image:type": "image/png",
        "og:image:width": 40,
        "og:image:height": 30,
        "matrix:image:size": len(image),
    }
    assert site.hits == {"/page": 1, "/pic.png": 1}
    server_name, media_id = mxc.removeprefix("mxc://").split("/")
    async with httpx.AsyncClient(base_url=previews.base_url) as http:
        download = await http.get(
            f"/_matrix/client/v1/media/download/{server_name}/{media_id}", headers=bearer(token)
        )
    assert download.status_code == 200
    assert download.content == image
    assert download.headers["content-type"] == "image/png"
    sent = site.request_headers[0]
    assert "trioserver" in sent["user-agent"]
    assert sent["accept-language"] == "fr, en;q=0.5"


async def test_legacy_route_needs_a_token_and_serves_the_same(
    previews: InProcessServer, token: str, site: Site
) -> None:
    site.pages["/page"] = Page(PAGE)
    async with httpx.AsyncClient(base_url=previews.base_url) as http:
        params = {"url": site.url("/page")}
        assert_error(await http.get(LEGACY, params=params), 401, "M_MISSING_TOKEN")
        assert_error(await http.get(V1, params=params), 401, "M_MISSING_TOKEN")
        bad = {"authorization": "Bearer nope"}
        assert_error(await http.get(V1, params=params, headers=bad), 401, "M_UNKNOWN_TOKEN")
        og = assert_ok(await http.get(LEGACY, params=params, headers=bearer(token)))
    assert og["og:title"] == "A test page"
    assert site.hits["/page"] == 1


async def test_bad_parameters(previews: InProcessServer, token: str, site: Site) -> None:
    async with httpx.AsyncClient(base_url=previews.base_url) as http:
        response = await http.get(V1, headers=bearer(token))
    assert_error(response, 400, "M_MISSING_PARAM")
    bad_urls = (
        "ftp://127.0.0.1/",
        "file:///etc/passwd",
        "not a url",
        "http://",
        "javascript:1",
        "http://xn--.com/",  # not an IDNA label: the URL parser raises a UnicodeError
        "http://xn--a.com/",
    )
    for url in bad_urls:
        assert_error(await preview(previews, token, url), 400, "M_INVALID_PARAM")
    for ts in ("soon", "-5", "1.5", ""):
        response = await preview(previews, token, site.url("/page"), ts=ts)
        assert_error(response, 400, "M_INVALID_PARAM")
    assert not site.hits


async def test_default_blocklist_refuses_loopback(site: Site) -> None:
    site.pages["/page"] = Page(PAGE)
    async with serve_in_process(media={"url_preview_enabled": True}) as server:
        token = (await server.register_user("alice", "alicepw")).access_token
        # An IP address in the URL: 403, as Synapse; a name resolving to one: 502.
        response = await preview(server, token, site.url("/page"))
        assert_error(response, 403, "M_UNKNOWN")
        response = await preview(server, token, site.url("/page", host="localhost"))
        assert_error(response, 502, "M_UNKNOWN")
    assert not site.hits


@pytest.mark.parametrize(
    "target",
    # Loopback directly, and through the IPv6 forms that carry an IPv4 address (NAT64,
    # IPv4-compatible, 6to4), "this network", and a broadcast address.
    [
        "127.0.0.2",
        "[::1]",
        "0.0.0.0",
        "[64:ff9b::7f00:2]",
        "[::127.0.0.2]",
        "[2002:7f00:2::1]",
        "0.1.2.3",
        "255.255.255.255",
    ],
)
async def test_redirect_to_a_blocked_address_is_refused(
    previews: InProcessServer, token: str, site: Site, target: str
) -> None:
    site.pages["/go"] = Page(
        status=302, headers=[("location", f"http://{target}:{site.port}/page")]
    )
    site.pages["/page"] = Page(PAGE)
    assert_error(await preview(previews, token, site.url("/go")), 403, "M_UNKNOWN")
    assert site.hits == {"/go": 1}


async def test_redirects_are_followed_to_the_limit(
    previews: InProcessServer, token: str, site: Site
) -> None:
    site.pages["/page"] = Page(PAGE)
    for n in range(1, 5):
        nxt = "/page" if n == 4 else f"/r{n + 1}"
        site.pages[f"/r{n}"] = Page(status=301 if n % 2 else 307, headers=[("location", nxt)])
    # Three redirects (the limit): followed, relative Locations included.
    og = assert_ok(await preview(previews, token, site.url("/r2")))
    assert og["og:title"] == "A test page"
    # Four: refused without fetching the last page.
    assert_error(await preview(previews, token, site.url("/r1")), 502, "M_UNKNOWN")
    assert site.hits["/page"] == 1
    site.pages["/loop"] = Page(status=302, headers=[("location", "/loop")])
    assert_error(await preview(previews, token, site.url("/loop")), 502, "M_UNKNOWN")
    assert site.hits["/loop"] == 4
    site.pages["/ftp"] = Page(status=302, headers=[("location", "ftp://127.0.0.1/x")])
    assert_error(await preview(previews, token, site.url("/ftp")), 502, "M_UNKNOWN")
    # A host that is not IDNA (the URL parser raises a UnicodeError): a bad gateway, not a 500.
    site.pages["/idna"] = Page(status=302, headers=[("location", "http://xn--.com/x")])
    assert_error(await preview(previews, token, site.url("/idna")), 502, "M_UNKNOWN")


async def test_size_cap(previews: InProcessServer, token: str, site: Site) -> None:
    big = b"<html><body>" + b"x" * 1024
    site.pages["/streamed"] = Page(big, repeat=MAX_SIZE // len(big) + 2)
    site.pages["/declared"] = Page(b"<html>", declared_length=MAX_SIZE + 1)
    site.pages["/fits"] = Page(b"<title>fits</title>" + b" " * (MAX_SIZE - 100))
    for path in ("/streamed", "/declared"):
        assert_error(await preview(previews, token, site.url(path)), 502, "M_TOO_LARGE")
    assert assert_ok(await preview(previews, token, site.url("/fits"))) == {"og:title": "fits"}


async def test_timeout_covers_the_whole_fetch(
    previews: InProcessServer, token: str, site: Site
) -> None:
    site.pages["/slow"] = Page(PAGE, delay=TIMEOUT * 4)
    # Two hops of 60% of the timeout each: each is quick enough, both together are not.
    site.pages["/hop"] = Page(status=302, headers=[("location", "/hop2")], delay=TIMEOUT * 0.6)
    site.pages["/hop2"] = Page(PAGE, delay=TIMEOUT * 0.6)
    for path in ("/slow", "/hop"):
        started = time.monotonic()
        assert_error(await preview(previews, token, site.url(path)), 502, "M_UNKNOWN")
        assert time.monotonic() - started < TIMEOUT * 3


async def test_upstream_errors_and_unpreviewable_types(
    previews: InProcessServer, token: str, site: Site
) -> None:
    site.pages["/pdf"] = Page(b"%PDF-1.4", content_type="application/pdf")
    site.pages["/json"] = Page(b'{"a": 1}', content_type="application/json")
    site.pages["/broken"] = Page(b"oops", status=500)
    assert_error(await preview(previews, token, site.url("/missing")), 502, "M_UNKNOWN")
    assert_error(await preview(previews, token, site.url("/broken")), 502, "M_UNKNOWN")
    assert_error(await preview(previews, token, site.url("/pdf")), 502, "M_UNKNOWN")
    # JSON is read (Synapse follows oEmbed with it); as a page it previews as nothing.
    assert assert_ok(await preview(previews, token, site.url("/json"))) == {}
    # Nothing listens on port 1.
    response = await preview(previews, token, "http://127.0.0.1:1/")
    assert_error(response, 502, "M_UNKNOWN")


async def test_image_url_preview(previews: InProcessServer, token: str, site: Site) -> None:
    image = png(40, 30)
    site.pages["/pic.png"] = Page(
        image,
        content_type="image/png",
        headers=[("content-disposition", 'inline; filename="red.png"')],
    )
    og = assert_ok(await preview(previews, token, site.url("/pic.png")))
    assert og.pop("og:image").startswith(f"mxc://{previews.server_name}/")
    assert og == {
        "og:image:type": "image/png",
        "matrix:image:size": len(image),
        "og:image:width": 40,
        "og:image:height": 30,
        "og:description": "red.png",
    }


async def test_previews_are_cached(previews: InProcessServer, token: str, site: Site) -> None:
    site.pages["/page"] = Page(PAGE)
    first = assert_ok(await preview(previews, token, site.url("/page")))
    site.pages["/page"] = Page(b"<title>changed</title>")
    assert assert_ok(await preview(previews, token, site.url("/page"))) == first
    now_ms = int(time.time() * 1000)
    # Asked as of half an hour ago, or in half an hour: the same cached preview.
    for ts in (now_ms - 1_800_000, now_ms + 1_800_000):
        assert assert_ok(await preview(previews, token, site.url("/page"), ts=ts)) == first
    assert site.hits["/page"] == 1
    # As of two hours from now the cached preview has expired: fetched again.
    later = assert_ok(await preview(previews, token, site.url("/page"), ts=now_ms + 7_200_000))
    assert later == {"og:title": "changed"}
    assert site.hits["/page"] == 2
    # A failure is not cached.
    assert_error(await preview(previews, token, site.url("/gone")), 502, "M_UNKNOWN")
    site.pages["/gone"] = Page(b"<title>back</title>")
    assert assert_ok(await preview(previews, token, site.url("/gone"))) == {"og:title": "back"}


async def test_cache_survives_a_restart(tmp_path: Path, site: Site) -> None:
    site.pages["/page"] = Page(PAGE)
    token = ""
    for run in range(2):
        async with serve_in_process(tmp_path, media=PREVIEW_MEDIA) as server:
            if run == 0:
                token = (await server.register_user("alice", "alicepw")).access_token
            og = assert_ok(await preview(server, token, site.url("/page")))
            assert og["og:title"] == "A test page"
    assert site.hits["/page"] == 1


async def test_concurrent_requests_share_one_fetch(
    previews: InProcessServer, token: str, site: Site
) -> None:
    site.pages["/slowish"] = Page(PAGE, delay=0.2)
    results: list[httpx.Response] = []

    async def ask() -> None:
        results.append(await preview(previews, token, site.url("/slowish")))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(ask)
    assert [r.status_code for r in results] == [200] * 4
    assert len({r.content for r in results}) == 1
    assert site.hits["/slowish"] == 1


async def test_page_image_is_kept_as_local_media(tmp_path: Path, site: Site) -> None:
    # The handler as the media repository will wire it: store_image keeps the image.
    image = png(64, 48)
    site.pages["/page"] = Page(PAGE)
    site.pages["/pic.png"] = Page(image, content_type="image/png")
    site.pages["/no-image"] = Page(b'<meta property="og:image" content="/missing.png">')
    stored: list[tuple[bytes, str]] = []

    async def store_image(data: bytes, content_type: str) -> str:
        stored.append((data, content_type))
        return f"mxc://test/{len(stored)}"

    config = MediaConfig(url_preview_ip_range_allowlist=("127.0.0.1/32",))
    async with store_database(tmp_path) as db:
        handler = PreviewHandler(UrlPreviewStore(db), config, store_image=store_image)
        og = await handler.preview(site.url("/page"))
        assert og == {
            "og:title": "A test page",
            "og:description": "Described by OpenGraph",
            "og:image": "mxc://test/1",
            "og:image:type": "image/png",
            "matrix:image:size": len(image),
            "og:image:width": 64,
            "og:image:height": 48,
        }
        assert stored == [(image, "image/png")]
        # An image that cannot be fetched: the preview goes without it.
        assert await handler.preview(site.url("/no-image")) == {}
        assert site.hits["/missing.png"] == 1


async def test_a_cancelled_fetch_does_not_fail_the_requests_sharing_it(
    tmp_path: Path, site: Site
) -> None:
    site.pages["/slowish"] = Page(PAGE, delay=0.3)
    url = site.url("/slowish")
    config = MediaConfig(url_preview_ip_range_allowlist=("127.0.0.1/32",))
    results: list[dict[str, Any]] = []
    async with store_database(tmp_path) as db:
        handler = PreviewHandler(UrlPreviewStore(db), config, store_image=None)
        leader = trio.CancelScope()

        async def lead() -> None:
            with leader:
                await handler.preview(url)

        async def follow() -> None:
            results.append(await handler.preview(url))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(lead)
            await trio.sleep(0.1)  # the leader's fetch is under way
            nursery.start_soon(follow)
            await trio.sleep(0.05)
            leader.cancel()  # e.g. its client went away
    # The follower was not cancelled with it: it fetched again itself.
    assert results == [{"og:title": "A test page", "og:description": "Described by OpenGraph"}]
    assert site.hits["/slowish"] == 2


async def test_store_picks_the_preview_nearest_a_time_and_drops_expired_ones(
    tmp_path: Path,
) -> None:
    async with store_database(tmp_path) as db:
        store = UrlPreviewStore(db)
        url = "https://example.org/"
        await store.store_preview(url, 1_000, 5_000, {"og:title": "first"})
        await store.store_preview(url, 3_000, 9_000, {"og:title": "second"})
        await store.store_preview("https://other.example/", 3_000, 9_000, {"og:title": "x"})
        assert await store.preview_at("https://nothing.example/", 2_000) is None
        at = {ts: await store.preview_at(url, ts) for ts in (500, 1_000, 2_999, 3_000, 10**13)}
        assert {ts: p.og["og:title"] for ts, p in at.items() if p is not None} == {
            500: "first",  # nothing before: the earliest after
            1_000: "first",
            2_999: "first",
            3_000: "second",
            10**13: "second",
        }
        assert await store.delete_expired(5_000) == 1
        earliest = await store.preview_at(url, 500)
        assert earliest is not None
        assert (earliest.download_ts, earliest.expires_ts) == (3_000, 9_000)
        assert await store.delete_expired(9_000) == 2
        assert await store.preview_at(url, 500) is None
