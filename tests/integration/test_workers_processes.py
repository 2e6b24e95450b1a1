"""Main and workers as real processes: one config file, kill -9, restarts, a pool (issue 13).

Every instance here is its own `trioserver run` process with its own listeners; they share the
data dir's SQLite file (with TRIOSERVER_TEST_POSTGRES, a fresh PostgreSQL database) and talk
over main's replication and internal listeners on loopback. The
subprocesses import the trioserver of this checkout (PYTHONPATH).
"""

from __future__ import annotations

import gc
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest

import trio

from trioserver.pool import free_loopback_port
from trioserver.testing_postgres import database_dsn_for

from tests.integration.client import Client, assert_error, assert_ok, register
from tests.integration.test_cli import (
    ServerProcess,
    admin_register_body,
    launch_server,
    run_cli,
    shared_secret,
    use_cheap_bcrypt,
)
from tests.integration.test_pool import wait_worker_running

ROOT = Path(__file__).resolve().parents[2]
SECRET = "processes-test-replication-secret"
# Wide enough for every event of a test in one sync response: a gap would hide a lost event.
SYNC_FILTER = json.dumps({"room": {"timeline": {"limit": 500}}})
_launches = count()
_txns = count()


def write_deployment_config(
    data_dir: Path,
    workers: tuple[str, ...],
    events_writer: str = "main",
    redis: tuple[str, str] | None = None,
    postgres_dsn: str | None = None,
) -> dict[str, int]:
    """One config file for main and `workers`, on free loopback ports; the client ports.

    `events_writer`: the instance that persists events (a worker gets an instance_map entry
    with its internal and replication ports). `redis`: replicate over that Redis URL, on
    channels under that prefix (issue 14). `postgres_dsn`: keep the data in that PostgreSQL
    database instead of the data dir's SQLite file (issue 14)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = {name: free_loopback_port() for name in ("main", *workers)}
    lines = [
        'server_name = "localhost"',
        "[http]",
        'bind_addresses = ["127.0.0.1"]',
        f"port = {ports['main']}",
        "[registration]",
        "enabled = true",
        "bcrypt_rounds = 4",
        "[ratelimit]",
        "enabled = false",
        "[replication]",
        'bind = "127.0.0.1"',
        f"port = {free_loopback_port()}",
        f'secret = "{SECRET}"',
        *([f'redis = "{redis[0]}"', f'redis_channel_prefix = "{redis[1]}"'] if redis else []),
        "[instance_map.main]",
        'host = "127.0.0.1"',
        f"port = {free_loopback_port()}",
    ]
    if postgres_dsn is not None:
        lines += ["[database]", 'backend = "postgres"', f'dsn = "{postgres_dsn}"']
    if events_writer != "main":
        lines += [
            f"[instance_map.{events_writer}]",
            'host = "127.0.0.1"',
            f"port = {free_loopback_port()}",
            f"replication_port = {free_loopback_port()}",
            "[stream_writers]",
            f'events = "{events_writer}"',
        ]
    for name in workers:
        lines += [f"[workers.{name}]", f"port = {ports[name]}"]
    (data_dir / "trioserver.toml").write_text("\n".join(lines) + "\n")
    return ports


async def launch(cwd: Path, port: int, *args: str | Path) -> ServerProcess:
    """Start `trioserver run *args` (this checkout's code) and wait until it answers on
    `port`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return await launch_server(args, cwd=cwd, port=port, label=f"run-{next(_launches)}", env=env)


class Deployment:
    """Main and workers from one config file, each a process; all killed on the way out."""

    def __init__(
        self,
        tmp_path: Path,
        stack: AsyncExitStack,
        workers: tuple[str, ...],
        events_writer: str = "main",
        redis: tuple[str, str] | None = None,
        postgres_dsn: str | None = None,
    ) -> None:
        self.cwd = tmp_path
        self.data_dir = tmp_path / "data"
        self.config_path = self.data_dir / "trioserver.toml"
        if postgres_dsn is None:
            # With TRIOSERVER_TEST_POSTGRES the processes share a fresh PostgreSQL database.
            postgres_dsn = database_dsn_for(self.data_dir)
        self.ports = write_deployment_config(
            self.data_dir, workers, events_writer, redis, postgres_dsn
        )
        self.processes: dict[str, ServerProcess] = {}
        self._stack = stack
        self._all: list[ServerProcess] = []

    async def start(self, name: str) -> ServerProcess:
        args: list[str | Path] = ["--config", self.config_path]
        if name != "main":
            args += ["--instance", name]
        server = await launch(self.cwd, self.ports[name], *args)
        self.processes[name] = server
        self._all.append(server)
        return server

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    async def http(self, name: str) -> httpx.AsyncClient:
        client = httpx.AsyncClient(base_url=self.url(name), timeout=30)
        return await self._stack.enter_async_context(client)

    async def kill_all(self) -> None:
        for server in self._all:
            if server.process.poll() is None:
                server.process.kill()
            with trio.CancelScope(shield=True):
                await server.process.wait()

    def output(self) -> str:
        return "\n".join(f"--- {s.process.args!r}\n{s.output()}" for s in self._all)


@asynccontextmanager
async def deployment(
    tmp_path: Path,
    *workers: str,
    events_writer: str = "main",
    redis: tuple[str, str] | None = None,
    postgres_dsn: str | None = None,
) -> AsyncIterator[Deployment]:
    async with AsyncExitStack() as stack:
        running = Deployment(tmp_path, stack, workers, events_writer, redis, postgres_dsn)
        try:
            # Main first: it creates the data files the workers open.
            await running.start("main")
            for name in workers:
                await running.start(name)
            yield running
        finally:
            await running.kill_all()


async def until_not_503(request: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    """`request`, repeated while the instance answers 503 (its link to main is not up yet)."""
    with trio.fail_after(15):
        while True:
            response = await request()
            if response.status_code != 503:
                return response
            await trio.sleep(0.1)


async def new_user(http: httpx.AsyncClient, localpart: str) -> Client:
    body = {"username": localpart, "password": "password", "inhibit_login": False}
    result = assert_ok(await until_not_503(lambda: register(http, body)))
    return Client(http, result["user_id"], result["access_token"], result["device_id"])


async def on(deployment: Deployment, name: str, user: Client) -> Client:
    """`user`'s session, talking to instance `name`."""
    return Client(await deployment.http(name), user.user_id, user.token, user.device_id)


async def send_text(client: Client, room_id: str, body: str) -> httpx.Response:
    path = f"/rooms/{room_id}/send/m.room.message/p{next(_txns)}"
    return await client.put(path, {"msgtype": "m.text", "body": body})


async def shared_room(alice: Client, bob: Client) -> str:
    room_id = str(assert_ok(await until_not_503(lambda: alice.post("/createRoom", {})))["room_id"])
    assert_ok(await alice.post(f"/rooms/{room_id}/invite", {"user_id": bob.user_id}))
    assert_ok(await until_not_503(lambda: bob.post(f"/rooms/{room_id}/join", {})))
    return room_id


def _room(sync: dict[str, Any], room_id: str) -> dict[str, Any]:
    room: dict[str, Any] = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    return room


def timeline_bodies(sync: dict[str, Any], room_id: str) -> list[str]:
    timeline = _room(sync, room_id).get("timeline", {})
    assert not timeline.get("limited", False), "a gap in the timeline"
    return [
        e["content"]["body"] for e in timeline.get("events", []) if e["type"] == "m.room.message"
    ]


async def sync(client: Client, since: str | None = None, wait_ms: int = 0) -> dict[str, Any]:
    params: dict[str, Any] = {"timeout": wait_ms, "filter": SYNC_FILTER}
    if since is not None:
        params["since"] = since
    return assert_ok(await client.get("/sync", params=params))


async def sync_until(client: Client, since: str, found: Callable[[dict[str, Any]], bool]) -> str:
    """Long-poll until `found(sync)`; the last next_batch."""
    with trio.fail_after(10):
        while True:
            response = await sync(client, since, wait_ms=2000)
            since = response["next_batch"]
            if found(response):
                return since


class Syncer:
    """Long-polls in the background, collecting the room's message bodies in order.

    It stops between requests (cancelling httpx mid-request leaks its body iterator).
    """

    def __init__(self, client: Client, room_id: str, since: str) -> None:
        self.client, self.room_id, self.since = client, room_id, since
        self.received: list[str] = []
        self.stopping = False
        self._changed = trio.Event()

    async def run(self) -> None:
        while not self.stopping:
            response = await sync(self.client, self.since, wait_ms=1000)
            self.since = response["next_batch"]
            self.received += timeline_bodies(response, self.room_id)
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, bodies: list[str], *, within_s: float = 15) -> None:
        """Until every one of `bodies` has been received, then a moment for duplicates."""
        with trio.fail_after(within_s):
            while not set(bodies) <= set(self.received):
                await self._changed.wait()
        await trio.sleep(1.2)  # a second copy of a row would arrive by now


async def test_main_and_two_workers_from_one_config_file(tmp_path: Path) -> None:
    async with deployment(tmp_path, "worker1", "worker2") as running:
        for name in ("worker1", "worker2"):
            response = await (await running.http(name)).get("/_matrix/client/versions")
            assert response.headers["x-trioserver-instance"] == name
        alice = await new_user(await running.http("worker1"), "alice")
        bob = await new_user(await running.http("worker2"), "bob")
        room_id = await shared_room(alice, bob)
        event_id = assert_ok(await send_text(alice, room_id, "first"))["event_id"]
        syncer = Syncer(bob, room_id, (await sync(bob))["next_batch"])
        sent = [f"message {i}" for i in range(50)]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(syncer.run)
            for body in sent:
                assert_ok(await send_text(alice, room_id, body))
            await syncer.wait_for(sent)
            syncer.stopping = True
        assert syncer.received == sent
        since = syncer.since

        def room_ephemeral(kind: str, check: Callable[[dict[str, Any]], bool]) -> Any:
            def found(response: dict[str, Any]) -> bool:
                events = _room(response, room_id).get("ephemeral", {}).get("events", [])
                return any(e["type"] == kind and check(e["content"]) for e in events)

            return found

        typing = f"/rooms/{room_id}/typing/{alice.user_id}"
        assert_ok(await alice.put(typing, {"typing": True, "timeout": 30000}))
        typed = room_ephemeral("m.typing", lambda c: alice.user_id in c["user_ids"])
        since = await sync_until(bob, since, typed)

        assert_ok(await alice.post(f"/rooms/{room_id}/receipt/m.read/{event_id}", {}))
        since = await sync_until(bob, since, room_ephemeral("m.receipt", lambda c: event_id in c))

        message = {"messages": {bob.user_id: {bob.device_id: {"hello": "bob"}}}}
        assert_ok(await alice.put("/sendToDevice/org.example.ping/t1", message))

        def to_device(response: dict[str, Any]) -> bool:
            events = response.get("to_device", {}).get("events", [])
            return any(e["content"] == {"hello": "bob"} for e in events)

        since = await sync_until(bob, since, to_device)

        bob_on_main = await on(running, "main", bob)
        path = f"/user/{bob.user_id}/account_data/org.example.colour"
        assert_ok(await bob_on_main.put(path, {"colour": "green"}))

        def account_data(response: dict[str, Any]) -> bool:
            events = response.get("account_data", {}).get("events", [])
            return any(e["type"] == "org.example.colour" for e in events)

        since = await sync_until(bob, since, account_data)

        status = f"/presence/{alice.user_id}/status"
        assert_ok(await alice.put(status, {"presence": "online", "status_msg": "here"}))

        def presence(response: dict[str, Any]) -> bool:
            events = response.get("presence", {}).get("events", [])
            return any(
                e["sender"] == alice.user_id and e["content"].get("status_msg") == "here"
                for e in events
            )

        await sync_until(bob, since, presence)


async def test_a_worker_writes_events_for_the_whole_deployment(tmp_path: Path) -> None:
    # [stream_writers] events = "worker1": main's handlers send through worker1's persister,
    # every instance follows worker1's events stream, main still writes the other streams.
    async with deployment(tmp_path, "worker1", "worker2", events_writer="worker1") as running:
        alice = await new_user(await running.http("main"), "alice")
        bob = await new_user(await running.http("worker2"), "bob")
        room_id = await shared_room(alice, bob)
        alice_on = {name: await on(running, name, alice) for name in ("worker1", "worker2")}
        syncers = {
            name: Syncer(await on(running, name, bob), room_id, "") for name in running.ports
        }
        for syncer in syncers.values():
            syncer.since = (await sync(syncer.client))["next_batch"]
        # Sends through main (submitted to worker1), through worker2 (forwarded to main,
        # submitted to worker1) and through worker1 itself (forwarded to main and back).
        senders = [alice, alice_on["worker2"], alice_on["worker1"]]
        sent = [f"message {i}" for i in range(30)]
        async with trio.open_nursery() as nursery:
            for syncer in syncers.values():
                nursery.start_soon(syncer.run)
            for i, body in enumerate(sent):
                event_id = assert_ok(await send_text(senders[i % 3], room_id, body))["event_id"]
                # A client reads its own write at once, on whichever instance it sent through.
                assert_ok(await senders[i % 3].get(f"/rooms/{room_id}/event/{event_id}"))
            for syncer in syncers.values():
                await syncer.wait_for(sent)
                syncer.stopping = True
        for name, syncer in syncers.items():
            assert syncer.received == sent, name
        assert await room_bodies(alice_on["worker2"], room_id) == sent

        # The writer's refusal crosses back unchanged: carol is not in the room.
        carol = await new_user(await running.http("main"), "carol")
        refused = await send_text(carol, room_id, "not a member")
        assert_error(refused, 403, "M_FORBIDDEN")
        # A retried transaction is the same event, whichever instance the retry reaches.
        path = f"/rooms/{room_id}/send/m.room.message/same-txn"
        content = {"msgtype": "m.text", "body": "once"}
        first = assert_ok(await alice.put(path, content))["event_id"]
        assert assert_ok(await alice.put(path, content))["event_id"] == first

        # Main still writes typing and receipts, which worker1 follows like any worker.
        typing = f"/rooms/{room_id}/typing/{alice.user_id}"
        assert_ok(await alice_on["worker1"].put(typing, {"typing": True, "timeout": 30000}))
        bob_on_writer = syncers["worker1"].client

        def typed(response: dict[str, Any]) -> bool:
            events = _room(response, room_id).get("ephemeral", {}).get("events", [])
            return any(
                e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"]
                for e in events
            )

        await sync_until(bob_on_writer, syncers["worker1"].since, typed)


async def test_an_events_writer_cut_off_fails_sends_fast(tmp_path: Path) -> None:
    async with deployment(tmp_path, "worker1", events_writer="worker1") as running:
        alice = await new_user(await running.http("main"), "alice")
        room_id = str(
            assert_ok(await until_not_503(lambda: alice.post("/createRoom", {})))["room_id"]
        )
        running.processes["worker1"].process.send_signal(signal.SIGKILL)
        await running.processes["worker1"].process.wait()
        with trio.fail_after(10):
            response = await send_text(alice, room_id, "nobody persists this")
        assert_error(response, 503, "M_UNKNOWN")
        # Reads keep being served from the shared database.
        assert_ok(await alice.get(f"/rooms/{room_id}/state"))
        # Once the writer is back, sends go through again and are seen.
        await running.start("worker1")
        response = await until_not_503(lambda: send_text(alice, room_id, "after the restart"))
        event_id = assert_ok(response)["event_id"]
        assert_ok(await alice.get(f"/rooms/{room_id}/event/{event_id}"))


async def room_bodies(client: Client, room_id: str) -> list[str]:
    """Every message body of the room, oldest first (paginating /messages)."""
    bodies: list[str] = []
    query: dict[str, Any] = {"dir": "f", "limit": 100}
    for _ in range(100):
        page = assert_ok(await client.get(f"/rooms/{room_id}/messages", params=query))
        bodies += [e["content"]["body"] for e in page["chunk"] if e["type"] == "m.room.message"]
        if "end" not in page:
            return bodies
        query["from"] = page["end"]
    raise AssertionError("pagination did not end")


# The send cut off by the kill leaves httpx's request-body generator unfinished, and trio warns
# when it is garbage-collected (seen once in CI): the client library's, not the server's.
@pytest.mark.filterwarnings(
    "ignore:Async generator 'httpx._content.ByteStream.__aiter__' was garbage collected"
    ":ResourceWarning"
)
async def test_kill_9_of_a_worker_loses_no_acknowledged_event(tmp_path: Path) -> None:
    async with deployment(tmp_path, "worker1") as running:
        alice = await new_user(await running.http("worker1"), "alice")
        room_id = str(assert_ok(await alice.post("/createRoom", {}))["room_id"])
        acknowledged: list[str] = []
        attempted = 0
        killed = trio.Event()
        enough = trio.Event()

        async def send_until_refused() -> None:
            nonlocal attempted
            for i in range(10_000):
                attempted += 1
                try:
                    response = await send_text(alice, room_id, f"m{i}")
                except httpx.TransportError:
                    if killed.is_set():
                        return
                    raise
                if response.status_code == 200:
                    acknowledged.append(f"m{i}")
                    if len(acknowledged) == 20:
                        enough.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_until_refused)
            with trio.fail_after(10):
                await enough.wait()  # then kill it while it keeps sending
            killed.set()
            running.processes["worker1"].process.kill()
        assert len(acknowledged) >= 20

        alice_on_main = await on(running, "main", alice)
        on_main = await room_bodies(alice_on_main, room_id)
        assert set(acknowledged) <= set(on_main)
        assert on_main == sorted(on_main, key=lambda b: int(b[1:]))  # in the order sent
        assert len(on_main) <= attempted

        # Started again, it serves, and has caught up with everything main has.
        await running.start("worker1")
        alice_again = await on(running, "worker1", alice)
        assert await room_bodies(alice_again, room_id) == on_main
        response = await until_not_503(lambda: send_text(alice_again, room_id, "after restart"))
        assert_ok(response)
        assert (await room_bodies(alice_again, room_id))[-1] == "after restart"
    gc.collect()  # finalize the cut-off body generator here, under this test's filter


