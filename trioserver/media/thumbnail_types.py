"""The thumbnailer's types and its list of image types, without Pillow.

Kept apart from `trioserver.media.thumbnailer` so that the server imports Pillow (about
3 MB of memory) only when a thumbnail is first made, not at start-up.
"""

from __future__ import annotations

from typing import Literal

import attrs

from trioserver.media.headers import essence

Method = Literal["crop", "scale"]


class ThumbnailError(Exception):
    """The file cannot be thumbnailed: not a supported image, or corrupt or truncated."""


class ImageTooLarge(ThumbnailError):
    """The image has more pixels than allowed; it was refused from its header, never decoded."""


@attrs.frozen
class ThumbnailImage:
    """An encoded thumbnail.

    Attributes:
        data: the encoded file.
        content_type: its media type (``image/jpeg`` or ``image/png``; ``image/webp`` when
            animated).
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


def can_thumbnail(content_type: str) -> bool:
    """Whether media of this type (parameters such as ``; charset`` ignored) gets thumbnails."""
    return essence(content_type) in THUMBNAIL_TYPES
