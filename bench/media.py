"""The media repository on a real server process: transfer speed, memory, thumbnails.

For each server (trioserver, Synapse, or both; each a real process on a fresh data dir,
configured as `compare.make_server` does, with room for 100 MB uploads and dynamic
thumbnails on), one registered user, one request at a time:

1. 1 MB files (20 by default): each uploaded through ``POST /_matrix/media/v3/upload``,
   streamed from an async generator with ``Content-Length`` (the client never holds a
   whole file), then each downloaded through the authenticated
   ``GET /_matrix/client/v1/media/download/{server}/{id}``, streamed, hashed and discarded
   (every byte checked). Throughput (MB/s over the series), median ms per transfer, and
   server CPU per MB.
2. 100 MB files (3): the same, and the server's peak RSS growth during each upload and each
   download over its RSS just before (sampled every 10 ms; the largest over the files).
   Target (issue 12): trioserver's growth < 20 MB.
3. Thumbnails: a 2000x1500 JPEG made with Pillow is uploaded, then at once the
   320x240 scale, the 96x96 crop (both sizes the servers make on upload) and a 400x300
   scale (made on demand) are each requested right away (first), then again once the server
   is idle (cached). Synapse (dynamic thumbnails on, as here) asks for a PNG and makes it;
   the sizes and types served are printed under the table.

Then one table: both servers' figures and the ratio trioserver vs Synapse in the direction
that is better (throughput "x faster", RSS growth "x lower", times "x faster"). Sizes are
decimal (1 MB = 10^6 bytes). On a 2-core machine the client (random bytes, SHA-256) shares
the cores with the server: its CPU share is printed, and figures from a busy machine are
noisy (see the background line).

Run::

    .venv/bin/python bench/media.py                      # both servers, ~2 min
    .venv/bin/python bench/media.py --server trioserver --small 5 --big 1
"""

from __future__ import annotations

import argparse
import math
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from benchlib import BackgroundLoad, machine_summary, print_table, self_cpu_s
from compare import (
    SERVERS,
    make_server,
    ratio_text,
    rss_growth_ratio_text,
    settle,
    trioserver_revision,
)
from loadgen import register_user
from media_workloads import (
    MB,
    THUMBNAILS,
    Series,
    ThumbnailTimings,
    new_client,
    series,
    thumbnail_timings,
)
from synapse import ensure_synapse

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from benchlib import ServerProcess
    from synapse import SynapseInstall

RSS_TARGET_MB = 20.0
SYNAPSE_VERSION = "1.163.2"


@dataclass
class MediaRun:
    """Everything measured on one server."""

    name: str
    version: str = ""
    small: Series | None = None
    big: Series | None = None
    thumbs: ThumbnailTimings | None = None
    client_cpu_share: float = math.nan
    failures: dict[str, str] = field(default_factory=dict)


def _phase(run: MediaRun, name: str, fn: Callable[[], Awaitable[object]]) -> object | None:
    """Run one phase in its own trio run; a failure is recorded, not fatal to the rest."""
    try:
        return trio.run(fn)
    except Exception as error:  # one failed phase must not lose the others
        run.failures[name] = f"{type(error).__name__}: {error}"[:300]
        print(f"  {name}: FAILED: {run.failures[name]}", flush=True)
        return None


def measure(server: ServerProcess, run: MediaRun, small: int, big: int) -> None:
    """Register a user, then the three phases, each once the server is idle."""

    async def register() -> str:
        async with new_client(server.base_url) as client:
            return (await register_user(client, "media-" + secrets.token_hex(3)))[1]

    token = trio.run(register)

    def transfers(size: int, count: int, rss: bool) -> Callable[[], Awaitable[Series]]:
        async def go() -> Series:
            async with new_client(server.base_url) as client:
                return await series(client, server, token, size=size, count=count, sample_rss=rss)

        return go

    async def thumbs() -> ThumbnailTimings:
        async with new_client(server.base_url) as client:
            return await thumbnail_timings(client, server, token)

    wall, cpu = time.perf_counter(), self_cpu_s()
    for name, fn in [
        ("small", transfers(MB, small, False)),
        ("big", transfers(100 * MB, big, True)),
        ("thumbs", thumbs),
    ]:
        settle(server)
        started = time.perf_counter()
        result = _phase(run, name, fn)
        if result is not None:
            setattr(run, name, result)
            print(f"  {name}: {time.perf_counter() - started:.1f} s", flush=True)
    run.client_cpu_share = (self_cpu_s() - cpu) / (time.perf_counter() - wall)


