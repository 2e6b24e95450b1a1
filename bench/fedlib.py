"""A scripted remote homeserver for the federation benchmark: keys, a hosted room, signed PDUs.

Not a benchmark itself; `bench/federation.py` uses it against trioserver and Synapse.

`FakeRemote` is a small ASGI app served by Hypercorn over TLS on loopback, named
``localhost:PORT`` with an ed25519 key of its own and a certificate from a test CA
(`make_test_ca`, trustme) that the server under test is told to trust. It answers what a
server under test asks of a remote server during the benchmark:

* ``GET /_matrix/key/v2/server``: its signed keys (`OwnKeys.server_keys`);
* ``make_join`` / ``send_join`` (v2) for the rooms it hosts (`HostedRoom`: built and signed
  here, e.g. one with 1,000 joined members of its own), answering the full state and its
  auth chain (``members_omitted`` false, whatever ``omit_members`` asks);
* ``/event``, ``/state_ids``, ``/state``, ``get_missing_events``, ``query/profile`` and the
  server's own outbound ``PUT /send`` (accepted and dropped), in case the server asks.

Anything else is answered 404 ``M_UNRECOGNIZED`` and counted in `FakeRemote.unexpected`, so
that the benchmark can report what the server wanted. The other direction, the remote's own
requests to the server under test (``make_join``/``send_join`` into a room the server hosts,
then ``PUT /send`` transactions), goes through `RemoteClient`, signed with ``X-Matrix``.
"""

from __future__ import annotations

import collections
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote

import trustme
from signedjson.key import generate_signing_key

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from trioserver.events import (
    KNOWN_ROOM_VERSIONS,
    Event,
    RoomVersion,
    StateKey,
    auth_types_for_event,
    build_event,
)
from trioserver.federation.own_keys import OwnKeys
from trioserver.federation.request_auth import authorization_header

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import httpx
    from signedjson.types import SigningKey

FED = "/_matrix/federation"
MEMBER = "m.room.member"
TXN_PDUS = 50  # the spec's limit per transaction


@dataclass(frozen=True)
class TestCa:
    """A test CA and a certificate for localhost / 127.0.0.1, as PEM files."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def make_test_ca(directory: Path) -> TestCa:
    """Write a fresh trustme CA and a localhost certificate into `directory`."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    paths = TestCa(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca.cert_pem.write_to_path(str(paths.ca_path))
    cert.private_key_pem.write_to_path(str(paths.key_path))
    paths.cert_path.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    return paths


def now_ms() -> int:
    """Milliseconds since the epoch."""
    return int(time.time() * 1000)


@dataclass
class HostedRoom:
    """A room as one server sees it: its events, current state and head (a single chain)."""

    version: RoomVersion
    events: dict[str, Event] = field(default_factory=dict)
    state: dict[StateKey, str] = field(default_factory=dict)
    head: Event | None = None

    @property
    def room_id(self) -> str:
        """The room's id (from the create event)."""
        return self.events[self.state[("m.room.create", "")]].room_id

    def add(self, event: Event) -> None:
        """Take `event` as the new head (and into the state, if it is a state event)."""
        self.events[event.event_id] = event
        if event.state_key is not None:
            self.state[(event.type, event.state_key)] = event.event_id
        self.head = event

    def auth_ids(self, type: str, sender: str, state_key: str | None, content: Any) -> list[str]:
        """The ``auth_events`` of a new event on the current state ("auth events selection")."""
        keys = auth_types_for_event(
            self.version, type=type, sender=sender, state_key=state_key, content=content
        )
        return [self.state[k] for k in keys if k in self.state]

    def build(
        self, remote: FakeRemote, type: str, sender: str, content: Any, state_key: str | None
    ) -> Event:
        """A new event on the head, signed by `remote`, added to the room."""
        is_create = type == "m.room.create"
        event = build_event(
            self.version,
            type=type,
            sender=sender,
            content=content,
            room_id=None if is_create and self.version.room_id_from_create_event else self._id(),
            prev_event_ids=[self.head.event_id] if self.head else [],
            auth_event_ids=self.auth_ids(type, sender, state_key, content),
            depth=self.head.depth + 1 if self.head else 1,
            origin_server_ts=now_ms(),
            server_name=remote.server_name,
            signing_key=remote.signing_key,
            state_key=state_key,
        )
        self.add(event)
        return event

    def _id(self) -> str | None:
        return self.room_id if ("m.room.create", "") in self.state else None

    def prev_ids(self, event_id: str) -> list[str]:
        """The ``prev_events`` of `event_id` (none when the room does not have it)."""
        event = self.events.get(event_id)
        return event.prev_event_ids if event is not None else []

    def walk_back(
        self,
        starts: Sequence[str],
        *,
        limit: int,
        stop: set[str] | None = None,
        min_depth: int = 0,
    ) -> list[Event]:
        """Up to `limit` events from `starts` back along ``prev_events``, newest first (breadth
        first), not past `stop` or below `min_depth`."""
        found: dict[str, Event] = {}
        todo = collections.deque(starts)
        while todo and len(found) < limit:
            event = self.events.get(todo.popleft())
            if event is None or event.event_id in found or event.event_id in (stop or ()):
                continue
            if event.depth < min_depth:
                continue
            found[event.event_id] = event
            todo.extend(event.prev_event_ids)
        return sorted(found.values(), key=lambda e: -e.depth)

    def auth_chain(self, event_ids: Sequence[str]) -> list[Event]:
        """Every event the given events' ``auth_events`` lead to (not the events themselves)."""
        seen: dict[str, Event] = {}
        todo = [a for e in event_ids for a in self.events[e].auth_event_ids]
        while todo:
            event_id = todo.pop()
            if event_id in seen or event_id not in self.events:
                continue
            seen[event_id] = self.events[event_id]
            todo.extend(seen[event_id].auth_event_ids)
        return sorted(seen.values(), key=lambda e: e.depth)


