"""Server signing keys (issue 15): key responses and their validity, this server's keys and
their rotation, the `KeyRing` (fetching, caching, notaries, sharing and remembering fetches),
signature checks of JSON and events, X-Matrix request verification, and notary answers.

Remote servers are fakes answering from `OwnKeys` of their own; a notary is a real `KeyRing`
behind a fake transport; time is a settable clock."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from signedjson.key import encode_verify_key_base64, generate_signing_key, get_verify_key
from signedjson.sign import sign_json, verify_signed_json
from signedjson.types import SigningKey

import trio
import trio.testing

from trioserver.api.federation.keys import get_query, get_server_keys, post_query
from trioserver.api.http import Request
from trioserver.errors import ConfigError, MatrixError
from trioserver.events import RoomVersion, RoomVersions, add_hashes_and_signatures
from trioserver.federation.inbound_auth import RequestAuthenticator
from trioserver.federation.keyring import KeyRing, Notary
from trioserver.federation.keys import (
    MAX_KEY_VALIDITY_MS,
    KeyLookupError,
    KeyResponseError,
    ServerKey,
    SignatureError,
    parse_key_response,
)
from trioserver.federation.own_keys import (
    PUBLISHED_VALIDITY_MS,
    OldKey,
    OwnKeys,
    load_own_keys,
    old_keys_path,
    rotate_signing_key,
)
from trioserver.federation.request_auth import authorization_header
from trioserver.keys import generate_key_file, key_id
from trioserver.stores.server_keys import StoredServerKey

from tests.unit.events.helpers import ALICE, Room

OWN = "own.test"
REMOTE = "hs.test"  # the servers of tests.unit.events.helpers' users
NOTARY = "notary.test"
T0 = 1_700_000_000_000  # ms
DAY = 24 * 3600 * 1000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        return self.ms / 1000

    def advance(self, ms: int) -> None:
        self.ms += ms


class FakeStore:
    """`KeyStore` in memory, with the table's upsert rule."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], StoredServerKey] = {}
        self.reads = 0

    async def get_server_keys(self, server_name: str) -> list[StoredServerKey]:
        await trio.lowlevel.checkpoint()
        self.reads += 1
        return [row for (name, _), row in sorted(self.rows.items()) if name == server_name]

    async def store_server_keys(self, keys: Sequence[StoredServerKey]) -> None:
        await trio.lowlevel.checkpoint()
        for key in keys:
            known = self.rows.get((key.server_name, key.key_id))
            if known is None or key.valid_until_ts >= known.valid_until_ts:
                self.rows[(key.server_name, key.key_id)] = key


