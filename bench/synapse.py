"""Synapse as a benchmark opponent: installed once into a cached venv, run as one process.

Not a benchmark itself; `bench/compare.py` runs the same workloads against trioserver and
against a `SynapseProcess`.

* `ensure_synapse` installs ``matrix-synapse`` from PyPI into its own venv, outside the
  checkout (``~/.cache/trioserver-bench/synapse-<version>-venv``), so that a second run
  reuses it. The venv is built under a ``.partial`` name and renamed when the install
  succeeded, so an interrupted install is never mistaken for a finished one.
* `SynapseProcess` generates a config with Synapse's own ``--generate-config`` and lays a
  second config file over it (Synapse merges the ``-c`` files in order, top-level keys of
  later files winning): SQLite, one plain HTTP client listener on loopback, open
  registration, bcrypt cost 4 like trioserver's bench config, every rate limit out of reach,
  no federation key servers, room for 100 MB uploads with the media store in the data dir
  and dynamic thumbnails on. That overlay is JSON, which is valid YAML, so no YAML library
  is needed here. Everything else (presence on, caches, no URL previews, no metrics) stays
  at Synapse's defaults.

It subclasses `benchlib.ServerProcess` only for the parts that do not depend on which server
runs: readiness polling, CPU and memory from ``/proc``, SIGTERM then SIGKILL.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from benchlib import ServerProcess

VENV_ENV = "TRIOSERVER_BENCH_SYNAPSE_VENV"
CACHE_ENV = "TRIOSERVER_BENCH_CACHE"
PACKAGE = "matrix-synapse"
READY_TIMEOUT_S = 120.0
# The machine's PostgreSQL (trust auth on loopback), for Synapse's psycopg2 database.
POSTGRES_HOST = "127.0.0.1"
POSTGRES_USER = "postgres"
# Far above anything a benchmark does: Synapse has no switch that turns rate limiting off.
UNLIMITED = {"per_second": 1_000_000.0, "burst_count": 1_000_000}
RATE_LIMITS = {
    "rc_message": UNLIMITED,
    "rc_registration": UNLIMITED,
    "rc_registration_token_validity": UNLIMITED,
    "rc_login": {"address": UNLIMITED, "account": UNLIMITED, "failed_attempts": UNLIMITED},
    "rc_admin_redaction": UNLIMITED,
    "rc_joins": {"local": UNLIMITED, "remote": UNLIMITED},
    "rc_joins_per_room": UNLIMITED,
    "rc_key_requests": UNLIMITED,
    "rc_3pid_validation": UNLIMITED,
    "rc_invites": {"per_room": UNLIMITED, "per_user": UNLIMITED, "per_issuer": UNLIMITED},
    "rc_third_party_invite": UNLIMITED,
    "rc_media_create": UNLIMITED,
    "rc_presence": {"per_user": UNLIMITED},
    "rc_delayed_event_mgmt": UNLIMITED,
    "rc_room_creation": UNLIMITED,
    "rc_reports": UNLIMITED,
    "rc_user_directory": UNLIMITED,
    "rc_profile": UNLIMITED,
}


@dataclass(frozen=True)
class SynapseInstall:
    """A venv with Synapse in it: its interpreter and the Synapse version it imports."""

    python: Path
    version: str


def cache_dir() -> Path:
    """Where the Synapse venvs live: ``$TRIOSERVER_BENCH_CACHE`` or the user's cache dir."""
    if CACHE_ENV in os.environ:
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trioserver-bench"


def ensure_synapse(version: str | None = None, venv: Path | None = None) -> SynapseInstall:
    """A usable Synapse install, installing it on first use.

    Args:
        version: the ``matrix-synapse`` release to use; the newest on the package index when
            None (falling back to the newest already cached when the index cannot be asked).
        venv: use this venv (from ``--synapse-venv`` or ``$TRIOSERVER_BENCH_SYNAPSE_VENV``)
            instead of the cache; it is created there if it does not exist.

    Raises:
        RuntimeError: the install failed (pip's output is in the message).
    """
    venv = venv or (Path(os.environ[VENV_ENV]) if VENV_ENV in os.environ else None)
    if venv is None:
        version = version or _latest_version() or _newest_cached()
        if version is None:
            raise RuntimeError(f"cannot find out the latest {PACKAGE} and none is cached")
        venv = cache_dir() / f"synapse-{version}-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        _install(venv, version)
    return SynapseInstall(python, _installed_version(python))


