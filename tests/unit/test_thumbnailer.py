"""Making thumbnails with Pillow: sizes, formats, orientation, animation and refusals."""

from __future__ import annotations

import io
import random
import struct
import time
import zlib
from typing import TYPE_CHECKING, Literal

import pytest
from PIL import Image

from trioserver.media.thumbnail_types import can_thumbnail
from trioserver.media.thumbnailer import (
    ImageTooLarge,
    ThumbnailError,
    ThumbnailImage,
    image_size,
    make_thumbnail,
    make_thumbnails,
    planned_size,
)

if TYPE_CHECKING:
    from pathlib import Path

MAX = 32_000_000


def _thumb(
    path: Path,
    width: int,
    height: int,
    method: Literal["crop", "scale"] = "scale",
    *,
    animated: bool = False,
    max_pixels: int = MAX,
) -> ThumbnailImage:
    return make_thumbnail(
        path, width=width, height=height, method=method, animated=animated, max_pixels=max_pixels
    )


def _decoded(thumb: ThumbnailImage) -> Image.Image:
    image = Image.open(io.BytesIO(thumb.data))
    image.load()
    return image


def _jpeg(path: Path, size: tuple[int, int], *, orientation: int | None = None) -> Path:
    image = Image.new("RGB", size, (200, 30, 30))
    # The left half is green, so a turn shows where the green ends up.
    image.paste((30, 200, 30), (0, 0, size[0] // 2, size[1]))
    exif = image.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(path, "JPEG", exif=exif)
    return path


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims `width` x `height` (the data is a few bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )
    return path


def _animation(path: Path, fmt: str, frames: int = 5, size: tuple[int, int] = (60, 40)) -> Path:
    images = [Image.new("RGB", size, (i * 50, 255 - i * 50, 0)) for i in range(frames)]
    images[0].save(path, fmt, save_all=True, append_images=images[1:], duration=80, loop=0)
    return path


@pytest.mark.parametrize(
    ("size", "method", "expected"),
    [
        ((400, 300), "scale", (320, 240)),
        ((400, 300), "crop", (96, 96)),
        ((1000, 200), "scale", (320, 64)),
        ((200, 1000), "scale", (48, 240)),
        ((100, 80), "scale", (100, 80)),  # never upscaled
        ((40, 30), "crop", (96, 96)),  # crop fills exactly, as Synapse
    ],
)
def test_sizes_are_exact(
    tmp_path: Path,
    size: tuple[int, int],
    method: Literal["crop", "scale"],
    expected: tuple[int, int],
) -> None:
    request = (96, 96) if method == "crop" else (320, 240)
    thumb = _thumb(_jpeg(tmp_path / "a.jpg", size), *request, method)
    assert (thumb.width, thumb.height) == expected
    assert _decoded(thumb).size == expected
    assert thumb.content_type == "image/jpeg"


def test_crop_keeps_the_centre(tmp_path: Path) -> None:
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 255, 0), (100, 0, 200, 100))  # the middle third is yellow
    image.save(tmp_path / "a.png")
    thumb = _decoded(_thumb(tmp_path / "a.png", 32, 32, "crop")).convert("RGB")
    assert all(thumb.getpixel((x, y)) == (255, 255, 0) for x in (1, 16, 30) for y in (1, 30))


def test_exif_orientation_6_swaps_the_dimensions(tmp_path: Path) -> None:
    source = _jpeg(tmp_path / "a.jpg", (400, 200), orientation=6)
    thumb = _thumb(source, 320, 240, "scale")
    assert (thumb.width, thumb.height) == (120, 240)
    shown = _decoded(thumb).convert("RGB")
    assert shown.size == (120, 240)
    # Orientation 6 is turned 90 degrees clockwise for display: the green left half on top.
    top = shown.getpixel((60, 10))
    bottom = shown.getpixel((60, 230))
    assert isinstance(top, tuple)
    assert isinstance(bottom, tuple)
    assert top[1] > 150 > top[0]
    assert bottom[0] > 150 > bottom[1]
    assert image_size(source, max_pixels=MAX) == (200, 400)


def test_png_with_alpha_stays_png_with_alpha(tmp_path: Path) -> None:
    Image.new("RGBA", (200, 100), (10, 20, 30, 128)).save(tmp_path / "a.png")
    thumb = _thumb(tmp_path / "a.png", 96, 96, "crop")
    assert thumb.content_type == "image/png"
    decoded = _decoded(thumb)
    assert decoded.mode == "RGBA"
    pixel = decoded.getpixel((5, 5))
    assert isinstance(pixel, tuple)
    assert pixel[3] == 128  # the transparency survives
    assert all(abs(a - b) <= 2 for a, b in zip(pixel[:3], (10, 20, 30), strict=True))


