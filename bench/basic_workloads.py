"""Account, room, send and history workloads, against any homeserver.

Not a benchmark itself: `bench/compare.py` runs these against trioserver and Synapse. Each
follows `workload`: set-up (registering users, creating and filling rooms) is untimed, and
one phase is timed with `workload.TimedPhase`. Every request goes over `loadgen.H11Client`
keep-alive connections opened before the phase starts, `concurrency` of them, each sending
its next request when its previous answer is complete; the latency of an operation is one
request to its full response. Non-200 answers count as errors, not operations; the first
of each workload is printed so that a failure is visible.

Every workload invents its own localparts (a random run tag), so that several can run on one
server, in any order.
"""

from __future__ import annotations

import itertools
import secrets
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import orjson

import trio

from benchlib import CLIENT_V3
from loadgen import H11Client
from workload import PhaseResult, TimedPhase

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from workload import BenchServer

PASSWORD = "bench-password"
SETUP_CONCURRENCY = 10
SEND_WARMUP_PER_SENDER = 10
# A walk ends when the server stops giving an `end` token; this bounds a server that never does.
MAX_PAGES_PER_WALK = 10_000

T = TypeVar("T")


@dataclass(frozen=True)
class User:
    """A registered user: its id, localpart and access token."""

    user_id: str
    localpart: str
    token: str


@dataclass(frozen=True)
class Call:
    """One request a worker makes."""

    method: str
    path: str
    body: bytes | None = None
    token: str | None = None


@dataclass(frozen=True)
class FilledRoom:
    """A room with joined members and some messages in it, for the history workload."""

    room_id: str
    members: list[User]
    messages: int


def run_tag() -> str:
    """A short random prefix, so that no two workloads on one server share a localpart."""
    return "bw" + secrets.token_hex(3)


async def call_json(connection: H11Client, call: Call) -> dict[str, Any]:
    """Make `call` during set-up, where anything but a 200 is fatal; the JSON body.

    Raises:
        RuntimeError: the server answered with another status.
    """
    status, body = await connection.request(call.method, call.path, call.body, call.token)
    if status != 200:
        raise RuntimeError(f"{call.method} {call.path}: {status} {body[:300]!r}")
    result: dict[str, Any] = orjson.loads(body)
    return result


async def for_each(
    base_url: str,
    items: Iterable[T],
    job: Callable[[H11Client, T], Awaitable[None]],
    concurrency: int = SETUP_CONCURRENCY,
) -> None:
    """Run `job` over `items`, `concurrency` at a time, each worker on its own connection."""
    todo = iter(items)

    async def worker() -> None:
        connection = await H11Client.connect(base_url)
        try:
            for item in todo:
                await job(connection, item)
        finally:
            await connection.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)


def register_call(localpart: str) -> Call:
    """``POST /register`` with the ``m.login.dummy`` stage (open registration)."""
    body = {"username": localpart, "password": PASSWORD, "auth": {"type": "m.login.dummy"}}
    return Call("POST", f"{CLIENT_V3}/register", orjson.dumps(body))


async def register_users(server: BenchServer, prefix: str, count: int) -> list[User]:
    """Register ``prefix0 … prefix{count-1}`` (untimed); the users in index order."""
    users: dict[int, User] = {}

    async def one(connection: H11Client, index: int) -> None:
        localpart = f"{prefix}{index}"
        body = await call_json(connection, register_call(localpart))
        users[index] = User(str(body["user_id"]), localpart, str(body["access_token"]))

    await for_each(server.base_url, range(count), one)
    return [users[i] for i in range(count)]


def create_room_call(creator: User, name: str) -> Call:
    """``POST /createRoom`` of a public room (``preset: public_chat``)."""
    body = orjson.dumps({"preset": "public_chat", "name": name})
    return Call("POST", f"{CLIENT_V3}/createRoom", body, creator.token)


def join_call(room_id: str, user: User) -> Call:
    """``POST /rooms/{roomId}/join``."""
    return Call("POST", f"{CLIENT_V3}/rooms/{quote(room_id)}/join", b"{}", user.token)


