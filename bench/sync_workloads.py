"""The /sync workloads: delivery latency, fan-out and initial sync, against any homeserver.

Not a benchmark itself: `bench/sync.py` runs these against trioserver alone and
`bench/compare.py` against trioserver and Synapse. Each workload registers its own users
(``POST /register``, ``m.login.dummy``; open registration and no rate limits are expected),
builds its rooms untimed, then times one phase (`workload.TimedPhase`).

What a sample is:

* delivery latency: the time from a sender starting ``PUT /send`` to a receiver, already
  parked in a long-poll ``GET /sync?since=…&timeout=30000``, having the response that
  carries the message. The next message is sent only once the receiver has re-entered its
  long-poll and the server had a moment (`PARK_S`) to park it, so every sample measures a
  wake-up, not a queued request.
* fan-out: the same with K receivers long-polling one room; one sample per receiver and
  message, and the server CPU divided by the woken receivers (K x messages).
* initial sync: ``GET /sync`` without ``since`` by a user in N rooms (10 members and
  `MESSAGES_PER_ROOM` messages each), every run from a fresh login, so that no server can
  answer it from a cache of an earlier identical request (Synapse keeps sync responses for
  2 minutes by default).

Clients are `loadgen.H11Client` connections (one per user), cheap enough that the load
generator stays well below the server's CPU.
"""

from __future__ import annotations

import itertools
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import orjson

import trio

from benchlib import CLIENT_V3
from loadgen import H11Client, auth_headers, check_ok, register_user
from workload import PhaseResult, TimedPhase

if TYPE_CHECKING:
    from workload import BenchServer

LONG_POLL_MS = 30_000
# How long the sender waits after the receivers have re-sent their long-polls, so that the
# server has read them and parked them before the next message arrives.
PARK_S = 0.02
SETUP_CONCURRENCY = 10
MESSAGES_PER_ROOM = 10
MEMBERS_PER_ROOM = 10
WAKE_TIMEOUT_S = 30.0


class SyncClient:
    """One user's sync loop over a keep-alive connection: tracks ``next_batch``."""

    def __init__(self, connection: H11Client, user_id: str, token: str) -> None:
        self.connection = connection
        self.user_id = user_id
        self.token = token
        self.since: str | None = None

    @classmethod
    async def connect(cls, base_url: str, user_id: str, token: str) -> SyncClient:
        """Open the user's connection."""
        return cls(await H11Client.connect(base_url), user_id, token)

    async def sync(self, timeout_ms: int = 0) -> dict[str, Any]:
        """One ``GET /sync`` from the current position; advances it."""
        await self.start_sync(timeout_ms)
        return await self.finish_sync()

    async def start_sync(self, timeout_ms: int = 0) -> None:
        """Write a ``GET /sync`` from the current position (then `finish_sync`)."""
        path = f"{CLIENT_V3}/sync?timeout={timeout_ms}"
        if self.since is not None:
            path += f"&since={quote(self.since)}"
        await self.connection.send_request("GET", path, token=self.token)

    async def finish_sync(self) -> dict[str, Any]:
        """Read the answer to `start_sync`; advances the position."""
        return self.parse_sync(*await self.connection.read_response())

    def parse_sync(self, status: int, body: bytes) -> dict[str, Any]:
        """Check and parse a /sync answer; advances the position."""
        if status != 200:
            raise RuntimeError(f"{self.user_id}: /sync answered {status}: {body[:300]!r}")
        result: dict[str, Any] = orjson.loads(body)
        self.since = str(result["next_batch"])
        return result

    async def aclose(self) -> None:
        """Close the connection."""
        await self.connection.aclose()


def bodies_in(sync_body: dict[str, Any], room_id: str) -> list[str]:
    """The ``body`` of every message in a sync response's timeline of `room_id`."""
    room = sync_body.get("rooms", {}).get("join", {}).get(room_id, {})
    return [
        str(event.get("content", {}).get("body"))
        for event in room.get("timeline", {}).get("events", [])
        if event.get("type") == "m.room.message"
    ]


