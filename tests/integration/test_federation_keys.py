"""Server signing keys over real HTTP (issue 15): test servers serve the key routes with
`MatrixApp` on loopback (`serve_http`), each with a `KeyRing` on its own database (SQLite, or
PostgreSQL under TRIOSERVER_TEST_POSTGRES) that fetches from the others over HTTP; X-Matrix
requests between them; the key table itself; ``trioserver rotate-signing-key``."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AsyncExitStack
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import httpx
import orjson
import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key
from signedjson.sign import verify_signed_json

import trio

from trioserver.api.federation.keys import ROUTES
from trioserver.api.http import JsonDict, MatrixApp, Request, Route, route
from trioserver.errors import MatrixError
from trioserver.federation.inbound_auth import RequestAuthenticator
from trioserver.federation.keyring import KeyRing, Notary
from trioserver.federation.keys import KeyLookupError
from trioserver.federation.own_keys import OwnKeys, load_own_keys
from trioserver.federation.request_auth import authorization_header
from trioserver.handlers.auth import Requester
from trioserver.http_edge import open_listeners, serve_http
from trioserver.stores.server_keys import ServerKeyStore, StoredServerKey

from tests.integration.server_db import store_database

DAY_MS = 24 * 3600 * 1000


class LoopbackFetch:
    """The federation client's key calls, over plain HTTP to the test servers' ports."""

    def __init__(self, http: httpx.AsyncClient, urls: Mapping[str, str]) -> None:
        self.http = http
        self.urls = urls
        self.unreachable: set[str] = set()

    async def get_json(
        self,
        destination: str,
        path: str,
        *,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- the transport's interface
    ) -> Any:
        response = await self.http.get(self._url(destination) + path, timeout=timeout)
        response.raise_for_status()
        return response.json()

    async def post_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- the transport's interface
    ) -> Any:
        response = await self.http.post(
            self._url(destination) + path, json=content, timeout=timeout
        )
        response.raise_for_status()
        return response.json()

    def _url(self, destination: str) -> str:
        if destination in self.unreachable or destination not in self.urls:
            raise ConnectionRefusedError(f"{destination} is unreachable")
        return self.urls[destination]


@attrs.frozen
class FederationPart:
    keyring: KeyRing


@attrs.frozen
class Deps:
    server_name: str
    federation: FederationPart | None


@attrs.frozen
class KeyServer:
    name: str
    url: str
    own: OwnKeys
    keyring: KeyRing
    store: ServerKeyStore
    fetch: LoopbackFetch


async def echo_origin(deps: Deps, request: Request) -> JsonDict:
    return {"origin": request.origin}


async def no_access_tokens(token: str) -> Requester:
    raise MatrixError("M_UNKNOWN_TOKEN", "No users here", status=401)


ECHO_ROUTES: list[Route[Any]] = [
    route("PUT", "/_matrix/federation/v1/send/{txn}", echo_origin, auth="federation"),
    route("GET", "/_matrix/federation/v1/query/profile", echo_origin, auth="federation"),
]


@attrs.define
class Federation:
    """Test servers on loopback that know each other's URLs."""

    directory: Path
    nursery: trio.Nursery
    stack: AsyncExitStack
    http: httpx.AsyncClient
    urls: dict[str, str] = attrs.field(factory=dict)

    async def start(
        self, name: str, *, notaries: Sequence[Notary] = (), enabled: bool = True
    ) -> KeyServer:
        (self.directory / name).mkdir()
        db = await self.stack.enter_async_context(store_database(self.directory / name))
        store = ServerKeyStore(db)
        own = OwnKeys(name, generate_signing_key("k1"))
        fetch = LoopbackFetch(self.http, self.urls)
        keyring = KeyRing(own, store, fetch, notaries=notaries, timeout_s=10)
        deps = Deps(name, FederationPart(keyring) if enabled else None)
        app: MatrixApp[Deps] = MatrixApp(
            deps,
            [*ROUTES, *ECHO_ROUTES],
            authenticate=no_access_tokens,
            max_body_size=1 << 20,
            authenticate_server=RequestAuthenticator(keyring, name),
        )
        listeners = await open_listeners(["127.0.0.1"], 0)
        (url,) = await self.nursery.start(partial(serve_http, app, listeners))
        self.urls[name] = url
        return KeyServer(name, url, own, keyring, store, fetch)


@pytest.fixture
async def federation(tmp_path: Path) -> AsyncIterator[Federation]:
    async with (
        AsyncExitStack() as stack,
        httpx.AsyncClient(timeout=30) as http,
        trio.open_nursery() as nursery,
    ):
        yield Federation(tmp_path, nursery, stack, http)
        nursery.cancel_scope.cancel()


