"""Measure worker processes (issue 13): sends, cross-instance /sync delivery, a mixed load.

Deployments, each on a fresh data dir (the generated config, open registration, bcrypt cost 4,
no rate limiting):

* ``single``: ``trioserver run`` (one process).
* ``workers1`` / ``workers2``: ``trioserver run --workers N``: main and N workers accept on
  one client port; the kernel picks the process of each connection. Which process answered
  is read from the ``X-Trioserver-Instance`` response header.
* ``split``: one config file with ``[workers.worker1]``, ``[replication]`` and both
  ``[instance_map]`` entries, run as two processes, ``run --config F`` (main, port A) and
  ``run --config F --instance worker1`` (port B). Sends go to one instance and the syncer to
  the other: the cross-instance path (forwarding, replication) on every message.

Figures per deployment:

* idle RSS: VmRSS of main and of each worker after a readiness probe and 2 s without
  requests (workers of a pool are main's child processes, from ``/proc``).
* sends/s: ``--senders`` users of one room send ``PUT /send`` back to back for
  ``--send-duration`` s (`basic_workloads.send`); ``split`` sends through worker1, so every
  send is forwarded to main.
* delivery: one sender, one receiver long-polling ``/sync``; the time from the start of the
  send to the receiver's response carrying it (`sync_workloads` machinery). ``split``: sender
  on main, receiver on worker1.
* mixed: ``--syncers`` users, each in ``--rooms-per-user`` of ``--rooms`` rooms, long-poll
  ``/sync`` (timeline limit 100) while ``--mixed-senders`` users send back to back, round
  robin over the rooms, for ``--mixed-duration`` s (``split``: syncers on worker1, senders on
  main). Throughput = messages that reached a syncer inside the window per second (a message
  in a room of 30 syncers counts 30 times).
* CPU of every server process and of the load generator (this process) per phase.

Targets (issue 13, 2 cores): cross-instance delivery p50 <= 2x single; mixed throughput with
``--workers 2`` >= 1.3x single; idle RSS of a worker process <= 45 MB.

Run (~4 minutes; ``--quick`` ~1.5)::

    .venv/bin/python bench/workers.py
    .venv/bin/python bench/workers.py --quick --modes single split
"""

from __future__ import annotations

import argparse
import collections
import itertools
import secrets
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

import trio

from basic_workloads import (
    User,
    create_room_call,
    for_each,
    join_call,
    register_call,
    register_users,
    send,
    send_call,
)
from benchlib import (
    CLIENT_V3,
    VERSIONS_PATH,
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    free_port,
    machine_summary,
    print_table,
    proc_cpu_s,
    proc_memory_kib,
    self_cpu_s,
    write_config,
)
from loadgen import H11Client
from sync_workloads import (
    SyncClient,
    _deliver_once,
    create_joined_room,
    register_many,
)
from workload import PhaseResult

MODES = ("single", "workers1", "workers2", "split")
WORKER = "worker1"  # the split deployment's worker
IDLE_S = 2.0
READY_TIMEOUT_S = 30.0
SYNC_FILTER = quote(orjson.dumps({"room": {"timeline": {"limit": 100}}}).decode())
LONG_POLL_MS = 30_000
# After the senders stop: how long to wait for the server to go idle before the next phase.
SETTLE_WINDOW_S, SETTLE_MAX_S = 0.5, 10.0

TARGET_DELIVERY_RATIO = 2.0
TARGET_MIXED_RATIO = 1.3
TARGET_WORKER_RSS_MB = 45.0