def build_member_room(remote: FakeRemote, version: RoomVersion, members: int) -> HostedRoom:
    """A public room created by `remote` with `members` joined users, all of `remote`."""
    room = HostedRoom(version)
    creator = remote.user_id(0)
    create: dict[str, Any] = {"room_version": version.identifier}
    if not version.implicit_room_creator:
        create["creator"] = creator
    room.build(remote, "m.room.create", creator, create, "")
    room.build(remote, MEMBER, creator, {"membership": "join"}, creator)
    levels: dict[str, Any] = {"users_default": 0, "events_default": 0, "state_default": 50}
    levels |= {"ban": 50, "kick": 50, "redact": 50, "invite": 0}
    # v12: the creator has infinite power and must not be listed.
    levels["users"] = {} if version.privileged_creators else {creator: 100}
    room.build(remote, "m.room.power_levels", creator, levels, "")
    room.build(remote, "m.room.join_rules", creator, {"join_rule": "public"}, "")
    room.build(remote, "m.room.history_visibility", creator, {"history_visibility": "shared"}, "")
    for i in range(1, members):
        user = remote.user_id(i)
        room.build(remote, MEMBER, user, {"membership": "join"}, user)
    return room


def message_chain(remote: FakeRemote, room: HostedRoom, sender: str, count: int) -> list[Event]:
    """`count` messages from `sender`, each on the one before (prev_events = [previous])."""
    content = {"msgtype": "m.text", "body": "inbound"}
    return [room.build(remote, "m.room.message", sender, content, None) for _ in range(count)]


