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
  otherwise; animated GIF or WebP only when asked for and the source is animated, with at
  most `MAX_FRAMES` frames and at most ``max_pixels`` source pixels decoded over all frames.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Literal

import attrs
from PIL import Image, ImageSequence, UnidentifiedImageError

if TYPE_CHECKING:
    from pathlib import Path


class ThumbnailError(Exception):
    """The file cannot be thumbnailed: not a supported image, or corrupt or truncated."""


class ImageTooLarge(ThumbnailError):
    """The image has more pixels than allowed; it was refused from its header, never decoded."""


@attrs.frozen
class ThumbnailImage:
    """An encoded thumbnail.

    Attributes:
        data: the encoded file.
        content_type: its media type (``image/jpeg``, ``image/png``, ``image/gif``,
            ``image/webp``).
        width: its width in pixels, as displayed.
        height: its height in pixels, as displayed.
    """

    data: bytes
    content_type: str
    width: int
    height: int


# The media types a thumbnail is made for (Synapse's list, plus BMP and APNG). Never SVG: it
# is a document with scripts, and no decoder for it is trusted.
THUMBNAIL_TYPES = frozenset(
    {
        "image/jpeg",
        "image/jpg",
        "image/pjpeg",
        "image/png",
        "image/apng",
        "image/gif",
        "image/webp",
        "image/bmp",
    }
)

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
# broken compressed streams.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError)
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def can_thumbnail(content_type: str) -> bool:
    """Whether media of this type (parameters such as ``; charset`` ignored) gets thumbnails."""
    return content_type.split(";", 1)[0].strip().lower() in THUMBNAIL_TYPES


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
    if fitted[0] >= source_width or fitted[1] >= source_height:
        return source_width, source_height
    return fitted


def image_size(source: Path, *, max_pixels: int) -> tuple[int, int]:
    """The displayed size of the image in `source`, from its header alone.

    Raises:
        ImageTooLarge: it has more than `max_pixels` pixels.
        ThumbnailError: it is not an image of a supported format.
    """
    try:
        with _open(source) as image:
            _check_pixels(image, max_pixels)
            return _displayed_size(image, _orientation(image))
    except FileNotFoundError:
        # A missing source is the caller's problem (a lost file), not a bad image.
        raise
    except _BOMB_ERRORS as e:
        raise ImageTooLarge(str(e)) from e
    except _DECODE_ERRORS as e:
        raise ThumbnailError(f"unreadable image: {e}") from e


def make_thumbnail(
    source: Path,
    *,
    width: int,
    height: int,
    method: Literal["crop", "scale"],
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
    if width < 1 or height < 1:
        raise ValueError(f"bad thumbnail size {width}x{height}")
    if method not in ("crop", "scale"):
        raise ValueError(f"bad thumbnail method {method!r}")
    try:
        with _open(source) as image:
            _check_pixels(image, max_pixels)
            orientation = _orientation(image)
            shown = _displayed_size(image, orientation)
            target = planned_size(*shown, width, height, method)
            frames = _frame_budget(image, max_pixels) if animated else 1
            if frames > 1:
                return _animated(image, target, method, orientation, frames)
            return _still(image, target, method, orientation)
    except FileNotFoundError:
        # A missing source is the caller's problem (a lost file), not a bad image.
        raise
    except _BOMB_ERRORS as e:
        raise ImageTooLarge(str(e)) from e
    except _DECODE_ERRORS as e:
        raise ThumbnailError(f"cannot decode image: {e}") from e


def _open(source: Path) -> Image.Image:
    # Lazy: reads the header only. `formats` keeps every other decoder away from the file.
    return Image.open(source, formats=_PILLOW_FORMATS)


def _check_pixels(image: Image.Image, max_pixels: int) -> None:
    pixels = image.width * image.height
    if pixels > max_pixels:
        raise ImageTooLarge(
            f"{image.width}x{image.height} is {pixels} pixels, more than {max_pixels}"
        )


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


def _still(
    image: Image.Image, target: tuple[int, int], method: str, orientation: int
) -> ThumbnailImage:
    alpha = _has_alpha(image)
    as_png = alpha or image.format == "PNG"
    stored_target = _stored(target, orientation)
    if image.format == "JPEG":
        # Decode at 1/2, 1/4 or 1/8 scale when that still covers the target.
        full = image.size
        box = _source_box(full, stored_target, method)
        need = (
            stored_target[0] * full[0] / max(box[2] - box[0], 1),
            stored_target[1] * full[1] / max(box[3] - box[1], 1),
        )
        image.draft("RGB", (max(int(need[0]), 1), max(int(need[1]), 1)))
    # Palette and 1-bit images are resized as RGB(A): resampling palette indices is
    # nearest-neighbour and looks awful (Synapse converts for the same reason).
    wanted = "RGBA" if alpha else "RGB"
    frame = image if image.mode == wanted else image.convert(wanted)
    box = _source_box(frame.size, stored_target, method)
    small = frame.resize(stored_target, Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)
    if orientation in _UPRIGHT and orientation != 1:
        small = small.transpose(_UPRIGHT[orientation])
    out = io.BytesIO()
    if as_png:
        small.save(out, "PNG", optimize=False)
        content_type = "image/png"
    else:
        small.save(out, "JPEG", quality=_JPEG_QUALITY)
        content_type = "image/jpeg"
    return ThumbnailImage(out.getvalue(), content_type, small.width, small.height)


def _frame_budget(image: Image.Image, max_pixels: int) -> int:
    """How many frames an animated thumbnail may use (1: make a still one)."""
    if image.format not in ("GIF", "WEBP", "PNG") or not getattr(image, "is_animated", False):
        return 1
    # Every kept frame is decoded in full: bound the decoded pixels over all of them.
    return min(MAX_FRAMES, max_pixels // max(image.width * image.height, 1))


def _animated(
    image: Image.Image, target: tuple[int, int], method: str, orientation: int, frames: int
) -> ThumbnailImage:
    stored_target = _stored(target, orientation)
    box = _source_box(image.size, stored_target, method)
    small: list[Image.Image] = []
    durations: list[int] = []
    for index, frame in enumerate(ImageSequence.Iterator(image)):
        if index >= frames:
            break
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
    if image.format == "GIF":
        fmt, content_type = "GIF", "image/gif"
        extra: dict[str, object] = {"disposal": 2}
    else:
        # Animated WebP and APNG sources both become animated WebP (small, keeps alpha).
        fmt, content_type = "WEBP", "image/webp"
        extra = {"quality": _JPEG_QUALITY}
    small[0].save(
        out,
        fmt,
        save_all=True,
        append_images=small[1:],
        duration=durations,
        loop=loop,
        **extra,
    )
    return ThumbnailImage(out.getvalue(), content_type, small[0].width, small[0].height)