class Deployment:
    """The server processes of one mode; a `workload.BenchServer` over all of them.

    `base_url` is where set-up and senders go, `sync_url` where a cross-instance receiver
    syncs (the same port for the shared-port modes).
    """

    def __init__(self, mode: str, root: Path, env: dict[str, str]) -> None:
        self.mode = mode
        data_dir = root / mode
        config = write_config(data_dir)
        self._processes: list[ServerProcess] = []
        if mode == "single":
            self._processes.append(ServerProcess(data_dir, env=env))
        elif mode.startswith("workers"):
            count = mode.removeprefix("workers")
            self._processes.append(
                ServerProcess(data_dir, env=env, extra_args=["--workers", count])
            )
        else:
            main_port, worker_port = free_port(), free_port()
            _add_split_tables(config, worker_port)
            main_args = ["--config", str(config)]
            self._processes.append(
                ServerProcess(data_dir, port=main_port, env=env, extra_args=main_args)
            )
            worker_args = [*main_args, "--instance", WORKER]
            self._processes.append(
                ServerProcess(
                    data_dir,
                    port=worker_port,
                    env=env,
                    extra_args=worker_args,
                    log_name="worker1.log",
                )
            )
        self.main = self._processes[0]
        self.base_url = self.main.base_url
        self.sync_url = self._processes[-1].base_url
        self.worker_url = self.sync_url if mode == "split" else self.base_url
        # A pool's main accepts no client connection (its workers do), so it answers none.
        self.expected_instances = {"main"}
        if mode.startswith("workers"):
            self.expected_instances = {f"worker{i}" for i in range(1, int(mode[-1]) + 1)}
        elif mode == "split":
            self.expected_instances.add(WORKER)

    def start(self) -> None:
        """Start every process; return once each instance has answered a forwarded write."""
        for process in self._processes:
            process.start()
        trio.run(self._probe_writes)

    async def _probe_writes(self) -> None:
        # `/versions` answers before a worker's replication client is connected, and a write
        # forwarded before that gets a 503: register throwaway users over fresh connections
        # until every instance has answered one with 200 (the kernel picks the process).
        answered: set[str] = set()
        deadline = time.perf_counter() + READY_TIMEOUT_S
        for n in itertools.count():
            url = self.base_url if n % 2 == 0 else self.sync_url
            connection = await H11Client.connect(url)
            try:
                call = register_call(f"probe{secrets.token_hex(4)}")
                status, body = await connection.request(call.method, call.path, call.body)
            finally:
                await connection.aclose()
            if status == 200:
                answered.add(connection.instance or "main")
            elif status != 503:
                raise RuntimeError(f"{self.mode}: probe register answered {status} {body[:200]!r}")
            if answered >= self.expected_instances:
                return
            if time.perf_counter() > deadline:
                missing = ", ".join(sorted(self.expected_instances - answered))
                print(f"  {self.mode}: no write answered by {missing} within {READY_TIMEOUT_S} s")
                return
            await trio.sleep(0.05)

    def pids(self) -> dict[str, int]:
        """Label -> pid of every server process; a pool's workers are main's children."""
        result = {"main": self.main.pid}
        if self.mode == "split":
            result[WORKER] = self._processes[1].pid
        for n, pid in enumerate(_children(self.main.pid), 1):
            # A pool's workers are started in order, so pid order is worker1, worker2 (unless
            # one was restarted, which the server log would show).
            result[f"worker{n}"] = pid
        return result

    def cpu_by_process(self) -> dict[str, float]:
        """CPU seconds so far of each server process."""
        result = {}
        for label, pid in self.pids().items():
            try:
                result[label] = proc_cpu_s(pid)
            except FileNotFoundError:  # a worker that exited between listing and reading
                continue
        return result

    def cpu_s(self) -> float:
        """CPU seconds of all server processes together (`workload.BenchServer`)."""
        return sum(self.cpu_by_process().values())

    def rss_mb(self) -> dict[str, float]:
        """VmRSS of each server process in MB."""
        return {label: proc_memory_kib(pid)["VmRSS"] / 1024 for label, pid in self.pids().items()}

    def settle(self) -> None:
        """Wait (at most `SETTLE_MAX_S`) until the processes use < 5% of a core."""
        started = time.perf_counter()
        while time.perf_counter() - started < SETTLE_MAX_S:
            before = self.cpu_s()
            time.sleep(SETTLE_WINDOW_S)
            if self.cpu_s() - before < 0.05 * SETTLE_WINDOW_S:
                return

    def stop(self) -> None:
        """Stop the processes (worker first; main stops a pool's workers itself)."""
        for process in reversed(self._processes):
            status = process.stop()
            if status not in (0, -15):
                print(f"{self.mode}: exited with {status}:\n{process.log_tail()}", file=sys.stderr)


