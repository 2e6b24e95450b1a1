"""Measure the time to make the default thumbnail sizes of a photo.

For each source (a 2000x1500 and a 4000x3000 JPEG, quality 90, with photo-like detail, and a
2000x1500 PNG for the case without reduced-scale JPEG decoding) the five default sizes (32x32
crop, 96x96 crop, 320x240, 640x480, 800x600 scale) are made two ways:

* "upload": all five from one decode (`make_thumbnails`), as
  `ThumbnailService.generate_configured` does after an upload;
* one at a time (`make_thumbnail`, each decoded from the file at the scale it needs), as
  on-demand requests do; per size and the sum.

Reported: the median and best wall time of ``--runs`` rounds (one thread, encoding included,
file writes not). Last, one animated thumbnail (320x240 scale, animated WebP) of a 480x270 GIF
of 60 frames.

Run (a few seconds)::

    .venv/bin/python bench/thumbnails.py
    .venv/bin/python bench/thumbnails.py --runs 10
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

from trioserver.config import DEFAULT_THUMBNAIL_SIZES
from trioserver.media.thumbnailer import make_thumbnail, make_thumbnails

MAX_PIXELS = 32_000_000


def _photo(path: Path, size: tuple[int, int], fmt: str) -> Path:
    """A picture with edges and noise, so that it compresses like a photo, not a flat colour."""
    image = Image.effect_noise(size, 40).convert("RGB")
    draw = ImageDraw.Draw(image)
    w, h = size
    for i in range(40):
        x, y = (i * 7919) % w, (i * 104729) % h
        draw.ellipse((x, y, x + w // 6, y + h // 6), fill=((i * 37) % 256, (i * 91) % 256, 128))
    image = image.filter(ImageFilter.GaussianBlur(1))
    image.save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def _round(source: Path) -> dict[str, float]:
    times = {}
    for size in DEFAULT_THUMBNAIL_SIZES:
        started = time.perf_counter()
        make_thumbnail(
            source,
            width=size.width,
            height=size.height,
            method=size.method,
            animated=False,
            max_pixels=MAX_PIXELS,
        )
        times[f"{size.width}x{size.height} {size.method}"] = time.perf_counter() - started
    times["sum of sizes"] = sum(times.values())
    started = time.perf_counter()
    make_thumbnails(
        source,
        sizes=[(s.width, s.height, s.method) for s in DEFAULT_THUMBNAIL_SIZES],
        max_pixels=MAX_PIXELS,
    )
    times["upload (all 5)"] = time.perf_counter() - started
    return times


def _animated_gif(path: Path) -> Path:
    frames = [_photo_image((480, 270), seed) for seed in range(60)]
    frames[0].save(path, "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)
    return path


def _photo_image(size: tuple[int, int], seed: int) -> Image.Image:
    image = Image.effect_noise(size, 20 + seed % 20).convert("RGB")
    ImageDraw.Draw(image).ellipse((seed * 5, 40, seed * 5 + 120, 160), fill=(200, 80, seed * 4))
    return image


def _animated_round(source: Path) -> float:
    started = time.perf_counter()
    make_thumbnail(
        source, width=320, height=240, method="scale", animated=True, max_pixels=MAX_PIXELS
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sources = [
            ("2000x1500 JPEG", _photo(Path(tmp) / "a.jpg", (2000, 1500), "JPEG")),
            ("4000x3000 JPEG", _photo(Path(tmp) / "b.jpg", (4000, 3000), "JPEG")),
            ("2000x1500 PNG", _photo(Path(tmp) / "c.png", (2000, 1500), "PNG")),
        ]
        for label, source in sources:
            _round(source)  # warm the page cache and Pillow's imports
            rounds = [_round(source) for _ in range(args.runs)]
            size_kb = source.stat().st_size // 1024
            print(f"{label} ({size_kb} KiB), {args.runs} runs: median (best) ms")
            for key in rounds[0]:
                values = [r[key] * 1000 for r in rounds]
                print(f"  {key:>16}: {statistics.median(values):7.1f} ({min(values):.1f})")
        gif = _animated_gif(Path(tmp) / "d.gif")
        _animated_round(gif)
        values = [_animated_round(gif) * 1000 for _ in range(args.runs)]
        print(f"480x270 GIF, 60 frames ({gif.stat().st_size // 1024} KiB), animated 320x240:")
        print(f"  {'animated WebP':>16}: {statistics.median(values):7.1f} ({min(values):.1f})")


if __name__ == "__main__":
    main()