class FakeRemote:
    """The scripted remote server (module docstring)."""

    def __init__(self, port: int, tls: TestCa) -> None:
        self.port = port
        self.server_name = f"localhost:{port}"
        self.signing_key: SigningKey = generate_signing_key("bench")
        self.own = OwnKeys(self.server_name, self.signing_key)
        self.tls = tls
        self.rooms: dict[str, HostedRoom] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []

    def user_id(self, i: int) -> str:
        """The remote's `i`-th user."""
        return f"@u{i}:{self.server_name}"

    def host(self, room: HostedRoom) -> None:
        """Serve `room` (make_join, send_join, event reads)."""
        self.rooms[room.room_id] = room

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve on 127.0.0.1 over TLS until cancelled."""
        config = HypercornConfig()
        config.bind = [f"127.0.0.1:{self.port}"]
        config.certfile = str(self.tls.cert_path)
        config.keyfile = str(self.tls.key_path)
        config.accesslog = None
        config.errorlog = None
        config.loglevel = "WARNING"
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, self.app, config)
            task_status.started()

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI entry point: HTTP requests (and the lifespan events, acknowledged)."""
        if scope["type"] == "lifespan":
            while True:
                kind = (await receive())["type"]  # lifespan.startup, then lifespan.shutdown
                await send({"type": f"{kind}.complete"})
                if kind == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = unquote(scope["raw_path"].decode())
        query = parse_qs(scope["query_string"].decode())
        status, answer = await self._route(scope["method"], path, query, body)
        payload = json.dumps(answer).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(payload)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes
    ) -> tuple[int, Any]:
        parts = path.strip("/").split("/")
        key = f"{method} /{'/'.join(parts[:4])}"
        self.requests[key] += 1
        content = json.loads(body) if body else None
        if path.startswith("/_matrix/key/v2/server"):
            return 200, self.own.server_keys(now_ms())
        if parts[:2] != ["_matrix", "federation"] or len(parts) < 4:
            return self._unknown(method, path)
        verb, args = parts[3], parts[4:]
        if method == "PUT" and verb == "send":
            return 200, {"pdus": {}}
        if method == "GET" and verb == "version":
            return 200, {"server": {"name": "bench-fake-remote", "version": "0"}}
        if method == "GET" and verb == "query" and args == ["profile"]:
            return 200, {"displayname": "bench"}
        if method == "GET" and verb == "make_join" and len(args) == 2:
            return self._make_join(args[0], args[1], query)
        if method == "PUT" and verb == "send_join" and len(args) == 2:
            return self._send_join(args[0], content)
        if method == "GET" and verb == "event" and len(args) == 1:
            return self._event(args[0])
        if method == "GET" and verb in ("state_ids", "state") and len(args) == 1:
            return self._state(args[0], verb == "state")
        if method == "POST" and verb == "get_missing_events" and len(args) == 1:
            return self._missing_events(args[0], content)
        if method == "GET" and verb == "backfill" and len(args) == 1:
            return self._backfill(args[0], query)
        return self._unknown(method, path)

    def _unknown(self, method: str, path: str) -> tuple[int, Any]:
        self.unexpected.append(f"{method} {path}")
        return 404, {"errcode": "M_UNRECOGNIZED", "error": "not scripted"}

    def _make_join(
        self, room_id: str, user_id: str, query: dict[str, list[str]]
    ) -> tuple[int, Any]:
        room = self.rooms.get(room_id)
        if room is None or room.head is None:
            return 404, {"errcode": "M_NOT_FOUND", "error": "unknown room"}
        if room.version.identifier not in query.get("ver", ["1"]):
            return 400, {"errcode": "M_INCOMPATIBLE_ROOM_VERSION", "error": "version"}
        content = {"membership": "join"}
        template = {
            "room_id": room_id,
            "type": MEMBER,
            "sender": user_id,
            "state_key": user_id,
            "content": content,
            "depth": room.head.depth + 1,
            "origin": self.server_name,
            "origin_server_ts": now_ms(),
            "prev_events": [room.head.event_id],
            "auth_events": room.auth_ids(MEMBER, user_id, user_id, content),
        }
        return 200, {"event": template, "room_version": room.version.identifier}

    def _send_join(self, room_id: str, pdu: Any) -> tuple[int, Any]:
        room = self.rooms.get(room_id)
        if room is None:
            return 404, {"errcode": "M_NOT_FOUND", "error": "unknown room"}
        state_ids = list(room.state.values())
        event = Event.from_pdu(room.version, pdu)
        # The join's auth events are state events: their chains are in the state's.
        chain = room.auth_chain(state_ids)
        answer = {
            "origin": self.server_name,
            "event": pdu,
            "state": [room.events[e].get_pdu_json() for e in state_ids],
            "auth_chain": [e.get_pdu_json() for e in chain],
            "members_omitted": False,
            "servers_in_room": [self.server_name, event.sender.split(":", 1)[1]],
        }
        room.add(event)
        return 200, answer

    def _event(self, event_id: str) -> tuple[int, Any]:
        for room in self.rooms.values():
            if event_id in room.events:
                pdu = room.events[event_id].get_pdu_json()
                return 200, {
                    "origin": self.server_name,
                    "origin_server_ts": now_ms(),
                    "pdus": [pdu],
                }
        return 404, {"errcode": "M_NOT_FOUND", "error": "unknown event"}

    def _missing_events(self, room_id: str, body: Any) -> tuple[int, Any]:
        # The ancestors of latest_events back to earliest_events (excluded), oldest first.
        room = self.rooms.get(room_id)
        if room is None or not isinstance(body, dict):
            return 404, {"errcode": "M_NOT_FOUND", "error": "unknown room"}
        starts = [p for e in body.get("latest_events", []) for p in room.prev_ids(e)]
        events = room.walk_back(
            starts,
            limit=int(body.get("limit", 10)),
            stop=set(body.get("earliest_events", [])),
            min_depth=int(body.get("min_depth", 0)),
        )
        return 200, {"events": [e.get_pdu_json() for e in reversed(events)]}

    def _backfill(self, room_id: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        # The events named by `v` and their ancestors, newest first.
        room = self.rooms.get(room_id)
        if room is None:
            return 404, {"errcode": "M_NOT_FOUND", "error": "unknown room"}
        limit = int(query.get("limit", ["10"])[0])
        events = room.walk_back(query.get("v", []), limit=limit)
        pdus = [e.get_pdu_json() for e in events]
        return 200, {"origin": self.server_name, "origin_server_ts": now_ms(), "pdus": pdus}

    def _state(self, room_id: str, full: bool) -> tuple[int, Any]:
        room = self.rooms.get(room_id)
        if room is None:
            return 404, {"errcode": "M_NOT_FOUND", "error": "unknown room"}
        ids = list(room.state.values())
        chain = room.auth_chain(ids)
        if full:
            pdus = [room.events[e].get_pdu_json() for e in ids]
            return 200, {"pdus": pdus, "auth_chain": [e.get_pdu_json() for e in chain]}
        return 200, {"pdu_ids": ids, "auth_chain_ids": [e.event_id for e in chain]}


@dataclass
class RemoteClient:
    """The fake remote's requests to a server under test, signed with ``X-Matrix``.

    `http` is an httpx client on the server's federation base URL (plain HTTP or TLS);
    `destination` its server name.
    """

    remote: FakeRemote
    http: httpx.AsyncClient
    destination: str

    async def request(self, method: str, path: str, content: Any = None) -> httpx.Response:
        """One signed request; `path` percent-encoded, with its query."""
        header = authorization_header(
            method=method,
            uri=path,
            origin=self.remote.server_name,
            destination=self.destination,
            signing_key=self.remote.signing_key,
            content=content,
        )
        body = None if content is None else json.dumps(content).encode()
        headers = {"Authorization": header, "Content-Type": "application/json"}
        return await self.http.request(method, path, content=body, headers=headers)

    async def join(self, room_id: str, user_id: str) -> HostedRoom:
        """Join `user_id` to a room the server hosts (make_join, then send_join v2).

        Returns:
            The room as the remote now sees it: the send_join answer's state plus the join.

        Raises:
            RuntimeError: either step did not answer 200 (status and body in the message).
        """
        q = _quote
        versions = "&".join(f"ver={q(v)}" for v in KNOWN_ROOM_VERSIONS)
        path = f"{FED}/v1/make_join/{q(room_id)}/{q(user_id)}?{versions}"
        made = _ok(await self.request("GET", path))
        version = KNOWN_ROOM_VERSIONS[made["room_version"]]
        template = made["event"]
        pdu = {k: v for k, v in template.items() if k not in ("signatures", "hashes")}
        pdu["origin_server_ts"] = now_ms()
        event = build_event(
            version,
            type=MEMBER,
            sender=user_id,
            content=pdu["content"],
            room_id=room_id,
            prev_event_ids=pdu["prev_events"],
            auth_event_ids=pdu["auth_events"],
            depth=pdu["depth"],
            origin_server_ts=pdu["origin_server_ts"],
            server_name=self.remote.server_name,
            signing_key=self.remote.signing_key,
            state_key=user_id,
        )
        path = f"{FED}/v2/send_join/{q(room_id)}/{q(event.event_id)}"
        answer = _ok(await self.request("PUT", path, event.get_pdu_json()))
        room = HostedRoom(version)
        for raw in answer.get("auth_chain", []):
            found = Event.from_pdu(version, raw)
            room.events[found.event_id] = found
        for raw in answer["state"]:
            room.add(Event.from_pdu(version, raw))
        room.add(event)
        return room

    async def send_transaction(self, txn_id: str, pdus: list[dict[str, Any]]) -> dict[str, Any]:
        """``PUT /send/{txnId}`` with `pdus`; the answer's ``pdus`` map."""
        body = {
            "origin": self.remote.server_name,
            "origin_server_ts": now_ms(),
            "pdus": pdus,
            "edus": [],
        }
        answer = _ok(await self.request("PUT", f"{FED}/v1/send/{txn_id}", body))
        result: dict[str, Any] = answer.get("pdus", {})
        return result


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _ok(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.raw_path.decode()}:"
            f" {response.status_code} {response.text[:500]}"
        )
    body: dict[str, Any] = response.json()
    return body
