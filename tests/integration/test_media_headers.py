"""What a browser is told about downloaded media (spec v1.11 "Content repository", security)."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from trioserver.testing import serve_in_process

from tests.integration.client import Client, assert_error
from tests.integration.media_helpers import call, download_path, thumbnail_path, upload

CSP = (
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf;"
    " style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
)


def assert_safety_headers(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cross-origin-resource-policy"] == "cross-origin"
    # A browser may keep media a day; a shared cache must revalidate (authenticated media).
    assert response.headers["cache-control"] == "public,max-age=86400,s-maxage=0,proxy-revalidate"
    assert response.headers["etag"] == "1"
    # Browser clients on other origins fetch media with CORS.
    assert response.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize(
    ("content_type", "served_type"),
    [
        ("text/html", "text/html; charset=UTF-8"),
        ("image/svg+xml", "image/svg+xml; charset=UTF-8"),
        ("application/xhtml+xml", "application/xhtml+xml"),
        ("application/javascript", "application/javascript"),
        ("application/pdf", "application/pdf"),
    ],
)
async def test_active_content_is_an_attachment_and_sandboxed(
    alice: Client, content_type: str, served_type: str
) -> None:
    page = b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>"
    uri = await upload(alice, page, content_type, "evil.html")
    response = await call(alice, "GET", download_path(uri))
    assert response.status_code == 200
    assert response.content == page
    assert response.headers["content-type"] == served_type
    assert response.headers["content-disposition"] == "attachment; filename=evil.html"
    assert_safety_headers(response)


@pytest.mark.parametrize(
    ("content_type", "served_type"),
    [
        ("image/png", "image/png"),
        ("image/jpeg", "image/jpeg"),
        ("video/mp4", "video/mp4"),
        ("audio/ogg", "audio/ogg"),
        ("text/plain", "text/plain; charset=UTF-8"),
        # An uploader's own charset is kept.
        ("text/plain; charset=ISO-8859-1", "text/plain; charset=ISO-8859-1"),
    ],
)
async def test_passive_content_is_inline(
    alice: Client, content_type: str, served_type: str
) -> None:
    uri = await upload(alice, b"bytes", content_type, "file")
    response = await call(alice, "GET", download_path(uri))
    assert response.headers["content-type"] == served_type
    assert response.headers["content-disposition"] == "inline; filename=file"
    assert_safety_headers(response)


@pytest.mark.parametrize(
    "name",
    [
        "résumé.pdf",
        "猫.png",
        'quote".txt',
        "two words.txt",
        "semi;colon",
        "line\r\nbreak",
    ],
)
async def test_file_names_are_encoded_never_raw(alice: Client, name: str) -> None:
    uri = await upload(alice, b"x", "application/pdf", name)
    response = await call(alice, "GET", download_path(uri))
    header = response.headers["content-disposition"]
    assert header == f"attachment; filename*=utf-8''{quote(name.encode(), safe='')}"
    assert '"' not in header
    assert "\r" not in header
    assert "\n" not in header


async def test_the_file_name_segment_overrides_the_uploaded_name(alice: Client) -> None:
    uri = await upload(alice, b"x", "image/png", "original.png")
    response = await call(alice, "GET", download_path(uri, filename="other.png"))
    assert response.status_code == 200
    assert response.headers["content-disposition"] == "inline; filename=other.png"
    encoded = quote("naïve name.png")
    response = await call(alice, "GET", download_path(uri, filename=encoded))
    assert response.headers["content-disposition"] == (
        f"inline; filename*=utf-8''{quote('naïve name.png', safe='')}"
    )


async def test_legacy_endpoints_serve_nothing_after_the_freeze(
    http: httpx.AsyncClient, alice: Client
) -> None:
    # Default freeze: everything is authenticated-only (spec v1.11, as Synapse).
    uri = await upload(alice, b"x", "image/png")
    for path in (
        download_path(uri, legacy=True),
        download_path(uri, legacy=True, filename="a.png"),
        download_path(uri, legacy=True).replace("/v3/", "/r0/"),
        f"{thumbnail_path(uri, legacy=True)}?width=32&height=32",
    ):
        assert_error(await http.get(path), 404, "M_NOT_FOUND")
        # A token does not make a legacy download work either.
        assert_error(await call(alice, "GET", path), 404, "M_NOT_FOUND")


async def test_legacy_download_serves_media_from_before_the_freeze(tmp_path: Path) -> None:
    freeze_ms = int(time.time() * 1000) + 3_600_000
    async with (
        serve_in_process(tmp_path, media={"unauthenticated_media_before_ts": freeze_ms}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        uri = await upload(alice, b"<b>old</b>", "text/html", "old.html")
        for path in (download_path(uri, legacy=True), download_path(uri, legacy=True) + "/x"):
            response = await http.get(path)
            assert response.status_code == 200
            assert response.content == b"<b>old</b>"
            assert response.headers["content-disposition"].startswith("attachment; filename=")
            assert_safety_headers(response)


async def test_a_browser_revalidating_gets_304_after_the_access_checks(
    alice: Client, http: httpx.AsyncClient
) -> None:
    uri = await upload(alice, b"cached bytes", "image/png")
    first = await call(alice, "GET", download_path(uri))
    assert first.status_code == 200
    again = await call(alice, "GET", download_path(uri), {"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == "1"
    # The token is still needed: a 304 never stands in for the access check.
    response = await http.get(download_path(uri), headers={"If-None-Match": "1"})
    assert_error(response, 401, "M_MISSING_TOKEN")
    # Other validators get the content.
    other = await call(alice, "GET", download_path(uri), {"If-None-Match": '"abc"'})
    assert other.status_code == 200
    assert other.content == b"cached bytes"
