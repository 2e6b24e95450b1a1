"""Real clients send and fetch media: matrix-nio and matrix-commander.

The nio scenario runs in its own process (nio is asyncio, the server under test is trio) and
checks everything a client sees; this test then looks at the same media over plain HTTP: the
authenticated endpoint with a bearer header, and the legacy unauthenticated endpoint, which
after the spec v1.11 freeze (`[media] unauthenticated_media_before_ts`, default 0: nothing is
before it) answers 404 `M_NOT_FOUND` for every new upload.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import httpx
import pytest
from nio.crypto.attachments import decrypt_attachment
from PIL import Image

import trio

from trioserver.testing import InProcessServer

from tests.integration.client import assert_error, assert_ok, bearer

# Run as a module from the checkout, so that it shares the nio scenario's helpers.
CHECKOUT = Path(__file__).resolve().parents[2]
DOWNLOAD = "/_matrix/client/v1/media/download"
LEGACY_DOWNLOAD = "/_matrix/media/v3/download"


async def run_nio_scenario(base_url: str) -> list[str]:
    with trio.fail_after(120):
        result = await trio.run_process(
            [sys.executable, "-m", "tests.integration.nio_media_scenario", base_url],
            cwd=CHECKOUT,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    output = result.stdout.decode()
    assert result.returncode == 0, output + result.stderr.decode()
    assert output.splitlines()[-1] == "ok"
    return output.splitlines()


async def test_nio_sends_and_fetches_media(hs: InProcessServer, http: httpx.AsyncClient) -> None:
    lines = await run_nio_scenario(hs.base_url)
    assert [line for line in lines if line.startswith("step: ")] == [
        "step: registered",
        "step: joined",
        "step: uploaded and sent",
        "step: media messages seen",
        "step: downloads identical",
        "step: streamed upload without a size",
        "step: thumbnail shown",
        "step: encrypted attachment round-trips",
        "step: avatar resolves",
    ]
    media = {
        label: (uri, digest)
        for label, uri, digest in (
            line.split()[1:] for line in lines if line.startswith("media: ")
        )
    }
    assert set(media) == {"image", "file", "encrypted", "avatar"}

    viewer = await hs.register_user("viewer", "viewerpw")
    for label, (uri, digest) in media.items():
        server_and_id = uri.removeprefix("mxc://")
        # Any local user may fetch it through the authenticated endpoint (a bearer header
        # this time; nio used the access_token query parameter).
        response = await http.get(
            f"{DOWNLOAD}/{server_and_id}", headers=bearer(viewer.access_token)
        )
        assert response.status_code == 200, (label, response.text)
        assert hashlib.sha256(response.content).hexdigest() == digest, label
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in response.headers["content-security-policy"]
        assert response.headers["cross-origin-resource-policy"] == "cross-origin"
        # The image may be shown inline; a binary blob is only ever an attachment.
        disposition = response.headers["content-disposition"]
        if label in ("image", "avatar"):
            assert disposition.startswith("inline"), disposition
        else:
            assert disposition.startswith("attachment"), disposition
        # Without a token: refused, not served.
        assert_error(await http.get(f"{DOWNLOAD}/{server_and_id}"), 401, "M_MISSING_TOKEN")
        # The legacy endpoint serves only media from before the freeze: none of these.
        assert_error(await http.get(f"{LEGACY_DOWNLOAD}/{server_and_id}"), 404, "M_NOT_FOUND")


async def test_legacy_download_serves_media_from_before_the_freeze(tmp_path: Path) -> None:
    """With the freeze in the future, what nio uploads is still served by the old endpoint.

    (A server that upgraded keeps old links in old clients working until the freeze.)
    """
    from trioserver.testing import serve_in_process

    far_future_ms = 4_102_444_800_000  # 2100-01-01
    async with serve_in_process(
        tmp_path, media={"unauthenticated_media_before_ts": far_future_ms}
    ) as server:
        lines = await run_nio_scenario(server.base_url)
        uri, digest = next(line.split()[2:] for line in lines if line.startswith("media: image "))
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            response = await http.get(f"{LEGACY_DOWNLOAD}/{uri.removeprefix('mxc://')}")
            assert response.status_code == 200, response.text
            assert hashlib.sha256(response.content).hexdigest() == digest


# matrix-commander (https://github.com/8go/matrix-commander) is not a project dependency (it
# pins its own matrix-nio and brings vodozemac for E2EE): the test installs this release into a
# venv of its own under the user's cache the first time, or uses $MATRIX_COMMANDER.
MATRIX_COMMANDER_VERSION = "8.0.6"
MATRIX_COMMANDER_VENV = (
    Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    / "trioserver-clients"
    / f"matrix-commander-{MATRIX_COMMANDER_VERSION}"
)


async def _matrix_commander() -> str:
    if command := os.environ.get("MATRIX_COMMANDER"):
        return command
    command_path = MATRIX_COMMANDER_VENV / "bin" / "matrix-commander"
    if command_path.exists():
        return str(command_path)
    pip = MATRIX_COMMANDER_VENV / "bin" / "pip"
    with trio.fail_after(600):
        for step in (
            [sys.executable, "-m", "venv", "--clear", str(MATRIX_COMMANDER_VENV)],
            [str(pip), "install", "--quiet", f"matrix-commander=={MATRIX_COMMANDER_VERSION}"],
        ):
            done = await trio.run_process(
                step, capture_stdout=True, capture_stderr=True, check=False
            )
            if done.returncode != 0:
                shutil.rmtree(MATRIX_COMMANDER_VENV, ignore_errors=True)
                pytest.fail(
                    f"installing matrix-commander failed ({' '.join(step)}):\n"
                    + done.stderr.decode(),
                    pytrace=False,
                )
    return str(command_path)


async def test_matrix_commander_sends_an_image_and_a_file(
    hs: InProcessServer, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """The issue's reproduction: matrix-commander (a CLI on matrix-nio with E2EE) sends an
    image and a file; a second user downloads both byte-identical."""
    command = await _matrix_commander()
    alice = await hs.register_user("mcalice", "mcalicepw")
    bob = await hs.register_user("mcbob", "mcbobpw")
    room = assert_ok(
        await http.post(
            "/_matrix/client/v3/createRoom",
            json={"name": "mc", "room_alias_name": "mc", "invite": [bob.user_id]},
            headers=bearer(alice.access_token),
        )
    )["room_id"]
    assert_ok(
        await http.post(
            f"/_matrix/client/v3/join/{room}", json={}, headers=bearer(bob.access_token)
        )
    )

    image_path = tmp_path / "photo.png"
    Image.new("RGB", (200, 120), (200, 40, 90)).save(image_path, format="PNG")
    file_path = tmp_path / "notes.bin"
    file_path.write_bytes(os.urandom(50_000))
    # matrix-commander 8 refuses a room id without ":server" (room version 12, the default,
    # has none): name the room by its alias, as a user would.
    alias = "#mc:localhost"
    credentials = tmp_path / "credentials.json"
    store = tmp_path / "store"

    async def commander(*args: str) -> str:
        with trio.fail_after(90):
            result = await trio.run_process(
                [command, "--credentials", str(credentials), "--store", str(store), *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                stdin=b"",
            )
        out = result.stdout.decode() + result.stderr.decode()
        assert result.returncode == 0, out
        return out

    await commander(
        "--login", "password", "--homeserver", hs.base_url, "--user-login", alice.user_id,
        "--password", "mcalicepw", "--device", "mc", "--room-default", alias,
    )  # fmt: skip
    await commander("--room", alias, "--image", str(image_path))
    await commander("--room", alias, "--file", str(file_path))

    messages = assert_ok(
        await http.get(
            f"/_matrix/client/v3/rooms/{room}/messages",
            params={"dir": "b", "limit": "20"},
            headers=bearer(bob.access_token),
        )
    )["chunk"]
    sent = {
        e["content"]["msgtype"]: e["content"]
        for e in messages
        if e["type"] == "m.room.message" and e["content"].get("msgtype") in ("m.image", "m.file")
    }
    assert set(sent) == {"m.image", "m.file"}, messages
    for msgtype, path in (("m.image", image_path), ("m.file", file_path)):
        content = sent[msgtype]
        # matrix-commander 8 encrypts attachments even in an unencrypted room (with --plain
        # too): the event has a `file` object with the key instead of a plain `url`.
        attachment = content.get("file")
        uri = attachment["url"] if attachment else content["url"]
        response = await http.get(
            f"{DOWNLOAD}/{uri.removeprefix('mxc://')}", headers=bearer(bob.access_token)
        )
        assert response.status_code == 200, response.text
        data = response.content
        if attachment:
            data = decrypt_attachment(
                data, attachment["key"]["k"], attachment["hashes"]["sha256"], attachment["iv"]
            )
        assert data == path.read_bytes(), msgtype
