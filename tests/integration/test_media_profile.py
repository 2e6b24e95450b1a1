"""An avatar set through ``/profile`` resolves through the media download endpoint."""

from __future__ import annotations

import io
from urllib.parse import quote

from PIL import Image

from tests.integration.client import Client, assert_ok
from tests.integration.media_helpers import call, download_path, thumbnail_path, upload


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (128, 128), (10, 120, 200)).save(out, "JPEG")
    return out.getvalue()


async def test_an_avatar_url_resolves_to_the_uploaded_image(alice: Client, bob: Client) -> None:
    picture = jpeg()
    uri = await upload(alice, picture, "image/jpeg", "me.jpg")
    profile = f"/profile/{quote(alice.user_id)}"
    assert_ok(await alice.put(f"{profile}/avatar_url", {"avatar_url": uri}))
    # Another user reads the profile and fetches what it points at, as a client would.
    avatar_url = assert_ok(await bob.get(profile))["avatar_url"]
    assert avatar_url == uri
    response = await call(bob, "GET", download_path(avatar_url))
    assert response.status_code == 200
    assert response.content == picture
    assert response.headers["content-type"] == "image/jpeg"
    params = {"width": 32, "height": 32, "method": "crop"}
    thumbnail = await call(bob, "GET", thumbnail_path(avatar_url), params=params)
    assert thumbnail.status_code == 200, thumbnail.text
    with Image.open(io.BytesIO(thumbnail.content)) as image:
        assert image.size == (32, 32)