@pytest.mark.parametrize(
    ("signum", "events_writer"),
    [(signal.SIGKILL, "main"), (signal.SIGTERM, "main"), (signal.SIGKILL, "worker1")],
    ids=["kill-9", "sigterm", "kill-9-worker1-writes-events"],
)
async def test_workers_ride_out_a_restart_of_main(
    tmp_path: Path, signum: int, events_writer: str
) -> None:
    # With worker1 writing events, main is still the writer of the other streams and the
    # handler of every forwarded write; restarted, it follows worker1's events stream again.
    async with deployment(tmp_path, "worker1", "worker2", events_writer=events_writer) as running:
        alice_on_w1 = await new_user(await running.http("worker1"), "alice")
        bob = await new_user(await running.http("worker2"), "bob")
        room_id = await shared_room(alice_on_w1, bob)
        alice_on_main = await on(running, "main", alice_on_w1)
        syncer = Syncer(bob, room_id, (await sync(bob))["next_batch"])
        sent: list[str] = []

        async def send_round(name: str) -> None:
            for client, via in ((alice_on_main, "main"), (alice_on_w1, "worker1")):
                for i in range(10):
                    body = f"{name} via {via} {i}"
                    assert_ok(await until_not_503(partial(send_text, client, room_id, body)))
                    sent.append(body)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(syncer.run)
            await send_round("before")
            await syncer.wait_for(sent)

            main = running.processes["main"]
            main.process.send_signal(signum)
            with trio.fail_after(10):
                await main.process.wait()

            # Main is down: writes through a worker are refused fast; reads still answer.
            with trio.fail_after(2):
                response = await send_text(alice_on_w1, room_id, "while main is down")
            assert_error(response, 503, "M_UNKNOWN")
            assert await room_bodies(alice_on_w1, room_id) == sent
            assert_ok(await bob.get("/sync", params={"timeout": 0}))

            await running.start("main")
            await send_round("after")
            await syncer.wait_for(sent, within_s=20)
            syncer.stopping = True
        assert syncer.received == sent