async def create_joined_room(server: BenchServer, members: list[User]) -> str:
    """A public room created by the first member and joined by the others (untimed)."""
    connection = await H11Client.connect(server.base_url)
    try:
        created = await call_json(connection, create_room_call(members[0], "bench"))
    finally:
        await connection.aclose()
    room_id = str(created["room_id"])

    async def join(connection: H11Client, user: User) -> None:
        await call_json(connection, join_call(room_id, user))

    await for_each(server.base_url, members[1:], join)
    return room_id


async def timed_calls(
    server: BenchServer, name: str, calls: list[Call], concurrency: int
) -> PhaseResult:
    """Make `calls`, `concurrency` at a time, as one timed phase.

    The connections are opened before the phase: connection set-up is not what is measured.
    """
    result = PhaseResult(name)
    connections = [await H11Client.connect(server.base_url) for _ in range(concurrency)]
    todo = iter(calls)

    async def worker(connection: H11Client) -> None:
        for call in todo:
            start = time.perf_counter()
            status, body = await connection.request(call.method, call.path, call.body, call.token)
            record(result, status, time.perf_counter() - start, body)

    try:
        with TimedPhase(server, result):
            async with trio.open_nursery() as nursery:
                for connection in connections:
                    nursery.start_soon(worker, connection)
    finally:
        for connection in connections:
            await connection.aclose()
    return result


def record(result: PhaseResult, status: int, latency_s: float, body: bytes) -> None:
    """Count one answer: an operation when it is a 200, else an error (the first printed)."""
    if status == 200:
        result.ops += 1
        result.latencies_s.append(latency_s)
        return
    if result.errors == 0:
        print(f"  {result.name}: first error: {status} {body[:200]!r}", file=sys.stderr)
    result.errors += 1


# -- Accounts ------------------------------------------------------------------------------


async def register(server: BenchServer, *, users: int = 200, concurrency: int = 10) -> PhaseResult:
    """``POST /register`` of `users` new accounts, `concurrency` at a time."""
    prefix = run_tag()
    calls = [register_call(f"{prefix}{i}") for i in range(users)]
    return await timed_calls(server, "register", calls, concurrency)


async def login(
    server: BenchServer, *, users: int = 20, logins: int = 200, concurrency: int = 10
) -> PhaseResult:
    """``POST /login`` (``m.login.password``) `logins` times over `users` accounts.

    Each login creates a new device and access token, as a client's first start does.
    """
    accounts = await register_users(server, run_tag(), users)
    calls = []
    for n in range(logins):
        user = accounts[n % users]
        body = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user.localpart},
            "password": PASSWORD,
        }
        calls.append(Call("POST", f"{CLIENT_V3}/login", orjson.dumps(body)))
    return await timed_calls(server, "login", calls, concurrency)


# -- Rooms ---------------------------------------------------------------------------------


async def create_room(
    server: BenchServer, *, rooms: int = 100, concurrency: int = 10
) -> PhaseResult:
    """``POST /createRoom`` (public_chat) `rooms` times, by `concurrency` different users."""
    creators = await register_users(server, run_tag(), concurrency)
    calls = [create_room_call(creators[n % concurrency], f"room {n}") for n in range(rooms)]
    return await timed_calls(server, "create room", calls, concurrency)


async def join(server: BenchServer, *, users: int = 200, concurrency: int = 10) -> PhaseResult:
    """`users` users ``POST /rooms/{id}/join`` one public room, which grows as they do."""
    accounts = await register_users(server, run_tag(), users + 1)
    room_id = await create_joined_room(server, accounts[:1])
    calls = [join_call(room_id, user) for user in accounts[1:]]
    return await timed_calls(server, "join", calls, concurrency)


# -- Sending -------------------------------------------------------------------------------


def send_call(room_id: str, user: User, txn: str, n: int) -> Call:
    """``PUT /rooms/{roomId}/send/m.room.message/{txnId}`` of a short text message."""
    content = {"msgtype": "m.text", "body": f"bench message {n} from {user.user_id}"}
    path = f"{CLIENT_V3}/rooms/{quote(room_id)}/send/m.room.message/{txn}"
    return Call("PUT", path, orjson.dumps(content), user.token)


