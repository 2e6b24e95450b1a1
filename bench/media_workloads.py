"""Media workloads against any homeserver: streamed uploads and downloads, RSS, thumbnails.

Not a benchmark itself: `bench/media.py` prints these per server with ratios, and
`bench/compare.py` runs `roundtrips` and a 100 MB `series` as its ``media`` workload.

* Uploads go through ``POST /_matrix/media/v3/upload`` with a ``Content-Length`` and an
  async generator body: the client makes each file's random bytes chunk by chunk (hashing
  them as it goes), so it never holds a whole file either; the server cannot tell it from a
  client streaming from disk.
* Downloads go through the authenticated ``GET /_matrix/client/v1/media/download/...``
  (spec v1.11), read as a stream, hashed and discarded; a byte that differs fails the run.
* `RssPeak` samples the server's ``VmRSS`` every 10 ms in a thread while a transfer runs:
  ``VmHWM`` cannot be reset, so the peak *growth* over the RSS just before needs sampling.
* `thumbnail_timings` uploads a 2000x1500 JPEG made with Pillow and times thumbnail
  requests, first (made, or waited for) and, once the server is idle, second (cached).

Sizes are decimal: 1 MB is 10^6 bytes, MB/s is 10^6 bytes per second.
"""

from __future__ import annotations

import hashlib
import io
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from PIL import Image

import trio

from benchlib import median, proc_memory_kib
from loadgen import auth_headers, check_ok

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

MB = 1_000_000
CHUNK = 256 * 1024
UPLOAD_PATH = "/_matrix/media/v3/upload"
MEDIA_V1 = "/_matrix/client/v1/media"
RSS_INTERVAL_S = 0.01
# A request for a 100 MB file on a busy 2-core machine: generous, but bounded.
TIMEOUT_S = 300.0
# What both servers are configured with in the benchmarks (room for the 100 MB files).
BENCH_MAX_UPLOAD = 200 * 1024 * 1024
# Idle: under 5% of a core over half a second (as `compare.settle`), waiting 30 s at most.
IDLE_WINDOW_S = 0.5
IDLE_CPU_SHARE = 0.05
IDLE_MAX_S = 30.0
CACHED_RUNS = 5
Method = Literal["crop", "scale"]


@dataclass(frozen=True)
class Uploaded:
    """A file the server has acknowledged: its mxc URI, size, digest and upload seconds."""

    mxc: str
    size: int
    sha256: str
    seconds: float


@dataclass
class Series:
    """Uploads then downloads of `count` files of `size` bytes, each timed on its own.

    `upload_rss_kib` / `download_rss_kib` are the largest peak RSS growth over any one
    transfer (only when the series samples memory).
    """

    size: int
    count: int
    upload_s: list[float] = field(default_factory=list)
    download_s: list[float] = field(default_factory=list)
    upload_cpu_s: float = 0.0
    download_cpu_s: float = 0.0
    upload_rss_kib: int | None = None
    download_rss_kib: int | None = None

    def mb_per_s(self, seconds: list[float]) -> float:
        """Throughput of the transfers in `seconds` (one per file), MB/s."""
        return len(seconds) * self.size / MB / sum(seconds) if seconds else float("nan")

    @staticmethod
    def ms(seconds: list[float]) -> float:
        """Median milliseconds per transfer."""
        return median(seconds) * 1e3

    def cpu_ms_per_mb(self, cpu_s: float) -> float:
        """Server CPU milliseconds per MB moved (over the whole series)."""
        return cpu_s * 1e3 / (self.count * self.size / MB) if self.count else float("nan")


class Server(Protocol):
    """What the workloads need of a running server (`benchlib.ServerProcess` has it)."""

    @property
    def pid(self) -> int:
        """The server's process id (for its RSS)."""
        ...

    def cpu_s(self) -> float:
        """The server's CPU seconds so far."""
        ...


# -- Server configuration --------------------------------------------------------------------


def configure_trioserver_media(config_path: Path) -> None:
    """Set the benchmark's ``[media]`` keys in a generated ``trioserver.toml``.

    Room for the 100 MB files, and dynamic thumbnails (as for Synapse in `synapse`), so that
    an unconfigured size is made on demand. The keys go at the top of an existing
    ``[media]`` table (later generated lines for the same keys are dropped) or in a new one.
    """
    keys = {"max_upload_size": str(BENCH_MAX_UPLOAD), "dynamic_thumbnails": "true"}
    lines = config_path.read_text(encoding="utf-8").splitlines()
    if "[media]" not in lines:
        lines += ["", "[media]"]
    start = lines.index("[media]") + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("[")), len(lines))
    kept = [ln for ln in lines[start:end] if ln.split("=")[0].strip() not in keys]
    ours = [f"{key} = {value}" for key, value in keys.items()]
    lines[start:end] = ours + kept
    config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- Transfers -------------------------------------------------------------------------------


def split_mxc(mxc: str) -> tuple[str, str]:
    """``mxc://server/id`` -> (server, id)."""
    server, _, media_id = mxc.removeprefix("mxc://").partition("/")
    return server, media_id


