"""Media through a real client library (matrix-nio, asyncio); run as a separate process.

Usage: python -m tests.integration.nio_media_scenario BASE_URL (from the checkout).

Alice uploads a PNG (made with Pillow) and a binary file with nio's `upload`, sends them as
m.image / m.file, uploads an encrypted attachment (nio's own attachment crypto, as it does for
an E2EE room) and sets her avatar to an uploaded picture; Bob syncs, sees each message and
downloads each file with nio's `download` (which uses the authenticated
`/_matrix/client/v1/media/download` endpoint), byte-identical, fetches a thumbnail, decrypts
the attachment, and resolves Alice's avatar (profile and room membership). A lazily read upload
without a size (no Content-Length) must arrive whole too.

Prints one `step: ...` line per step and one `media: LABEL MXC SHA256` line per upload (so
the calling test can check the same media over plain HTTP), `ok` last; exits non-zero with the
reason on the first mismatch. Used by test_media_clients.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

from nio import (
    AsyncClient,
    JoinResponse,
    MemoryDownloadResponse,
    ProfileGetAvatarResponse,
    ProfileSetAvatarResponse,
    ResizingMethod,
    RoomCreateResponse,
    RoomEncryptedFile,
    RoomMessage,
    RoomMessageFile,
    RoomMessageImage,
    RoomSendResponse,
    SyncResponse,
    ThumbnailResponse,
    UploadResponse,
)
from nio.crypto.attachments import decrypt_attachment, encrypt_attachment
from PIL import Image

from tests.integration.nio_scenario import register, step, sync_until


def fail(what: str) -> SystemExit:
    return SystemExit(f"FAIL: {what}")


def make_png(width: int, height: int) -> bytes:
    """A real PNG with varied pixels (a gradient), so it is not a trivially tiny file."""
    image = Image.new("RGB", (width, height))
    image.putdata(
        [
            ((x * 255) // width, (y * 255) // height, (x ^ y) & 0xFF)
            for y in range(height)
            for x in range(width)
        ]
    )
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upload(
    client: AsyncClient, label: str, data: bytes, content_type: str, name: str | None
) -> str:
    response, keys = await client.upload(
        io.BytesIO(data), content_type=content_type, filename=name, filesize=len(data)
    )
    if not isinstance(response, UploadResponse):
        raise fail(f"upload {label}: {response}")
    assert keys is None
    uri: str = response.content_uri
    if not uri.startswith("mxc://localhost/"):
        raise fail(f"upload {label}: content_uri {uri!r}")
    print(f"media: {label} {uri} {sha256(data)}", flush=True)
    return uri


async def download(client: AsyncClient, label: str, uri: str) -> MemoryDownloadResponse:
    response = await client.download(mxc=uri)
    if not isinstance(response, MemoryDownloadResponse):
        raise fail(f"download {label}: {response}")
    return response


async def send(client: AsyncClient, room_id: str, content: dict[str, Any]) -> None:
    response = await client.room_send(room_id, "m.room.message", content)
    if not isinstance(response, RoomSendResponse):
        raise fail(f"send {content.get('body')}: {response}")


def timeline(response: SyncResponse, room_id: str) -> list[Any]:
    room = response.rooms.join.get(room_id)
    return [] if room is None else list(room.timeline.events)


async def scenario(base_url: str) -> None:
    suffix = uuid.uuid4().hex[:6]
    alice = await register(base_url, f"alice{suffix}")
    bob = await register(base_url, f"bob{suffix}")
    try:
        step("registered")
        created = await alice.room_create(name="media room", invite=[bob.user_id])
        if not isinstance(created, RoomCreateResponse):
            raise fail(f"room_create: {created}")
        room_id = created.room_id
        _, bob_since = await sync_until(bob, lambda r: room_id in r.rooms.invite, None)
        joined = await bob.join(room_id)
        if not isinstance(joined, JoinResponse):
            raise fail(f"join: {joined}")
        step("joined")

        # An image and a file, as a client sends them: upload, then an event naming the mxc.
        png = make_png(640, 480)
        png_uri = await upload(alice, "image", png, "image/png", "gradient.png")
        blob = os.urandom(300_000)
        blob_uri = await upload(alice, "file", blob, "application/octet-stream", "data.bin")
        await send(
            alice,
            room_id,
            {
                "msgtype": "m.image",
                "body": "gradient.png",
                "url": png_uri,
                "info": {"mimetype": "image/png", "size": len(png), "w": 640, "h": 480},
            },
        )
        await send(
            alice,
            room_id,
            {
                "msgtype": "m.file",
                "body": "data.bin",
                "url": blob_uri,
                "info": {"mimetype": "application/octet-stream", "size": len(blob)},
            },
        )
        step("uploaded and sent")

        seen: dict[str, Any] = {}

        def got_media(r: SyncResponse) -> Any:
            # The two messages may arrive in one sync response or in two: collect both.
            for e in timeline(r, room_id):
                if isinstance(e, RoomMessageImage):
                    seen["image"] = e
                elif isinstance(e, RoomMessageFile):
                    seen["file"] = e
            return (seen["image"], seen["file"]) if len(seen) == 2 else None

        (image_event, file_event), bob_since = await sync_until(bob, got_media, bob_since)
        if image_event.url != png_uri or file_event.url != blob_uri:
            raise fail(f"events name {image_event.url}, {file_event.url}")
        step("media messages seen")

        got = await download(bob, "image", image_event.url)
        if got.body != png:
            raise fail(f"image: {len(got.body)} bytes differ from the {len(png)} uploaded")
        if got.content_type != "image/png" or got.filename != "gradient.png":
            raise fail(f"image served as {got.content_type!r} named {got.filename!r}")
        got = await download(bob, "file", file_event.url)
        if got.body != blob:
            raise fail(f"file: {len(got.body)} bytes differ from the {len(blob)} uploaded")
        if got.filename != "data.bin":
            raise fail(f"file named {got.filename!r}")
        step("downloads identical")

        # nio streams a file it reads lazily (an async iterable, as with aiofiles) without a
        # size: the upload then has no Content-Length (chunked) and must still be whole.
        big = os.urandom(3_000_000)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(big), 65_536):
                yield big[start : start + 65_536]

        streamed, _ = await alice.upload(
            lambda *_: chunks(), content_type="application/octet-stream", filename="big.bin"
        )
        if not isinstance(streamed, UploadResponse):
            raise fail(f"upload without a size: {streamed}")
        got = await download(bob, "streamed", streamed.content_uri)
        if got.body != big:
            raise fail(f"streamed upload: {len(got.body)} bytes differ from {len(big)}")
        step("streamed upload without a size")

        # What a client shows in the timeline: a thumbnail, here the configured 320x240 scale
        # of the 640x480 picture (same aspect, so exactly that size).
        server_name, media_id = image_event.url.removeprefix("mxc://").split("/")
        thumb = await bob.thumbnail(server_name, media_id, 320, 240, ResizingMethod.scale)
        if not isinstance(thumb, ThumbnailResponse):
            raise fail(f"thumbnail: {thumb}")
        with Image.open(io.BytesIO(thumb.body)) as small:
            if small.size != (320, 240) or thumb.content_type not in ("image/png", "image/jpeg"):
                raise fail(f"thumbnail: {small.size} {thumb.content_type}")
        step("thumbnail shown")

        # An encrypted attachment: the server only ever sees ciphertext; the key travels in the
        # event's `file` object (inside m.room.encrypted in an E2EE room — that layer is not
        # media and is left out here: nio parses the plaintext event as after decryption).
        secret = b"the launch code is 0000\n" * 1000
        ciphertext, keys = encrypt_attachment(secret)
        secret_uri = await upload(alice, "encrypted", ciphertext, "application/octet-stream", None)
        await send(
            alice,
            room_id,
            {
                "msgtype": "m.file",
                "body": "secret.txt",
                "info": {"mimetype": "text/plain", "size": len(secret)},
                "file": {"url": secret_uri, "mimetype": "text/plain", **keys},
            },
        )

        def got_attachment(r: SyncResponse) -> Any:
            for e in timeline(r, room_id):
                content = e.source.get("content", {})
                if content.get("body") == "secret.txt":
                    return RoomMessage.parse_decrypted_event(e.source)
            return None

        attachment, bob_since = await sync_until(bob, got_attachment, bob_since)
        if not isinstance(attachment, RoomEncryptedFile):
            raise fail(f"attachment parsed as {attachment!r}")
        got = await download(bob, "encrypted", attachment.url)
        if got.body != ciphertext:
            raise fail("encrypted attachment: ciphertext differs")
        plain = decrypt_attachment(
            got.body, attachment.key["k"], attachment.hashes["sha256"], attachment.iv
        )
        if plain != secret:
            raise fail("encrypted attachment: decrypted bytes differ")
        step("encrypted attachment round-trips")

        avatar = make_png(96, 96)
        avatar_uri = await upload(alice, "avatar", avatar, "image/png", "me.png")
        set_avatar = await alice.set_avatar(avatar_uri)
        if not isinstance(set_avatar, ProfileSetAvatarResponse):
            raise fail(f"set_avatar: {set_avatar}")
        profile = await bob.get_avatar(alice.user_id)
        if not isinstance(profile, ProfileGetAvatarResponse) or profile.avatar_url != avatar_uri:
            raise fail(f"get_avatar: {profile}")
        got = await download(bob, "avatar", profile.avatar_url)
        if got.body != avatar:
            raise fail("avatar: bytes differ")

        # A client draws room members from their m.room.member events: the profile change is
        # copied into Alice's membership, and nio's room state follows it.
        def avatar_in_room(r: SyncResponse) -> bool:
            room = bob.rooms.get(room_id)
            return room is not None and room.avatar_url(alice.user_id) == avatar_uri

        await sync_until(bob, avatar_in_room, bob_since)
        step("avatar resolves")
    finally:
        await alice.close()
        await bob.close()


def main() -> None:
    asyncio.run(scenario(sys.argv[1]))
    print("ok", flush=True)


if __name__ == "__main__":
    main()
