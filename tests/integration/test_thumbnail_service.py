"""The thumbnail service on a real database (SQLite, or PostgreSQL) and real files: what it
makes and serves."""

from __future__ import annotations

import io
import logging
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import attrs
import pytest
from PIL import Image

import trio

from trioserver.config import MediaConfig, ThumbnailSize
from trioserver.media.thumbnails import MAX_DYNAMIC_PER_MEDIA, StoredThumbnail, ThumbnailService
from trioserver.stores.media_thumbnails import MediaThumbnailStore

from tests.integration.server_db import store_database

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from trioserver.stores.media_thumbnails import ThumbnailRow


@attrs.frozen
class Env:
    service: ThumbnailService
    store: MediaThumbnailStore
    root: Path
    sources: Path


@asynccontextmanager
async def _env(tmp_path: Path, media: MediaConfig | None = None) -> AsyncIterator[Env]:
    async with store_database(tmp_path) as db:
        store = MediaThumbnailStore(db)
        root = tmp_path / "media"
        sources = tmp_path / "sources"
        sources.mkdir(exist_ok=True)
        service = ThumbnailService(store, root, media or MediaConfig())
        yield Env(service, store, root, sources)


def _jpeg(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (120, 60, 200)).save(path, "JPEG")
    return path


def _files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "thumbnails").rglob("*") if p.is_file())


def _size(thumb: StoredThumbnail) -> tuple[int, int]:
    with Image.open(thumb.path) as image:
        return image.size


