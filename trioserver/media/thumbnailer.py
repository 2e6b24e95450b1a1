"""Making one thumbnail of one image file with Pillow: pure, synchronous, for a worker thread.

Theory of operation:

- Only a short allow-list of formats is ever handed to a Pillow decoder (JPEG, PNG, GIF, WebP,
  BMP): every decoder is attack surface, and SVG or PDF are never rendered.
- ``Image.open`` reads only the header. The pixel count it reports is checked against the
  caller's ``max_pixels`` *before* anything is decoded, so a tiny file that claims to be
  100000x100000 costs a header read (decompression bombs). Pillow's own global limit
  (``Image.MAX_IMAGE_PIXELS``) is left as Pillow sets it; it is only a backstop, and its
  error (or its warning, when warnings are errors) is reported as `ImageTooLarge` too.
- Sizes follow Synapse: ``scale`` fits the image inside width x height keeping its aspect
  ratio and never makes it larger than the original; ``crop`` fills width x height exactly
  (scaled to cover, then the centre is kept).
- The EXIF orientation is honoured: the size is planned in the displayed orientation, the
  work is done in the stored one and the small result is turned at the end.
- JPEG sources are decoded at a reduced scale when the thumbnail is much smaller
  (``Image.draft``: the DCT decodes 1/2, 1/4 or 1/8 directly), which is most of the speed.
- Output: PNG when the image has transparency or was a PNG, JPEG (quality 80, as Synapse)
  otherwise; animated WebP only when asked for and the source (GIF, WebP, APNG) is
  animated, with at most `MAX_FRAMES` frames and at most ``max_pixels`` source pixels
  decoded over all frames.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
from typing import TYPE_CHECKING

from PIL import Image, ImageSequence, UnidentifiedImageError

from trioserver.media.thumbnail_types import (
    ImageTooLarge,
    Method,
    ThumbnailError,
    ThumbnailImage,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

__all__ = [
    "ImageTooLarge",
    "Method",
    "ThumbnailError",
    "ThumbnailImage",
    "image_size",
    "make_thumbnail",
    "make_thumbnails",
    "planned_size",
]


# The Pillow decoders that may see an uploaded file, whatever its declared type.
_PILLOW_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP")

# Frames kept in an animated thumbnail at most.
MAX_FRAMES = 100

_JPEG_QUALITY = 80

# EXIF tag 0x0112 (Orientation) -> what turns the stored pixels upright (EXIF 2.3, 4.6.4).
_ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# Orientations 5-8 store the picture turned by 90 degrees: width and height swap.
_SWAPPING = frozenset({5, 6, 7, 8})

# What Pillow raises for a file it cannot read: unknown format, bad header, truncated data,
# broken compressed streams, and (found by fuzzing mutated files) short reads inside the GIF
# and TIFF/EXIF parsers. Pillow's warnings about bad metadata count too when the process
# turns warnings into errors (the tests do).
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    KeyError,
    struct.error,
    UserWarning,
)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def planned_size(
    source_width: int, source_height: int, width: int, height: int, method: str
) -> tuple[int, int]:
    """The size of the thumbnail of a `source_width` x `source_height` image (as displayed).

    ``crop`` is exactly the size asked for. ``scale`` is the largest size inside it with the
    source's aspect ratio (at least 1x1), and never larger than the source itself.
    """
    if method == "crop":
        return width, height
    if width * source_height < height * source_width:
        fitted = (width, max(width * source_height // source_width, 1))
    else:
        fitted = (max(height * source_width // source_height, 1), height)
    # Each side at most the source's (Synapse): a thin image keeps its 1-pixel side.
    return min(fitted[0], source_width), min(fitted[1], source_height)


def image_size(source: Path, *, max_pixels: int) -> tuple[int, int]:
    """The displayed size of the image in `source`, from its header alone.

    Raises:
        ImageTooLarge: it has more than `max_pixels` pixels.
        ThumbnailError: it is not an image of a supported format.
    """
    with _reading(source, max_pixels) as image:
        return _displayed_size(image, _orientation(image))


def make_thumbnail(
    source: Path,
    *,
    width: int,
    height: int,
    method: Method,
    animated: bool,
    max_pixels: int,
) -> ThumbnailImage:
    """Make one thumbnail of the image in `source`.

    Args:
        width: the width asked for (``crop``: exactly; ``scale``: at most).
        height: the height asked for.
        method: ``crop`` or ``scale`` (spec "Thumbnails").
        animated: make an animated thumbnail when the source is animated (spec v1.11).
        max_pixels: refuse images with more pixels than this without decoding them.

    Raises:
        ImageTooLarge: the image has more than `max_pixels` pixels.
        ThumbnailError: it is not an image of a supported format, or it is corrupt.
        ValueError: `width` or `height` is below 1, or `method` is unknown.
    """
    _check_request(width, height, method)
    with _reading(source, max_pixels) as image:
        orientation = _orientation(image)
        target = planned_size(*_displayed_size(image, orientation), width, height, method)
        frames = _frame_budget(image, max_pixels) if animated else 1
        if frames > 1:
            return _animated(image, target, method, orientation, frames)
        return _stills(image, [(target, method)], orientation)[0]


def make_thumbnails(
    source: Path, *, sizes: Sequence[tuple[int, int, Method]], max_pixels: int
) -> list[ThumbnailImage]:
    """Still thumbnails of several sizes from one decode (the configured sizes of an upload).

    Args:
        sizes: (width, height, method) requests, as for `make_thumbnail`.

    Returns:
        One thumbnail per request, in order; requests that come out the same (``scale`` of a
        small image) share one object.

    Raises:
        The same as `make_thumbnail`.
    """
    for width, height, method in sizes:
        _check_request(width, height, method)
    with _reading(source, max_pixels) as image:
        orientation = _orientation(image)
        shown = _displayed_size(image, orientation)
        plans = [(planned_size(*shown, w, h, m), m) for w, h, m in sizes]
        return _stills(image, plans, orientation)


def _check_request(width: int, height: int, method: str) -> None:
    if width < 1 or height < 1:
        raise ValueError(f"bad thumbnail size {width}x{height}")
    if method not in ("crop", "scale"):
        raise ValueError(f"bad thumbnail method {method!r}")


@contextlib.contextmanager
def _reading(source: Path, max_pixels: int) -> Iterator[Image.Image]:
    """The image in `source`, opened lazily and checked against `max_pixels` from its header.

    Whatever Pillow raises while the block uses the image becomes a `ThumbnailError`.
    """
    try:
        # Lazy: reads the header only. `formats` keeps every other decoder away from the file.
        with Image.open(source, formats=_PILLOW_FORMATS) as image:
            pixels = image.width * image.height
            if pixels > max_pixels:
                raise ImageTooLarge(
                    f"{image.width}x{image.height} is {pixels} pixels, more than {max_pixels}"
                )
            yield image
    except FileNotFoundError:
        # A missing source is the caller's problem (a lost file), not a bad image.
        raise
    except _BOMB_ERRORS as e:
        raise ImageTooLarge(str(e)) from e
    except _DECODE_ERRORS as e:
        raise ThumbnailError(f"cannot decode image: {e}") from e


def _orientation(image: Image.Image) -> int:
    # EXIF comes from the header (JPEG APP1, PNG eXIf, WebP EXIF chunk); a broken EXIF block
    # is common in the wild and only means "upright".
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except _DECODE_ERRORS:
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


def _displayed_size(image: Image.Image, orientation: int) -> tuple[int, int]:
    w, h = image.size
    return (h, w) if orientation in _SWAPPING else (w, h)


def _stored(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """A displayed size in the stored orientation."""
    return (size[1], size[0]) if orientation in _SWAPPING else size


def _source_box(
    size: tuple[int, int], target: tuple[int, int], method: str
) -> tuple[float, float, float, float]:
    """The part of the stored image that becomes the thumbnail (all of it, for ``scale``)."""
    w, h = size
    if method == "scale":
        return (0.0, 0.0, float(w), float(h))
    # Crop: the largest centred region with the target's aspect ratio (Synapse scales to
    # cover and cuts the middle: the same pixels, without the intermediate image).
    tw, th = target
    if w * th > tw * h:
        keep = h * tw / th
        return ((w - keep) / 2, 0.0, (w + keep) / 2, float(h))
    keep = w * th / tw
    return (0.0, (h - keep) / 2, float(w), (h + keep) / 2)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info


def _stills(
    image: Image.Image, plans: Sequence[tuple[tuple[int, int], str]], orientation: int
) -> list[ThumbnailImage]:
    """One still thumbnail per (displayed size, method), all from one decode of `image`."""
    alpha = _has_alpha(image)
    as_png = alpha or image.format == "PNG"
    stored = [(_stored(target, orientation), method) for target, method in plans]
    if image.format == "JPEG":
        # Decode at 1/2, 1/4 or 1/8 scale when that still covers the largest target.
        image.draft("RGB", _draft_size(image.size, stored))
    # Palette and 1-bit images are resized as RGB(A): resampling palette indices is
    # nearest-neighbour and looks awful (Synapse converts for the same reason).
    wanted = "RGBA" if alpha else "RGB"
    frame = image if image.mode == wanted else image.convert(wanted)
    made: dict[tuple[tuple[int, int], str], ThumbnailImage] = {}
    for target, method in stored:
        if (target, method) not in made:
            made[target, method] = _render(frame, target, method, orientation, as_png)
    return [made[key] for key in stored]


def _draft_size(
    full: tuple[int, int], stored: Sequence[tuple[tuple[int, int], str]]
) -> tuple[int, int]:
    """The smallest decoded size from which every target is still a reduction."""
    need_w = need_h = 1
    for target, method in stored:
        box = _source_box(full, target, method)
        need_w = max(need_w, math.ceil(target[0] * full[0] / max(box[2] - box[0], 1)))
        need_h = max(need_h, math.ceil(target[1] * full[1] / max(box[3] - box[1], 1)))
    return need_w, need_h


def _render(
    frame: Image.Image, target: tuple[int, int], method: str, orientation: int, as_png: bool
) -> ThumbnailImage:
    box = _source_box(frame.size, target, method)
    small = frame.resize(target, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if orientation != 1:
        small = small.transpose(_UPRIGHT[orientation])
    out = io.BytesIO()
    if as_png:
        small.save(out, "PNG")
        content_type = "image/png"
    else:
        small.save(out, "JPEG", quality=_JPEG_QUALITY)
        content_type = "image/jpeg"
    return ThumbnailImage(out.getvalue(), content_type, small.width, small.height)


def _frame_budget(image: Image.Image, max_pixels: int) -> int:
    """How many frames an animated thumbnail may use (1: make a still one)."""
    opened = image.size
    if image.format not in ("GIF", "WEBP", "PNG") or not getattr(image, "is_animated", False):
        return 1
    _check_frame_size(image, opened)
    # Every kept frame is decoded in full: bound the decoded pixels over all of them.
    return min(MAX_FRAMES, max_pixels // max(opened[0] * opened[1], 1))


def _check_frame_size(frame: Image.Image, opened: tuple[int, int]) -> None:
    # Pillow grows a GIF's canvas when a later frame is larger than the first (the header's
    # size, which the pixel limit was checked against): a 1x1 GIF can carry 12000x12000 frames.
    # Checked after each seek, before that frame is decoded.
    if frame.size != opened:
        raise ImageTooLarge(
            f"a frame of {frame.size[0]}x{frame.size[1]} in an image of {opened[0]}x{opened[1]}"
        )


def _animated(
    image: Image.Image, target: tuple[int, int], method: str, orientation: int, frames: int
) -> ThumbnailImage:
    stored_target = _stored(target, orientation)
    opened = image.size
    box = _source_box(opened, stored_target, method)
    small: list[Image.Image] = []
    durations: list[int] = []
    for index, frame in enumerate(ImageSequence.Iterator(image)):
        if index >= frames:
            break
        _check_frame_size(frame, opened)
        # Each frame as displayed (GIF frames are composited by Pillow), with alpha.
        resized = frame.convert("RGBA").resize(
            stored_target, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0
        )
        if orientation != 1:
            resized = resized.transpose(_UPRIGHT[orientation])
        small.append(resized)
        durations.append(int(frame.info.get("duration", 100) or 100))
    loop = int(image.info.get("loop", 0))
    out = io.BytesIO()
    # Every animation becomes animated WebP: the spec's preference ("Servers SHOULD prefer to
    # return image/webp thumbnails when supporting animation"), full colour and alpha, where
    # GIF would quantise each frame to 256 colours.
    small[0].save(
        out,
        "WEBP",
        save_all=True,
        append_images=small[1:],
        duration=durations,
        loop=loop,
        quality=_JPEG_QUALITY,
    )
    return ThumbnailImage(out.getvalue(), "image/webp", small[0].width, small[0].height)