async def test_a_server_publishes_its_signed_keys(federation: Federation) -> None:
    a = await federation.start("a.test")
    http = federation.http
    response = await http.get(a.url + "/_matrix/key/v2/server")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["server_name"] == "a.test"
    assert body["verify_keys"] == {
        a.own.key_id: {"key": encode_verify_key_base64(a.own.verify_key)}
    }
    assert body["old_verify_keys"] == {}
    now_ms = a.keyring.now_ms()
    assert now_ms < body["valid_until_ts"] <= now_ms + DAY_MS
    verify_signed_json(body, "a.test", a.own.verify_key)
    # The deprecated key id forms give the same keys.
    for path in ("/_matrix/key/v2/server/ed25519:k1", "/_matrix/key/v2/server/"):
        other = (await http.get(a.url + path)).json()
        assert other["verify_keys"] == body["verify_keys"]


async def test_a_server_with_federation_disabled_answers_404(federation: Federation) -> None:
    a = await federation.start("a.test", enabled=False)
    response = await federation.http.get(a.url + "/_matrix/key/v2/server")
    assert response.status_code == 404
    assert response.json() == {"errcode": "M_UNRECOGNIZED", "error": "Federation is disabled"}


async def test_keys_are_fetched_over_http_and_kept_in_the_database(
    federation: Federation,
) -> None:
    a = await federation.start("a.test")
    b = await federation.start("b.test")
    key = await b.keyring.verify_key("a.test", a.own.key_id, at_ts=b.keyring.now_ms())
    assert encode_verify_key_base64(key) == encode_verify_key_base64(a.own.verify_key)
    (row,) = await b.store.get_server_keys("a.test")
    assert (row.key_id, row.from_server, row.expired_ts) == (a.own.key_id, "a.test", None)
    verify_signed_json(orjson.loads(row.key_json), "a.test", a.own.verify_key)
    # A new key ring on the same database (a restart, another process) needs no fetch.
    b.fetch.unreachable.add("a.test")
    again = KeyRing(b.own, b.store, b.fetch)
    await again.verify_key("a.test", a.own.key_id, at_ts=b.keyring.now_ms())
    with pytest.raises(KeyLookupError, match="unreachable"):
        await again.verify_key("a.test", "ed25519:other", at_ts=b.keyring.now_ms())


async def test_keys_come_through_a_notary_when_the_server_is_unreachable(
    federation: Federation,
) -> None:
    a = await federation.start("a.test")
    notary = await federation.start("notary.test")
    c = await federation.start("c.test", notaries=[Notary("notary.test")])
    c.fetch.unreachable.add("a.test")
    await c.keyring.verify_key("a.test", a.own.key_id, at_ts=c.keyring.now_ms())
    (row,) = await c.store.get_server_keys("a.test")
    assert row.from_server == "notary.test"
    stored = orjson.loads(row.key_json)
    verify_signed_json(stored, "a.test", a.own.verify_key)
    verify_signed_json(stored, "notary.test", notary.own.verify_key)
    # The notary kept what it fetched; c kept the notary's own keys, fetched from it.
    assert [r.key_id for r in await notary.store.get_server_keys("a.test")] == [a.own.key_id]
    assert [r.key_id for r in await c.store.get_server_keys("notary.test")] == ["ed25519:k1"]


async def test_the_notary_endpoints_answer_signed_by_the_notary(federation: Federation) -> None:
    a = await federation.start("a.test")
    notary = await federation.start("notary.test")
    http = federation.http
    response = await http.post(
        notary.url + "/_matrix/key/v2/query",
        json={"server_keys": {"a.test": {a.own.key_id: {}}, "notary.test": {}}},
    )
    assert response.status_code == 200
    by_server = {entry["server_name"]: entry for entry in response.json()["server_keys"]}
    assert set(by_server) == {"a.test", "notary.test"}
    verify_signed_json(by_server["a.test"], "a.test", a.own.verify_key)
    verify_signed_json(by_server["a.test"], "notary.test", notary.own.verify_key)
    verify_signed_json(by_server["notary.test"], "notary.test", notary.own.verify_key)
    for path in ("/a.test", f"/a.test/{a.own.key_id}", "/a.test?minimum_valid_until_ts=1"):
        answer = await http.get(notary.url + "/_matrix/key/v2/query" + path)
        assert answer.status_code == 200, path
        (entry,) = answer.json()["server_keys"]
        assert entry["verify_keys"] == by_server["a.test"]["verify_keys"]
    # A server that cannot be reached and was never seen: an empty list, not an error.
    answer = await http.get(notary.url + "/_matrix/key/v2/query/nowhere.test")
    assert answer.json() == {"server_keys": []}


@pytest.mark.parametrize(
    ("content", "errcode"),
    [
        (b"{not json", "M_NOT_JSON"),
        (b'"server_keys"', "M_BAD_JSON"),
        (b'{"server_keys": ["a.test"]}', "M_BAD_JSON"),
        (b'{"server_keys": {"a test": {}}}', "M_INVALID_PARAM"),
        (b'{"server_keys": {"a.test": {"ed25519:k1": []}}}', "M_BAD_JSON"),
        (
            b'{"server_keys": {"a.test": {"ed25519:k1": {"minimum_valid_until_ts": 1.5}}}}',
            "M_INVALID_PARAM",
        ),
    ],
)
async def test_bad_notary_queries_are_400(
    federation: Federation, content: bytes, errcode: str
) -> None:
    notary = await federation.start("notary.test")
    response = await federation.http.post(notary.url + "/_matrix/key/v2/query", content=content)
    assert response.status_code == 400
    assert response.json()["errcode"] == errcode


