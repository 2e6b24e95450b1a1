"""`trioserver run --workers N`: main and N worker processes on one machine, one client port.

Theory of operation
-------------------
Main binds the client listening sockets itself (`bind_client_sockets`) before anything else
runs: one set per worker, all bound to the same addresses and port with ``SO_REUSEPORT``, and
hands each worker its set, so the kernel spreads new connections evenly over the workers (no
proxy). One socket shared by all workers spread them badly: the worker that woke first took
every connection of a burst, often all the senders of a benchmark (BENCHMARKS.md §12). While a
worker is down its set is closed, so that the live workers get every new connection, and a
new set is bound for its restart; a lone worker keeps its set, so connections queue for it.
Where the kernel does not spread ``SO_REUSEPORT`` connections (not Linux), every worker
accepts on one shared set. Main itself accepts none (it is the one writer;
`serve(serve_clients=False)`).

The file's config says nothing about the pool; `plan_pool` completes it in memory with an
overlay: ``[workers.workerK]`` sections, loopback ports for ``[replication]`` and the
``instance_map`` entries the file lacks, and a random ``replication.secret`` unless the file
has one. Main validates that overlay like any config (`config.load_config(overlay=...)`).

A worker is ``sys.executable -m trioserver run --config F`` with the environment variable
`POOL_ENV` holding a `PoolChild` as JSON (its instance name, the overlay, the socket fds and
the parent-watch fd). The overlay holds the secret, so it never goes on the command line,
where ``ps`` would show it; the child removes the variable from ``os.environ`` at once.

A worker whose parent dies must not go on serving alone. Main makes one pipe and keeps its
write end, never writing to it; every worker inherits the read end and `wait_parent_gone`
returns when it reads end-of-file, which the kernel delivers when main's last copy of the
write end closes, however main died (even SIGKILL). ``prctl(PR_SET_PDEATHSIG)`` was not used:
trio starts children from a worker thread, and the signal fires when that *thread* exits.

Workers run `WORKER_NICENESS` steps nicer than main, so that the one writer is never kept
waiting for the CPU by the readers it serves. `run_pool` starts the workers once main is
listening, restarts one that exits (backoff 1 s, doubling to 30 s, back to 1 s after a minute
up), and when `stopping` is set sends each SIGTERM, gives it
``http.graceful_shutdown_seconds`` + 5 s, then SIGKILL. Workers run in their own process
group, so a Ctrl-C at the terminal reaches main only and main alone decides when they stop
(they would otherwise exit on SIGINT and be restarted).
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver.config import MAIN_INSTANCE
from trioserver.listeners import host_port
from trioserver.supervisor import next_backoff

if TYPE_CHECKING:
    from trioserver.config import HttpConfig

logger = logging.getLogger(__name__)

POOL_ENV = "TRIOSERVER_POOL"
# How much nicer than main a worker runs (`_yield_cpu_to_main`); measured in BENCHMARKS.md §12.
WORKER_NICENESS = 5
MAX_NICENESS = 19
# Linux spreads the connections of one port over its SO_REUSEPORT listeners; BSD and macOS
# give each to one of them, so there the workers share one set of sockets instead.
SOCKETS_PER_WORKER = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
LOOPBACK = "127.0.0.1"
INITIAL_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
# A worker that stayed up this long is healthy again: its next restart waits INITIAL_BACKOFF_S.
RESET_BACKOFF_AFTER_S = 60.0
# Time past http.graceful_shutdown_seconds a worker gets to exit after SIGTERM.
STOP_MARGIN_S = 5.0


@attrs.frozen
class PoolChild:
    """What a worker of a pool is told through `POOL_ENV` (JSON).

    Attributes:
        instance: its instance name (``workerK``).
        overlay: the config tables laid over the file (see `plan_pool`).
        listen_fds: the client listening sockets it accepts on.
        parent_fd: the read end of the parent-watch pipe (see `wait_parent_gone`).
    """

    instance: str
    overlay: Mapping[str, Any]
    listen_fds: tuple[int, ...]
    parent_fd: int

    def to_env(self) -> str:
        """The JSON value of `POOL_ENV`."""
        return json.dumps(
            {
                "instance": self.instance,
                "overlay": self.overlay,
                "listen_fds": list(self.listen_fds),
                "parent_fd": self.parent_fd,
            }
        )

    @classmethod
    def from_env(cls, value: str) -> PoolChild:
        """Parse the JSON value of `POOL_ENV` (written by `to_env`; not user input)."""
        data = json.loads(value)
        return cls(
            instance=str(data["instance"]),
            overlay=dict(data["overlay"]),
            listen_fds=tuple(int(fd) for fd in data["listen_fds"]),
            parent_fd=int(data["parent_fd"]),
        )


def pool_child_from_environ() -> PoolChild | None:
    """This process's `PoolChild`, removed from the environment; None outside a pool."""
    value = os.environ.pop(POOL_ENV, None)
    return None if value is None else PoolChild.from_env(value)