def _latest_version() -> str | None:
    """The newest ``matrix-synapse`` on the index pip is configured with, or None."""
    cmd = [sys.executable, "-m", "pip", "index", "versions", PACKAGE]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    match = re.search(rf"^{PACKAGE} \(([^)]+)\)", done.stdout, flags=re.MULTILINE)
    return match.group(1) if match else None


def _newest_cached() -> str | None:
    """The highest version among the finished venvs in the cache."""
    found = []
    for path in cache_dir().glob("synapse-*-venv"):
        numbers = path.name.removeprefix("synapse-").removesuffix("-venv")
        if re.fullmatch(r"\d+(\.\d+)*", numbers):
            found.append(tuple(int(n) for n in numbers.split(".")))
    return ".".join(map(str, max(found))) if found else None


def _install(venv: Path, version: str | None) -> None:
    """Create `venv` and pip-install Synapse into it, renaming it into place at the end."""
    partial = venv.with_name(venv.name + ".partial")
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    requirement = f"{PACKAGE}=={version}" if version else PACKAGE
    print(f"installing {requirement} into {venv} (once; later runs reuse it)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(partial)], check=True)
    done = subprocess.run(
        [str(partial / "bin" / "python"), "-m", "pip", "install", "-q", requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install {requirement} failed:\n{done.stdout}\n{done.stderr}")
    # A venv's scripts name its own path: a renamed venv still runs with `bin/python -m`.
    partial.rename(venv)


def _installed_version(python: Path) -> str:
    cmd = [str(python), "-c", "import synapse; print(synapse.__version__)"]
    # Not from bench/ (run from there, `python -c` would import this file as `synapse`).
    done = subprocess.run(
        cmd, capture_output=True, text=True, check=True, cwd=tempfile.gettempdir()
    )
    return done.stdout.strip()


def ensure_postgres_driver(install: SynapseInstall) -> None:
    """Install psycopg2 into Synapse's venv unless it is there (Synapse's PostgreSQL
    driver; the binary wheel, so no libpq headers are needed)."""
    probe = [str(install.python), "-c", "import psycopg2"]
    if subprocess.run(
        probe, capture_output=True, check=False, cwd=tempfile.gettempdir()
    ).returncode:
        cmd = [str(install.python), "-m", "pip", "install", "-q", "psycopg2-binary"]
        subprocess.run(cmd, check=True, capture_output=True)


def create_postgres_database(name: str) -> None:
    """An empty database for Synapse on the local PostgreSQL (trust auth), with the C
    collation Synapse requires."""
    sql = f"CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    _psql(sql)


def drop_postgres_database(name: str) -> None:
    """Drop a database `create_postgres_database` made."""
    _psql(f"DROP DATABASE IF EXISTS {name}")


def _psql(sql: str) -> None:
    cmd = ["psql", "-h", POSTGRES_HOST, "-U", POSTGRES_USER, "-d", "postgres", "-c", sql]
    subprocess.run(cmd, check=True, capture_output=True)


def log_config(log_path: Path) -> dict[str, object]:
    """Python logging config: WARNING and above to `log_path`, nothing else."""
    return {
        "version": 1,
        "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "plain",
                "filename": str(log_path),
            }
        },
        "root": {"level": "WARNING", "handlers": ["file"]},
        "disable_existing_loggers": False,
    }


def overlay_config(
    data_dir: Path, port: int, log_config_path: Path, postgres_database: str | None = None
) -> dict[str, object]:
    """The settings laid over the generated config (see the module docstring); with
    `postgres_database`, Synapse's psycopg2 database on the local PostgreSQL instead of
    SQLite."""
    listener = {
        "port": port,
        "bind_addresses": ["127.0.0.1"],
        "type": "http",
        "tls": False,
        "x_forwarded": False,
        "resources": [{"names": ["client"], "compress": False}],
    }
    database: dict[str, object] = {
        "name": "sqlite3",
        "args": {"database": str(data_dir / "homeserver.db")},
    }
    if postgres_database is not None:
        args = {"user": POSTGRES_USER, "host": POSTGRES_HOST, "database": postgres_database}
        database = {"name": "psycopg2", "args": {**args, "cp_min": 5, "cp_max": 10}}
    return {
        "listeners": [listener],
        "database": database,
        "log_config": str(log_config_path),
        "enable_registration": True,
        "enable_registration_without_verification": True,
        "bcrypt_rounds": 4,
        "url_preview_enabled": False,
        # The media benchmarks move 100 MB files (default limit 50M), and time a thumbnail
        # size made on demand (trioserver's bench config turns the same switch on).
        "max_upload_size": "200M",
        "media_store_path": str(data_dir / "media_store"),
        "dynamic_thumbnails": True,
        "enable_metrics": False,
        "report_stats": False,
        "suppress_key_server_warning": True,
        "trusted_key_servers": [],
        **RATE_LIMITS,
    }


class SynapseProcess(ServerProcess):
    """``python -m synapse.app.homeserver`` (the monolith, one process) on a free port."""

    def __init__(
        self, install: SynapseInstall, data_dir: Path, *, postgres_database: str | None = None
    ) -> None:
        """`postgres_database`: an empty database made by `create_postgres_database` to use
        instead of SQLite."""
        super().__init__(data_dir)
        self.install = install
        self.postgres_database = postgres_database
        self.config_dir = data_dir / "config"
        self.warnings_path = data_dir / "homeserver-warnings.log"

    @property
    def database_path(self) -> Path:
        """The SQLite main database file (``-wal`` and ``-shm`` lie beside it)."""
        return self.data_dir / "homeserver.db"

    def configure(self) -> None:
        """Generate Synapse's config, then write the overlay next to it (untimed)."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        generated = self.config_dir / "homeserver.yaml"
        cmd = [str(self.install.python), "-m", "synapse.app.homeserver", "--generate-config"]
        cmd += ["--server-name", "localhost", "--report-stats=no"]
        cmd += ["--config-path", str(generated), "--data-directory", str(self.data_dir)]
        subprocess.run(cmd, cwd=self.data_dir, check=True, capture_output=True)
        logging_path = self.config_dir / "log.json"
        logging_path.write_text(json.dumps(log_config(self.warnings_path), indent=1))
        overlay = overlay_config(self.data_dir, self.port, logging_path, self.postgres_database)
        (self.config_dir / "zz-bench.yaml").write_text(json.dumps(overlay, indent=1))

    def spawn(self) -> None:
        """Start Synapse with the generated config and the overlay, from its data dir."""
        if not (self.config_dir / "zz-bench.yaml").exists():
            self.configure()
        cmd = [str(self.install.python), "-m", "synapse.app.homeserver"]
        cmd += ["-c", str(self.config_dir / "homeserver.yaml")]
        cmd += ["-c", str(self.config_dir / "zz-bench.yaml")]
        log = self.log_path.open("ab")
        self.spawned_at = time.perf_counter()
        # Run from the data dir, not from bench/, whose synapse.py would shadow the package.
        self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
        log.close()

    def wait_ready(self, *, poll_s: float = 0.005, timeout_s: float = READY_TIMEOUT_S) -> float:
        """As `ServerProcess.wait_ready`, with room for Synapse's slower schema set-up."""
        return super().wait_ready(poll_s=poll_s, timeout_s=timeout_s)

    def log_tail(self, lines: int = 15) -> str:
        """What Synapse printed, then the last lines of its WARNING log."""
        warnings = ""
        if self.warnings_path.exists():
            warnings = "\n".join(
                self.warnings_path.read_text(errors="replace").splitlines()[-lines:]
            )
        return super().log_tail(lines) + "\n" + warnings
