"""A real Synapse that federates with in-process trioservers over TLS on loopback (issue 15).

Synapse comes from PyPI through the benchmarks' installer (`bench/synapse.py`
`ensure_synapse`: a venv cached under ``~/.cache/trioserver-bench``, built on first use, so a
fresh machine installs it rather than skipping). Its config is Synapse's own
``--generate-config`` output (which also makes the signing key) with an overlay laid over it,
as the benchmark does, and the benchmark's overlay is the base of this one (SQLite, open
registration through ``m.login.dummy``, rate limits out of reach, no trusted key servers).
On top of that:

* server name ``localhost:PORT``, a TLS listener at PORT serving the ``federation`` resource
  (which includes ``/_matrix/key/v2/server``), with the test CA's certificate for
  localhost/127.0.0.1, and a plain HTTP client listener on another port for the test;
* outbound federation trusts the test CA only (``federation_custom_ca_list``) and verifies
  certificates; loopback is allowed as a destination (``ip_range_whitelist``: Synapse blocks
  127.0.0.0/8 by default through ``ip_range_blacklist``);
* INFO logging into ``homeserver.log`` in the data dir, whose tail is printed when the block
  fails, so that pytest shows it with the test's output.

A destination named ``localhost:PORT`` (an explicit port) is reached directly at that port
with SNI ``localhost`` by both servers (server-server API, "Resolving server names", step 2).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs
import httpx

import trio

from tests.integration.client import Client, assert_ok, register
from tests.integration.federation_helpers import TlsFiles, free_port

BENCH_DIR = Path(__file__).parents[2] / "bench"
# Synapse's first start creates its SQLite schema: several seconds, more on a loaded machine.
READY_TIMEOUT_S = 180.0
LOG_TAIL_LINES = 80


def _load_module(name: str, path: Path) -> ModuleType:
    # bench/ is no package: load its files by path instead of putting bench/ on sys.path,
    # where its synapse.py would shadow the real package's name and its other modules
    # (sync.py, search.py, ...) would shadow nothing good either. `bench/synapse.py` imports
    # `benchlib` by name, so that one is registered under its own name first.
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def bench_synapse() -> ModuleType:
    """`bench/synapse.py`, imported as ``bench_synapse``."""
    _load_module("benchlib", BENCH_DIR / "benchlib.py")
    return _load_module("bench_synapse", BENCH_DIR / "synapse.py")


@attrs.frozen
class SynapsePeer:
    """A running Synapse: its server name, its client API and its log."""

    name: str
    http: httpx.AsyncClient
    log_path: Path
    version: str

    async def user(self, localpart: str) -> Client:
        """Register a user through open registration and return a client logged in as them."""
        body = {"username": localpart, "password": f"{localpart}-pw"}
        done = assert_ok(await register(self.http, body))
        return Client(self.http, done["user_id"], done["access_token"], done["device_id"])

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last lines of Synapse's log."""
        if not self.log_path.exists():
            return "(no homeserver.log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _overlay(
    bench: ModuleType, data_dir: Path, tls: TlsFiles, fed_port: int, client_port: int
) -> dict[str, Any]:
    log_path = data_dir / "homeserver.log"
    logging_config = {
        **bench.log_config(log_path),
        "root": {"level": "INFO", "handlers": ["file"]},
    }
    logging_path = data_dir / "config" / "log.json"
    logging_path.write_text(json.dumps(logging_config, indent=1))
    base: dict[str, Any] = bench.overlay_config(data_dir, client_port, logging_path)
    federation_listener = {
        "port": fed_port,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "tls": True,
        "x_forwarded": False,
        "resources": [{"names": ["federation"], "compress": False}],
    }
    return {
        **base,
        "server_name": f"localhost:{fed_port}",
        "listeners": [*base["listeners"], federation_listener],
        "tls_certificate_path": tls.cert_path,
        "tls_private_key_path": tls.key_path,
        "federation_custom_ca_list": [tls.ca_path],
        "federation_verify_certificates": True,
        "ip_range_whitelist": ["127.0.0.0/8"],
        "suppress_key_server_warning": True,
        "trusted_key_servers": [],
        "report_stats": False,
    }


def _configure(python: Path, data_dir: Path, server_name: str) -> Path:
    config_dir = data_dir / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    generated = config_dir / "homeserver.yaml"
    cmd = [str(python), "-m", "synapse.app.homeserver", "--generate-config"]
    cmd += ["--server-name", server_name, "--report-stats=no"]
    cmd += ["--config-path", str(generated), "--data-directory", str(data_dir)]
    # From the data dir: run from bench/, `-m synapse` would find bench/synapse.py.
    subprocess.run(cmd, cwd=data_dir, check=True, capture_output=True)
    return generated


async def _run_synapse(cmd: list[str], data_dir: Path, log_path: Path) -> None:
    with (data_dir / "stdout.log").open("ab") as out:
        done = await trio.run_process(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=data_dir, check=False
        )
    # Reached only when Synapse exits by itself (on cancellation trio terminates it).
    stdout = (data_dir / "stdout.log").read_text(errors="replace")[-4000:]
    raise RuntimeError(f"Synapse exited with {done.returncode}:\n{stdout}\n{log_path}")


async def _wait_ready(http: httpx.AsyncClient) -> None:
    with trio.fail_after(READY_TIMEOUT_S):
        while True:
            try:
                if (await http.get("/_matrix/client/versions")).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            await trio.sleep(0.1)


@asynccontextmanager
async def synapse_peer(tls: TlsFiles, data_dir: Path) -> AsyncIterator[SynapsePeer]:
    """Install Synapse if needed, run it in `data_dir` with certificates from `tls`, and
    stop it (SIGTERM, then SIGKILL) when the block ends."""
    bench = bench_synapse()
    # A cold install (a venv, then matrix-synapse and its dependencies, about 60 packages,
    # from PyPI) takes about half a minute. It runs in a thread that a cancellation cannot
    # stop; pip's own network timeouts bound it.
    install = await trio.to_thread.run_sync(bench.ensure_synapse)
    fed_port, client_port = free_port(), free_port()
    server_name = f"localhost:{fed_port}"
    generated = await trio.to_thread.run_sync(_configure, install.python, data_dir, server_name)
    overlay = data_dir / "config" / "zz-federation.yaml"
    overlay.write_text(json.dumps(_overlay(bench, data_dir, tls, fed_port, client_port), indent=1))
    log_path = data_dir / "homeserver.log"
    cmd = [str(install.python), "-m", "synapse.app.homeserver"]
    cmd += ["-c", str(generated), "-c", str(overlay)]
    async with (
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{client_port}", timeout=60) as http,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(_run_synapse, cmd, data_dir, log_path)
        peer = SynapsePeer(server_name, http, log_path, install.version)
        try:
            await _wait_ready(http)
            yield peer
        except BaseException:
            sys.stderr.write(f"--- Synapse {peer.version} log tail ({log_path}) ---\n")
            sys.stderr.write(peer.log_tail() + "\n")
            raise
        finally:
            nursery.cancel_scope.cancel()