def worker_names(count: int) -> tuple[str, ...]:
    """The instance names of a pool of `count` workers: ``worker1`` .. ``workerN``."""
    return tuple(f"worker{i}" for i in range(1, count + 1))


# How many ports below the ephemeral range `free_loopback_port` picks from.
_FIXED_RANGE_SIZE = 16384
_EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Ports this process handed out lately, so that two listeners planned together never get one.
_recently_picked: set[int] = set()


def free_loopback_port() -> int:
    """A TCP port that was free on loopback a moment ago, for a listener bound later (by this
    process or another one).

    Picked below the kernel's ephemeral range when there is room for it: the kernel takes
    ports from that range for every outgoing connection, this process's own clients included,
    and one of them taking a probed port before its listener bound it was seen in CI
    (EADDRINUSE). Outside Linux, or with no room below the range, a bind-to-0 probe.
    """
    low = _ephemeral_range_start()
    if low is not None and low - _FIXED_RANGE_SIZE >= 1024:
        if len(_recently_picked) > _FIXED_RANGE_SIZE // 2:
            _recently_picked.clear()
        for _ in range(100):
            port = random.randrange(low - _FIXED_RANGE_SIZE, low)
            if port not in _recently_picked and _can_bind_loopback(port):
                _recently_picked.add(port)
                return port
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        picked: int = probe.getsockname()[1]
    return picked


