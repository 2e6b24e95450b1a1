"""Workers forward writes to main's internal listener (issue 13), over real HTTP on loopback.

One trio run holds main (its components, its client listener and its internal listener) and a
worker-side client app whose `Forwarder` talks to main's internal listener with a real
`MainClient`. The worker app shares main's components for what it answers locally (reads),
as a worker shares main's database; what is under test is the path of a forwarded write.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest

import trio

from trioserver.api.app import create_app
from trioserver.config import Config, config_from_mapping
from trioserver.internal.app import create_internal_app
from trioserver.internal.client import MainClient
from trioserver.internal.errors import WriterUnavailable
from trioserver.internal.forwarding import Forwarder
from trioserver.internal.serve import run_internal_http
from trioserver.keys import load_key_file
from trioserver.nursery import Components, RunningServer, build_components, run_http_api
from trioserver.repl.streams import CACHES, UpdatePage
from trioserver.setup_files import ensure_data_files
from trioserver.stores.database import open_configured_database
from trioserver.stores.meta import check_server_name
from trioserver.supervisor import run_supervised
from trioserver.testing import InProcessServer, RegisteredUser

from tests.integration.client import assert_error, assert_ok, bearer
from tests.integration.server_db import database_section, server_db

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

SECRET = "repl-secret"
V3 = "/_matrix/client/v3"


class ListStream:
    """A writer stream over a fixed list of rows (a fake: the real ones are per stream)."""

    name = "typing"

    def __init__(self, rows: list[tuple[int, dict[str, Any]]]) -> None:
        self._rows = rows

    def current_token(self) -> int:
        return self._rows[-1][0] if self._rows else 0

    async def get_updates(self, from_token: int, upto_token: int, limit: int) -> UpdatePage:
        rows = [(t, r) for t, r in self._rows if from_token < t <= upto_token][:limit]
        limited = len(rows) == limit and rows[-1][0] < upto_token
        return UpdatePage(rows, rows[-1][0] if limited else upto_token, limited)


class CountingApp:
    """An ASGI app in front of another, counting the requests that reach it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[str] = []

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "http":
            self.requests.append(f"{scope['method']} {scope['path']}")
        await self.app(scope, receive, send)


@attrs.define
class Pair:
    """Main and a worker-side app forwarding to it."""

    config: Config
    components: Components
    main_url: str
    internal_url: str
    worker_url: str
    internal: CountingApp
    main_client: MainClient
    waits: list[dict[str, int]]
    presence_calls: list[tuple[str, str, str | None, bool]]
    connected: list[bool]
    http: httpx.AsyncClient

    def db_rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with server_db(self.config) as db:
            return db.rows(sql, params)

    async def user(self, localpart: str, *, admin: bool = False) -> RegisteredUser:
        server = InProcessServer(self.config, _running(self.main_url))
        return await server.register_user(localpart, "pw", admin=admin)


def _running(url: str) -> RunningServer:
    return RunningServer((url,))


def _config(tmp_path: Path, max_body: int, database: dict[str, Any]) -> Config:
    raw = {
        "server_name": "localhost",
        "http": {"bind_addresses": ["127.0.0.1"], "port": 0, "max_request_body_size": max_body},
        "registration": {"enabled": True, "bcrypt_rounds": 4, "shared_secret": "test-secret"},
        "ratelimit": {"enabled": False},
        "database": database,
    }
    return config_from_mapping(raw, base_dir=tmp_path)


def _positions(components: Components) -> Callable[[], dict[str, int]]:
    def positions() -> dict[str, int]:
        return {**attrs.asdict(components.deps.notifier.current_token()), CACHES: 0}

    return positions


