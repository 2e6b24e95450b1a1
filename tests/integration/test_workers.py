"""Main and workers in one trio run, sharing one SQLite file (issue 13).

Each instance is a full server with its own listeners; they talk only as separate processes
would: a worker forwards writes to main's internal listener and learns of new rows over main's
replication listener. A client may use any instance for any request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

import trio

from trioserver.testing import InProcessDeployment, RegisteredUser, serve_deployment_in_process

from tests.integration.client import Client, assert_error, assert_ok
from tests.integration.room_helpers import create_room, invite, join, messages, send_text
from tests.integration.server_db import database_section

_clients: AsyncExitStack | None = None


@pytest.fixture
async def deployment() -> AsyncIterator[InProcessDeployment]:
    global _clients
    async with (
        serve_deployment_in_process(workers=2) as running,
        AsyncExitStack() as clients,
    ):
        _clients = clients
        yield running
    _clients = None


async def _http(base_url: str) -> httpx.AsyncClient:
    """An HTTP client of one instance (closed with the deployment)."""
    assert _clients is not None
    return await _clients.enter_async_context(httpx.AsyncClient(base_url=base_url, timeout=30))


async def _client(base_url: str, user: RegisteredUser) -> Client:
    """A registered user's client of one instance."""
    return Client(await _http(base_url), user.user_id, user.access_token, user.device_id)


async def _eventually(check: Callable[[], Awaitable[bool]], *, within_s: float = 5.0) -> None:
    """Poll `check` from outside (as a client would) until it holds."""
    with trio.fail_after(within_s):
        for _ in range(10_000):
            if await check():
                return
            await trio.sleep(0.05)


async def _sync(client: Client, since: str | None = None, wait_ms: int = 0) -> dict[str, Any]:
    params: dict[str, Any] = {"timeout": wait_ms}
    if since is not None:
        params["since"] = since
    return assert_ok(await client.get("/sync", params=params))


def _timeline_bodies(sync: dict[str, Any], room_id: str) -> list[str]:
    room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
    events = room.get("timeline", {}).get("events", [])
    return [e["content"]["body"] for e in events if e["type"] == "m.room.message"]


async def _sync_until(
    client: Client, since: str, found: Any, *, timeout_s: float = 10.0
) -> tuple[str, list[dict[str, Any]]]:
    """Long-poll until `found(sync)` is true; the syncs seen and the last next_batch."""
    seen: list[dict[str, Any]] = []
    with trio.fail_after(timeout_s):
        while True:
            sync = await _sync(client, since, wait_ms=5000)
            seen.append(sync)
            since = sync["next_batch"]
            if found(sync):
                return since, seen


async def test_send_on_one_worker_sync_on_another_sees_every_event_once_in_order(
    deployment: InProcessDeployment,
) -> None:
    w1, w2 = deployment.workers
    alice_user = await w1.register_user("alice")
    bob_user = await deployment.main.register_user("bob")
    alice = await _client(w1.base_url, alice_user)
    bob = await _client(w2.base_url, bob_user)
    room_id = await create_room(alice)
    await invite(alice, room_id, bob.user_id)
    await join(bob, room_id)
    since = (await _sync(bob))["next_batch"]
    sent = [f"message {i}" for i in range(30)]
    received: list[str] = []

    async def send_all() -> None:
        for body in sent:
            await send_text(alice, room_id, body)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_all)
        with trio.fail_after(20):
            while len(received) < len(sent):
                sync = await _sync(bob, since, wait_ms=5000)
                since = sync["next_batch"]
                received += _timeline_bodies(sync, room_id)
    assert received == sent


async def test_a_client_reads_its_own_writes_on_a_worker(deployment: InProcessDeployment) -> None:
    worker = deployment.workers[0]
    alice = await _client(worker.base_url, await worker.register_user("alice"))
    room_id = await create_room(alice)
    # Each write is answered only once this worker has seen it: the next read shows it.
    for i in range(5):
        await send_text(alice, room_id, f"m{i}")
        chunk = (await messages(alice, room_id, dir="b", limit=1))["chunk"]
        assert chunk[0]["content"]["body"] == f"m{i}"
    path = f"/user/{alice.user_id}/account_data/org.example.test"
    assert_ok(await alice.put(path, {"n": 1}))
    assert assert_ok(await alice.get(path)) == {"n": 1}


