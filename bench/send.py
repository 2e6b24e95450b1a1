"""Measure message-send throughput, latency and server CPU per send on a real server process.

Setup: a ``trioserver run`` process on a fresh data dir (generated config with open
registration, bcrypt cost 4, rate limiting off, and ``[database] synchronous`` as given by
``--sync``). ``max(--members)`` users register through ``POST /register``; for each room size
the first user creates a public room (``preset: public_chat``) and the others join it, so every
member is joined.

Measurement, per room: ``--senders`` users (each with its own access token and its own
keep-alive HTTP/1.1 connection, spoken with raw h11 by default or with httpx given ``--client
httpx``) send ``PUT /rooms/{roomId}/send/m.room.message/{txnId}`` back to back, each waiting
for its previous answer, for ``--duration`` seconds (or ``--messages`` sends each).
A short untimed warm-up precedes it. Reported: sends/s, latency p50/p90/p99 (client-side,
request to full response), non-200 answers, the server's CPU time per send (utime + stime
delta from ``/proc/<pid>/stat`` divided by sends) and the load generator's own CPU time, so that
one can see it is not the bottleneck.

Targets (issue 3): >= 5x Synapse 1.163's throughput on this machine, i.e. >= 350 sends/s with 10
members (Synapse: 70/s, 12.8 ms CPU per send) and >= 185/s with 100 (Synapse: 37/s, 24 ms), with
a send cost that does not grow with room size.

Run (about 1 minute with the defaults: two sync modes x two rooms x 10 s)::

    .venv/bin/python bench/send.py
    .venv/bin/python bench/send.py --sync full --members 10 --duration 5 --senders 4
    .venv/bin/python bench/send.py --messages 200
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson

import trio

from benchlib import (
    CLIENT_V3,
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    machine_busy_s,
    machine_summary,
    percentile,
    print_table,
    self_cpu_s,
    write_config,
)
from loadgen import H11Client, auth_headers, check_ok, register_user

SYNAPSE = {10: (70.0, 12.8), 100: (37.0, 24.0)}  # members -> (sends/s, CPU ms per send)
TARGET_FACTOR = 5
WARMUP_PER_SENDER = 10
SETUP_CONCURRENCY = 10


@dataclass(frozen=True)
class User:
    """A registered member: its id and access token."""

    user_id: str
    token: str


@dataclass
class RoomResult:
    """One timed send phase."""

    sync: str
    members: int
    senders: int
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: dict[int, int] = field(default_factory=dict)
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    machine_cpu_s: float = 0.0

    def record(self, status: int, latency: float) -> None:
        """Count one answer: its latency when it is a 200, else its status as an error."""
        if status == 200:
            self.latencies.append(latency)
        else:
            self.errors[status] = self.errors.get(status, 0) + 1

    @property
    def sends(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.sends / self.wall_s


async def _bounded(
    limit: int, jobs: list[tuple[int, str]], client: httpx.AsyncClient
) -> list[User]:
    """Register the (index, localpart) jobs, `limit` at a time; users in index order."""
    users: dict[int, User] = {}
    todo = iter(jobs)

    async def worker() -> None:
        for index, localpart in todo:
            user_id, token = await register_user(client, localpart)
            users[index] = User(user_id, token)

    async with trio.open_nursery() as nursery:
        for _ in range(limit):
            nursery.start_soon(worker)
    return [users[i] for i in range(len(jobs))]


async def create_room(client: httpx.AsyncClient, members: list[User]) -> str:
    """A public room created by the first member and joined by all the others."""
    creator, *others = members
    body = {"preset": "public_chat", "name": f"bench {len(members)}"}
    created = check_ok(
        await client.post(
            f"{CLIENT_V3}/createRoom", json=body, headers=auth_headers(creator.token)
        )
    )
    room_id = str(created["room_id"])
    todo = iter(others)

    async def joiner() -> None:
        for user in todo:
            path = f"{CLIENT_V3}/rooms/{room_id}/join"
            check_ok(await client.post(path, json={}, headers=auth_headers(user.token)))

    async with trio.open_nursery() as nursery:
        for _ in range(SETUP_CONCURRENCY):
            nursery.start_soon(joiner)
    return room_id


@dataclass
class SendPlan:
    """What each sender does in a phase."""

    room_id: str
    senders: list[User]
    duration_s: float | None
    messages: int | None
    client: str = "h11"


async def _sender(
    base_url: str, user: User, plan: SendPlan, deadline: float, result: RoomResult, tag: str
) -> None:
    if plan.client == "httpx":
        await _httpx_sender(base_url, user, plan, deadline, result, tag)
        return
    client = await H11Client.connect(base_url)
    try:
        for n in itertools.count():
            if _done(plan, n, deadline):
                return
            path = f"{CLIENT_V3}/rooms/{plan.room_id}/send/m.room.message/{tag}-{n}"
            body = orjson.dumps(_content(n, user))
            start = time.perf_counter()
            status, _ = await client.request("PUT", path, body, user.token)
            result.record(status, time.perf_counter() - start)
    finally:
        await client.aclose()


async def _httpx_sender(
    base_url: str, user: User, plan: SendPlan, deadline: float, result: RoomResult, tag: str
) -> None:
    headers = auth_headers(user.token)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers=headers) as client:
        for n in itertools.count():
            if _done(plan, n, deadline):
                return
            path = f"{CLIENT_V3}/rooms/{plan.room_id}/send/m.room.message/{tag}-{n}"
            start = time.perf_counter()
            response = await client.put(path, json=_content(n, user))
            result.record(response.status_code, time.perf_counter() - start)


def _done(plan: SendPlan, n: int, deadline: float) -> bool:
    if plan.messages is not None:
        return n >= plan.messages
    return time.perf_counter() >= deadline


def _content(n: int, user: User) -> dict[str, str]:
    return {"msgtype": "m.text", "body": f"bench message {n} from {user.user_id}"}


async def run_phase(base_url: str, plan: SendPlan, result: RoomResult, tag: str) -> None:
    """Every sender sends back to back until the plan says stop."""
    deadline = time.perf_counter() + (plan.duration_s or 0.0)
    async with trio.open_nursery() as nursery:
        for i, user in enumerate(plan.senders):
            nursery.start_soon(_sender, base_url, user, plan, deadline, result, f"{tag}{i}")


async def bench_server(
    server: ServerProcess, args: argparse.Namespace, sync: str
) -> list[RoomResult]:
    """Set up users and rooms on a running server, then time each room's send phase."""
    results = []
    t0 = time.perf_counter()
    max_members = max(args.members)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        jobs = [(i, f"bench{i:04d}") for i in range(max_members)]
        users = await _bounded(SETUP_CONCURRENCY, jobs, client)
        rooms = {n: await create_room(client, users[:n]) for n in args.members}
    print(
        f"setup: {max_members} users registered, rooms joined in {time.perf_counter() - t0:.1f} s"
    )
    for members, room_id in rooms.items():
        senders = users[: min(args.senders, members)]
        warmup = SendPlan(room_id, senders, None, WARMUP_PER_SENDER, args.client)
        await run_phase(server.base_url, warmup, RoomResult(sync, members, 0), "w")
        plan = SendPlan(room_id, senders, args.duration, args.messages, args.client)
        result = RoomResult(sync, members, len(senders))
        cpu_before, client_before, machine_before = server.cpu(), self_cpu_s(), machine_busy_s()
        await run_phase(server.base_url, plan, result, "t")
        cpu_after, client_after, machine_after = server.cpu(), self_cpu_s(), machine_busy_s()
        result.machine_cpu_s = machine_after - machine_before
        result.wall_s = cpu_after.wall_s - cpu_before.wall_s
        result.server_cpu_s = cpu_after.cpu_s - cpu_before.cpu_s
        result.client_cpu_s = client_after - client_before
        results.append(result)
    return results