def _add_split_tables(config: Path, worker_port: int) -> None:
    """Make the generated config a main + worker1 deployment (see `config._instance_problems`)."""
    tables = f"""
[replication]
bind = "127.0.0.1"
port = {free_port()}
secret = "{secrets.token_urlsafe(24)}"

[instance_map.main]
host = "127.0.0.1"
port = {free_port()}

[instance_map.{WORKER}]
host = "127.0.0.1"
port = {free_port()}

[workers.{WORKER}]
port = {worker_port}
"""
    with config.open("a", encoding="utf-8") as out:
        out.write(tables)


def _children(pid: int) -> list[int]:
    """The child pids of `pid`, in ascending order (``/proc/<pid>/task/*/children``)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
    return sorted(children)


# -- Figures -------------------------------------------------------------------------------


@dataclass
class CpuWindow:
    """CPU of each server process and of the load generator over a phase, in cores."""

    deployment: Deployment
    server: dict[str, float] = field(default_factory=dict)
    client: float = 0.0

    def __enter__(self) -> CpuWindow:
        self._server0 = self.deployment.cpu_by_process()
        self._client0 = self_cpu_s()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        wall = time.perf_counter() - self._wall0
        after = self.deployment.cpu_by_process()
        self.server = {k: (after[k] - v) / wall for k, v in self._server0.items() if k in after}
        self.client = (self_cpu_s() - self._client0) / wall

    def text(self) -> str:
        """``main 95%, worker1 40%; load gen 30%``."""
        servers = ", ".join(f"{k} {v * 100:.0f}%" for k, v in self.server.items())
        return f"{servers}; load gen {self.client * 100:.0f}%"


@dataclass
class Delivery:
    """Delivery latency samples and which instances the two connections reached."""

    result: PhaseResult
    sender_on: str
    receiver_on: str


async def delivery(deployment: Deployment, samples: int) -> Delivery:
    """One sender (on `base_url`) and one receiver (on `sync_url`): send -> seen latency."""
    tag = "wd" + secrets.token_hex(3)
    async with httpx.AsyncClient(base_url=deployment.base_url, timeout=120) as client:
        users = await register_many(client, tag, 2)
        room_id = await create_joined_room(client, users[0][1], [users[1][1]])
    sender = await SyncClient.connect(deployment.base_url, *users[0])
    receiver = await SyncClient.connect(deployment.sync_url, *users[1])
    result = PhaseResult("delivery")
    try:
        for sync_client in (sender, receiver):
            await sync_client.sync()
        await trio.sleep(0.5)  # the first syncs made both online: let presence settle
        for sync_client in (sender, receiver):
            await sync_client.sync()
        for _ in range(samples):
            await _deliver_once(deployment, sender, [receiver], room_id, result)
    finally:
        await sender.aclose()
        await receiver.aclose()
    return Delivery(
        result, sender.connection.instance or "main", receiver.connection.instance or "main"
    )


@dataclass
class Mixed:
    """The mixed load's outcome."""

    duration_s: float
    sends: int = 0
    send_errors: int = 0
    delivered: int = 0
    responses: int = 0
    limited: int = 0
    sync_errors: int = 0
    syncers_on: collections.Counter[str] = field(default_factory=collections.Counter)
    senders_on: collections.Counter[str] = field(default_factory=collections.Counter)
    cpu: CpuWindow | None = None
    counting: bool = False

    @property
    def delivered_per_s(self) -> float:
        """Messages that reached a syncer per second."""
        return self.delivered / self.duration_s

    @property
    def sends_per_s(self) -> float:
        """Sends answered 200 per second."""
        return self.sends / self.duration_s

    @property
    def responses_per_s(self) -> float:
        """``/sync`` answers (200) per second."""
        return self.responses / self.duration_s