class Network:
    """The fake transport: servers publish their `OwnKeys`; notaries are `KeyRing`s."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.servers: dict[str, OwnKeys] = {}
        self.notaries: dict[str, KeyRing] = {}
        # What each notary's own transport saw.
        self.notary_networks: dict[str, Network] = {}
        self.down: set[str] = set()
        self.calls: list[tuple[str, str, Any]] = []
        self.gate: trio.Event | None = None
        # Rewrites what a server or notary answers (a broken or lying one).
        self.tamper: dict[str, Callable[[Any], Any]] = {}

    async def get_json(
        self,
        destination: str,
        path: str,
        *,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- the transport's interface
    ) -> Any:
        assert path == "/_matrix/key/v2/server"
        assert not signed
        self.calls.append(("GET", destination, None))
        await self._wait(destination)
        answer = self.servers[destination].server_keys(self.clock.ms)
        return self.tamper.get(destination, lambda body: body)(answer)

    async def post_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        signed: bool = True,
        timeout: float | None = None,  # noqa: ASYNC109 -- the transport's interface
    ) -> Any:
        assert path == "/_matrix/key/v2/query"
        assert not signed
        self.calls.append(("POST", destination, content))
        await self._wait(destination)
        criteria = {
            server: {
                key: c.get("minimum_valid_until_ts", self.clock.ms) for key, c in keys.items()
            }
            for server, keys in content["server_keys"].items()
        }
        answer = {"server_keys": await self.notaries[destination].notary_query(criteria)}
        return self.tamper.get(destination, lambda body: body)(answer)

    async def _wait(self, destination: str) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if destination in self.down:
            raise ConnectionRefusedError(f"{destination} is down")

    def count(self, method: str, destination: str) -> int:
        return sum(1 for call in self.calls if call[:2] == (method, destination))


def own_keys(server_name: str, version: str = "k1", old: Mapping[str, int] = {}) -> OwnKeys:
    """Keys of a server; `old`: old key versions and when each expired."""
    old_keys = {}
    for old_version, expired_ts in old.items():
        old_id = f"ed25519:{old_version}"
        verify = get_verify_key(generate_signing_key(old_version))
        old_keys[old_id] = OldKey(old_id, verify, expired_ts)
    return OwnKeys(server_name, generate_signing_key(version), old_keys)


@attrs.define
class World:
    clock: Clock
    network: Network
    store: FakeStore
    ring: KeyRing
    remote: OwnKeys

    def new_ring(self, **kwargs: Any) -> KeyRing:
        return KeyRing(own_keys(OWN), self.store, self.network, clock=self.clock, **kwargs)


def make_world(*, notaries: Sequence[Notary] = (), remote_old: Mapping[str, int] = {}) -> World:
    clock = Clock()
    network = Network(clock)
    remote = own_keys(REMOTE, old=remote_old)
    network.servers[REMOTE] = remote
    store = FakeStore()
    ring = KeyRing(own_keys(OWN), store, network, notaries=notaries, clock=clock)
    return World(clock, network, store, ring, remote)


def add_notary(world: World, name: str = NOTARY) -> OwnKeys:
    keys = own_keys(name, "n1")
    world.network.servers[name] = keys
    notary_network = Network(world.clock)
    notary_network.servers = world.network.servers  # the notary reaches every server
    world.network.notary_networks[name] = notary_network
    world.network.notaries[name] = KeyRing(keys, FakeStore(), notary_network, clock=world.clock)
    return keys


# Key responses.


def test_a_key_response_is_read_with_its_current_and_old_keys() -> None:
    keys = own_keys(REMOTE, old={"old1": T0 - 5})
    response = parse_key_response(keys.server_keys(T0), expected_server=REMOTE, fetched_ts=T0)
    by_id = {key.key_id: key for key in response.keys}
    assert set(by_id) == {"ed25519:k1", "ed25519:old1"}
    assert by_id["ed25519:k1"].valid_until_ts == T0 + PUBLISHED_VALIDITY_MS
    assert by_id["ed25519:k1"].expired_ts is None
    assert by_id["ed25519:old1"].expired_ts == T0 - 5


def test_valid_until_is_capped_at_seven_days_after_the_fetch() -> None:
    keys = own_keys(REMOTE)
    body = keys.sign({**keys.server_keys(T0), "valid_until_ts": T0 + 365 * DAY})
    response = parse_key_response(body, expected_server=REMOTE, fetched_ts=T0)
    assert response.keys[0].valid_until_ts == T0 + MAX_KEY_VALIDITY_MS


def _resigned(keys: OwnKeys, **changes: Any) -> dict[str, Any]:
    body = keys.server_keys(T0)
    body.pop("signatures")
    body.update(changes)
    return keys.sign(body)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda k: [], "not a JSON object"),
        (lambda k: {**k.server_keys(T0), "server_name": "other.test"}, "not hs.test"),
        (lambda k: _resigned(k, server_name="bad name"), "no valid server_name"),
        (lambda k: _resigned(k, valid_until_ts="soon"), "no valid_until_ts"),
        (lambda k: _resigned(k, valid_until_ts=1.5), "not canonical JSON"),
        (lambda k: _resigned(k, verify_keys=[]), "verify_keys of hs.test is not an object"),
        (lambda k: _resigned(k, verify_keys={"ed25519:k1": {"key": "!!"}}), "not a valid"),
        (lambda k: _resigned(k, old_verify_keys={"ed25519:o": {"key": "x"}}), "no expired_ts"),
        (lambda k: {**k.server_keys(T0), "signatures": {}}, "not signed by a key it lists"),
        (lambda k: {**k.server_keys(T0), "valid_until_ts": T0 + 2 * DAY}, "Unable to verify"),
    ],
)
def test_a_bad_key_response_is_refused(make: Callable[[OwnKeys], Any], message: str) -> None:
    with pytest.raises(KeyResponseError, match=message):
        parse_key_response(make(own_keys(REMOTE)), expected_server=REMOTE, fetched_ts=T0)


def test_a_response_signed_only_by_a_key_it_does_not_list_is_refused() -> None:
    keys = own_keys(REMOTE)
    other = generate_signing_key("other")
    body = keys.server_keys(T0)
    body.pop("signatures")
    with pytest.raises(KeyResponseError, match="not signed by a key it lists"):
        parse_key_response(sign_json(body, REMOTE, other), expected_server=REMOTE, fetched_ts=T0)


def test_key_validity() -> None:
    verify = get_verify_key(generate_signing_key("a"))
    current = ServerKey(REMOTE, "ed25519:a", verify, valid_until_ts=100)
    assert current.valid_at(100)
    assert current.valid_at(0)
    assert not current.valid_at(101)
    old = ServerKey(REMOTE, "ed25519:b", verify, valid_until_ts=1000, expired_ts=50)
    assert old.valid_at(49)
    assert not old.valid_at(50)  # expired at 50
    assert not old.valid_at(10, allow_old=False)  # old keys never verify requests


# This server's keys.


def test_own_keys_are_published_signed_for_a_day() -> None:
    keys = own_keys(OWN, old={"old1": T0 - DAY})
    body = keys.server_keys(T0)
    assert body["server_name"] == OWN
    assert body["valid_until_ts"] == T0 + DAY
    assert body["verify_keys"] == {keys.key_id: {"key": encode_verify_key_base64(keys.verify_key)}}
    assert body["old_verify_keys"]["ed25519:old1"]["expired_ts"] == T0 - DAY
    verify_signed_json(body, OWN, keys.verify_key)
    assert list(body["signatures"][OWN]) == [keys.key_id]


def test_rotation_keeps_the_old_public_key_in_the_sidecar(tmp_path: Path) -> None:
    key_path = tmp_path / "signing.key"
    first = generate_key_file(key_path)
    rotation = rotate_signing_key(key_path, now_ms=T0)
    assert rotation.old_key_id == key_id(first)
    loaded = load_own_keys(OWN, key_path)
    assert loaded.key_id == rotation.new_key_id != key_id(first)
    old = loaded.old_keys[key_id(first)]
    assert old.expired_ts == T0
    assert encode_verify_key_base64(old.verify_key) == encode_verify_key_base64(
        get_verify_key(first)
    )
    assert (key_path.stat().st_mode & 0o777) == 0o600
    # A second rotation keeps both old keys; the published answer lists them.
    second = rotate_signing_key(key_path, now_ms=T0 + 10)
    loaded = load_own_keys(OWN, key_path)
    assert set(loaded.old_keys) == {key_id(first), second.old_key_id}
    assert set(loaded.server_keys(T0)["old_verify_keys"]) == set(loaded.old_keys)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "signing.key",
        "signing.key.old_keys.json",
    ]


def test_a_rotation_cut_short_leaves_the_current_key_current(tmp_path: Path) -> None:
    key_path = tmp_path / "signing.key"
    current = generate_key_file(key_path)
    # The sidecar was written, the key file not replaced.
    old_keys_path(key_path).write_text(
        orjson.dumps(
            {key_id(current): {"key": encode_verify_key_base64(get_verify_key(current)),
                               "expired_ts": T0}}
        ).decode()
    )  # fmt: skip
    loaded = load_own_keys(OWN, key_path)
    assert loaded.key_id == key_id(current)
    assert loaded.old_keys == {}


@pytest.mark.parametrize("text", ["[]", "{", '{"ed25519:x": {"key": "AAAA"}}', '{"bad": {}}'])
def test_a_malformed_sidecar_is_a_config_error(tmp_path: Path, text: str) -> None:
    key_path = tmp_path / "signing.key"
    generate_key_file(key_path)
    old_keys_path(key_path).write_text(text)
    with pytest.raises(ConfigError, match="old signing keys file"):
        load_own_keys(OWN, key_path)


async def test_own_keys_verify_without_fetching() -> None:
    world = make_world()
    own = own_keys(OWN, old={"old1": T0})
    ring = KeyRing(own, world.store, world.network, clock=world.clock)
    assert await ring.verify_key(OWN, own.key_id, at_ts=T0 + 100 * DAY) is not None
    await ring.verify_key(OWN, "ed25519:old1", at_ts=T0 - 1)
    with pytest.raises(KeyLookupError):
        await ring.verify_key(OWN, "ed25519:old1", at_ts=T0 - 1, allow_old=False)
    with pytest.raises(KeyLookupError):
        await ring.verify_key(OWN, "ed25519:nope", at_ts=T0)
    assert world.network.calls == []


# Fetching and caching.


async def test_a_key_is_fetched_once_then_cached_and_stored() -> None:
    world = make_world()
    key = await world.ring.verify_key(REMOTE, world.remote.key_id, at_ts=T0)
    assert encode_verify_key_base64(key) == encode_verify_key_base64(world.remote.verify_key)
    await world.ring.verify_key(REMOTE, world.remote.key_id, at_ts=T0 + 1000)
    assert world.network.count("GET", REMOTE) == 1
    (row,) = world.store.rows.values()
    assert (row.server_name, row.key_id, row.from_server) == (REMOTE, world.remote.key_id, REMOTE)
    assert (row.valid_until_ts, row.fetched_ts, row.expired_ts) == (T0 + DAY, T0, None)
    verify_signed_json(orjson.loads(row.key_json), REMOTE, world.remote.verify_key)
    # Another process (a new key ring on the same database) finds it without fetching.
    await world.new_ring().verify_key(REMOTE, world.remote.key_id, at_ts=T0)
    assert world.network.count("GET", REMOTE) == 1


async def test_the_memory_cache_is_bounded_and_backed_by_the_store() -> None:
    world = make_world()
    world.network.servers["other.test"] = own_keys("other.test")
    ring = world.new_ring(max_cached_servers=1)
    await ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)
    await ring.verify_key("other.test", "ed25519:k1", at_ts=T0)
    reads = world.store.reads
    await ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)  # evicted: read back, not fetched
    assert world.store.reads == reads + 1
    assert world.network.count("GET", REMOTE) == 1


async def test_a_key_past_its_validity_is_fetched_again() -> None:
    world = make_world()
    await world.ring.verify_key(REMOTE, world.remote.key_id, at_ts=T0)
    world.clock.advance(DAY + 1)
    await world.ring.verify_key(REMOTE, world.remote.key_id, at_ts=world.clock.ms)
    assert world.network.count("GET", REMOTE) == 2
    # An event dated before the first validity still verifies with the key.
    await world.ring.verify_key(REMOTE, world.remote.key_id, at_ts=T0)
    assert world.network.count("GET", REMOTE) == 2


async def test_old_keys_verify_events_before_they_expired_and_never_requests() -> None:
    world = make_world(remote_old={"old1": T0 - 10})
    await world.ring.verify_key(REMOTE, "ed25519:old1", at_ts=T0 - 11)
    with pytest.raises(KeyLookupError, match="expired at"):
        await world.ring.verify_key(REMOTE, "ed25519:old1", at_ts=T0 - 10)
    with pytest.raises(KeyLookupError, match="not valid for requests"):
        await world.ring.verify_key(REMOTE, "ed25519:old1", at_ts=T0 - 11, allow_old=False)
    assert world.network.count("GET", REMOTE) == 1  # the server said it expired: not asked again


async def test_a_rotated_key_becomes_old() -> None:
    world = make_world()
    old_id = world.remote.key_id
    await world.ring.verify_key(REMOTE, old_id, at_ts=T0)
    # The remote rotates: its new answer lists the key as old, expired now.
    world.clock.advance(DAY + 1)
    rotated = OwnKeys(
        REMOTE,
        generate_signing_key("k2"),
        {old_id: OldKey(old_id, world.remote.verify_key, world.clock.ms)},
    )
    world.network.servers[REMOTE] = rotated
    await world.ring.verify_key(REMOTE, "ed25519:k2", at_ts=world.clock.ms)
    await world.ring.verify_key(REMOTE, old_id, at_ts=world.clock.ms - 1)
    with pytest.raises(KeyLookupError):
        await world.ring.verify_key(REMOTE, old_id, at_ts=world.clock.ms, allow_old=False)


async def test_an_unreachable_server_is_remembered_for_a_while() -> None:
    world = make_world()
    world.network.down.add(REMOTE)
    with pytest.raises(KeyLookupError, match=r"hs.test is down"):
        await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)
    with pytest.raises(KeyLookupError, match=r"hs.test is down"):
        await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)
    assert world.network.count("GET", REMOTE) == 1
    world.network.down.clear()
    world.clock.advance(60_000)
    await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)
    assert world.network.count("GET", REMOTE) == 2


async def test_unknown_key_ids_do_not_make_the_server_be_asked_again_and_again() -> None:
    world = make_world()
    for n in range(5):
        with pytest.raises(KeyLookupError, match="no key ed25519:x"):
            await world.ring.verify_key(REMOTE, f"ed25519:x{n}", at_ts=T0)
    assert world.network.count("GET", REMOTE) == 1
    world.clock.advance(10_000)
    with pytest.raises(KeyLookupError):
        await world.ring.verify_key(REMOTE, "ed25519:x9", at_ts=T0)
    assert world.network.count("GET", REMOTE) == 2


@pytest.mark.parametrize(
    "failure",
    [
        lambda body: b"not json",
        lambda body: {**body, "server_name": "evil.test"},
        lambda body: {**body, "verify_keys": {}},
        lambda body: (_ for _ in ()).throw(RuntimeError("transport bug")),
    ],
)
async def test_any_failure_of_a_source_is_a_key_lookup_error(
    failure: Callable[[Any], Any],
) -> None:
    world = make_world()
    world.network.tamper[REMOTE] = failure
    with pytest.raises(KeyLookupError, match=r"hs.test"):
        await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)


async def test_a_source_that_does_not_answer_in_time_fails(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = make_world()
    world.network.gate = trio.Event()  # never set
    with pytest.raises(KeyLookupError, match="timed out"):
        await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)
    assert trio.current_time() == pytest.approx(30.0)


async def test_concurrent_lookups_share_one_fetch() -> None:
    world = make_world()
    world.network.gate = trio.Event()
    results: list[Any] = []

    async def lookup() -> None:
        results.append(await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0))

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(lookup)
        await trio.testing.wait_all_tasks_blocked()
        world.network.gate.set()
    assert len(results) == 5
    assert world.network.count("GET", REMOTE) == 1


async def test_a_cancelled_leader_does_not_fail_the_lookups_waiting_for_it() -> None:
    world = make_world()
    world.network.gate = trio.Event()
    results: list[Any] = []
    leader = trio.CancelScope()

    async def lead() -> None:
        with leader:
            await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)

    async def wait() -> None:
        results.append(await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lead)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        leader.cancel()
        await trio.testing.wait_all_tasks_blocked()
        world.network.gate.set()
    assert len(results) == 1
    assert world.network.count("GET", REMOTE) == 2


# Notaries.


async def test_a_notary_answers_when_the_server_does_not() -> None:
    world = make_world(notaries=[Notary(NOTARY)])
    notary = add_notary(world)
    world.network.down.add(REMOTE)  # for this server; the notary still reaches it
    await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)
    (query,) = [call[2] for call in world.network.calls if call[0] == "POST"]
    assert query == {"server_keys": {REMOTE: {"ed25519:k1": {"minimum_valid_until_ts": T0}}}}
    row = world.store.rows[(REMOTE, "ed25519:k1")]
    assert row.from_server == NOTARY
    stored = orjson.loads(row.key_json)
    verify_signed_json(stored, REMOTE, world.remote.verify_key)
    verify_signed_json(stored, NOTARY, notary.verify_key)
    # The notary's own key was fetched from it directly.
    assert world.network.count("GET", NOTARY) == 1


async def test_pinned_notary_keys_are_not_fetched() -> None:
    world = make_world()
    notary = add_notary(world)
    ring = world.new_ring(notaries=[Notary(NOTARY, {notary.key_id: notary.verify_key})])
    world.network.down.add(REMOTE)  # for this server; the notary still reaches it
    await ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)
    assert world.network.count("GET", NOTARY) == 0
    assert world.network.count("POST", NOTARY) == 1


def _strip_signatures_of(server_name: str) -> Callable[[Any], Any]:
    def strip(body: Any) -> Any:
        for entry in body["server_keys"]:
            entry["signatures"].pop(server_name, None)
        return body

    return strip


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (_strip_signatures_of(NOTARY), "not signed by notary.test"),
        (_strip_signatures_of(REMOTE), "not signed by a key it lists"),
        (lambda body: {"server_keys": {}}, "no server_keys list"),
        (lambda body: {"server_keys": []}, "no keys of hs.test"),
    ],
)
async def test_a_notary_answer_must_be_signed_by_the_notary_and_the_server(
    tamper: Callable[[Any], Any], message: str
) -> None:
    world = make_world(notaries=[Notary(NOTARY)])
    add_notary(world)
    world.network.tamper[NOTARY] = tamper
    world.network.down.add(REMOTE)
    with pytest.raises(KeyLookupError, match=message):
        await world.ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)
    assert world.store.rows.get((REMOTE, "ed25519:k1")) is None


async def test_a_notary_signing_with_another_key_than_pinned_is_refused() -> None:
    world = make_world()
    add_notary(world)
    wrong = get_verify_key(generate_signing_key("n1"))
    ring = world.new_ring(notaries=[Notary(NOTARY, {"ed25519:n1": wrong})])
    world.network.down.add(REMOTE)
    with pytest.raises(KeyLookupError, match=r"notary.test"):
        await ring.verify_key(REMOTE, "ed25519:k1", at_ts=T0)


async def test_the_notary_answers_its_own_keys_and_refetches_stale_ones() -> None:
    world = make_world()
    notary_keys = add_notary(world)
    notary = world.network.notaries[NOTARY]
    network = world.network.notary_networks[NOTARY]
    # Its own name: its own keys.
    (own,) = await notary.notary_query({NOTARY: {}})
    assert own["verify_keys"] == notary_keys.server_keys(T0)["verify_keys"]
    # Another server: fetched, then answered from the cache, signed by both.
    (first,) = await notary.notary_query({REMOTE: {"ed25519:k1": T0}})
    verify_signed_json(first, REMOTE, world.remote.verify_key)
    verify_signed_json(first, NOTARY, notary_keys.verify_key)
    await notary.notary_query({REMOTE: {}})
    assert network.count("GET", REMOTE) == 1
    # Asked for a validity the cached answer does not have: fetched again.
    world.clock.advance(20_000)
    (second,) = await notary.notary_query({REMOTE: {"ed25519:k1": T0 + 2 * DAY}})
    assert network.count("GET", REMOTE) == 2
    assert second["valid_until_ts"] == T0 + 20_000 + DAY
    # The server goes away: the last answer is still handed out.
    network.down.add(REMOTE)
    world.clock.advance(3 * DAY)
    (last,) = await notary.notary_query({REMOTE: {}})
    assert last["valid_until_ts"] == second["valid_until_ts"]
    assert await notary.notary_query({"unknown.test": {}}) == []


# Signatures of JSON and events.


async def test_verify_json() -> None:
    world = make_world()
    signed = sign_json({"a": 1}, REMOTE, _remote_signing_key(world))
    await world.ring.verify_json(REMOTE, signed, at_ts=T0)
    with pytest.raises(SignatureError):
        await world.ring.verify_json(REMOTE, {**signed, "a": 2}, at_ts=T0)
    with pytest.raises(SignatureError, match=r"not signed by hs.test"):
        await world.ring.verify_json(REMOTE, {"a": 1}, at_ts=T0)
    stranger = sign_json({"a": 1}, REMOTE, generate_signing_key("zz"))
    with pytest.raises(KeyLookupError, match="ed25519:zz"):
        await world.ring.verify_json(REMOTE, stranger, at_ts=T0)


def _remote_signing_key(world: World) -> SigningKey:
    key: SigningKey = world.remote.signing_key
    return key


def _signed_pdu(version: RoomVersion, key: SigningKey, ts: int) -> dict[str, Any]:
    pdu = Room(version).event("m.room.message", ALICE, {"body": "hi"}).get_pdu_json()
    pdu["origin_server_ts"] = ts
    pdu.pop("signatures")
    add_hashes_and_signatures(version, pdu, REMOTE, key)
    return pdu


async def test_verify_event_checks_the_senders_signature_at_the_events_time() -> None:
    world = make_world()
    key = _remote_signing_key(world)
    await world.ring.verify_event(RoomVersions.V10, _signed_pdu(RoomVersions.V10, key, T0))
    tampered = _signed_pdu(RoomVersions.V10, key, T0)
    tampered["depth"] += 1
    with pytest.raises(SignatureError, match=r"bad signature of hs.test"):
        await world.ring.verify_event(RoomVersions.V10, tampered)
    unsigned = _signed_pdu(RoomVersions.V10, key, T0)
    unsigned["signatures"] = {}
    with pytest.raises(SignatureError, match=r"not signed by hs.test"):
        await world.ring.verify_event(RoomVersions.V10, unsigned)
    with pytest.raises(SignatureError, match="not a valid event"):
        await world.ring.verify_event(RoomVersions.V10, {"type": "x"})


async def test_key_validity_is_enforced_from_room_version_5() -> None:
    world = make_world()
    key = _remote_signing_key(world)
    late = T0 + 2 * DAY  # after the published valid_until_ts, which the server keeps
    with pytest.raises(KeyLookupError, match="valid at"):
        await world.ring.verify_event(RoomVersions.V5, _signed_pdu(RoomVersions.V5, key, late))
    await world.ring.verify_event(RoomVersions.V4, _signed_pdu(RoomVersions.V4, key, late))


# X-Matrix requests.


def _request(
    header: str | None,
    *,
    method: str = "PUT",
    path: str = "/_matrix/federation/v1/send/1",
    query: str = "",
    body: bytes = b'{"pdus": []}',
) -> Request:
    headers = {} if header is None else {"authorization": header}
    return Request(
        method=method,
        path=path,
        query={},
        headers=headers,
        body=body,
        client_ip=None,
        scheme="https",
        raw_query=query,
    )


def _header(world: World, *, uri: str = "/_matrix/federation/v1/send/1", **kwargs: Any) -> str:
    defaults: dict[str, Any] = {"method": "PUT", "content": {"pdus": []}, "destination": OWN}
    return authorization_header(
        uri=uri,
        origin=REMOTE,
        signing_key=_remote_signing_key(world),
        **{**defaults, **kwargs},
    )


async def test_a_signed_request_is_authenticated() -> None:
    world = make_world()
    authenticate = RequestAuthenticator(world.ring, OWN, clock=world.clock)
    assert await authenticate(_request(_header(world))) == REMOTE
    uri = "/_matrix/federation/v1/query/profile?user_id=%40a%3Ahs.test&field=displayname"
    header = _header(world, method="GET", uri=uri, content=None)
    request = _request(
        header,
        method="GET",
        path="/_matrix/federation/v1/query/profile",
        query="user_id=%40a%3Ahs.test&field=displayname",
        body=b"",
    )
    assert await authenticate(request) == REMOTE


@pytest.mark.parametrize(
    ("change", "status", "errcode", "message"),
    [
        ({"header": None}, 401, "M_UNAUTHORIZED", "Missing Authorization"),
        ({"header": "Bearer abc"}, 401, "M_UNAUTHORIZED", "not X-Matrix"),
        ({"destination": "other.test"}, 401, "M_UNAUTHORIZED", "not this server"),
        ({"path": "/_matrix/federation/v1/send/2"}, 401, "M_UNAUTHORIZED", "Invalid request"),
        ({"query": "x=1"}, 401, "M_UNAUTHORIZED", "Invalid request signature"),
        ({"body": b'{"pdus": [1]}'}, 401, "M_UNAUTHORIZED", "Invalid request signature"),
        ({"body": b"{nope"}, 400, "M_NOT_JSON", "not JSON"),
        ({"key": "ed25519:gone"}, 401, "M_UNAUTHORIZED", "Failed to find a key"),
        ({"whitelist": ("friend.test",)}, 403, "M_FORBIDDEN", "not allowed"),
    ],
)
async def test_a_request_that_does_not_verify_is_refused(
    change: dict[str, Any], status: int, errcode: str, message: str
) -> None:
    world = make_world()
    header = _header(world, destination=change.get("destination", OWN))
    if "key" in change:
        header = header.replace('key="ed25519:k1"', f'key="{change["key"]}"')
    header = change.get("header", header)
    authenticate = RequestAuthenticator(
        world.ring, OWN, change.get("whitelist"), clock=world.clock
    )
    request = _request(
        header,
        path=change.get("path", "/_matrix/federation/v1/send/1"),
        query=change.get("query", ""),
        body=change.get("body", b'{"pdus": []}'),
    )
    with pytest.raises(MatrixError, match=message) as caught:
        await authenticate(request)
    assert (caught.value.status, caught.value.errcode) == (status, errcode)
    if status == 403:
        assert world.network.calls == []  # a server not allowed is not contacted


async def test_a_request_signed_with_an_old_key_is_refused() -> None:
    world = make_world(remote_old={"old1": T0 + DAY})
    old_key = generate_signing_key("old1")
    world.remote = attrs.evolve(
        world.remote,
        old_keys={"ed25519:old1": OldKey("ed25519:old1", get_verify_key(old_key), T0 + DAY)},
    )
    world.network.servers[REMOTE] = world.remote
    header = authorization_header(
        method="PUT",
        uri="/_matrix/federation/v1/send/1",
        origin=REMOTE,
        destination=OWN,
        signing_key=old_key,
        content={"pdus": []},
    )
    authenticate = RequestAuthenticator(world.ring, OWN, clock=world.clock)
    with pytest.raises(MatrixError, match="old key"):
        await authenticate(_request(header))


# The key routes.


@attrs.frozen
class FederationPart:
    keyring: KeyRing


@attrs.frozen
class Deps:
    federation: FederationPart | None


def _route_request(
    path_params: dict[str, str] | None = None, body: bytes = b"", query: str = ""
) -> Request:
    return Request(
        method="GET",
        path="/",
        query={k: [v] for k, v in (p.split("=") for p in query.split("&") if p)},
        headers={},
        body=body,
        client_ip=None,
        scheme="https",
        path_params=path_params or {},
    )


async def test_the_key_routes_answer_404_when_federation_is_disabled() -> None:
    with pytest.raises(MatrixError, match="Federation is disabled") as caught:
        await get_server_keys(Deps(None), _route_request())
    assert caught.value.status == 404


async def test_the_server_keys_route_publishes_own_keys() -> None:
    world = make_world()
    body = await get_server_keys(Deps(FederationPart(world.ring)), _route_request())
    assert body["server_name"] == OWN
    assert body["valid_until_ts"] == T0 + DAY


async def test_the_query_routes_answer_signed_by_this_server() -> None:
    world = make_world()
    deps = Deps(FederationPart(world.ring))
    body = orjson.dumps({"server_keys": {REMOTE: {"ed25519:k1": {}}}})
    answer = await post_query(deps, _route_request(body=body))
    (entry,) = answer["server_keys"]
    assert set(entry["signatures"]) == {REMOTE, OWN}
    answer = await get_query(
        deps, _route_request({"server": REMOTE}, query=f"minimum_valid_until_ts={T0}")
    )
    assert len(answer["server_keys"]) == 1
    assert await post_query(deps, _route_request(body=b'{"server_keys": {}}')) == {
        "server_keys": []
    }


@pytest.mark.parametrize(
    ("body", "errcode"),
    [
        (b"not json", "M_NOT_JSON"),
        (b"[]", "M_BAD_JSON"),
        (b"{}", "M_BAD_JSON"),
        (b'{"server_keys": []}', "M_BAD_JSON"),
        (b'{"server_keys": {"bad name": {}}}', "M_INVALID_PARAM"),
        (b'{"server_keys": {"hs.test": []}}', "M_BAD_JSON"),
        (b'{"server_keys": {"hs.test": {"ed25519:k1": 5}}}', "M_BAD_JSON"),
        (
            b'{"server_keys": {"hs.test": {"ed25519:k1": {"minimum_valid_until_ts": "x"}}}}',
            "M_INVALID_PARAM",
        ),
    ],
)
async def test_a_bad_query_is_a_400(body: bytes, errcode: str) -> None:
    world = make_world()
    with pytest.raises(MatrixError) as caught:
        await post_query(Deps(FederationPart(world.ring)), _route_request(body=body))
    assert (caught.value.status, caught.value.errcode) == (400, errcode)


@pytest.mark.parametrize(
    ("server", "query"), [("bad_name", ""), (REMOTE, "minimum_valid_until_ts=soon")]
)
async def test_a_bad_get_query_is_a_400(server: str, query: str) -> None:
    world = make_world()
    with pytest.raises(MatrixError) as caught:
        await get_query(
            Deps(FederationPart(world.ring)), _route_request({"server": server}, query=query)
        )
    assert (caught.value.status, caught.value.errcode) == (400, "M_INVALID_PARAM")