async def test_a_pool_serves_one_room_over_its_one_port(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    generated = await run_cli(
        "generate-config", "--data-dir", data_dir, "--server-name", "localhost", cwd=tmp_path
    )
    assert generated.returncode == 0, generated.stderr
    use_cheap_bcrypt(data_dir)
    config = data_dir / "trioserver.toml"
    text = config.read_text()
    assert "[ratelimit]\nenabled = true" in text
    config.write_text(text.replace("[ratelimit]\nenabled = true", "[ratelimit]\nenabled = false"))
    port = free_loopback_port()
    server = await launch(
        tmp_path, port, "--data-dir", data_dir, "--workers", "2", "--port", str(port)
    )
    try:
        for name in ("worker1", "worker2"):
            await wait_worker_running(server, name)
        # No keep-alive: every request is a new connection, which any process may accept.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=server.base_url, limits=limits, timeout=30) as http:
            instances: set[str] = set()

            async def admin_user(name: str) -> Client:
                body = await admin_register_body(http, shared_secret(data_dir), name, "password")
                response = await until_not_503(
                    lambda: http.post("/_synapse/admin/v1/register", json=body)
                )
                result = assert_ok(response)
                return Client(http, result["user_id"], result["access_token"], result["device_id"])

            alice = await admin_user("alice")
            bob = await admin_user("bob")
            room_id = await shared_room(alice, bob)
            syncers = [Syncer(c, room_id, (await sync(c))["next_batch"]) for c in (alice, bob)]
            sent = [f"pool message {i}" for i in range(30)]
            async with trio.open_nursery() as nursery:
                # Several long-polls at once, each request on its own connection.
                for syncer in syncers:
                    nursery.start_soon(syncer.run)
                for body in sent:
                    response = await until_not_503(partial(send_text, alice, room_id, body))
                    assert_ok(response)
                    instances.add(response.headers["x-trioserver-instance"])
                    instances.add(
                        (await bob.get("/account/whoami")).headers["x-trioserver-instance"]
                    )
                for syncer in syncers:
                    await syncer.wait_for(sent)
                    syncer.stopping = True
            for syncer in syncers:
                assert syncer.received == sent
            assert len(instances) > 1, instances
        assert await server.stop(signal.SIGINT) == 0, server.output()
    finally:
        if server.process.poll() is None:
            server.process.kill()
        with trio.CancelScope(shield=True):
            await server.process.wait()