async def mixed(deployment: Deployment, args: argparse.Namespace) -> Mixed:
    """`args.syncers` long-polling syncers and `args.mixed_senders` senders, for a window.

    Syncers connect to `sync_url`, senders to `base_url` (the same port but for split).
    """
    tag = "wm" + secrets.token_hex(3)
    users = await register_users(deployment, tag, args.syncers + args.mixed_senders)
    syncers, senders = users[: args.syncers], users[args.syncers :]
    room_ids = await _mixed_rooms(deployment, syncers, senders, args)
    outcome = Mixed(args.mixed_duration)
    phase = f"{tag} mixed"

    async def syncer(user: User, parked: trio.Event) -> None:
        connection = await H11Client.connect(deployment.sync_url)
        try:
            since = (await _sync_once(connection, user, None, 0))["next_batch"]
            outcome.syncers_on[connection.instance or "main"] += 1
            parked.set()
            while True:
                path = f"{CLIENT_V3}/sync?timeout={LONG_POLL_MS}&filter={SYNC_FILTER}"
                path += f"&since={quote(since)}"
                status, body = await connection.request("GET", path, token=user.token)
                if status != 200:
                    outcome.sync_errors += outcome.counting
                    await trio.sleep(0.1)
                    continue
                answer = orjson.loads(body)
                since = answer["next_batch"]
                if outcome.counting:
                    outcome.responses += 1
                    _count_delivered(answer, phase, outcome)
        finally:
            await connection.aclose()

    async def sender(index: int, user: User, deadline: float) -> None:
        connection = await H11Client.connect(deployment.base_url)
        try:
            await connection.request("GET", VERSIONS_PATH)
            outcome.senders_on[connection.instance or "main"] += 1
            for n in itertools.count():
                if time.perf_counter() >= deadline:
                    return
                room_id = room_ids[(index + n) % len(room_ids)]
                call = send_call(room_id, user, f"{tag}-{index}-{n}", n)
                body = orjson.dumps({"msgtype": "m.text", "body": f"{phase} {index} {n}"})
                status, _ = await connection.request(call.method, call.path, body, call.token)
                if status == 200:
                    outcome.sends += 1
                else:
                    outcome.send_errors += 1
        finally:
            await connection.aclose()

    async with trio.open_nursery() as nursery:
        parked = [trio.Event() for _ in syncers]
        for user, event in zip(syncers, parked, strict=True):
            nursery.start_soon(syncer, user, event)
        for event in parked:
            await event.wait()
        await trio.sleep(1.0)  # every syncer went online: let those presence updates settle
        with CpuWindow(deployment) as outcome.cpu:
            outcome.counting = True
            started = time.perf_counter()
            deadline = started + args.mixed_duration
            async with trio.open_nursery() as senders_nursery:
                for index, user in enumerate(senders):
                    senders_nursery.start_soon(sender, index, user, deadline)
            # The window ends with the last send's answer; what is still on its way to a
            # syncer then is not counted.
            outcome.counting = False
            outcome.duration_s = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return outcome


async def _sync_once(
    connection: H11Client, user: User, since: str | None, timeout_ms: int
) -> dict[str, Any]:
    path = f"{CLIENT_V3}/sync?timeout={timeout_ms}&filter={SYNC_FILTER}"
    if since is not None:
        path += f"&since={quote(since)}"
    status, body = await connection.request("GET", path, token=user.token)
    if status != 200:
        raise RuntimeError(f"{user.user_id}: /sync answered {status}: {body[:300]!r}")
    answer: dict[str, Any] = orjson.loads(body)
    return answer


def _count_delivered(answer: dict[str, Any], phase: str, outcome: Mixed) -> None:
    for room in answer.get("rooms", {}).get("join", {}).values():
        timeline = room.get("timeline", {})
        outcome.limited += bool(timeline.get("limited"))
        for event in timeline.get("events", []):
            body = event.get("content", {}).get("body")
            if event.get("type") == "m.room.message" and str(body).startswith(phase):
                outcome.delivered += 1