async def _random_chunks(size: int, seed: int, digest: Any) -> AsyncIterator[bytes]:
    """`size` pseudo-random bytes in `CHUNK`s, each added to `digest` as it is made."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        chunk = rng.randbytes(min(CHUNK, left))
        digest.update(chunk)
        left -= len(chunk)
        yield chunk


async def upload(
    client: httpx.AsyncClient, token: str, size: int, *, seed: int, name: str = "bench.bin"
) -> Uploaded:
    """Stream `size` random bytes (reproducible from `seed`) to ``POST /upload``.

    Raises:
        RuntimeError: the server did not answer 200 with a ``content_uri``.
    """
    digest = hashlib.sha256()
    headers = auth_headers(token)
    headers |= {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    started = time.perf_counter()
    response = await client.post(
        UPLOAD_PATH,
        params={"filename": name},
        content=_random_chunks(size, seed, digest),
        headers=headers,
    )
    seconds = time.perf_counter() - started
    return Uploaded(str(check_ok(response)["content_uri"]), size, digest.hexdigest(), seconds)


async def upload_bytes(
    client: httpx.AsyncClient, token: str, data: bytes, content_type: str, name: str
) -> Uploaded:
    """Upload a small file held in memory (the thumbnail source)."""
    headers = auth_headers(token) | {"Content-Type": content_type}
    started = time.perf_counter()
    response = await client.post(
        UPLOAD_PATH, params={"filename": name}, content=data, headers=headers
    )
    seconds = time.perf_counter() - started
    mxc = str(check_ok(response)["content_uri"])
    return Uploaded(mxc, len(data), hashlib.sha256(data).hexdigest(), seconds)


async def download(client: httpx.AsyncClient, token: str, file: Uploaded) -> float:
    """Stream `file` back through the authenticated endpoint, checking every byte; seconds.

    Raises:
        RuntimeError: not 200, or the bytes differ from what was uploaded.
    """
    server, media_id = split_mxc(file.mxc)
    path = f"{MEDIA_V1}/download/{server}/{media_id}"
    digest, length = hashlib.sha256(), 0
    started = time.perf_counter()
    async with client.stream("GET", path, headers=auth_headers(token)) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")
        async for chunk in response.aiter_bytes():
            digest.update(chunk)
            length += len(chunk)
    seconds = time.perf_counter() - started
    if length != file.size or digest.hexdigest() != file.sha256:
        raise RuntimeError(f"GET {path}: {length} bytes back, not the {file.size} uploaded")
    return seconds


class RssPeak:
    """The largest VmRSS growth of process `pid` during a ``with`` block, in KiB.

    A thread reads ``/proc/<pid>/status`` every `RSS_INTERVAL_S`; the baseline is the RSS
    read on entry, so memory the process held before (caches, arenas) is not counted.
    """

    def __init__(self, pid: int, interval_s: float = RSS_INTERVAL_S) -> None:
        self._pid = pid
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.baseline_kib = 0
        self.peak_kib = 0

    def _rss(self) -> int:
        return proc_memory_kib(self._pid)["VmRSS"]

    def _sample(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.peak_kib = max(self.peak_kib, self._rss())

    def __enter__(self) -> RssPeak:
        self.baseline_kib = self.peak_kib = self._rss()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self._rss())

    @property
    def growth_kib(self) -> int:
        """Peak minus baseline."""
        return self.peak_kib - self.baseline_kib


async def series(
    client: httpx.AsyncClient,
    server: Server,
    token: str,
    *,
    size: int,
    count: int,
    sample_rss: bool = False,
) -> Series:
    """Upload `count` distinct random files of `size` bytes one by one, then download each.

    One request at a time: this measures a transfer's own speed, not concurrency.
    """
    result = Series(size, count)
    files: list[Uploaded] = []
    base_seed = random.randrange(1 << 32)  # distinct content per run: no dedup across runs
    cpu = server.cpu_s()
    for i in range(count):
        with RssPeak(server.pid) as peak:
            files.append(await upload(client, token, size, seed=base_seed + i))
        result.upload_s.append(files[-1].seconds)
        if sample_rss:
            result.upload_rss_kib = max(result.upload_rss_kib or 0, peak.growth_kib)
    result.upload_cpu_s = server.cpu_s() - cpu
    cpu = server.cpu_s()
    for file in files:
        with RssPeak(server.pid) as peak:
            result.download_s.append(await download(client, token, file))
        if sample_rss:
            result.download_rss_kib = max(result.download_rss_kib or 0, peak.growth_kib)
    result.download_cpu_s = server.cpu_s() - cpu
    return result


# -- Thumbnails ------------------------------------------------------------------------------


def make_jpeg(width: int = 2000, height: int = 1500) -> bytes:
    """A photo-sized JPEG with gradients and noise, so decoding and scaling do real work."""
    noise = Image.effect_noise((width, height), 40)
    across = Image.linear_gradient("L").resize((width, height))
    around = Image.radial_gradient("L").resize((width, height))
    image = Image.merge("RGB", (across, noise, around))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


@dataclass(frozen=True)
class ThumbnailRequest:
    """One thumbnail size, as a client asks for it."""

    label: str
    width: int
    height: int
    method: Method


# The first two are in both servers' default configured sizes (made on upload); the third
# is not, so with dynamic thumbnails on it is made on demand: pure generation time.
THUMBNAILS = [
    ThumbnailRequest("320x240 scale", 320, 240, "scale"),
    ThumbnailRequest("96x96 crop", 96, 96, "crop"),
    ThumbnailRequest("400x300 scale (on demand)", 400, 300, "scale"),
]


async def thumbnail(
    client: httpx.AsyncClient, token: str, mxc: str, request: ThumbnailRequest
) -> tuple[float, str]:
    """``GET /_matrix/client/v1/media/thumbnail/...`` once, read whole; seconds, what came.

    What came: content type and pixel size, e.g. ``image/png 320x240`` (a server may answer
    a request without ``type`` with PNG or JPEG, which costs differently to encode).

    Raises:
        RuntimeError: not 200 with an image body.
    """
    server, media_id = split_mxc(mxc)
    path = f"{MEDIA_V1}/thumbnail/{server}/{media_id}"
    params = {"width": request.width, "height": request.height, "method": request.method}
    started = time.perf_counter()
    response = await client.get(path, params=params, headers=auth_headers(token))
    seconds = time.perf_counter() - started
    content_type = response.headers.get("content-type", "")
    if response.status_code != 200 or not content_type.startswith("image/"):
        raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:200]}")
    with Image.open(io.BytesIO(response.content)) as image:
        image.load()  # a real image, not just a header
        width, height = image.size
    return seconds, f"{content_type} {width}x{height}"


@dataclass
class ThumbnailTimings:
    """Seconds: the source's upload, then per `THUMBNAILS` label the first and second GET."""

    upload_s: float = 0.0
    upload_to_first_s: float = 0.0
    first_s: dict[str, float] = field(default_factory=dict)
    cached_s: dict[str, float] = field(default_factory=dict)
    served: dict[str, str] = field(default_factory=dict)