def test_gif_without_animation_is_a_still_image(tmp_path: Path) -> None:
    Image.new("RGB", (100, 100), (1, 2, 3)).save(tmp_path / "a.gif")
    thumb = _thumb(tmp_path / "a.gif", 32, 32, "crop", animated=True)
    assert thumb.content_type in ("image/jpeg", "image/png")
    assert not getattr(_decoded(thumb), "is_animated", False)


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("GIF", "image/webp"), ("WEBP", "image/webp"), ("PNG", "image/webp")]
)
def test_animated_keeps_every_frame_only_when_asked(
    tmp_path: Path, fmt: str, content_type: str
) -> None:
    source = _animation(tmp_path / "a.anim", fmt)
    moving = _thumb(source, 32, 32, "crop", animated=True)
    assert moving.content_type == content_type
    decoded = Image.open(io.BytesIO(moving.data))
    assert getattr(decoded, "n_frames", 1) == 5
    assert decoded.size == (32, 32)
    still = _thumb(source, 32, 32, "crop", animated=False)
    assert still.content_type in ("image/jpeg", "image/png")
    assert getattr(_decoded(still), "n_frames", 1) == 1


def test_animation_is_bounded_by_the_pixel_budget(tmp_path: Path) -> None:
    source = _animation(tmp_path / "a.gif", "GIF", frames=8, size=(50, 50))
    # Room for three frames of 2500 pixels: three are kept.
    thumb = _thumb(source, 20, 20, "scale", animated=True, max_pixels=3 * 2500)
    assert getattr(Image.open(io.BytesIO(thumb.data)), "n_frames", 1) == 3
    # Room for one: a still image.
    assert _thumb(source, 20, 20, "scale", animated=True, max_pixels=2600).content_type in (
        "image/jpeg",
        "image/png",
    )


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    bomb = _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    assert bomb.stat().st_size < 200
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        _thumb(bomb, 32, 32, "crop")
    with pytest.raises(ImageTooLarge):
        image_size(bomb, max_pixels=MAX)
    # Refused without decoding anything: a header read, far under the time to decode.
    assert time.perf_counter() - started < 0.5


def test_more_pixels_than_configured_is_refused_below_pillows_own_limit(tmp_path: Path) -> None:
    # 36 megapixels: under Pillow's global limit, over ours.
    with pytest.raises(ImageTooLarge, match="36000000"):
        _thumb(_png_claiming(tmp_path / "big.png", 6000, 6000), 32, 32, "crop")
    small = _jpeg(tmp_path / "a.jpg", (100, 100))
    with pytest.raises(ImageTooLarge):
        _thumb(small, 32, 32, "crop", max_pixels=9_999)
    assert _thumb(small, 32, 32, "crop", max_pixels=10_000).width == 32
    # Pillow's global is left as Pillow sets it.
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"plain text, not an image",
        b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        b"\xff\xd8\xff\xe0 truncated jpeg",
    ],
)
def test_not_an_image_is_a_thumbnail_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "f").write_bytes(content)
    with pytest.raises(ThumbnailError) as caught:
        _thumb(tmp_path / "f", 32, 32, "crop")
    assert not isinstance(caught.value, ImageTooLarge)


def test_truncated_image_is_a_thumbnail_error(tmp_path: Path) -> None:
    whole = _jpeg(tmp_path / "a.jpg", (640, 480)).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(ThumbnailError):
        _thumb(tmp_path / "cut.jpg", 320, 240, "scale")


def test_other_formats_never_reach_a_decoder(tmp_path: Path) -> None:
    Image.new("RGB", (50, 50)).save(tmp_path / "a.tiff", "TIFF")
    with pytest.raises(ThumbnailError):
        _thumb(tmp_path / "a.tiff", 32, 32, "crop")


def test_bmp_and_palette_images(tmp_path: Path) -> None:
    Image.new("RGB", (64, 48), (9, 9, 9)).save(tmp_path / "a.bmp")
    assert _thumb(tmp_path / "a.bmp", 32, 32, "scale").content_type == "image/jpeg"
    Image.new("P", (64, 48), 3).save(tmp_path / "p.png")
    thumb = _thumb(tmp_path / "p.png", 32, 32, "scale")
    assert (thumb.content_type, thumb.width, thumb.height) == ("image/png", 32, 24)


def test_bad_arguments_are_value_errors(tmp_path: Path) -> None:
    source = _jpeg(tmp_path / "a.jpg", (10, 10))
    with pytest.raises(ValueError, match="size"):
        _thumb(source, 0, 10, "crop")
    with pytest.raises(ValueError, match="method"):
        make_thumbnail(
            source,
            width=10,
            height=10,
            method="stretch",  # type: ignore[arg-type]  # a wrong method on purpose
            animated=False,
            max_pixels=MAX,
        )


def test_can_thumbnail() -> None:
    assert can_thumbnail("image/jpeg")
    assert can_thumbnail("IMAGE/PNG; charset=binary")
    assert can_thumbnail("image/gif")
    assert can_thumbnail("image/webp")
    assert not can_thumbnail("image/svg+xml")
    assert not can_thumbnail("text/plain")
    assert not can_thumbnail("application/octet-stream")


def test_planned_size_matches_synapse_aspect() -> None:
    assert planned_size(4000, 3000, 640, 480, "scale") == (640, 480)
    assert planned_size(4000, 1000, 640, 480, "scale") == (640, 160)
    assert planned_size(1, 4000, 32, 32, "scale") == (1, 32)
    assert planned_size(10, 10, 32, 32, "scale") == (10, 10)
    assert planned_size(10, 10, 32, 16, "crop") == (32, 16)


