"""Measure the HTTP edge: requests/s of a trivial endpoint, and what importing quart-trio costs.

Part 1, throughput. ``GET /_matrix/client/versions`` (a constant JSON answer, no database) is
requested back to back over ``--connections`` keep-alive HTTP/1.1 connections (raw h11 on trio,
one task per connection; default 4, then 16, which saturates the server) for ``--duration``
seconds, against three servers, each a separate process on hypercorn's trio worker:

* ``trioserver``: the real ``trioserver run`` process (our ASGI app, `trioserver.api.http`);
* ``bare ASGI``: a 20-line ASGI function answering the same JSON, the floor hypercorn sets;
* ``quart-trio``: a QuartTrio app with one route answering the same JSON, the framework the
  design first named.

Reported: requests/s, latency p50/p99, server CPU per request (``/proc/<pid>/stat``) and the
load generator's CPU.

Part 2, imports. In fresh interpreters (``--import-runs`` each, median): the wall time and the
VmRSS growth of ``import quart_trio`` on top of ``trio`` + ``hypercorn.trio`` (which the server
imports anyway), and of ``import trioserver.nursery`` (all of the server) for comparison.

quart-trio is not a dependency of the project; without it the quart-trio rows are left out
(``pip install quart-trio`` to include them). Both parts run with a bytecode cache (as an
installed package has). Run (about 50 s)::

    .venv/bin/python bench/http_baseline.py
    .venv/bin/python bench/http_baseline.py --connections 8 --duration 3 --import-runs 3
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

import trio

from benchlib import (
    VERSIONS_PATH,
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    free_port,
    import_costs,
    machine_summary,
    percentile,
    print_table,
    proc_cpu_s,
    self_cpu_s,
    write_config,
)
from loadgen import H11Client

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

KINDS = ["trioserver", "bare ASGI", "quart-trio"]
QUART_HINT = ".venv/bin/pip install quart-trio"
VERSIONS_BODY = {"versions": ["v1.1", "v1.2", "v1.3"], "unstable_features": {}}


# ---------------------------------------------------------------------------------------------
# The comparison servers (run in a child process: `http_baseline.py --serve KIND --port N`)
# ---------------------------------------------------------------------------------------------


async def bare_app(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """The least an ASGI app can do: answer every request with the versions JSON."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = orjson.dumps(VERSIONS_BODY)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send(
        {"type": "http.response.start", "status": 200, "headers": headers, "trailers": False}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def quart_app() -> Any:
    """A QuartTrio app with the one route (imported here: only this child pays for it)."""
    # Imported by name: quart-trio is no dependency of the project (not even of its extras), so
    # type-checking must not need it. The import name is this module's: Flask, under Quart,
    # looks for the app's package by it.
    app = importlib.import_module("quart_trio").QuartTrio(__name__)
    app.add_url_rule(VERSIONS_PATH, "versions", _quart_versions, methods=["GET"])
    return app


async def _quart_versions() -> dict[str, Any]:
    return VERSIONS_BODY


