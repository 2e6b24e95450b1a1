"""Which stored thumbnail answers a request (Synapse's `_select_thumbnail` rules)."""

from __future__ import annotations

from typing import Literal

from trioserver.media.thumbnails import select_thumbnail
from trioserver.stores.media_thumbnails import ThumbnailRow


def _row(
    width: int, height: int, method: Literal["crop", "scale"], length: int = 1000
) -> ThumbnailRow:
    return ThumbnailRow(
        media_id="m",
        req_width=width,
        req_height=height,
        method=method,
        animated=False,
        width=width,
        height=height,
        content_type="image/jpeg",
        length=length,
        file_name=f"{width}x{height}-{method}.jpg",
        created_ts=0,
    )


DEFAULTS = [
    _row(32, 32, "crop"),
    _row(96, 96, "crop"),
    _row(320, 240, "scale"),
    _row(640, 480, "scale"),
    _row(800, 600, "scale"),
]


def _pick(width: int, height: int, method: Literal["crop", "scale"]) -> tuple[int, int, str]:
    chosen = select_thumbnail(DEFAULTS, width, height, method)
    assert chosen is not None
    return chosen.width, chosen.height, chosen.method


def test_crop_prefers_the_smallest_that_is_large_enough() -> None:
    assert _pick(32, 32, "crop") == (32, 32, "crop")
    assert _pick(33, 33, "crop") == (96, 96, "crop")
    assert _pick(96, 96, "crop") == (96, 96, "crop")
    # Nothing as large: the closest of the smaller ones.
    assert _pick(500, 500, "crop") == (96, 96, "crop")


def test_crop_aspect_ratio_counts_first() -> None:
    rows = [_row(96, 96, "crop"), _row(200, 100, "crop")]
    chosen = select_thumbnail(rows, 60, 30, "crop")
    assert chosen is not None
    assert (chosen.width, chosen.height) == (200, 100)


def test_scale_prefers_the_closest_that_is_large_enough() -> None:
    assert _pick(100, 100, "scale") == (320, 240, "scale")
    assert _pick(320, 240, "scale") == (320, 240, "scale")
    # One side large enough is enough (Synapse): 240 >= 200.
    assert _pick(321, 200, "scale") == (320, 240, "scale")
    assert _pick(321, 241, "scale") == (640, 480, "scale")
    assert _pick(700, 500, "scale") == (800, 600, "scale")
    assert _pick(2000, 2000, "scale") == (800, 600, "scale")


def test_ties_go_to_the_smaller_file_then_the_earlier_row() -> None:
    rows = [_row(100, 100, "scale", length=500), _row(100, 100, "scale", length=400)]
    assert select_thumbnail(rows, 50, 50, "scale") is rows[1]
    rows = [_row(100, 100, "scale"), _row(100, 100, "scale")]
    assert select_thumbnail(rows, 50, 50, "scale") is rows[0]


def test_other_method_only_gives_the_largest() -> None:
    crops = [_row(32, 32, "crop"), _row(96, 96, "crop")]
    chosen = select_thumbnail(crops, 320, 240, "scale")
    assert chosen is crops[1]
    assert select_thumbnail([], 32, 32, "crop") is None