def _seed_files(tmp_path: Path) -> dict[str, bytes]:
    picture = Image.effect_noise((60, 45), 30).convert("RGB")
    exif = picture.getexif()
    exif[0x0112] = 6
    frames = [picture.rotate(i * 30) for i in range(3)]
    files: dict[str, bytes] = {}
    formats: list[tuple[str, str, dict[str, object]]] = [
        ("jpg", "JPEG", {"exif": exif}),
        ("png", "PNG", {}),
        ("gif", "GIF", {"save_all": True, "append_images": frames[1:]}),
        ("webp", "WEBP", {"save_all": True, "append_images": frames[1:]}),
        ("bmp", "BMP", {}),
    ]
    for name, fmt, extra in formats:
        out = io.BytesIO()
        (frames[0] if name in ("gif", "webp") else picture).save(out, fmt, **extra)
        files[name] = out.getvalue()
    return files


def test_truncated_and_mutated_files_are_thumbnailed_or_refused(tmp_path: Path) -> None:
    # Found by fuzzing: short reads inside the GIF parser raised IndexError, broken EXIF
    # blocks warned. Every damaged file must give a thumbnail or a ThumbnailError, nothing else.
    rnd = random.Random(12)
    path = tmp_path / "f"
    for kind, whole in _seed_files(tmp_path).items():
        cuts = range(0, len(whole), max(len(whole) // 25, 1))
        damaged = [whole[:cut] for cut in cuts]
        for _ in range(25):
            mutated = bytearray(whole)
            for _ in range(rnd.randint(1, 6)):
                mutated[rnd.randrange(len(mutated))] = rnd.randrange(256)
            damaged.append(bytes(mutated))
        for data in damaged:
            path.write_bytes(data)
            try:
                thumb = _thumb(path, 32, 24, rnd.choice(["crop", "scale"]), animated=True)
            except ThumbnailError:
                continue
            assert thumb.data, kind


def test_several_sizes_from_one_decode(tmp_path: Path) -> None:
    source = _jpeg(tmp_path / "a.jpg", (100, 80), orientation=6)
    thumbs = make_thumbnails(
        source,
        sizes=[(32, 32, "crop"), (320, 240, "scale"), (640, 480, "scale"), (40, 40, "scale")],
        max_pixels=MAX,
    )
    assert [(t.width, t.height) for t in thumbs] == [(32, 32), (80, 100), (80, 100), (32, 40)]
    # The two scale sizes larger than the picture are one image.
    assert thumbs[1] is thumbs[2]
    assert all(_decoded(t).size == (t.width, t.height) for t in thumbs)
    with pytest.raises(ImageTooLarge):
        make_thumbnails(source, sizes=[(32, 32, "crop")], max_pixels=100)
    (tmp_path / "t").write_bytes(b"text")
    with pytest.raises(ThumbnailError):
        make_thumbnails(tmp_path / "t", sizes=[(32, 32, "crop")], max_pixels=MAX)


def _gif_body(size: tuple[int, int]) -> tuple[bytes, bytes]:
    """A one-frame GIF of `size` made by Pillow: (its header with colour table, its frame)."""
    image = Image.new("P", size, 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    out = io.BytesIO()
    image.save(out, "GIF")
    data = out.getvalue()
    flags = data[10]
    table = 3 << ((flags & 7) + 1) if flags & 0x80 else 0
    header, frame = data[: 13 + table], data[13 + table : -1]  # without the trailer
    if frame.startswith(b"!\xf9"):  # its graphic control extension: added back per frame
        frame = frame[8:]
    return header, frame


def _gif_growing_past_its_header(path: Path, side: int, big_frames: int) -> Path:
    # The header (logical screen) and first frame are 1x1; later frames are side x side, which
    # Pillow follows by growing the canvas.
    header, small = _gif_body((1, 1))
    _, big = _gif_body((side, side))
    screen = bytearray(header)
    screen[6:10] = struct.pack("<HH", 1, 1)
    loop = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    delay = b"!\xf9\x04\x00\x0a\x00\x00\x00"
    path.write_bytes(bytes(screen) + loop + delay + small + (delay + big) * big_frames + b";")
    return path


def test_gif_frames_larger_than_the_header_are_refused_before_decoding(tmp_path: Path) -> None:
    source = _gif_growing_past_its_header(tmp_path / "grows.gif", 4000, 3)
    assert source.stat().st_size < 200_000
    started = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        make_thumbnail(
            source, width=32, height=32, method="scale", animated=True, max_pixels=1_000_000
        )
    # Refused from the frame headers: three 16-megapixel frames would take far longer.
    assert time.perf_counter() - started < 0.5
    # A still thumbnail uses the first frame only, within the limit.
    still = make_thumbnail(
        source, width=32, height=32, method="scale", animated=False, max_pixels=1_000_000
    )
    assert (still.width, still.height) == (1, 1)