@asynccontextmanager
async def forwarding_pair(
    tmp_path: Path, *, main_base_url: str | None = None, max_body: int = 1024 * 1024
) -> AsyncIterator[Pair]:
    """Main with its internal listener, and a worker app forwarding to it (or elsewhere)."""
    config = _config(tmp_path, max_body, await database_section(tmp_path, synchronous="normal"))
    await ensure_data_files(config)
    key = load_key_file(config.data_path(config.signing_key_path))
    async with open_configured_database(config) as db:
        await check_server_name(db, config.server_name)
        components = build_components(config, db, key)
        for load in components.loaders:
            await load()
        async with trio.open_nursery() as nursery:
            assert components.persister is not None
            await nursery.start(partial(run_supervised, components.persister.run, name="writer"))
            for subsystem in components.subsystems:
                await nursery.start(run_supervised, subsystem)
            client_app = create_app(components.deps)
            main = await nursery.start(run_http_api, client_app, config.http, trio.sleep_forever)
            presence_calls: list[tuple[str, str, str | None, bool]] = []

            async def presence_sync(
                instance: str, user_id: str, state: str | None, syncing: bool
            ) -> None:
                presence_calls.append((instance, user_id, state, syncing))

            internal = CountingApp(
                create_internal_app(
                    secret=SECRET,
                    client_app=client_app,
                    positions=_positions(components),
                    writer_streams={"typing": ListStream([(1, {"a": 1}), (2, {"b": 2})])},
                    presence_sync=presence_sync,
                )
            )
            port = await nursery.start(run_internal_http, internal, "127.0.0.1", 0)
            internal_url = f"http://127.0.0.1:{port}"
            main_client = MainClient(
                main_base_url or internal_url, secret=SECRET, instance_name="worker1"
            )
            waits: list[dict[str, int]] = []
            connected = [True]

            async def wait_for_positions(positions: Mapping[str, int], timeout_s: float) -> bool:
                waits.append(dict(positions))
                return True

            forwarder = Forwarder(
                main_client,
                is_connected=lambda: connected[0],
                wait_for_positions=wait_for_positions,
            )
            worker_app = create_app(components.deps, forwarder=forwarder)
            worker = await nursery.start(run_http_api, worker_app, config.http, trio.sleep_forever)
            async with httpx.AsyncClient(timeout=30) as http:
                yield Pair(
                    config,
                    components,
                    main.base_urls[0],
                    internal_url,
                    worker.base_urls[0],
                    internal,
                    main_client,
                    waits,
                    presence_calls,
                    connected,
                    http,
                )
            await main_client.aclose()
            nursery.cancel_scope.cancel()


async def _create_room(pair: Pair, token: str) -> str:
    # Straight to main: the room is the setting, not what is tested.
    response = await pair.http.post(
        f"{pair.main_url}{V3}/createRoom", json={}, headers=bearer(token)
    )
    return str(assert_ok(response)["room_id"])


async def test_a_forwarded_send_is_written_by_main_and_its_position_awaited(
    tmp_path: Path,
) -> None:
    async with forwarding_pair(tmp_path) as pair:
        alice = await pair.user("alice")
        room_id = await _create_room(pair, alice.access_token)
        before = len(pair.internal.requests)
        response = await pair.http.put(
            f"{pair.worker_url}{V3}/rooms/{room_id}/send/m.room.message/txn1",
            json={"msgtype": "m.text", "body": "hello"},
            headers=bearer(alice.access_token),
        )
        event_id = assert_ok(response)["event_id"]
        assert response.headers["content-type"] == "application/json"
        assert "x-trioserver-positions" not in response.headers
        assert response.headers["access-control-allow-origin"] == "*"
        ((ordering,),) = pair.db_rows(
            "SELECT stream_ordering FROM events WHERE event_id = ?", (event_id,)
        )
        assert pair.internal.requests[before:] == [
            f"PUT /_trioserver/replication/client{V3}/rooms/{room_id}/send/m.room.message/txn1"
        ]
        assert pair.waits[-1]["events"] >= ordering
        # Only the streams the request moved are waited for (a send touches no receipts).
        assert "receipts" not in pair.waits[-1]
        assert CACHES not in pair.waits[-1]
        # The transaction id is main's to deduplicate: a retry gives the same event.
        again = await pair.http.put(
            f"{pair.worker_url}{V3}/rooms/{room_id}/send/m.room.message/txn1",
            json={"msgtype": "m.text", "body": "hello"},
            headers=bearer(alice.access_token),
        )
        assert assert_ok(again)["event_id"] == event_id


