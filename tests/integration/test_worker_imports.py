"""A worker loads none of the writer's or the pushers' code (issue 13: a worker's idle RSS).

Each instance is built in a fresh interpreter, the way ``trioserver run --instance NAME``
builds it (the CLI's parsing and config, the data files, the database, then
`nursery.build_components`), and reports the modules it loaded. Main is the control: it runs
the writer and the pushers, so the same check finds their modules there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio

from tests.integration.server_db import database_section
from tests.integration.test_workers_processes import ROOT, write_deployment_config

# Only the events writer (persister, its store, expiry), the pushers instance (delivery over
# guarded httpx) and the instances with a replication listener use these.
WRITER_AND_PUSHER_MODULES = (
    "trioserver.repl.server",
    "trioserver.storage.persistence",
    "trioserver.stores.persist_events",
    "trioserver.storage.expiry",
    "trioserver.storage.live_room",
    "trioserver.handlers.push_delivery",
    "trioserver.guarded_http",
    "httpx",
)

# Loaded on first use only (password checks, a URL preview's HTML): an instance
# that never does these does not pay their memory.
FIRST_USE_MODULES = ("bcrypt", "html.parser")

# Builds instance argv[2] of config argv[1] as `trioserver run --instance` does; prints
# sorted(sys.modules) as JSON.
BUILD_INSTANCE = """
import json, sys
import trio
from trioserver import cli
from trioserver.keys import load_key_file
from trioserver.nursery import build_components
from trioserver.setup_files import ensure_data_files
from trioserver.stores.database import open_configured_database
from trioserver.stores.meta import check_server_name

async def build(config_path, instance):
    args = cli._parser().parse_args(["run", "--config", config_path, "--instance", instance])
    config = cli._config_for_run(args, cli._config_path(args))
    await ensure_data_files(config)
    key = load_key_file(config.data_path(config.signing_key_path))
    async with open_configured_database(config) as db:
        await check_server_name(db, config.server_name)
        build_components(config, db, key)
    print(json.dumps(sorted(sys.modules)))

trio.run(build, sys.argv[1], sys.argv[2])
"""


async def loaded_modules(config_path: Path, instance: str) -> set[str]:
    """The modules a fresh interpreter holds once it has built `instance`'s components."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    with trio.fail_after(60):
        result = await trio.run_process(
            [sys.executable, "-c", BUILD_INSTANCE, str(config_path), instance],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=config_path.parent,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    assert result.returncode == 0, result.stderr.decode()
    modules = json.loads(result.stdout)
    # The checkout under test, not another install of trioserver.
    assert "trioserver" in modules
    return set(modules)


async def write_config(data_dir: Path) -> Path:
    """A deployment of main and worker1 with every feature whose code a worker could load:
    URL previews (built on every instance) and self-destructing messages (the writer's); on the
    data dir's PostgreSQL test database with TRIOSERVER_TEST_POSTGRES."""
    write_deployment_config(data_dir, ("worker1",))
    config_path = data_dir / "trioserver.toml"
    # A top-level key goes before the first table.
    text = "enable_ephemeral_messages = true\n" + config_path.read_text()
    text += "[media]\nurl_preview_enabled = true\n"
    database = await database_section(data_dir)
    if database:
        text += "[database]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in database.items())
    config_path.write_text(text)
    return config_path


async def test_a_worker_loads_no_writer_or_pusher_module(tmp_path: Path) -> None:
    config_path = await write_config(tmp_path / "data")

    worker = await loaded_modules(config_path, "worker1")
    assert sorted(m for m in WRITER_AND_PUSHER_MODULES if m in worker) == []

    # Control: main runs the writer and the pushers, so the check sees their modules there.
    main = await loaded_modules(config_path, "main")
    assert sorted(m for m in WRITER_AND_PUSHER_MODULES if m not in main) == []
    assert sorted(m for m in FIRST_USE_MODULES if m in worker | main) == []