async def test_upload_makes_the_five_default_sizes(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        source = _jpeg(env.sources / "photo", (2000, 1500))
        await env.service.generate_configured("abcdef", source, "image/jpeg")
        rows = await env.store.media_thumbnails("abcdef")
        made = {(r.req_width, r.req_height, r.method): (r.width, r.height) for r in rows}
        assert made == {
            (32, 32, "crop"): (32, 32),
            (96, 96, "crop"): (96, 96),
            (320, 240, "scale"): (320, 240),
            (640, 480, "scale"): (640, 480),
            (800, 600, "scale"): (800, 600),
        }
        files = _files(env.root)
        assert len(files) == 5
        assert all(f.parent == env.root / "thumbnails" / "ab" / "abcdef" for f in files)
        for row in rows:
            path = env.root / "thumbnails" / "ab" / "abcdef" / row.file_name
            assert path.stat().st_size == row.length
            assert row.content_type == "image/jpeg"
            assert not row.animated
        # Making them again does nothing.
        await env.service.generate_configured("abcdef", source, "image/jpeg")
        assert env.service.statistics().made == 5


async def test_small_image_scale_sizes_share_one_file(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        source = _jpeg(env.sources / "small", (100, 80))
        await env.service.generate_configured("small1", source, "image/jpeg")
        rows = await env.store.media_thumbnails("small1")
        scaled = [r for r in rows if r.method == "scale"]
        assert len(scaled) == 3
        assert len({(r.width, r.height, r.file_name) for r in scaled}) == 1
        assert (scaled[0].width, scaled[0].height) == (100, 80)
        assert scaled[0].file_name.startswith("100x80-scale-")
        # Two crops and one scaled file; Pillow ran three times.
        assert len(_files(env.root)) == 3
        assert env.service.statistics().made == 3


@pytest.mark.parametrize(
    ("request_size", "method", "served"),
    [
        ((32, 32), "crop", (32, 32)),
        ((50, 50), "crop", (96, 96)),
        ((96, 48), "crop", (96, 96)),
        ((300, 200), "scale", (320, 240)),
        ((500, 300), "scale", (640, 480)),
        ((3000, 3000), "scale", (800, 600)),  # nothing as large: the largest
        ((20, 20), "scale", (320, 240)),
    ],
)
async def test_nearest_configured_size_is_served(
    tmp_path: Path, request_size: tuple[int, int], method: str, served: tuple[int, int]
) -> None:
    async with _env(tmp_path) as env:
        source = _jpeg(env.sources / "photo", (1600, 1200))
        await env.service.generate_configured("near", source, "image/jpeg")
        thumb = await env.service.thumbnail(
            "near",
            source,
            "image/jpeg",
            width=request_size[0],
            height=request_size[1],
            method="crop" if method == "crop" else "scale",
            animated=False,
        )
        assert thumb is not None
        assert (thumb.width, thumb.height) == served == _size(thumb)
        assert thumb.content_type == "image/jpeg"
        assert thumb.length == thumb.path.stat().st_size


async def test_missing_configured_sizes_are_made_on_the_first_request(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        source = _jpeg(env.sources / "photo", (640, 480))
        thumb = await env.service.thumbnail(
            "late", source, "image/jpeg", width=90, height=90, method="crop", animated=False
        )
        assert thumb is not None
        assert (thumb.width, thumb.height) == (96, 96)
        assert len(await env.store.media_thumbnails("late")) == 5


async def test_only_scale_sizes_configured_still_answers_crop(tmp_path: Path) -> None:
    sizes = (ThumbnailSize(320, 240, "scale"), ThumbnailSize(640, 480, "scale"))
    async with _env(tmp_path, MediaConfig(thumbnail_sizes=sizes)) as env:
        source = _jpeg(env.sources / "photo", (1600, 1200))
        thumb = await env.service.thumbnail(
            "onlyscale", source, "image/jpeg", width=32, height=32, method="crop", animated=False
        )
        assert thumb is not None
        assert (thumb.width, thumb.height) == (640, 480)


async def test_dynamic_thumbnail_is_made_exactly_and_cached(tmp_path: Path) -> None:
    async with _env(tmp_path, MediaConfig(dynamic_thumbnails=True)) as env:
        source = _jpeg(env.sources / "photo", (1000, 500))
        first = await env.service.thumbnail(
            "dyn", source, "image/jpeg", width=123, height=77, method="crop", animated=False
        )
        assert first is not None
        assert (first.width, first.height) == _size(first) == (123, 77)
        files = {p: p.stat().st_mtime_ns for p in _files(env.root)}
        assert len(files) == 1
        # The second request reads the row: no Pillow work, no new file, and the source is
        # not even opened (it is gone).
        source.unlink()
        second = await env.service.thumbnail(
            "dyn", source, "image/jpeg", width=123, height=77, method="crop", animated=False
        )
        assert second == first
        assert {p: p.stat().st_mtime_ns for p in _files(env.root)} == files
        assert env.service.statistics().made == 1


async def test_dynamic_scale_never_upscales_and_requests_are_clamped(tmp_path: Path) -> None:
    async with _env(tmp_path, MediaConfig(dynamic_thumbnails=True)) as env:
        source = _jpeg(env.sources / "photo", (300, 200))
        small = await env.service.thumbnail(
            "up", source, "image/jpeg", width=1000, height=1000, method="scale", animated=False
        )
        assert small is not None
        assert (small.width, small.height) == (300, 200)
        huge = await env.service.thumbnail(
            "up", source, "image/jpeg", width=10**9, height=10**9, method="crop", animated=False
        )
        assert huge is not None
        assert (huge.width, huge.height) == (2000, 2000)
        rows = await env.store.media_thumbnails("up")
        assert max(r.req_width for r in rows) == 2000


async def test_concurrent_identical_requests_do_the_work_once(tmp_path: Path) -> None:
    async with _env(tmp_path, MediaConfig(dynamic_thumbnails=True)) as env:
        source = _jpeg(env.sources / "photo", (1200, 900))
        results: list[StoredThumbnail | None] = []

        async def ask() -> None:
            results.append(
                await env.service.thumbnail(
                    "same",
                    source,
                    "image/jpeg",
                    width=200,
                    height=100,
                    method="scale",
                    animated=False,
                )
            )

        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(ask)
        assert len(results) == 8
        assert all(r is not None and r == results[0] for r in results)
        assert env.service.statistics().made == 1


async def test_concurrent_upload_and_request_make_each_size_once(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        source = _jpeg(env.sources / "photo", (1200, 900))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(env.service.generate_configured, "race", source, "image/jpeg")
            for _ in range(3):
                nursery.start_soon(
                    lambda: env.service.thumbnail(
                        "race",
                        source,
                        "image/jpeg",
                        width=96,
                        height=96,
                        method="crop",
                        animated=False,
                    )
                )
        assert env.service.statistics().made == 5


async def test_lost_file_is_made_again(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        source = _jpeg(env.sources / "photo", (800, 600))
        await env.service.generate_configured("lost", source, "image/jpeg")
        for path in _files(env.root):
            path.unlink()
        thumb = await env.service.thumbnail(
            "lost", source, "image/jpeg", width=320, height=240, method="scale", animated=False
        )
        assert thumb is not None
        assert _size(thumb) == (320, 240)
        assert env.service.statistics().made == 6


async def test_png_with_alpha_gives_png(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        Image.new("RGBA", (400, 300), (0, 0, 0, 100)).save(env.sources / "logo", "PNG")
        await env.service.generate_configured("logo", env.sources / "logo", "image/png")
        rows = await env.store.media_thumbnails("logo")
        assert {r.content_type for r in rows} == {"image/png"}
        assert all(r.file_name.endswith(".png") for r in rows)


async def test_animated_request_on_a_gif(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        frames = [Image.new("RGB", (120, 90), (i * 60, 0, 255 - i * 60)) for i in range(4)]
        frames[0].save(
            env.sources / "anim", "GIF", save_all=True, append_images=frames[1:], duration=50
        )
        source = env.sources / "anim"
        await env.service.generate_configured("anim", source, "image/gif")
        still = await env.service.thumbnail(
            "anim", source, "image/gif", width=96, height=96, method="crop", animated=False
        )
        moving = await env.service.thumbnail(
            "anim", source, "image/gif", width=96, height=96, method="crop", animated=True
        )
        assert still is not None
        assert moving is not None
        assert still.content_type in ("image/jpeg", "image/png")
        assert moving.content_type == "image/webp"  # the spec's preference for animation
        with Image.open(io.BytesIO(moving.path.read_bytes())) as image:
            assert getattr(image, "n_frames", 1) == 4
        rows: list[ThumbnailRow] = await env.store.media_thumbnails("anim")
        # Only the size that answered was animated (made on first use, then cached).
        assert [(r.req_width, r.method) for r in rows if r.animated] == [(96, "crop")]
        again = await env.service.thumbnail(
            "anim", source, "image/gif", width=80, height=80, method="crop", animated=True
        )
        assert again == moving
        # Still: two crops and one scaled file (120x90 is below every scale size); animated: one.
        assert env.service.statistics().made == 4


async def test_media_that_cannot_be_thumbnailed_gives_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _env(tmp_path) as env:
        text = env.sources / "text"
        text.write_bytes(b"hello")
        corrupt = env.sources / "corrupt"
        corrupt.write_bytes(b"\xff\xd8\xff\xe0not really a jpeg")

        async def ask(media_id: str, source: Path, content_type: str) -> StoredThumbnail | None:
            return await env.service.thumbnail(
                media_id,
                source,
                content_type,
                width=32,
                height=32,
                method="crop",
                animated=False,
            )

        assert await ask("text", text, "text/plain") is None
        await env.service.generate_configured("text", text, "text/plain")
        assert await ask("svg", text, "image/svg+xml") is None
        with caplog.at_level(logging.INFO, logger="trioserver.media.thumbnails"):
            await env.service.generate_configured("corrupt", corrupt, "image/jpeg")
            assert await ask("corrupt", corrupt, "image/jpeg") is None
            assert await ask("corrupt", corrupt, "image/jpeg") is None
        assert "media corrupt cannot be thumbnailed" in caplog.text
        # Refused once: the bad file is remembered, not decoded on every request.
        assert env.service.statistics().refused == 1
        assert env.service.statistics().made == 0
        assert not (env.root / "thumbnails").exists()
        assert await env.store.media_thumbnails("corrupt") == []


async def test_too_many_pixels_gives_none(tmp_path: Path) -> None:
    async with _env(tmp_path, MediaConfig(max_image_pixels=5000)) as env:
        source = _jpeg(env.sources / "photo", (100, 100))
        await env.service.generate_configured("big", source, "image/jpeg")
        assert await env.store.media_thumbnails("big") == []
        assert (
            await env.service.thumbnail(
                "big", source, "image/jpeg", width=32, height=32, method="crop", animated=False
            )
            is None
        )
        assert (env.service.statistics().made, env.service.statistics().refused) == (0, 1)


async def test_unsafe_media_id_never_becomes_a_path(tmp_path: Path) -> None:
    async with _env(tmp_path, MediaConfig(dynamic_thumbnails=True)) as env:
        source = _jpeg(env.sources / "photo", (100, 100))
        for media_id in ("../../etc", "a/b", "", "x\x00"):
            assert (
                await env.service.thumbnail(
                    media_id,
                    source,
                    "image/jpeg",
                    width=32,
                    height=32,
                    method="crop",
                    animated=False,
                )
                is None
            )
        assert not (env.root / "thumbnails").exists()


async def test_no_temporary_files_are_left(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        source = _jpeg(env.sources / "photo", (900, 700))
        await env.service.generate_configured("tmpcheck", source, "image/jpeg")
        names = [p.name for p in (env.root / "thumbnails").rglob("*")]
        assert not [n for n in names if n.startswith(".tmp-")]


async def test_a_file_never_changes_under_its_row(tmp_path: Path) -> None:
    # The configured sizes come from one decode, a dynamic request from its own: the images
    # may differ by a few bytes. Each row keeps serving the file whose length it gives.
    async with _env(tmp_path) as env:
        source = env.sources / "photo"
        Image.effect_noise((3000, 2000), 60).convert("RGB").save(source, "JPEG")
        await env.service.generate_configured("keep", source, "image/jpeg")
    async with _env(tmp_path, MediaConfig(dynamic_thumbnails=True)) as env:
        # 320x214 is another request than the configured 320x240, and the same size: 320x213.
        thumb = await env.service.thumbnail(
            "keep", source, "image/jpeg", width=320, height=214, method="scale", animated=False
        )
        assert thumb is not None
        assert (thumb.width, thumb.height) == (320, 213)
        for row in await env.store.media_thumbnails("keep"):
            path = env.root / "thumbnails" / "ke" / "keep" / row.file_name
            assert path.stat().st_size == row.length


async def test_deleting_removes_rows_and_files(tmp_path: Path) -> None:
    async with _env(tmp_path) as env:
        source = _jpeg(env.sources / "photo", (640, 480))
        await env.service.generate_configured("gone", source, "image/jpeg")
        await env.service.generate_configured("kept", source, "image/jpeg")
        await env.service.delete_thumbnails("gone")
        assert await env.store.media_thumbnails("gone") == []
        assert not (env.root / "thumbnails" / "go" / "gone").exists()
        assert len(await env.store.media_thumbnails("kept")) == 5
        # 640x480 and 800x600 of a 640x480 picture are one file.
        assert len(_files(env.root)) == 4


async def test_dynamic_sizes_per_media_are_bounded(tmp_path: Path) -> None:
    async with _env(tmp_path, MediaConfig(dynamic_thumbnails=True)) as env:
        source = _jpeg(env.sources / "photo", (200, 200))
        for side in range(10, 10 + MAX_DYNAMIC_PER_MEDIA):
            thumb = await env.service.thumbnail(
                "many",
                source,
                "image/jpeg",
                width=side,
                height=side,
                method="crop",
                animated=False,
            )
            assert thumb is not None
            assert (thumb.width, thumb.height) == (side, side)
        assert len(await env.store.media_thumbnails("many")) == MAX_DYNAMIC_PER_MEDIA
        # One more new size: the nearest existing one answers, nothing is made.
        made = env.service.statistics().made
        thumb = await env.service.thumbnail(
            "many", source, "image/jpeg", width=500, height=500, method="crop", animated=False
        )
        assert thumb is not None
        assert thumb.width == 9 + MAX_DYNAMIC_PER_MEDIA
        assert env.service.statistics().made == made
        assert len(await env.store.media_thumbnails("many")) == MAX_DYNAMIC_PER_MEDIA
        # Sizes already made are still served exactly.
        again = await env.service.thumbnail(
            "many", source, "image/jpeg", width=20, height=20, method="crop", animated=False
        )
        assert again is not None
        assert again.width == 20


async def test_concurrent_new_sizes_cannot_pass_the_per_media_bound(tmp_path: Path) -> None:
    # Many requests for new sizes at once: each takes a slot before any is made, so the
    # bound holds (it was checked against stored rows only, and all passed together).
    async with _env(tmp_path, MediaConfig(dynamic_thumbnails=True)) as env:
        source = _jpeg(env.sources / "photo", (300, 300))

        async def ask(side: int) -> None:
            thumb = await env.service.thumbnail(
                "burst",
                source,
                "image/jpeg",
                width=side,
                height=side,
                method="crop",
                animated=False,
            )
            assert thumb is not None

        async with trio.open_nursery() as nursery:
            for side in range(10, 10 + 2 * MAX_DYNAMIC_PER_MEDIA):
                nursery.start_soon(ask, side)
        # The configured sizes answer the requests that found every slot taken.
        configured = len(MediaConfig().thumbnail_sizes)
        assert len(await env.store.media_thumbnails("burst")) <= MAX_DYNAMIC_PER_MEDIA + configured