async def _mixed_rooms(
    deployment: Deployment, syncers: list[User], senders: list[User], args: argparse.Namespace
) -> list[str]:
    """`args.rooms` rooms; every sender in all, syncer i in rooms i .. i + rooms_per_user - 1."""
    creator = senders[0]
    room_ids: list[str] = []

    async def create(connection: H11Client, n: int) -> None:
        call = create_room_call(creator, f"mixed {n}")
        status, body = await connection.request(call.method, call.path, call.body, call.token)
        if status != 200:
            raise RuntimeError(f"createRoom: {status} {body[:200]!r}")
        room_ids.append(str(orjson.loads(body)["room_id"]))

    await for_each(deployment.base_url, range(args.rooms), create)
    joins = [(room_id, user) for room_id in room_ids for user in senders[1:]]
    for i, user in enumerate(syncers):
        joins += [(room_ids[(i + j) % len(room_ids)], user) for j in range(args.rooms_per_user)]

    async def join(connection: H11Client, item: tuple[str, User]) -> None:
        call = join_call(*item)
        status, body = await connection.request(call.method, call.path, call.body, call.token)
        if status != 200:
            raise RuntimeError(f"join: {status} {body[:200]!r}")

    await for_each(deployment.base_url, joins, join)
    return room_ids


# -- One deployment ------------------------------------------------------------------------


@dataclass
class ModeRun:
    """Everything measured on one deployment."""

    mode: str
    idle_rss_mb: dict[str, float]
    send: PhaseResult
    send_cpu: CpuWindow
    delivery: Delivery
    mixed: Mixed


def run_mode(mode: str, root: Path, env: dict[str, str], args: argparse.Namespace) -> ModeRun:
    """Start `mode`'s deployment, measure it, stop it."""
    deployment = Deployment(mode, root, env)
    try:
        deployment.start()
        print(f"{mode}: ready, processes {deployment.pids()}", flush=True)
        time.sleep(IDLE_S)
        idle = deployment.rss_mb()
        # Sends through the worker in `split`: every one forwarded to main.
        sends_at = _SendTarget(deployment)
        with CpuWindow(deployment) as send_cpu:
            send_result = trio.run(
                lambda: send(
                    sends_at,
                    members=args.members,
                    senders=args.senders,
                    duration_s=args.send_duration,
                )
            )
        deployment.settle()
        delivered = trio.run(delivery, deployment, args.samples)
        deployment.settle()
        mixed_result = trio.run(mixed, deployment, args)
    finally:
        deployment.stop()
    return ModeRun(mode, idle, send_result, send_cpu, delivered, mixed_result)


class _SendTarget:
    """The deployment as `basic_workloads.send` sees it: senders on the worker for split."""

    def __init__(self, deployment: Deployment) -> None:
        self.base_url = deployment.worker_url
        self.cpu_s = deployment.cpu_s


# -- Report --------------------------------------------------------------------------------


def _mode_rows(runs: list[ModeRun]) -> list[list[str]]:
    rows = []
    for run in runs:
        delivered = run.delivery.result
        errors = f" ({run.send.errors} err)" if run.send.errors else ""
        rows.append(
            [
                run.mode,
                f"{run.send.rate:.0f}{errors}",
                f"{run.send.latency_ms(0.5):.1f}",
                run.send_cpu.text(),
                f"{delivered.latency_ms(0.5):.1f}",
                f"{delivered.latency_ms(0.99):.1f}",
                f"{run.delivery.sender_on} -> {run.delivery.receiver_on}",
                ", ".join(f"{k} {v:.1f}" for k, v in run.idle_rss_mb.items()),
            ]
        )
    return rows


MODE_HEADERS = [
    "mode",
    "sends/s",
    "send p50 ms",
    "send CPU (of a core)",
    "delivery p50 ms",
    "delivery p99 ms",
    "delivery sender -> receiver",
    "idle RSS MB",
]


def _mixed_rows(runs: list[ModeRun]) -> list[list[str]]:
    rows = []
    for run in runs:
        outcome = run.mixed
        assert outcome.cpu is not None
        rows.append(
            [
                run.mode,
                f"{outcome.delivered_per_s:.0f}",
                f"{outcome.sends_per_s:.0f}",
                f"{outcome.responses_per_s:.0f}",
                f"{outcome.limited}/{outcome.sync_errors}/{outcome.send_errors}",
                _counter_text(outcome.syncers_on),
                _counter_text(outcome.senders_on),
                outcome.cpu.text(),
            ]
        )
    return rows


MIXED_HEADERS = [
    "mode",
    "delivered/s",
    "sends/s",
    "sync answers/s",
    "limited/sync err/send err",
    "syncers on",
    "senders on",
    "CPU (of a core)",
]