async def test_main_answers_a_forwarded_request_with_a_bad_token(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path) as pair:
        response = await pair.http.post(
            f"{pair.worker_url}{V3}/createRoom", json={}, headers=bearer("nonsense")
        )
        assert_error(response, 401, "M_UNKNOWN_TOKEN")
        # It was main's answer: the request went through the internal listener.
        assert pair.internal.requests == [f"POST /_trioserver/replication/client{V3}/createRoom"]
        assert len(pair.waits) == 1


async def test_reads_unknown_routes_and_local_writes_stay_on_the_worker(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path) as pair:
        alice = await pair.user("alice")
        headers = bearer(alice.access_token)
        assert_ok(await pair.http.get(f"{pair.worker_url}{V3}/account/whoami", headers=headers))
        unknown = await pair.http.post(f"{pair.worker_url}{V3}/no/such/thing", json={})
        assert_error(unknown, 404, "M_UNRECOGNIZED")
        wrong_method = await pair.http.delete(f"{pair.worker_url}{V3}/createRoom")
        assert_error(wrong_method, 405, "M_UNRECOGNIZED")
        filter_response = await pair.http.post(
            f"{pair.worker_url}{V3}/user/{alice.user_id}/filter", json={}, headers=headers
        )
        assert_ok(filter_response)
        assert pair.internal.requests == []


async def test_internal_endpoints_need_the_secret(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path) as pair:
        url = f"{pair.internal_url}/_trioserver/replication/stream_updates/typing"
        params = {"from_token": "0", "upto_token": "2"}
        assert_error(await pair.http.get(url, params=params), 401, "M_MISSING_TOKEN")
        wrong = await pair.http.get(url, params=params, headers=bearer("not-it"))
        assert_error(wrong, 403, "M_FORBIDDEN")
        client_path = f"/_trioserver/replication/client{V3}/createRoom"
        anonymous = await pair.http.post(pair.internal_url + client_path, json={})
        assert_error(anonymous, 401, "M_MISSING_TOKEN")
        # Main's client listener does not serve internal endpoints at all.
        on_client = await pair.http.post(
            pair.main_url + client_path, json={}, headers=bearer(SECRET)
        )
        assert_error(on_client, 404, "M_UNRECOGNIZED")
        on_client = await pair.http.get(
            pair.main_url + "/_trioserver/replication/stream_updates/typing",
            params=params,
            headers=bearer(SECRET),
        )
        assert_error(on_client, 404, "M_UNRECOGNIZED")


async def test_stream_updates(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path) as pair:
        page = await pair.main_client.stream_updates("typing", 0, 2)
        assert page == UpdatePage([(1, {"a": 1}), (2, {"b": 2})], 2, False)
        assert await pair.main_client.stream_updates("typing", 1, 2) == UpdatePage(
            [(2, {"b": 2})], 2, False
        )
        base = f"{pair.internal_url}/_trioserver/replication/stream_updates"
        unknown = await pair.http.get(
            f"{base}/nope", params={"from_token": "0", "upto_token": "1"}, headers=bearer(SECRET)
        )
        assert_error(unknown, 400, "M_UNRECOGNIZED")
        bad = await pair.http.get(
            f"{base}/typing", params={"from_token": "x", "upto_token": "1"}, headers=bearer(SECRET)
        )
        assert_error(bad, 400, "M_INVALID_PARAM")
        with pytest.raises(WriterUnavailable):
            await pair.main_client.stream_updates("nope", 0, 1)


async def test_presence_sync_reaches_main(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path) as pair:
        await pair.main_client.presence_sync("@alice:localhost", "online", True)
        await pair.main_client.presence_sync("@alice:localhost", None, False)
        assert pair.presence_calls == [
            ("worker1", "@alice:localhost", "online", True),
            ("worker1", "@alice:localhost", None, False),
        ]
        url = f"{pair.internal_url}/_trioserver/replication/presence_sync"
        bad = await pair.http.post(
            url, json={"instance": "w", "user_id": 3}, headers=bearer(SECRET)
        )
        assert_error(bad, 400, "M_BAD_JSON")
        not_json = await pair.http.post(url, content=b"{", headers=bearer(SECRET))
        assert_error(not_json, 400, "M_NOT_JSON")