async def wait_idle(server: Server) -> float:
    """Wait until `server` uses under `IDLE_CPU_SHARE` of a core over `IDLE_WINDOW_S`; seconds.

    At most `IDLE_MAX_S`. The async twin of `compare.settle`, for use inside a workload.
    """
    started = time.perf_counter()
    while time.perf_counter() - started < IDLE_MAX_S:
        before = server.cpu_s()
        await trio.sleep(IDLE_WINDOW_S)
        if server.cpu_s() - before < IDLE_CPU_SHARE * IDLE_WINDOW_S:
            break
    return time.perf_counter() - started


async def thumbnail_timings(
    client: httpx.AsyncClient, server: Server, token: str
) -> ThumbnailTimings:
    """Upload a 2000x1500 JPEG, ask for each `THUMBNAILS` size at once, then again later.

    The first requests come as soon as the upload is acknowledged, one after the other: a
    server that makes the configured sizes in the background may still be making them (the
    time a client that shows the image at once waits); one that makes them in the upload
    request has already paid for them in `upload_s`. `upload_to_first_s` adds the two up
    for the first size, the fair "until the thumbnail is there" figure. The second
    requests (`CACHED_RUNS` of each, the median kept) wait until the server is idle, so that
    they time serving a stored thumbnail, not that plus background work still running.
    """
    timings = ThumbnailTimings()
    jpeg = make_jpeg()
    source = await upload_bytes(client, token, jpeg, "image/jpeg", "photo.jpg")
    timings.upload_s = source.seconds
    for request in THUMBNAILS:
        seconds, served = await thumbnail(client, token, source.mxc, request)
        timings.first_s[request.label], timings.served[request.label] = seconds, served
    await wait_idle(server)
    for request in THUMBNAILS:
        # The median of a few: the first request after the idle wait may pay for a new
        # connection (the server closed the idle keep-alive one).
        again = [await thumbnail(client, token, source.mxc, request) for _ in range(CACHED_RUNS)]
        timings.cached_s[request.label] = median([seconds for seconds, _ in again])
    timings.upload_to_first_s = timings.upload_s + timings.first_s[THUMBNAILS[0].label]
    return timings


# -- For bench/compare.py --------------------------------------------------------------------


async def roundtrips(
    client: httpx.AsyncClient, token: str, *, size: int, count: int
) -> list[float]:
    """`count` times: upload a random file of `size` bytes and download it; seconds each."""
    seconds = []
    base_seed = random.randrange(1 << 32)
    for i in range(count):
        file = await upload(client, token, size, seed=base_seed + i)
        seconds.append(file.seconds + await download(client, token, file))
    return seconds


def new_client(base_url: str) -> httpx.AsyncClient:
    """An httpx client for the media workloads (long timeout for the 100 MB files)."""
    return httpx.AsyncClient(base_url=base_url, timeout=TIMEOUT_S)