def run_server(
    name: str, root: Path, install: SynapseInstall | None, small: int, big: int
) -> MediaRun:
    """Start a fresh server, measure it, stop it."""
    run = MediaRun(name, install.version if install and name == "synapse" else "")
    server, _ = make_server(name, root, install)  # SQLite: nothing to drop afterwards
    startup = server.start()
    print(f"{name}: ready in {startup:.2f} s at {server.base_url}", flush=True)
    try:
        measure(server, run, small, big)
    finally:
        status = server.stop()
        if status not in (0, -15):
            print(f"{name}: exited with status {status}:\n{server.log_tail()}")
    return run


# -- The table -------------------------------------------------------------------------------

# (label, figure of a run or NaN, format, lower is better)
Row = tuple[str, Callable[[MediaRun], float], str, bool]


def _series_rows(attr: str, label: str) -> list[Row]:
    def get(fn: Callable[[Series], float]) -> Callable[[MediaRun], float]:
        def value(run: MediaRun) -> float:
            result: Series | None = getattr(run, attr)
            return fn(result) if result is not None else math.nan

        return value

    return [
        (f"upload {label}, MB/s", get(lambda s: s.mb_per_s(s.upload_s)), "{:.1f}", False),
        (f"upload {label}, ms per file (median)", get(lambda s: s.ms(s.upload_s)), "{:.1f}", True),
        (f"download {label}, MB/s", get(lambda s: s.mb_per_s(s.download_s)), "{:.1f}", False),
        (
            f"download {label}, ms per file (median)",
            get(lambda s: s.ms(s.download_s)),
            "{:.1f}",
            True,
        ),
        (
            f"server CPU per MB uploaded ({label}), ms",
            get(lambda s: s.cpu_ms_per_mb(s.upload_cpu_s)),
            "{:.2f}",
            True,
        ),
        (
            f"server CPU per MB downloaded ({label}), ms",
            get(lambda s: s.cpu_ms_per_mb(s.download_cpu_s)),
            "{:.2f}",
            True,
        ),
    ]


def _rss_mb(kib: int | None) -> float:
    return kib * 1024 / MB if kib is not None else math.nan


def _thumb(kind: str, label: str) -> Callable[[MediaRun], float]:
    def value(run: MediaRun) -> float:
        if run.thumbs is None:
            return math.nan
        return getattr(run.thumbs, kind)[label] * 1e3  # type: ignore[no-any-return]

    return value


def rows(small: int, big: int) -> list[Row]:
    """Every row of the table, in order."""
    result = _series_rows("small", f"1 MB x{small}") + _series_rows("big", f"100 MB x{big}")
    result += [
        (
            "peak RSS growth during a 100 MB upload, MB",
            lambda r: _rss_mb(r.big.upload_rss_kib if r.big else None),
            "{:.1f}",
            True,
        ),
        (
            "peak RSS growth during a 100 MB download, MB",
            lambda r: _rss_mb(r.big.download_rss_kib if r.big else None),
            "{:.1f}",
            True,
        ),
        (
            "upload 2000x1500 JPEG, ms",
            lambda r: r.thumbs.upload_s * 1e3 if r.thumbs else math.nan,
            "{:.1f}",
            True,
        ),
    ]
    for request in THUMBNAILS:
        result.append(
            (
                f"thumbnail {request.label}, first, ms",
                _thumb("first_s", request.label),
                "{:.1f}",
                True,
            )
        )
        result.append(
            (
                f"thumbnail {request.label}, cached, ms",
                _thumb("cached_s", request.label),
                "{:.1f}",
                True,
            )
        )
    result.append(
        (
            f"upload + first {THUMBNAILS[0].label} thumbnail, ms",
            lambda r: r.thumbs.upload_to_first_s * 1e3 if r.thumbs else math.nan,
            "{:.1f}",
            True,
        )
    )
    result.append(
        ("load-gen CPU, % of one core", lambda r: r.client_cpu_share * 100, "{:.0f}", True)
    )
    return result