def _counter_text(counter: collections.Counter[str]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(counter.items()))


def _target_rows(runs: dict[str, ModeRun]) -> list[list[str]]:
    rows = []
    single = runs.get("single")
    if single is not None:
        base = single.delivery.result.latency_ms(0.5)
        for mode in ("split", "workers1", "workers2"):
            if mode in runs:
                ratio = runs[mode].delivery.result.latency_ms(0.5) / base
                rows.append(
                    [
                        f"delivery p50, {mode} / single",
                        f"<= {TARGET_DELIVERY_RATIO:g}x",
                        f"{ratio:.2f}x",
                        _verdict(ratio <= TARGET_DELIVERY_RATIO),
                    ]
                )
        for mode in ("workers2", "workers1", "split"):
            if mode in runs:
                ratio = runs[mode].mixed.delivered_per_s / single.mixed.delivered_per_s
                target = f">= {TARGET_MIXED_RATIO:g}x" if mode == "workers2" else "(none)"
                verdict = _verdict(ratio >= TARGET_MIXED_RATIO) if mode == "workers2" else "-"
                rows.append(
                    [f"mixed delivered/s, {mode} / single", target, f"{ratio:.2f}x", verdict]
                )
    workers_rss = [
        (f"{run.mode} {label}", mb)
        for run in runs.values()
        for label, mb in run.idle_rss_mb.items()
        if label != "main"
    ]
    if workers_rss:
        name, worst = max(workers_rss, key=lambda item: item[1])
        rows.append(
            [
                "idle RSS of a worker (largest)",
                f"<= {TARGET_WORKER_RSS_MB:g} MB",
                f"{worst:.1f} MB ({name})",
                _verdict(worst <= TARGET_WORKER_RSS_MB),
            ]
        )
    return rows


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short phases, fewer users")
    parser.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    parser.add_argument("--members", type=int, default=10, help="members of the send room")
    parser.add_argument("--senders", type=int, default=10, help="senders of the send phase")
    parser.add_argument("--send-duration", type=float, default=10.0)
    parser.add_argument("--samples", type=int, default=200, help="delivery messages")
    parser.add_argument("--syncers", type=int, default=100, help="mixed: long-polling users")
    parser.add_argument("--mixed-senders", type=int, default=10)
    parser.add_argument("--rooms", type=int, default=10, help="mixed: rooms")
    parser.add_argument("--rooms-per-user", type=int, default=3, help="mixed: rooms per syncer")
    parser.add_argument("--mixed-duration", type=float, default=20.0)
    args = parser.parse_args(argv)
    if args.quick:
        args.send_duration, args.samples = 3.0, 40
        args.syncers, args.mixed_duration = 30, 5.0
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    print(f"machine: {machine_summary()}")
    background = BackgroundLoad()
    runs: dict[str, ModeRun] = {}
    with tempfile.TemporaryDirectory(prefix="trioserver-bench-workers-") as tmp:
        root = Path(tmp)
        env = bytecode_cache_env(root / "pycache")
        for mode in args.modes:
            try:
                runs[mode] = run_mode(mode, root, env, args)
            except Exception as exc:  # one deployment failing leaves the others' figures
                print(f"{mode}: failed: {exc}", file=sys.stderr)
    if not runs:
        print("nothing was measured")
        return
    print()
    print(
        f"sends: {args.senders} senders, {args.members}-member room, {args.send_duration:g} s"
        f" (split: through {WORKER}); delivery: {args.samples} messages, one at a time;"
        f" mixed: {args.syncers} syncers in {args.rooms_per_user} of {args.rooms} rooms,"
        f" {args.mixed_senders} senders, {args.mixed_duration:g} s."
    )
    print("CPU columns: share of one core of each server process and of the load generator.")
    print_table(MODE_HEADERS, _mode_rows(list(runs.values())))
    print()
    print_table(MIXED_HEADERS, _mixed_rows(list(runs.values())))
    targets = _target_rows(runs)
    if targets:
        print()
        print_table(["target", "wanted", "measured", ""], targets)
    print(background.report())


if __name__ == "__main__":
    main()