async def send_back_to_back(
    server: BenchServer,
    room_id: str,
    senders: list[User],
    result: PhaseResult,
    *,
    duration_s: float | None = None,
    per_sender: int | None = None,
) -> None:
    """Every sender sends on its own connection, each waiting for its previous answer.

    They stop after `duration_s` seconds or `per_sender` messages each. Not timed itself:
    the caller wraps it in a `TimedPhase` or not (warm-up, room filling).
    """
    tag = secrets.token_hex(4)
    connections = [await H11Client.connect(server.base_url) for _ in senders]
    deadline = time.perf_counter() + (duration_s or 0.0)

    async def sender(index: int) -> None:
        user, connection = senders[index], connections[index]
        for n in itertools.count():
            if (per_sender is not None and n >= per_sender) or (
                per_sender is None and time.perf_counter() >= deadline
            ):
                return
            call = send_call(room_id, user, f"{tag}-{index}-{n}", n)
            start = time.perf_counter()
            status, body = await connection.request(call.method, call.path, call.body, call.token)
            record(result, status, time.perf_counter() - start, body)

    try:
        async with trio.open_nursery() as nursery:
            for index in range(len(senders)):
                nursery.start_soon(sender, index)
    finally:
        for connection in connections:
            await connection.aclose()


async def send(
    server: BenchServer, *, members: int, senders: int = 10, duration_s: float = 10.0
) -> PhaseResult:
    """`senders` members of a `members`-member room send back to back for `duration_s`.

    The same load as `bench/send.py`: every member joined, each sender with its own token
    and connection; `SEND_WARMUP_PER_SENDER` untimed sends each first.
    """
    users = await register_users(server, run_tag(), members)
    room_id = await create_joined_room(server, users)
    active = users[: min(senders, members)]
    warmup = PhaseResult("warm-up")
    await send_back_to_back(server, room_id, active, warmup, per_sender=SEND_WARMUP_PER_SENDER)
    result = PhaseResult(f"send, {members} members")
    with TimedPhase(server, result):
        await send_back_to_back(server, room_id, active, result, duration_s=duration_s)
    return result


async def fill_room(
    server: BenchServer, *, members: int = 10, messages: int = 1000, senders: int = 10
) -> FilledRoom:
    """A `members`-member room with `messages` text messages sent into it (untimed).

    Raises:
        RuntimeError: some sends were refused.
    """
    users = await register_users(server, run_tag(), members)
    room_id = await create_joined_room(server, users)
    active = users[: min(senders, members)]
    per_sender = -(-messages // len(active))
    sent = PhaseResult("fill")
    await send_back_to_back(server, room_id, active, sent, per_sender=per_sender)
    if sent.errors:
        raise RuntimeError(f"{sent.errors} sends failed while filling the room")
    return FilledRoom(room_id, users, sent.ops)


# -- History -------------------------------------------------------------------------------


async def back_pagination(
    server: BenchServer,
    *,
    messages: int = 1000,
    walks: int = 5,
    limit: int = 20,
    room: FilledRoom | None = None,
) -> PhaseResult:
    """Walk a room's history backwards with ``GET /messages?dir=b&limit=20``, page by page.

    Each walk starts at the newest event (no ``from``) and follows the ``end`` token until
    the server gives none (the start of the room) or an empty chunk. One operation is one
    page. The room is `room`, or a fresh one with `messages` messages and 10 members.
    """
    room = room or await fill_room(server, messages=messages)
    reader = room.members[-1]
    result = PhaseResult("/messages back-pagination")
    connection = await H11Client.connect(server.base_url)
    try:
        with TimedPhase(server, result):
            for _ in range(walks):
                await _walk_back(connection, room.room_id, reader, limit, result)
    finally:
        await connection.aclose()
    return result


async def _walk_back(
    connection: H11Client, room_id: str, reader: User, limit: int, result: PhaseResult
) -> None:
    """One walk from the newest event to the room's creation."""
    token: str | None = None
    for _ in range(MAX_PAGES_PER_WALK):
        path = f"{CLIENT_V3}/rooms/{quote(room_id)}/messages?dir=b&limit={limit}"
        if token is not None:
            path += f"&from={quote(token)}"
        start = time.perf_counter()
        status, body = await connection.request("GET", path, None, reader.token)
        record(result, status, time.perf_counter() - start, body)
        if status != 200:
            return
        page = orjson.loads(body)
        token = page.get("end")
        if token is None or not page.get("chunk"):
            return