async def test_not_connected_fails_fast_without_contacting_main(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path) as pair:
        alice = await pair.user("alice")
        room_id = await _create_room(pair, alice.access_token)
        events_before = pair.db_rows("SELECT count(*) FROM events")
        pair.connected[0] = False
        response = await pair.http.put(
            f"{pair.worker_url}{V3}/rooms/{room_id}/send/m.room.message/t",
            json={"body": "x", "msgtype": "m.text"},
            headers=bearer(alice.access_token),
        )
        body = assert_error(response, 503, "M_UNKNOWN")
        assert "events writer is unreachable" in body["error"]
        assert pair.internal.requests == []
        assert pair.db_rows("SELECT count(*) FROM events") == events_before


async def test_main_unreachable_is_a_quick_503(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    async with forwarding_pair(tmp_path, main_base_url=f"http://127.0.0.1:{closed_port}") as pair:
        with trio.fail_after(5):
            response = await pair.http.post(f"{pair.worker_url}{V3}/createRoom", json={})
        body = assert_error(response, 503, "M_UNKNOWN")
        assert "events writer is unreachable" in body["error"]
        assert pair.waits == []


async def test_the_client_address_reaches_main(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path) as pair:
        await pair.user("carol")
        login_body = b'{"type": "m.login.password", "user": "carol", "password": "pw"}'
        answer = await pair.main_client.forward(
            "POST",
            f"{V3}/login",
            [("content-type", "application/json"), ("user-agent", "Phone/1.0")],
            login_body,
            "10.9.8.7",
        )
        assert answer.status == 200
        login = httpx.Response(200, content=answer.body).json()
        # Asked by an admin, so that the asking request is not itself carol's connection.
        root = await pair.user("root", admin=True)
        whois = await pair.http.get(
            f"{pair.main_url}{V3}/admin/whois/{login['user_id']}",
            headers=bearer(root.access_token),
        )
        sessions = assert_ok(whois)["devices"][login["device_id"]]["sessions"]
        (connection,) = sessions[0]["connections"]
        assert connection["ip"] == "10.9.8.7"
        assert connection["user_agent"] == "Phone/1.0"


async def test_a_client_cannot_claim_an_address_or_the_secret_through_a_worker(
    tmp_path: Path,
) -> None:
    async with forwarding_pair(tmp_path) as pair:
        await pair.user("dave")
        response = await pair.http.post(
            f"{pair.worker_url}{V3}/login",
            json={"type": "m.login.password", "user": "dave", "password": "pw"},
            headers={
                "x-trioserver-client-addr": "6.6.6.6",
                "x-trioserver-forwarded-authorization": "Bearer whatever",
            },
        )
        login = assert_ok(response)
        root = await pair.user("root", admin=True)
        whois = await pair.http.get(
            f"{pair.main_url}{V3}/admin/whois/{login['user_id']}",
            headers=bearer(root.access_token),
        )
        sessions = assert_ok(whois)["devices"][login["device_id"]]["sessions"]
        (connection,) = sessions[0]["connections"]
        assert connection["ip"] == "127.0.0.1"


async def test_a_forwarded_body_over_the_limit_is_refused_by_the_worker(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path, max_body=1000) as pair:
        response = await pair.http.post(
            f"{pair.worker_url}{V3}/createRoom", json={"name": "x" * 2000}
        )
        assert_error(response, 413, "M_TOO_LARGE")
        assert pair.internal.requests == []


async def test_an_access_token_in_the_query_is_forwarded(tmp_path: Path) -> None:
    async with forwarding_pair(tmp_path) as pair:
        alice = await pair.user("alice")
        response = await pair.http.post(
            f"{pair.worker_url}{V3}/createRoom",
            params={"access_token": alice.access_token},
            json={"name": "by query"},
        )
        room_id = assert_ok(response)["room_id"]
        assert pair.db_rows("SELECT count(*) FROM rooms WHERE room_id = ?", (room_id,)) == [(1,)]
