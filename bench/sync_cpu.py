"""Measure the server CPU of one /sync answer: woken by one new event, and empty.

Setup: a ``trioserver run`` process on a fresh data dir (the benchmark config); a receiver in
``--rooms`` public rooms of a sender, with a sync filter given inline (timeline limit 100),
as the mixed load of `bench/workers.py` uses. Then, one request at a time on one keep-alive
connection, ``--rounds`` times each:

* send: the sender's ``PUT /send`` into the first room;
* send + woken sync: the same send, then the receiver's incremental ``/sync`` (timeout 1 s)
  that returns it; the difference to "send" is what one woken answer costs;
* empty sync: an incremental ``/sync`` with ``timeout=0`` and nothing new (the fixed part of
  every answer: HTTP, auth, filter, memberships, the other streams).

Server CPU is read from ``/proc/<pid>/stat`` (10 ms ticks: keep ``--rounds`` in the
hundreds). Run (about 15 s)::

    .venv/bin/python bench/sync_cpu.py
    .venv/bin/python bench/sync_cpu.py --rounds 1000 --rooms 10
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from urllib.parse import quote

import orjson

import trio

from basic_workloads import (
    User,
    call_json,
    create_room_call,
    join_call,
    register_users,
    send_call,
)
from benchlib import (
    CLIENT_V3,
    BackgroundLoad,
    ServerProcess,
    bytecode_cache_env,
    machine_summary,
    print_table,
    proc_cpu_s,
    write_config,
)
from loadgen import H11Client

SYNC_FILTER = quote(orjson.dumps({"room": {"timeline": {"limit": 100}}}).decode())


async def _sync(connection: H11Client, user: User, since: str | None, timeout_ms: int) -> str:
    path = f"{CLIENT_V3}/sync?filter={SYNC_FILTER}&timeout={timeout_ms}"
    if since is not None:
        path += f"&since={quote(since)}"
    status, body = await connection.request("GET", path, token=user.token)
    if status != 200:
        raise RuntimeError(f"/sync answered {status}: {body[:200]!r}")
    token: str = orjson.loads(body)["next_batch"]
    return token


async def measure(server: ServerProcess, rounds: int, rooms: int) -> list[list[str]]:
    sender, receiver = await register_users(server, "cpu", 2)
    connection = await H11Client.connect(server.base_url)
    try:
        room_ids = []
        for n in range(rooms):
            created = await call_json(connection, create_room_call(sender, f"cpu {n}"))
            room_ids.append(str(created["room_id"]))
            await call_json(connection, join_call(room_ids[-1], receiver))
        since = await _sync(connection, receiver, None, 0)

        async def send(n: int) -> None:
            call = send_call(room_ids[0], sender, f"cpu-{n}", n)
            body = orjson.dumps({"msgtype": "m.text", "body": f"message {n}"})
            status, _ = await connection.request(call.method, call.path, body, call.token)
            if status != 200:
                raise RuntimeError(f"send answered {status}")

        started = proc_cpu_s(server.pid)
        for n in range(rounds):
            await send(n)
        send_s = (proc_cpu_s(server.pid) - started) / rounds
        since = await _sync(connection, receiver, since, 0)
        started = proc_cpu_s(server.pid)
        for n in range(rounds, 2 * rounds):
            await send(n)
            since = await _sync(connection, receiver, since, 1000)
        both_s = (proc_cpu_s(server.pid) - started) / rounds
        started = proc_cpu_s(server.pid)
        for _ in range(rounds):
            await _sync(connection, receiver, since, 0)
        empty_s = (proc_cpu_s(server.pid) - started) / rounds
    finally:
        await connection.aclose()
    return [
        ["send", f"{send_s * 1e6:.0f}"],
        ["send + woken sync", f"{both_s * 1e6:.0f}"],
        ["woken sync (difference)", f"{(both_s - send_s) * 1e6:.0f}"],
        ["empty incremental sync", f"{empty_s * 1e6:.0f}"],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=500)
    parser.add_argument("--rooms", type=int, default=3, help="rooms the receiver is in")
    args = parser.parse_args()
    print(f"machine: {machine_summary()}")
    background = BackgroundLoad()
    with tempfile.TemporaryDirectory(prefix="trioserver-bench-sync-cpu-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        write_config(data_dir)
        server = ServerProcess(data_dir, env=bytecode_cache_env(root / "pycache"))
        server.start()
        try:
            rows = trio.run(measure, server, args.rounds, args.rooms)
        finally:
            server.stop()
    print(f"{args.rounds} rounds each; receiver in {args.rooms} rooms.")
    print_table(["request", "server CPU us"], rows)
    print(background.report())


if __name__ == "__main__":
    main()