def serve(kind: str, port: int) -> None:
    """Serve `kind` on 127.0.0.1:`port` until terminated."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    app = bare_app if kind == "bare ASGI" else quart_app()

    async def main() -> None:
        await hypercorn_serve(app, config, mode="asgi")

    trio.run(main)


class ChildServer:
    """A comparison server in a child process of this script."""

    def __init__(self, kind: str, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, __file__, "--serve", kind, "--port", str(self.port)]
        with log_path.open("ab") as log:
            self._proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self._proc.pid
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.base_url + VERSIONS_PATH, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self._proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{kind} server did not start; see {log_path}")
            time.sleep(0.02)

    def stop(self) -> None:
        """Terminate the child and wait for it."""
        self._proc.terminate()
        self._proc.wait(15)


# ---------------------------------------------------------------------------------------------
# Load generator
# ---------------------------------------------------------------------------------------------


async def load(base_url: str, connections: int, duration: float) -> list[float]:
    """Latencies of back-to-back GETs on `connections` connections for `duration` seconds."""
    latencies: list[float] = []
    deadline = time.perf_counter() + duration

    async def one_connection() -> None:
        client = await H11Client.connect(base_url)
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                status, _ = await client.request("GET", VERSIONS_PATH)
                if status != 200:
                    raise RuntimeError(f"GET {VERSIONS_PATH}: {status}")
                latencies.append(time.perf_counter() - start)
        finally:
            await client.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one_connection)
    return latencies


def measure_throughput(
    name: str, base_url: str, pid: int, args: argparse.Namespace
) -> list[list[str]]:
    """Warm up, then one timed run per connection count; table rows."""
    return [
        [name, str(connections), *_one_run(base_url, pid, connections, args.duration)]
        for connections in args.connections
    ]


def _one_run(base_url: str, pid: int, connections: int, duration: float) -> list[str]:
    trio.run(load, base_url, connections, 0.5)
    cpu0, client0, wall0 = proc_cpu_s(pid), self_cpu_s(), time.perf_counter()
    latencies = trio.run(load, base_url, connections, duration)
    wall = time.perf_counter() - wall0
    server_cpu, client_cpu = proc_cpu_s(pid) - cpu0, self_cpu_s() - client0
    ms = sorted(x * 1e3 for x in latencies)
    n = len(latencies)
    return [
        f"{n / wall:.0f}",
        f"{percentile(ms, 0.5):.2f}",
        f"{percentile(ms, 0.99):.2f}",
        f"{server_cpu / n * 1e6:.0f}",
        f"{server_cpu / wall * 100:.0f}%",
        f"{client_cpu / wall * 100:.0f}%",
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--connections",
        type=int,
        nargs="+",
        default=[4, 16],
        help="keep-alive connections (one run per value)",
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per server")
    parser.add_argument("--import-runs", type=int, default=5, help="interpreters per import")
    parser.add_argument("--serve", choices=KINDS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.port)
        return

    print(f"machine: {machine_summary()}")
    background = BackgroundLoad()
    have_quart = importlib.util.find_spec("quart_trio") is not None
    kinds = KINDS[1:] if have_quart else ["bare ASGI"]
    modules = ["quart_trio", "trioserver.nursery"] if have_quart else ["trioserver.nursery"]
    if not have_quart:
        print(f"quart-trio is not installed: its rows are left out ({QUART_HINT})")
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="trioserver-bench-") as tmp:
        env = bytecode_cache_env(Path(tmp) / "pycache")
        for module in modules:
            import_costs([module], 1, env)  # fills the bytecode cache
        write_config(Path(tmp) / "data")
        server = ServerProcess(Path(tmp) / "data", env=env)
        server.start()
        try:
            rows += measure_throughput("trioserver", server.base_url, server.pid, args)
        finally:
            server.stop()
        for kind in kinds:
            child = ChildServer(kind, env, Path(tmp) / "child.log")
            try:
                rows += measure_throughput(kind, child.base_url, child.pid, args)
            finally:
                child.stop()
        imports = []
        for module in modules:
            base = ["trio", "hypercorn.trio"]
            _, seconds, mb = import_costs([*base, module], args.import_runs, env)[-1]
            imports.append([module, f"{seconds * 1e3:.0f}", f"{mb:.1f}"])

    print()
    print(f"GET {VERSIONS_PATH} back to back on keep-alive connections, {args.duration:g} s each")
    headers = [
        "server",
        "connections",
        "req/s",
        "p50 ms",
        "p99 ms",
        "server CPU us/req",
        "server CPU",
    ]
    print_table([*headers, "client CPU"], rows)
    print()
    print("Import cost in a fresh interpreter, on top of trio + hypercorn.trio (median)")
    print_table(["module", "import ms", "RSS growth MB"], imports)
    print(background.report())


if __name__ == "__main__":
    main()