async def register_many(
    client: httpx.AsyncClient, prefix: str, count: int
) -> list[tuple[str, str]]:
    """Register ``prefix0 … prefix{count-1}``, `SETUP_CONCURRENCY` at a time; (user id,
    access token) in index order."""
    users: dict[int, tuple[str, str]] = {}
    todo = iter(range(count))

    async def worker() -> None:
        for index in todo:
            users[index] = await register_user(client, f"{prefix}{index}")

    async with trio.open_nursery() as nursery:
        for _ in range(min(SETUP_CONCURRENCY, count)):
            nursery.start_soon(worker)
    return [users[i] for i in range(count)]


async def create_joined_room(
    client: httpx.AsyncClient, creator_token: str, member_tokens: list[str]
) -> str:
    """A public room created by one user and joined by the others; its id."""
    body = {"preset": "public_chat", "name": "sync bench"}
    headers = auth_headers(creator_token)
    created = check_ok(await client.post(f"{CLIENT_V3}/createRoom", json=body, headers=headers))
    room_id = str(created["room_id"])
    todo = iter(member_tokens)

    async def joiner() -> None:
        for token in todo:
            path = f"{CLIENT_V3}/rooms/{quote(room_id)}/join"
            check_ok(await client.post(path, json={}, headers=auth_headers(token)))

    async with trio.open_nursery() as nursery:
        for _ in range(min(SETUP_CONCURRENCY, len(member_tokens))):
            nursery.start_soon(joiner)
    return room_id


async def send_text(connection: H11Client, token: str, room_id: str, body: str) -> None:
    """``PUT /rooms/{room_id}/send/m.room.message/{txn}`` with a fresh transaction id."""
    txn = secrets.token_hex(8)
    path = f"{CLIENT_V3}/rooms/{quote(room_id)}/send/m.room.message/{txn}"
    payload = orjson.dumps({"msgtype": "m.text", "body": body})
    status, answer = await connection.request("PUT", path, payload, token)
    if status != 200:
        raise RuntimeError(f"send answered {status}: {answer[:300]!r}")


def _run_tag() -> str:
    """A short random prefix so that workloads on one server never share a localpart."""
    return "sb" + secrets.token_hex(3)


async def _await_message(
    receiver: SyncClient, room_id: str, message: str, parked: trio.Event
) -> float:
    """Long-poll until a response carries `message`; the perf_counter when it arrived.

    Sets `parked` once the first long-poll has been written, so that the caller sends only
    to receivers that are waiting. Responses for anything else are skipped.
    """
    await receiver.start_sync(LONG_POLL_MS)
    parked.set()
    while True:
        body = await receiver.finish_sync()
        if message in bodies_in(body, room_id):
            return time.perf_counter()
        await receiver.start_sync(LONG_POLL_MS)


async def _deliver_once(
    server: BenchServer,
    sender: SyncClient,
    receivers: list[SyncClient],
    room_id: str,
    result: PhaseResult,
) -> None:
    """Send one message while every receiver long-polls; one latency sample per receiver.

    The timed phase runs from the start of the send to the last receiver's response.
    """
    message = f"bench {secrets.token_hex(6)}"
    arrivals: list[float] = []
    parked = [trio.Event() for _ in receivers]
    all_arrived = trio.Event()

    async def receive(receiver: SyncClient, parked_event: trio.Event) -> None:
        arrivals.append(await _await_message(receiver, room_id, message, parked_event))
        if len(arrivals) == len(receivers):
            all_arrived.set()

    async with trio.open_nursery() as nursery:
        for receiver, event in zip(receivers, parked, strict=True):
            nursery.start_soon(receive, receiver, event)
        for event in parked:
            await event.wait()
        await trio.sleep(PARK_S)
        with trio.fail_after(WAKE_TIMEOUT_S), TimedPhase(server, result):
            sent_at = time.perf_counter()
            await send_text(sender.connection, sender.token, room_id, message)
            await all_arrived.wait()
    result.latencies_s += [arrived - sent_at for arrived in arrivals]
    result.ops += len(receivers)


