"""`trioserver run --workers N` and `run --instance NAME`, run as real processes (issue 13)."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest

import trio

from trioserver.pool import MAX_NICENESS, WORKER_NICENESS, wait_parent_gone

from tests.integration.test_cli import EXIT_TIMEOUT_S, ServerProcess, run_cli, server_process
from tests.integration.test_cli_startup import assert_one_error, generated_data_dir

STARTED = re.compile(r"started (worker\d+) \(pid (\d+)\)")
WORKER_RUNNING_TIMEOUT_S = 15


def started_pids(server: ServerProcess) -> dict[str, list[int]]:
    """Every worker process main has started, by name, in order (from main's log)."""
    pids: dict[str, list[int]] = {}
    for name, pid in STARTED.findall(server.output()):
        pids.setdefault(name, []).append(int(pid))
    return pids


def is_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def command_line(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


async def wait_worker_running(server: ServerProcess, name: str, *, after: int = 0) -> int:
    """The pid of `name` once it says it is running (a pid other than `after`), bounded.

    Fails at once if the worker exited more often than once per kill (`after`).
    """
    pattern = re.compile(rf"trioserver {name} is running \(pid (\d+)\)")
    exits_allowed = 1 if after else 0
    with trio.fail_after(WORKER_RUNNING_TIMEOUT_S):
        while True:
            output = server.output()
            pids = [int(pid) for pid in pattern.findall(output)]
            if pids and pids[-1] != after:
                return pids[-1]
            assert output.count(f"{name} exited with status") <= exits_allowed, output
            await trio.sleep(0.05)


async def instances_answering(base_url: str, requests: int) -> set[str]:
    """The X-Trioserver-Instance of `requests` requests, each on a new connection."""
    seen = set()
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=5) as http:
        for _ in range(requests):
            response = await http.get("/_matrix/client/versions")
            assert response.status_code == 200
            seen.add(response.headers["x-trioserver-instance"])
    return seen


@pytest.mark.parametrize("count", ["0", "-1"])
async def test_workers_must_be_at_least_one(tmp_path: Path, count: str) -> None:
    result = await run_cli("run", "--data-dir", tmp_path / "d", "--workers", count, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"--workers {count}: must be at least 1" in result.stderr.decode()
    assert not (tmp_path / "d").exists()


async def test_workers_and_instance_exclude_each_other(tmp_path: Path) -> None:
    result = await run_cli(
        "run", "--data-dir", tmp_path / "d", "--workers", "1", "--instance", "main", cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr
    assert "cannot be used with --instance" in result.stderr.decode()


async def test_unknown_instance_is_a_config_error(tmp_path: Path) -> None:
    data_dir = await generated_data_dir(tmp_path)
    result = await run_cli("run", "--data-dir", data_dir, "--instance", "nope", cwd=tmp_path)
    assert_one_error(result, "--instance 'nope'", "[workers.nope]", "main")


async def test_a_worker_instance_without_a_secret_is_a_config_error(tmp_path: Path) -> None:
    data_dir = await generated_data_dir(tmp_path)
    with (data_dir / "trioserver.toml").open("a") as config:
        config.write(
            '\n[workers.w1]\nport = 0\n\n[instance_map.main]\nhost = "127.0.0.1"\nport = 1\n'
        )
    result = await run_cli("run", "--data-dir", data_dir, "--instance", "w1", cwd=tmp_path)
    assert_one_error(result, "config.replication.secret: required")


async def test_a_pool_keeps_events_on_main(tmp_path: Path) -> None:
    data_dir = await generated_data_dir(tmp_path)
    with (data_dir / "trioserver.toml").open("a") as config:
        config.write(
            '\n[stream_writers]\nevents = "worker1"\n\n[workers.worker1]\nport = 0\n'
            '\n[instance_map.worker1]\nhost = "127.0.0.1"\nport = 1\nreplication_port = 2\n'
        )
    result = await run_cli("run", "--data-dir", data_dir, "--workers", "1", cwd=tmp_path)
    assert_one_error(result, "config.stream_writers.events: 'worker1' is not possible")


async def test_instance_main_is_the_default_server(tmp_path: Path) -> None:
    async with server_process(
        "--data-dir", tmp_path / "d", "--instance", "main", cwd=tmp_path
    ) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            response = await http.get("/_matrix/client/versions")
        assert response.headers["x-trioserver-instance"] == "main"
        assert await server.stop() == 0, server.output()


async def test_pool_starts_workers_and_ctrl_c_stops_them_all(tmp_path: Path) -> None:
    async with server_process("--data-dir", tmp_path / "d", "--workers", "2", cwd=tmp_path) as (
        server
    ):
        # Main starts its workers once its listeners are up; the workers answer on the
        # client port (main, the writer, accepts no client connection in a pool).
        await server.wait_for_output("started worker2")
        await server.wait_for_output("started worker1")
        assert await instances_answering(server.base_url, 1) <= {"worker1", "worker2"}
        assert await server.stop(signal.SIGINT) == 0, server.output()
    pids = started_pids(server)
    assert sorted(pids) == ["worker1", "worker2"]
    assert not [pid for each in pids.values() for pid in each if is_alive(pid)]


async def test_every_process_of_the_pool_answers_on_the_one_port(tmp_path: Path) -> None:
    config_path = (tmp_path / "d" / "trioserver.toml").resolve()
    async with server_process("--data-dir", tmp_path / "d", "--workers", "2", cwd=tmp_path) as (
        server
    ):
        for name in ("worker1", "worker2"):
            pid = await wait_worker_running(server, name)
            assert parent_of(pid) == server.process.pid
            # The config overlay (with the replication secret) is handed over in the
            # environment, never on the command line, where `ps` would show it.
            assert command_line(pid)[-3:] == ["run", "--config", str(config_path)]
            # Main, the one writer, goes first for the CPU when the machine is busy.
            main_niceness = os.getpriority(os.PRIO_PROCESS, server.process.pid)
            expected = min(MAX_NICENESS, main_niceness + WORKER_NICENESS)
            assert os.getpriority(os.PRIO_PROCESS, pid) == expected
        # The kernel hands each new connection to one of the processes accepting on the
        # shared socket; over many connections more than one of them answers.
        seen = await instances_answering(server.base_url, 100)
        assert seen == {"worker1", "worker2"}, seen
        assert await server.stop(signal.SIGINT) == 0, server.output()


async def test_a_killed_worker_is_restarted(tmp_path: Path) -> None:
    async with server_process("--data-dir", tmp_path / "d", "--workers", "1", cwd=tmp_path) as (
        server
    ):
        old = await wait_worker_running(server, "worker1")
        os.kill(old, signal.SIGKILL)
        await server.wait_for_output("worker1 exited with status -9; restarting it in 1 s")
        # A lone worker's sockets stay open while it restarts: a client connecting meanwhile
        # waits in the queue and is answered by the new process, not refused.
        async with httpx.AsyncClient(base_url=server.base_url, timeout=15) as http:
            response = await http.get("/_matrix/client/versions")
        assert response.status_code == 200
        new = await wait_worker_running(server, "worker1", after=old)
        assert parent_of(new) == server.process.pid
        assert await server.stop(signal.SIGTERM) == 0, server.output()
    assert not is_alive(new)


async def test_while_a_worker_restarts_the_others_take_every_connection(tmp_path: Path) -> None:
    async with server_process("--data-dir", tmp_path / "d", "--workers", "2", cwd=tmp_path) as (
        server
    ):
        old = await wait_worker_running(server, "worker1")
        await wait_worker_running(server, "worker2")
        os.kill(old, signal.SIGKILL)
        await server.wait_for_output("worker1 exited with status -9; restarting it in 1 s")
        # Within the restart delay: no new connection is left waiting on the dead worker's
        # sockets (the kernel spreads them over each worker's own set).
        with trio.fail_after(5):
            assert await instances_answering(server.base_url, 40) == {"worker2"}
        await wait_worker_running(server, "worker1", after=old)
        # The restarted worker accepts on a new set of sockets on the same port.
        assert await instances_answering(server.base_url, 100) == {"worker1", "worker2"}
        assert await server.stop(signal.SIGTERM) == 0, server.output()


async def test_workers_exit_when_main_dies(tmp_path: Path) -> None:
    async with server_process("--data-dir", tmp_path / "d", "--workers", "2", cwd=tmp_path) as (
        server
    ):
        pids = [await wait_worker_running(server, name) for name in ("worker1", "worker2")]
        server.process.kill()  # no chance to stop its workers: they notice by themselves
        with trio.fail_after(EXIT_TIMEOUT_S):
            await server.process.wait()
            # Nothing to wait on but /proc: they are not our children.
            while True:
                if not any(is_alive(pid) for pid in pids):
                    break
                await trio.sleep(0.05)
    assert "the pool's main process is gone" in server.output()


async def test_wait_parent_gone_returns_when_the_write_end_closes() -> None:
    read_end, write_end = os.pipe()
    async with trio.open_nursery() as nursery:
        gone = trio.Event()

        async def watch() -> None:
            await wait_parent_gone(read_end)
            gone.set()

        nursery.start_soon(watch)
        await trio.sleep(0.05)
        assert not gone.is_set()
        os.close(write_end)
        with trio.fail_after(5):
            await gone.wait()