async def test_bad_get_queries_are_400(federation: Federation) -> None:
    notary = await federation.start("notary.test")
    for path in ("/a%20test", "/a.test?minimum_valid_until_ts=-5"):
        response = await federation.http.get(notary.url + "/_matrix/key/v2/query" + path)
        assert response.status_code == 400, path
        assert response.json()["errcode"] == "M_INVALID_PARAM"


async def test_signed_requests_between_servers(federation: Federation) -> None:
    a = await federation.start("a.test")
    b = await federation.start("b.test")
    http = federation.http

    def signed(method: str, uri: str, content: Any = None, **overrides: Any) -> dict[str, str]:
        args: dict[str, Any] = {
            "method": method,
            "uri": uri,
            "origin": "a.test",
            "destination": "b.test",
            "signing_key": a.own.signing_key,
            "content": content,
        }
        return {"Authorization": authorization_header(**{**args, **overrides})}

    txn: dict[str, Any] = {"pdus": [], "edus": []}
    uri = "/_matrix/federation/v1/send/t1"
    response = await http.put(b.url + uri, json=txn, headers=signed("PUT", uri, txn))
    assert response.json() == {"origin": "a.test"}
    query_uri = "/_matrix/federation/v1/query/profile?user_id=%40u%3Aa.test&field=displayname"
    response = await http.get(b.url + query_uri, headers=signed("GET", query_uri))
    assert response.json() == {"origin": "a.test"}
    other_txn = "/_matrix/federation/v1/send/t2"
    refusals: list[tuple[str, str, dict[str, Any], int]] = [
        ("PUT", uri, {"json": txn}, 401),
        ("PUT", uri, {"json": {"pdus": [1]}, "headers": signed("PUT", uri, txn)}, 401),
        ("PUT", other_txn, {"json": txn, "headers": signed("PUT", uri, txn)}, 401),
        ("GET", query_uri + "&x=1", {"headers": signed("GET", query_uri)}, 401),
        ("PUT", uri, {"json": txn, "headers": signed("PUT", uri, txn, destination="c.test")}, 401),
        ("PUT", uri, {"content": b"{", "headers": signed("PUT", uri, txn)}, 400),
    ]
    for method, target, kwargs, status in refusals:
        response = await http.request(method, b.url + target, **kwargs)
        assert response.status_code == status, response.text
        assert response.json()["errcode"] == ("M_UNAUTHORIZED" if status == 401 else "M_NOT_JSON")


async def test_the_key_table_keeps_the_longest_validity(tmp_path: Path) -> None:
    def row(valid_until_ts: int, *, expired_ts: int | None = None, source: str = "s") -> Any:
        return StoredServerKey(
            server_name="s.test",
            key_id="ed25519:k",
            verify_key="AAAA",
            valid_until_ts=valid_until_ts,
            expired_ts=expired_ts,
            fetched_ts=1,
            from_server=source,
            key_json='{"server_name": "s.test"}',
        )

    async with store_database(tmp_path) as db:
        store = ServerKeyStore(db)
        assert await store.get_server_keys("s.test") == []
        await store.store_server_keys([row(100)])
        await store.store_server_keys([row(50, source="stale notary")])  # older: ignored
        assert await store.get_server_keys("s.test") == [row(100)]
        await store.store_server_keys([row(200, expired_ts=150)])  # newer: now an old key
        await store.store_server_keys([])
        assert await store.get_server_keys("s.test") == [row(200, expired_ts=150)]
        other = attrs.evolve(row(1), server_name="t.test", key_id="ed25519:z")
        await store.store_server_keys([other])
        assert await store.get_server_keys("t.test") == [other]
        assert len(await store.get_server_keys("s.test")) == 1


# The rotation command, as a real process.


async def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(60):
        return await trio.run_process(
            [sys.executable, "-m", "trioserver", *map(str, args)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
        )


async def test_rotate_signing_key_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = await run_cli(
        "generate-config", "--data-dir", data, "--server-name", "r.test", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    before = load_own_keys("r.test", data / "signing.key")
    config = data / "trioserver.toml"
    done = await run_cli("rotate-signing-key", "--config", config, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{before.key_id} is kept" in done.stdout.decode()
    after = load_own_keys("r.test", data / "signing.key")
    assert after.key_id != before.key_id
    assert set(after.old_keys) == {before.key_id}
    published = after.server_keys(0)
    assert published["old_verify_keys"][before.key_id]["key"] == encode_verify_key_base64(
        before.verify_key
    )
    (data / "signing.key").unlink()
    done = await run_cli("rotate-signing-key", "--config", config, cwd=tmp_path)
    assert done.returncode == 1
    assert b"error: signing key file" in done.stderr
