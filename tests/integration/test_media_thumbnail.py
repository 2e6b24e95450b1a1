"""``GET /_matrix/client/v1/media/thumbnail``: parameters, answers and headers."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest
from PIL import Image

import trio

from trioserver.testing import InProcessServer, serve_in_process

from tests.integration.client import Client, assert_error
from tests.integration.media_helpers import call, thumbnail_path, upload


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("params", "errcode"),
    [
        ({"height": "32"}, "M_MISSING_PARAM"),
        ({"width": "32"}, "M_MISSING_PARAM"),
        ({"width": "wide", "height": "32"}, "M_INVALID_PARAM"),
        ({"width": "-1", "height": "32"}, "M_INVALID_PARAM"),
        ({"width": "0", "height": "32"}, "M_INVALID_PARAM"),
        ({"width": "32", "height": "3.5"}, "M_INVALID_PARAM"),
        # More digits than Python's int() takes (a 500 once).
        ({"width": "9" * 5000, "height": "32"}, "M_INVALID_PARAM"),
        ({"width": "32", "height": "32", "method": "stretch"}, "M_INVALID_PARAM"),
        ({"width": "32", "height": "32", "animated": "yes"}, "M_INVALID_PARAM"),
        ({"width": "32", "height": "32", "timeout_ms": "-5"}, "M_INVALID_PARAM"),
    ],
)
async def test_bad_parameters_are_400(alice: Client, params: dict[str, str], errcode: str) -> None:
    uri = await upload(alice, png(64, 64), "image/png")
    response = await call(alice, "GET", thumbnail_path(uri), params=params)
    assert_error(response, 400, errcode)


async def wait_for_configured_thumbnails(hs: InProcessServer, count: int) -> None:
    # The configured sizes are made in the background after the upload.
    directory = Path(hs.config.data_dir) / "media" / "thumbnails"
    # The files are all there is to watch: poll them (bounded).
    with trio.fail_after(20):
        while True:
            if len([p for p in directory.rglob("*") if p.is_file()]) >= count:
                return
            await trio.sleep(0.05)


async def test_an_image_gets_a_thumbnail(hs: InProcessServer, alice: Client, bob: Client) -> None:
    uri = await upload(alice, png(1000, 500), "image/png", "big.png")
    await wait_for_configured_thumbnails(hs, 1)
    for method in ("scale", "crop"):
        response = await call(
            bob,
            "GET",
            thumbnail_path(uri),
            params={"width": 96, "height": 96, "method": method, "animated": "false"},
        )
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] in ("image/png", "image/jpeg")
        assert response.headers["content-disposition"] == "inline"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-security-policy"].startswith("sandbox;")
        assert response.headers["content-length"] == str(len(response.content))
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.width <= 1000
            assert image.height <= 500
            assert image.width >= 96 or image.height >= 96


async def test_media_that_is_not_an_image_has_no_thumbnail(alice: Client) -> None:
    # Spec: 400 when the server cannot thumbnail the content (Synapse: M_UNKNOWN).
    uri = await upload(alice, b"just text", "text/plain")
    response = await call(alice, "GET", thumbnail_path(uri), params={"width": 32, "height": 32})
    assert_error(response, 400, "M_UNKNOWN")
    uri = await upload(alice, b"not really a png", "image/png")
    response = await call(alice, "GET", thumbnail_path(uri), params={"width": 32, "height": 32})
    assert_error(response, 400, "M_UNKNOWN")


async def test_dynamic_thumbnails_of_a_non_image_fail_as_synapse(tmp_path: Path) -> None:
    async with (
        serve_in_process(tmp_path, media={"dynamic_thumbnails": True}) as hs,
        httpx.AsyncClient(base_url=hs.base_url, timeout=30) as http,
    ):
        user = await hs.register_user("alice", "pw")
        alice = Client(http, user.user_id, user.access_token, user.device_id)
        uri = await upload(alice, b"%PDF-1.4", "application/pdf")
        response = await call(
            alice, "GET", thumbnail_path(uri), params={"width": 32, "height": 32}
        )
        assert_error(response, 400, "M_UNKNOWN")
        uri = await upload(alice, png(300, 300), "image/png")
        response = await call(
            alice,
            "GET",
            thumbnail_path(uri),
            params={"width": 50, "height": 40, "method": "crop"},
        )
        assert response.status_code == 200
        with Image.open(io.BytesIO(response.content)) as image:
            assert image.size == (50, 40)