async def test_ephemeral_streams_cross_instances(deployment: InProcessDeployment) -> None:
    w1, w2 = deployment.workers
    alice = await _client(w1.base_url, await w1.register_user("alice"))
    bob = await _client(w2.base_url, await w2.register_user("bob"))
    room_id = await create_room(alice)
    await invite(alice, room_id, bob.user_id)
    await join(bob, room_id)
    event_id = await send_text(alice, room_id, "read me")
    since = (await _sync(bob))["next_batch"]

    # Typing on worker 1 reaches bob's sync on worker 2.
    typing = f"/rooms/{room_id}/typing/{alice.user_id}"
    assert_ok(await alice.put(typing, {"typing": True, "timeout": 30000}))

    def typing_seen(sync: dict[str, Any]) -> bool:
        room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
        return any(
            e["type"] == "m.typing" and alice.user_id in e["content"]["user_ids"]
            for e in room.get("ephemeral", {}).get("events", [])
        )

    since, _ = await _sync_until(bob, since, typing_seen)

    # A read receipt.
    assert_ok(await alice.post(f"/rooms/{room_id}/receipt/m.read/{event_id}", {}))

    def receipt_seen(sync: dict[str, Any]) -> bool:
        room = sync.get("rooms", {}).get("join", {}).get(room_id, {})
        return any(
            e["type"] == "m.receipt" and event_id in e["content"]
            for e in room.get("ephemeral", {}).get("events", [])
        )

    since, _ = await _sync_until(bob, since, receipt_seen)

    # A to-device message to bob's device.
    txn = "/sendToDevice/org.example.ping/t1"
    body = {"messages": {bob.user_id: {bob.device_id: {"hello": "bob"}}}}
    assert_ok(await alice.put(txn, body))

    def to_device_seen(sync: dict[str, Any]) -> bool:
        events = sync.get("to_device", {}).get("events", [])
        return any(e["content"] == {"hello": "bob"} for e in events)

    since, _ = await _sync_until(bob, since, to_device_seen)

    # Bob's own account data, written on main, reaches his sync on worker 2.
    main_bob = Client(await _http(deployment.main.base_url), bob.user_id, bob.token, bob.device_id)
    path = f"/user/{bob.user_id}/account_data/org.example.colour"
    assert_ok(await main_bob.put(path, {"colour": "green"}))

    def account_data_seen(sync: dict[str, Any]) -> bool:
        events = sync.get("account_data", {}).get("events", [])
        return any(e["type"] == "org.example.colour" for e in events)

    since, _ = await _sync_until(bob, since, account_data_seen)

    # Presence set on worker 1 is seen by bob on worker 2.
    status = f"/presence/{alice.user_id}/status"
    assert_ok(await alice.put(status, {"presence": "online", "status_msg": "here"}))

    def presence_seen(sync: dict[str, Any]) -> bool:
        events = sync.get("presence", {}).get("events", [])
        return any(
            e["sender"] == alice.user_id and e["content"].get("status_msg") == "here"
            for e in events
        )

    await _sync_until(bob, since, presence_seen)
    got = assert_ok(await bob.get(status))
    assert got["presence"] == "online"


async def test_logout_on_one_instance_is_seen_by_every_instance(
    deployment: InProcessDeployment,
) -> None:
    w1, w2 = deployment.workers
    user = await w1.register_user("alice")
    on_w1 = await _client(w1.base_url, user)
    on_w2 = await _client(w2.base_url, user)
    # Both workers have the token cached.
    assert_ok(await on_w1.get("/account/whoami"))
    assert_ok(await on_w2.get("/account/whoami"))
    assert_ok(await on_w1.post("/logout", {}))
    assert_error(await on_w1.get("/account/whoami"), 401, "M_UNKNOWN_TOKEN")

    # The caches stream reaches worker 2 promptly.
    async def logged_out() -> bool:
        return (await on_w2.get("/account/whoami")).status_code == 401

    await _eventually(logged_out)


async def test_push_rules_changed_on_main_are_read_on_a_worker(
    deployment: InProcessDeployment,
) -> None:
    user = await deployment.main.register_user("alice")
    on_main = await _client(deployment.main.base_url, user)
    on_worker = await _client(deployment.workers[0].base_url, user)
    rule = "/pushrules/global/override/.m.rule.master/enabled"
    assert assert_ok(await on_worker.get(rule)) == {"enabled": False}
    assert_ok(await on_main.put(rule, {"enabled": True}))

    async def enabled() -> bool:
        return assert_ok(await on_worker.get(rule)) == {"enabled": True}

    await _eventually(enabled)


async def test_a_worker_builds_no_event_writer(tmp_path: Any) -> None:
    """Seed 2: the events writer's store, task and expiry exist only on the events writer."""
    from trioserver.handlers.auth import Requester
    from trioserver.keys import load_key_file
    from trioserver.nursery import build_components
    from trioserver.stores.database import open_configured_database
    from trioserver.streams import NotStreamWriter

    async with serve_deployment_in_process(
        tmp_path, workers=1, enable_ephemeral_messages=True
    ) as running:
        config = running.workers[0].config
        key = load_key_file(config.data_path(config.signing_key_path))
        async with open_configured_database(config) as db:
            components = build_components(config, db, key)
            main_components = build_components(running.main.config, db, key)
            assert components.persister is None
            assert main_components.persister is not None
            names = {getattr(s, "__qualname__", repr(s)) for s in components.subsystems}
            main_names = {getattr(s, "__qualname__", repr(s)) for s in main_components.subsystems}
            assert "EventExpirer.run" in main_names
            assert "EventExpirer.run" not in names
            # The local write path is unreachable: the send handler's writer refuses.
            with pytest.raises(NotStreamWriter):
                await components.deps.send.send_message(
                    Requester("@alice:localhost", "DEV", "token"),
                    "!room:localhost",
                    "m.room.message",
                    {"body": "x"},
                    "txn1",
                )