def _ratio(label: str, ours: float, theirs: float, lower: bool) -> str:
    """trioserver vs Synapse in words; RSS growth against a floor (`rss_growth_ratio_text`)."""
    if not label.startswith("peak RSS growth") or math.isnan(ours) or math.isnan(theirs):
        words = ratio_text(ours, theirs, lower_is_better=lower)[0]
        if label.endswith(("ms", "(median)")) and "CPU" not in label:
            # A shorter time is a faster answer: say so, as for throughput.
            words = words.replace("lower", "faster").replace("higher", "slower")
        return words
    return rss_growth_ratio_text(ours, theirs)


def _target(label: str, runs: dict[str, MediaRun], value: Callable[[MediaRun], float]) -> str:
    """The issue's absolute target for the RSS rows: trioserver's growth < 20 MB."""
    if not label.startswith("peak RSS growth"):
        return ""
    ours = value(runs["trioserver"]) if "trioserver" in runs else math.nan
    words = f"< {RSS_TARGET_MB:g} MB"
    if math.isnan(ours):
        return words
    return f"{words}: {'met' if ours < RSS_TARGET_MB else 'MISSED'}"


def print_report(runs: dict[str, MediaRun], small: int, big: int) -> None:
    """The comparison table, then any failures."""
    headers = ["measure", "trioserver", "Synapse", "trioserver vs Synapse", "target (issue)"]
    table = []
    for label, value, fmt, lower in rows(small, big):
        figures = {n: value(runs[n]) if n in runs else math.nan for n in SERVERS}
        cells = ["-" if math.isnan(figures[n]) else fmt.format(figures[n]) for n in SERVERS]
        ratio = "-"
        if not label.startswith("load-gen"):
            ratio = _ratio(label, figures["trioserver"], figures["synapse"], lower)
        table.append([label, *cells, ratio, _target(label, runs, value)])
    print()
    print_table(headers, table)
    for run in runs.values():
        if run.thumbs is not None:
            served = ", ".join(f"{k}: {v}" for k, v in run.thumbs.served.items())
            print(f"{run.name} thumbnails served: {served}")
    for run in runs.values():
        for name, reason in run.failures.items():
            print(f"{run.name} {name} failed: {reason}")


# -- Command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--server", choices=[*SERVERS, "both"], default="both")
    parser.add_argument("--small", type=int, default=20, help="number of 1 MB files")
    parser.add_argument("--big", type=int, default=3, help="number of 100 MB files")
    parser.add_argument(
        "--synapse-version", default=SYNAPSE_VERSION, help="matrix-synapse release"
    )
    parser.add_argument("--synapse-venv", type=Path, help="venv to use instead of the cache")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Measure each selected server and print the comparison."""
    args = parse_args(argv)
    names = SERVERS if args.server == "both" else (args.server,)
    install = None
    if "synapse" in names:
        install = ensure_synapse(args.synapse_version, args.synapse_venv)
    print(f"machine: {machine_summary()}")
    print(f"trioserver: {trioserver_revision()}")
    if install is not None:
        print(f"Synapse: {install.version} ({install.python})")
    print(f"files: {args.small} x 1 MB, {args.big} x 100 MB")
    background = BackgroundLoad()
    started = time.perf_counter()
    runs: dict[str, MediaRun] = {}
    with tempfile.TemporaryDirectory(prefix="trioserver-media-") as tmp:
        for name in names:
            runs[name] = run_server(name, Path(tmp), install, args.small, args.big)
    print_report(runs, args.small, args.big)
    print(f"total {time.perf_counter() - started:.0f} s")
    print(background.report())


if __name__ == "__main__":
    main()