async def _room_with_receivers(
    server: BenchServer, receivers: int
) -> tuple[SyncClient, list[SyncClient], str]:
    """A sender and `receivers` users joined to one room, each with a connection and an
    initial sync done (so their long-polls start from a current position)."""
    tag = _run_tag()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        users = await register_many(client, tag, receivers + 1)
        room_id = await create_joined_room(client, users[0][1], [t for _, t in users[1:]])
    clients = [await SyncClient.connect(server.base_url, uid, tok) for uid, tok in users]
    async with trio.open_nursery() as nursery:
        for sync_client in clients:
            nursery.start_soon(sync_client.sync)
    # Everyone's first sync made them "online": let those presence updates wake and settle.
    await trio.sleep(0.5)
    async with trio.open_nursery() as nursery:
        for sync_client in clients:
            nursery.start_soon(sync_client.sync)
    return clients[0], clients[1:], room_id


async def fanout(server: BenchServer, *, receivers: int, messages: int = 20) -> PhaseResult:
    """One sender, `receivers` users long-polling one room: per-receiver delivery latency.

    ``ops`` counts woken receivers (receivers x messages), so ``server_cpu_ms_per_op`` is the
    CPU per woken receiver (including the send's own share).
    """
    sender, waiting, room_id = await _room_with_receivers(server, receivers)
    result = PhaseResult(f"fan-out K={receivers}")
    try:
        for _ in range(messages):
            await _deliver_once(server, sender, waiting, room_id, result)
    finally:
        for sync_client in [sender, *waiting]:
            await sync_client.aclose()
    return result


async def delivery_latency(server: BenchServer, *, samples: int = 200) -> PhaseResult:
    """One sender, one receiver long-polling: send -> seen latency, `samples` messages."""
    result = await fanout(server, receivers=1, messages=samples)
    result.name = "delivery latency"
    return result


async def initial_sync(server: BenchServer, *, rooms: int = 100, runs: int = 20) -> PhaseResult:
    """``GET /sync`` without ``since`` for a user in `rooms` rooms, each from a fresh login.

    Each room has `MEMBERS_PER_ROOM` joined members (the user and the same nine others) and
    `MESSAGES_PER_ROOM` messages, so the default timeline (10 events) is all messages and
    state comes separately, as it does for a real account.
    """
    tag = _run_tag()
    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        users = await register_many(client, tag, MEMBERS_PER_ROOM)
        (user_id, token), others = users[0], users[1:]
        room_ids = await _rooms_for(client, token, [t for _, t in others], rooms)
        sender = await H11Client.connect(server.base_url)
        try:
            for room_id, n in itertools.product(room_ids, range(MESSAGES_PER_ROOM)):
                author = others[n % len(others)][1]
                await send_text(sender, author, room_id, f"history {n}")
        finally:
            await sender.aclose()
        tokens = [await _login(client, tag + "0") for _ in range(runs)]
    result = PhaseResult(f"initial sync, {rooms} rooms")
    for fresh_token in tokens:
        sync_client = await SyncClient.connect(server.base_url, user_id, fresh_token)
        try:
            with TimedPhase(server, result):
                started = time.perf_counter()
                await sync_client.start_sync()
                raw = await sync_client.connection.read_response()
                # The latency ends with the last byte; parsing ~1 MB of JSON is the client's.
                result.latencies_s.append(time.perf_counter() - started)
            body = sync_client.parse_sync(*raw)
            result.ops += 1
        finally:
            await sync_client.aclose()
        joined = len(body.get("rooms", {}).get("join", {}))
        if joined != rooms:
            raise RuntimeError(f"initial sync listed {joined} joined rooms, not {rooms}")
    return result


async def _rooms_for(
    client: httpx.AsyncClient, creator_token: str, member_tokens: list[str], count: int
) -> list[str]:
    """`count` rooms created by one user, each joined by all of `member_tokens`."""
    room_ids: list[str] = []
    todo = iter(range(count))

    async def worker() -> None:
        for _ in todo:
            room_ids.append(await create_joined_room(client, creator_token, member_tokens))

    async with trio.open_nursery() as nursery:
        for _ in range(min(4, count)):
            nursery.start_soon(worker)
    return room_ids


async def _login(client: httpx.AsyncClient, localpart: str) -> str:
    """A fresh access token (new device) for `localpart`."""
    body = {
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": localpart},
        "password": "bench-password",
    }
    return str(check_ok(await client.post(f"{CLIENT_V3}/login", json=body))["access_token"])