async def test_only_a_worker_that_writes_events_builds_the_event_writer(tmp_path: Any) -> None:
    """Seed 2 with ``[stream_writers] events = "worker1"``: worker1 alone has the persister and
    the expiry; main sends through it, worker2 forwards to main."""
    from trioserver.config import config_from_mapping
    from trioserver.internal.remote_events import RemoteEventSubmitter
    from trioserver.keys import load_key_file
    from trioserver.nursery import build_components
    from trioserver.repl.streams import REPLICATED_STREAMS
    from trioserver.setup_files import ensure_data_files
    from trioserver.stores.database import open_configured_database

    location = {"host": "127.0.0.1", "port": 9101, "replication_port": 9102}
    deployment = config_from_mapping(
        {
            "enable_ephemeral_messages": True,
            "replication": {"secret": "s"},
            "instance_map": {"main": {"host": "127.0.0.1", "port": 9100}, "worker1": location},
            "workers": {"worker1": {"port": 0}, "worker2": {"port": 0}},
            "stream_writers": {"events": "worker1"},
            "database": await database_section(tmp_path),
        },
        base_dir=tmp_path,
    )
    await ensure_data_files(deployment)
    key = load_key_file(deployment.data_path(deployment.signing_key_path))
    async with open_configured_database(deployment) as db:
        built = {
            name: build_components(deployment.for_instance(name), db, key)
            for name in ("main", "worker1", "worker2")
        }
    assert [name for name, c in built.items() if c.persister is not None] == ["worker1"]
    with_expiry = [
        name
        for name, c in built.items()
        if "EventExpirer.run" in {getattr(s, "__qualname__", "") for s in c.subsystems}
    ]
    assert with_expiry == ["worker1"]
    with_pushers = [
        name
        for name, c in built.items()
        if "PusherPool.run_pushers" in {getattr(s, "__qualname__", "") for s in c.subsystems}
    ]
    assert with_pushers == ["main"]
    assert isinstance(built["main"].deps.send._persister, RemoteEventSubmitter)
    # Who follows whom: main follows worker1's events, worker1 main's other streams.
    followed = {
        name: [
            s
            for s in REPLICATED_STREAMS
            if any(x.follows(s) for x in c.replication.followed.clients)
        ]
        for name, c in built.items()
        if c.replication.followed is not None
    }
    assert followed["main"] == ["events"]
    assert "events" not in followed["worker1"]
    assert "typing" in followed["worker1"]
    assert "events" in followed["worker2"]
    assert "typing" in followed["worker2"]


async def test_lazy_loaded_members_survive_a_device_moving_between_instances(
    deployment: InProcessDeployment,
) -> None:
    """A device's syncs answered by two instances still get every member event they need."""
    w1, w2 = deployment.workers
    alice_user = await w1.register_user("alice")
    bob = await _client(w1.base_url, await w1.register_user("bob"))
    on_w1 = await _client(w1.base_url, alice_user)
    on_w2 = await _client(w2.base_url, alice_user)
    room_id = await create_room(on_w1)
    await invite(on_w1, room_id, bob.user_id)
    await join(bob, room_id)
    await send_text(bob, room_id, "first")
    lazy = '{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":5}}}'

    async def lazy_sync(client: Client, since: str | None) -> dict[str, Any]:
        params: dict[str, Any] = {"filter": lazy, "timeout": 0}
        if since is not None:
            params["since"] = since
        return assert_ok(await client.get("/sync", params=params))

    def bob_member_sent(sync: dict[str, Any]) -> bool:
        room = sync["rooms"]["join"].get(room_id, {})
        return any(
            e["type"] == "m.room.member" and e["state_key"] == bob.user_id
            for part in ("state", "timeline")
            for e in room.get(part, {}).get("events", [])
        )

    # worker 1 sends bob's member event and records it as sent to this device.
    assert bob_member_sent(await lazy_sync(on_w1, None))
    # The client starts over on worker 2, in a sync whose timeline holds no event of bob's.
    for i in range(6):
        await send_text(on_w1, room_id, f"alice {i}")
    fresh = await lazy_sync(on_w2, None)
    assert not bob_member_sent(fresh)
    # Back on worker 1, bob speaks: his member event must come with it.
    await send_text(bob, room_id, "second")
    assert bob_member_sent(await lazy_sync(on_w1, fresh["next_batch"]))