def _ephemeral_range_start() -> int | None:
    try:
        return int(_EPHEMERAL_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _can_bind_loopback(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def plan_pool(
    raw: Mapping[str, Any],
    workers: int,
    *,
    pick_port: Callable[[], int] = free_loopback_port,
    make_secret: Callable[[], str] = secrets.token_urlsafe,
) -> dict[str, Any]:
    """The config overlay that makes the file `raw` a pool of main and `workers` workers.

    What the file already says is kept: its ``replication`` bind, port and secret, its
    ``instance_map`` entries and ``[workers.NAME]`` sections. The rest is filled in: a free
    loopback port for the replication listener (when the file sets none) and for each
    instance's internal listener, and a random secret.

    Args:
        raw: the parsed config file.
        workers: how many workers (at least 1).
    """
    assert workers >= 1
    names = worker_names(workers)
    replication = dict(raw.get("replication", {}))
    if "port" not in replication:
        replication["port"] = pick_port()
    if "secret" not in replication:
        replication["secret"] = make_secret()
    known = raw.get("instance_map", {})
    instance_map = {
        name: dict(known.get(name) or {"host": LOOPBACK, "port": pick_port()})
        for name in (MAIN_INSTANCE, *names)
    }
    configured = raw.get("workers", {})
    # A worker's client port is not bound by the worker (it accepts on main's sockets); the
    # section exists so that `Config.for_instance` knows the name.
    pool_workers = {name: dict(configured.get(name, {"port": 0})) for name in names}
    return {"replication": replication, "instance_map": instance_map, "workers": pool_workers}


def bind_client_sockets(http: HttpConfig, workers: int) -> list[list[socket.socket]]:
    """One set of client listening sockets per worker, each on every ``http.bind_addresses``
    x ``http.port``, all bound with ``SO_REUSEPORT`` (see the module docstring).

    The sockets are non-inheritable; children get them only through ``pass_fds``.

    Raises:
        StartupError: an address cannot be bound (names the config key).
    """
    # The server's modules load only to run (this module is imported by the CLI too).
    from trioserver.http_edge import bind_sockets

    groups: list[list[socket.socket]] = []
    try:
        groups.append(bind_sockets(http.bind_addresses, http.port, reuse_port=SOCKETS_PER_WORKER))
        if not SOCKETS_PER_WORKER:
            return groups * workers  # every worker accepts on the same sockets
        addresses = bound_addresses(groups[0])
        groups.extend(bind_group(addresses) for _ in range(workers - 1))
    except OSError as exc:
        from trioserver.nursery import listen_error

        _close_sockets(groups)
        raise listen_error(http, exc) from None
    return groups


def bound_addresses(group: Sequence[socket.socket]) -> list[tuple[str, int]]:
    """The address and port each socket of `group` is bound to (what `bind_group` binds)."""
    return [(_address_text(sock), sock.getsockname()[1]) for sock in group]


def bind_group(addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """Another set of sockets on `addresses`, joining their ``SO_REUSEPORT`` groups.

    Raises:
        OSError: an address cannot be bound (the sockets bound so far are closed).
    """
    from trioserver.http_edge import bind_sockets

    group: list[socket.socket] = []
    try:
        for address, port in addresses:
            group.extend(bind_sockets([address], port, reuse_port=True))
    except OSError:
        _close_sockets([group])
        raise
    return group


def _close_sockets(groups: Sequence[Sequence[socket.socket]]) -> None:
    # Closing a socket twice is harmless: groups may be one shared set (not Linux).
    for group in groups:
        for sock in group:
            sock.close()


async def wait_parent_gone(parent_fd: int) -> None:
    """Return once the parent-watch pipe's write end is closed everywhere (main is gone).

    Takes ownership of `parent_fd`. A checkpoint; it waits for as long as main lives.
    """
    async with trio.lowlevel.FdStream(parent_fd) as pipe:
        # Main never writes: the only thing this read can return is end-of-file.
        while await pipe.receive_some():
            pass


@attrs.frozen(eq=False)
class Pool:
    """The workers of a pool, as main starts them.

    Attributes:
        config_path: the config file the workers read.
        overlay: `plan_pool`'s overlay.
        names: the workers' instance names.
        socket_groups: each worker's client listening sockets (from `bind_client_sockets`),
            in the order of `names`; a dead worker's group is replaced (`_keep_running`).
        stop_timeout: seconds a worker gets between SIGTERM and SIGKILL.
    """

    config_path: Path
    overlay: Mapping[str, Any]
    names: tuple[str, ...]
    socket_groups: list[list[socket.socket]]
    stop_timeout: float
    # What a replacement group binds: every address of the first group, at its port.
    addresses: list[tuple[str, int]] = attrs.field(
        init=False,
        default=attrs.Factory(
            lambda pool: bound_addresses(pool.socket_groups[0]), takes_self=True
        ),
    )

    def client_url(self, scheme: str) -> str:
        """The URL of the first client socket (what main announces; workers accept on it)."""
        host, port = self.socket_groups[0][0].getsockname()[:2]
        return f"{scheme}://{host_port(host, port)}"

    def command(self) -> list[str]:
        """A worker's command line (no secret on it: that is in `POOL_ENV`)."""
        return [sys.executable, "-m", "trioserver", "run", "--config", str(self.config_path)]

    def close(self) -> None:
        """Close every worker's sockets (main's copies)."""
        _close_sockets(self.socket_groups)


def _address_text(sock: socket.socket) -> str:
    bound = sock.getsockname()
    scope = bound[3] if sock.family == socket.AF_INET6 else 0
    return f"{bound[0]}%{scope}" if scope else str(bound[0])


async def run_pool(
    pool: Pool,
    stopping: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep every worker of `pool` running until `stopping` is set, then stop them.

    Start it once main's client API and replication listener are up (workers connect to
    them at start). Calls ``task_status.started()`` once every worker is being started.

    Args:
        pool: the workers to run.
        stopping: set it to stop the workers (SIGTERM, then SIGKILL after
            ``pool.stop_timeout``).

    Returns once every worker has exited after `stopping` was set. Cancelling it kills the
    workers (SIGKILL) and waits for them.
    """
    read_end, write_end = os.pipe()
    try:
        async with trio.open_nursery() as nursery:
            for index in range(len(pool.names)):
                nursery.start_soon(_keep_running, pool, index, read_end, stopping)
            task_status.started()
    finally:
        # Closed only after every worker is gone: closing it signals "main is gone".
        os.close(read_end)
        os.close(write_end)


def next_restart_delay(previous: float | None, *, up_for_s: float) -> float:
    """Seconds to wait before restarting a worker that exited after `up_for_s` seconds up.

    Args:
        previous: the delay before its last restart (None: it never restarted).
    """
    return next_backoff(
        previous,
        up_for_s,
        first_s=INITIAL_BACKOFF_S,
        max_s=MAX_BACKOFF_S,
        healthy_after_s=RESET_BACKOFF_AFTER_S,
    )


async def _keep_running(pool: Pool, index: int, parent_fd: int, stopping: trio.Event) -> None:
    name = pool.names[index]
    delay: float | None = None
    while not stopping.is_set():
        started = trio.current_time()
        fds = tuple(sock.fileno() for sock in pool.socket_groups[index])
        status = await _run_once(pool, PoolChild(name, pool.overlay, fds, parent_fd), stopping)
        if stopping.is_set():
            logger.info("%s stopped (exit status %d)", name, status)
            return
        if len(pool.names) > 1 and SOCKETS_PER_WORKER:
            _close_group(pool, index)
        delay = next_restart_delay(delay, up_for_s=trio.current_time() - started)
        logger.warning("%s exited with status %d; restarting it in %.0f s", name, status, delay)
        with trio.move_on_after(delay):
            await stopping.wait()
        while not pool.socket_groups[index] and not stopping.is_set():
            try:
                pool.socket_groups[index] = bind_group(pool.addresses)
            except OSError as e:
                logger.error("cannot bind the client port again for %s: %s", name, e)
                with trio.move_on_after(MAX_BACKOFF_S):
                    await stopping.wait()


def _close_group(pool: Pool, index: int) -> None:
    # The kernel would go on handing a share of new connections to the dead worker's sockets,
    # where they would wait for its restart: closing them leaves every new connection to the
    # live workers. (With one worker the sockets stay open: connections then queue for the
    # restart instead of being refused.) Connections already queued there are reset.
    group, pool.socket_groups[index] = pool.socket_groups[index], []
    _close_sockets([group])


async def _run_once(pool: Pool, child: PoolChild, stopping: trio.Event) -> int:
    process = await trio.lowlevel.open_process(
        pool.command(),
        env={**os.environ, POOL_ENV: child.to_env()},
        pass_fds=(*child.listen_fds, child.parent_fd),
        stdin=subprocess.DEVNULL,
        # Its own process group: a terminal's Ctrl-C reaches main only (see module doc).
        process_group=0,
    )
    logger.info("started %s (pid %d)", child.instance, process.pid)
    _yield_cpu_to_main(process.pid)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_stop_when_set, process, child.instance, stopping, pool)
            status = await process.wait()
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            # Cancelled (a second Ctrl-C, or main failing): never leave a worker behind.
            process.kill()
            with trio.CancelScope(shield=True):  # reaping the killed child is quick
                await process.wait()
    return status


def _yield_cpu_to_main(pid: int) -> None:
    """Run a worker `WORKER_NICENESS` steps nicer than main.

    Main is the pool's one writer: every write any worker takes in is forwarded to it, and
    every worker waits on its replication stream. When the machine has fewer cores than busy
    processes, a worker computing /sync answers would otherwise hold the CPU while main, with
    a forwarded send in hand, waits for a time slice; with main first, a send goes through
    main's part at once. With a core to spare for each process, niceness changes nothing.
    """
    try:
        niceness = min(MAX_NICENESS, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
        os.setpriority(os.PRIO_PROCESS, pid, niceness)
    except OSError as e:  # the worker runs, only not behind main
        logger.warning("could not lower the priority of worker pid %d: %s", pid, e)


async def _stop_when_set(
    process: trio.Process, name: str, stopping: trio.Event, pool: Pool
) -> None:
    await stopping.wait()
    process.send_signal(signal.SIGTERM)
    await trio.sleep(pool.stop_timeout)
    logger.warning("%s did not stop within %.0f s; killing it", name, pool.stop_timeout)
    process.kill()