def _row(r: RoomResult) -> list[str]:
    lat = sorted(x * 1e3 for x in r.latencies)
    synapse = SYNAPSE.get(r.members)
    target = f"{synapse[0] * TARGET_FACTOR:.0f}" if synapse else "-"
    reference = f"{synapse[0]:.0f} / {synapse[1]:g}" if synapse else "-"
    other = r.machine_cpu_s - r.server_cpu_s - r.client_cpu_s
    errors = ", ".join(f"{n}x{status}" for status, n in sorted(r.errors.items())) or "0"
    return [
        r.sync,
        str(r.members),
        str(r.senders),
        str(r.sends),
        errors,
        f"{r.rate:.0f}",
        f"{percentile(lat, 0.5):.1f}",
        f"{percentile(lat, 0.9):.1f}",
        f"{percentile(lat, 0.99):.1f}",
        f"{r.server_cpu_s / max(r.sends, 1) * 1e3:.2f}",
        f"{r.server_cpu_s / r.wall_s * 100:.0f}%",
        f"{r.client_cpu_s / r.wall_s * 100:.0f}%",
        f"{max(0.0, other) / r.wall_s * 100:.0f}%",
        target,
        reference,
    ]


HEADERS = [
    "sync",
    "members",
    "senders",
    "sends",
    "errors",
    "sends/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "server CPU ms/send",
    "server CPU",
    "client CPU",
    "other CPU",
    "target/s",
    "Synapse /s / CPU ms",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--senders", type=int, default=10, help="concurrent senders per room")
    parser.add_argument(
        "--members", type=int, nargs="+", default=[10, 100], help="room sizes (all joined)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending")
    parser.add_argument("--messages", type=int, help="messages per sender (instead of seconds)")
    parser.add_argument(
        "--sync",
        nargs="+",
        default=["full", "normal"],
        choices=["full", "normal"],
        help="[database] synchronous settings to run (a fresh server each)",
    )
    parser.add_argument(
        "--client",
        default="h11",
        choices=["h11", "httpx"],
        help="load generator: raw h11 connections (cheap) or httpx.AsyncClient",
    )
    args = parser.parse_args(argv)
    if args.messages is not None:
        args.duration = None

    print(f"machine: {machine_summary()}")
    background = BackgroundLoad()
    results: list[RoomResult] = []
    with tempfile.TemporaryDirectory(prefix="trioserver-bench-") as tmp:
        env = bytecode_cache_env(Path(tmp) / "pycache")
        for sync in args.sync:
            data_dir = Path(tmp) / f"send-{sync}"
            write_config(data_dir, synchronous=sync)
            server = ServerProcess(data_dir, env=env)
            server.start()
            try:
                results += trio.run(bench_server, server, args, sync)
                hwm_mb = server.memory_kib()["VmHWM"] / 1024
                print(f"synchronous={sync}: server peak RSS {hwm_mb:.1f} MB")
            finally:
                server.stop()
    print()
    print("Message sends: PUT /rooms/{id}/send/m.room.message/{txn}, senders back to back")
    print("(CPU columns: share of one core over the timed phase, 2 cores in total; other CPU is")
    print(" what processes other than the server and this load generator used meanwhile)")
    print_table(HEADERS, [_row(r) for r in results])
    print(background.report())


if __name__ == "__main__":
    main()
