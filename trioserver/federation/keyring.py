"""`KeyRing`: other servers' verify keys, fetched, cached and used to check signatures.

Theory of operation
-------------------
A key is looked up by (server, key id) for a time (`ServerKey.valid_at`): in memory (an LRU
of servers), then in the database (another process may have fetched it), then from the
network: the server's own ``GET /_matrix/key/v2/server``, then each configured notary's
``POST /_matrix/key/v2/query`` (spec "Querying Keys Through Another Server"), until one
answer holds the key valid at that time. Every answer is checked before it is kept: signed
by the server itself with a key it lists (`parse_key_response`), and a notary's answer also
by the notary, with a key pinned for it or fetched from the notary itself (directly only).

Lookups of one server share one fetch (a leader fetches, the others wait for it; when the
leader is cancelled one of them leads again). A server that could not be reached is not
asked again for `retry_after_failure_s`, one that answered without the key for
`min_refetch_s`: a dead server, or a stream of requests naming unknown keys, is not
hammered. Failing lookups raise `KeyLookupError`, never anything else.

Boundary: the fetch object (`trioserver.federation.transport.FederationClient`) talks to
servers this one does not control; any `Exception` it raises (cancellation is not one) is
one source failing, logged and moved past.

The notary endpoints answer from the same cache (`notary_query`), fetching from the server
itself what is missing or not valid long enough, and add this server's signature.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import orjson
from signedjson.key import encode_verify_key_base64
from signedjson.types import VerifyKey

import trio

from trioserver.events.errors import EventSignatureError, InvalidEventError
from trioserver.events.hashing import canonical_json
from trioserver.events.model import Event
from trioserver.events.signing import required_signature_servers, verify_event_signature
from trioserver.federation.keys import (
    KeyLookupError,
    KeyResponse,
    KeyResponseError,
    ServerKey,
    SignatureError,
    check_signature,
    decode_verify_key,
    parse_key_response,
    signature_key_ids,
)
from trioserver.stores.server_keys import StoredServerKey

if TYPE_CHECKING:
    from trioserver.events.room_versions import RoomVersion
    from trioserver.federation.own_keys import OwnKeys

logger = logging.getLogger(__name__)

KEY_SERVER_PATH = "/_matrix/key/v2/server"
KEY_QUERY_PATH = "/_matrix/key/v2/query"
# Servers the notary endpoint fetches for at once (one request may name many).
_NOTARY_FETCHES = 8


class KeyFetch(Protocol):
    """What the key ring uses of the federation client (`transport.FederationClient`)."""

    async def get_json(
        self,
        destination: str,
        path: str,
        *,
        signed: bool = ...,
        timeout: float | None = ...,  # noqa: ASYNC109 -- the transport's interface
    ) -> Any:
        """GET `path` of `destination`; the parsed JSON body."""
        ...

    async def post_json(
        self,
        destination: str,
        path: str,
        content: Any,
        *,
        signed: bool = ...,
        timeout: float | None = ...,  # noqa: ASYNC109 -- the transport's interface
    ) -> Any:
        """POST `content` to `path` of `destination`; the parsed JSON body."""
        ...


class KeyStore(Protocol):
    """Where fetched keys are kept (`trioserver.stores.server_keys.ServerKeyStore`)."""

    async def get_server_keys(self, server_name: str) -> list[StoredServerKey]:
        """Every key stored for `server_name`."""
        ...

    async def store_server_keys(self, keys: Sequence[StoredServerKey]) -> None:
        """Store keys; a stored key is replaced only by one valid at least as long."""
        ...


@attrs.frozen
class Notary:
    """A trusted key server; `verify_keys` pins its keys (None: fetched from it directly)."""

    server_name: str
    verify_keys: Mapping[str, VerifyKey] | None = None


@attrs.define
class _Flight:
    """A fetch of one server's keys in progress, shared by the lookups waiting for it."""

    done: trio.Event = attrs.field(factory=trio.Event)
    finished: bool = False


@attrs.frozen
class _Attempt:
    retry_at_ms: int
    reason: str


class _SourceFailed(Exception):
    """One source (a server or a notary) gave no usable answer."""


class KeyRing:
    """Remote servers' verify keys (and this server's own, from `OwnKeys`).

    Args:
        fetch: the federation client (`KeyFetch`).
        notaries: trusted key servers, asked in order after the server itself.
        clock: wall-clock time in seconds.
    """

    def __init__(
        self,
        own_keys: OwnKeys,
        store: KeyStore,
        fetch: KeyFetch,
        *,
        notaries: Sequence[Notary] = (),
        clock: Callable[[], float] = time.time,
        timeout_s: float = 30.0,
        retry_after_failure_s: float = 60.0,
        min_refetch_s: float = 10.0,
        max_cached_servers: int = 10_000,
    ) -> None:
        self._own = own_keys
        self._store = store
        self._fetch_client = fetch
        self._notaries = tuple(notaries)
        self._clock = clock
        self._timeout_s = timeout_s
        self._retry_after_failure_ms = int(retry_after_failure_s * 1000)
        self._min_refetch_ms = int(min_refetch_s * 1000)
        self._max_cached = max_cached_servers
        self._cache: OrderedDict[str, dict[str, ServerKey]] = OrderedDict()
        self._attempts: OrderedDict[str, _Attempt] = OrderedDict()
        self._flights: dict[tuple[str, bool], _Flight] = {}

    @property
    def server_name(self) -> str:
        """This server's name."""
        return self._own.server_name

    def own_server_keys(self) -> dict[str, Any]:
        """This server's signed ``GET /_matrix/key/v2/server`` response, now."""
        return self._own.server_keys(self.now_ms())

    def now_ms(self) -> int:
        """The wall-clock time the key ring goes by, in ms."""
        return int(self._clock() * 1000)

    async def verify_key(
        self, server_name: str, key_id: str, *, at_ts: int, allow_old: bool = True
    ) -> VerifyKey:
        """The key `key_id` of `server_name`, valid for something dated `at_ts` (ms).

        Args:
            allow_old: whether a key of ``old_verify_keys`` will do (for events; a request
                must be signed with a current key).

        Raises:
            KeyLookupError: no such key valid then could be found (the message says why).

        Checkpoint: yes.
        """
        key = await self._find(server_name, key_id, at_ts, allow_old=allow_old, direct_only=False)
        return key.verify_key

    async def verify_json(
        self, server_name: str, signed_json: Mapping[str, Any], *, at_ts: int
    ) -> None:
        """Check that `server_name` signed `signed_json` with a key valid at `at_ts`.

        The first of its signatures whose key is found decides.

        Raises:
            SignatureError: not signed by `server_name`, or the signature does not verify.
            KeyLookupError: none of the keys it names could be found.

        Checkpoint: yes.
        """
        key_ids = signature_key_ids(signed_json, server_name)
        if not key_ids:
            raise SignatureError(f"not signed by {server_name}")
        key = await self._first_found(server_name, key_ids, at_ts)
        check_signature(signed_json, server_name, key.verify_key)

    async def verify_event(
        self, room_version: RoomVersion, pdu: Mapping[str, Any] | Event
    ) -> None:
        """Check every signature a received event needs (spec "Validating hashes and
        signatures on received events"; `required_signature_servers`).

        Keys are taken valid at the event's ``origin_server_ts`` in room versions with
        ``enforce_key_validity`` (v5+), at any time before that.

        Raises:
            SignatureError: a signature is missing or does not verify, or the PDU is not an
                event of the room version.
            KeyLookupError: a needed key could not be found.

        Checkpoint: yes.
        """
        if isinstance(pdu, Event):
            event = pdu
        else:
            try:
                event = Event.from_pdu(room_version, pdu)
            except InvalidEventError as exc:
                raise SignatureError(f"not a valid event: {exc}") from None
        pdu_json = event.get_pdu_json()
        at_ts = event.origin_server_ts if room_version.enforce_key_validity else 0
        for server_name in sorted(required_signature_servers(room_version, event)):
            key_ids = signature_key_ids(pdu_json, server_name)
            if not key_ids:
                raise SignatureError(f"event {event.event_id} is not signed by {server_name}")
            key = await self._first_found(server_name, key_ids, at_ts)
            try:
                verify_event_signature(room_version, pdu_json, server_name, key.verify_key)
            except EventSignatureError as exc:
                raise SignatureError(
                    f"event {event.event_id}: bad signature of {server_name}: {exc}"
                ) from None

    async def notary_query(
        self, servers: Mapping[str, Mapping[str, int]], *, default_min_ts: int | None = None
    ) -> list[dict[str, Any]]:
        """The key responses to hand out as a notary, each signed by this server too.

        Args:
            servers: server name -> {key id: ``minimum_valid_until_ts``}; an empty map asks
                for every key, valid at `default_min_ts` (default: now).

        Returns:
            The ``server_keys`` list: this server's own keys for its own name; for others
            the responses kept, fetched again from the server first when a key asked for is
            missing or not valid long enough (the last response is still returned when the
            server does not answer, as the spec asks of notaries).

        Checkpoint: yes.
        """
        min_ts = self.now_ms() if default_min_ts is None else default_min_ts
        answers: dict[str, list[dict[str, Any]]] = {}
        limiter = trio.CapacityLimiter(_NOTARY_FETCHES)

        async def answer(server_name: str, wanted: Mapping[str, int]) -> None:
            async with limiter:
                answers[server_name] = await self._notary_answer(server_name, wanted, min_ts)

        async with trio.open_nursery() as nursery:
            for server_name, wanted in servers.items():
                nursery.start_soon(answer, server_name, wanted)
        return [response for server_name in servers for response in answers[server_name]]

    # Lookups.

    async def _find(
        self, server_name: str, key_id: str, at_ts: int, *, allow_old: bool, direct_only: bool
    ) -> ServerKey:
        if server_name == self._own.server_name:
            own = self._own.server_key(key_id)
            if own is None or not own.valid_at(at_ts, allow_old=allow_old):
                raise KeyLookupError(f"this server has no key {key_id} valid at {at_ts}")
            return own
        key = self._cached(server_name, key_id)
        if key is not None and key.valid_at(at_ts, allow_old=allow_old):
            return key
        if key is not None and key.expired_ts is not None:
            # The server itself said it stopped using the key: asking again will not help.
            raise KeyLookupError(_expired_message(key, at_ts, allow_old=allow_old))
        attempt = self._recent_attempt(server_name)
        if attempt is not None:
            raise KeyLookupError(f"{_missing(server_name, key_id, at_ts)}: {attempt.reason}")
        await self._load(server_name)  # another process may have fetched it meanwhile
        key = self._cached(server_name, key_id)
        if key is None or not key.valid_at(at_ts, allow_old=allow_old):
            await self._refresh(server_name, {key_id: at_ts}, direct_only=direct_only)
            key = self._cached(server_name, key_id)
        if key is not None and key.valid_at(at_ts, allow_old=allow_old):
            return key
        if key is not None and key.expired_ts is not None:
            raise KeyLookupError(_expired_message(key, at_ts, allow_old=allow_old))
        attempt = self._attempts.get(server_name)
        reason = attempt.reason if attempt is not None else "no source lists it"
        raise KeyLookupError(f"{_missing(server_name, key_id, at_ts)}: {reason}")

    async def _first_found(
        self, server_name: str, key_ids: Sequence[str], at_ts: int
    ) -> ServerKey:
        failures = []
        for key_id in key_ids:
            try:
                return await self._find(
                    server_name, key_id, at_ts, allow_old=True, direct_only=False
                )
            except KeyLookupError as exc:
                failures.append(str(exc))
        raise KeyLookupError("; ".join(failures))

    def _cached(self, server_name: str, key_id: str) -> ServerKey | None:
        keys = self._cache.get(server_name)
        if keys is None:
            return None
        self._cache.move_to_end(server_name)
        return keys.get(key_id)

    def _recent_attempt(self, server_name: str) -> _Attempt | None:
        attempt = self._attempts.get(server_name)
        if attempt is None or self.now_ms() >= attempt.retry_at_ms:
            return None
        return attempt

    async def _load(self, server_name: str) -> None:
        keys = []
        for row in await self._store.get_server_keys(server_name):
            try:
                verify_key = decode_verify_key(row.key_id, row.verify_key)
            except KeyResponseError as exc:  # stored only once decoded: a damaged row
                logger.warning("stored key %s of %s: %s", row.key_id, server_name, exc)
                continue
            keys.append(
                ServerKey(
                    row.server_name, row.key_id, verify_key, row.valid_until_ts, row.expired_ts
                )
            )
        self._merge(server_name, keys)

    def _merge(self, server_name: str, keys: Sequence[ServerKey]) -> None:
        # The rule of the table (stores.server_keys): the key valid the longest wins.
        cached = self._cache.setdefault(server_name, {})
        self._cache.move_to_end(server_name)
        for key in keys:
            known = cached.get(key.key_id)
            if known is None or key.valid_until_ts >= known.valid_until_ts:
                cached[key.key_id] = key
        while len(self._cache) > self._max_cached:
            self._cache.popitem(last=False)

    # Fetching.

    async def _refresh(
        self,
        server_name: str,
        wanted: Mapping[str, int],
        *,
        direct_only: bool,
        force: bool = False,
    ) -> None:
        # Direct-only fetches (of a notary's own keys) are flights of their own: they wait for
        # nothing else, so no two fetches can wait for each other.
        flight_key = (server_name, direct_only)
        while True:
            if not force and self._recent_attempt(server_name) is not None:
                return
            flight = self._flights.get(flight_key)
            if flight is None:
                break
            await flight.done.wait()
            if flight.finished:
                return
            # The leader was cancelled: one of the waiters leads again.
        flight = self._flights[flight_key] = _Flight()
        try:
            await self._fetch(server_name, wanted, direct_only=direct_only)
            flight.finished = True
        finally:
            del self._flights[flight_key]
            flight.done.set()

    async def _fetch(
        self, server_name: str, wanted: Mapping[str, int], *, direct_only: bool
    ) -> None:
        failures = []
        answered = False
        try:
            response = await self._from_server(server_name)
        except _SourceFailed as exc:
            failures.append(f"{server_name}: {exc}")
        else:
            answered = True
            await self._remember([response], server_name)
            if self._satisfied(server_name, wanted):
                self._attempted(
                    server_name, answered=True, reason="it answered just now without it"
                )
                return
            failures.append(f"{server_name} does not list it as valid then")
        notaries = () if direct_only else self._notaries
        for notary in notaries:
            if notary.server_name in (server_name, self._own.server_name):
                continue
            try:
                responses = await self._from_notary(notary, server_name, wanted)
            except _SourceFailed as exc:
                failures.append(f"notary {notary.server_name}: {exc}")
                continue
            answered = True
            await self._remember(responses, notary.server_name)
            if self._satisfied(server_name, wanted):
                self._attempted(server_name, answered=True, reason="asked just now, without it")
                return
            failures.append(f"notary {notary.server_name} does not list it as valid then")
        self._attempted(server_name, answered=answered, reason="; ".join(failures))

    def _satisfied(self, server_name: str, wanted: Mapping[str, int]) -> bool:
        return all(
            (key := self._cached(server_name, key_id)) is not None and key.valid_at(at_ts)
            for key_id, at_ts in wanted.items()
        )

    def _attempted(self, server_name: str, *, answered: bool, reason: str) -> None:
        wait_ms = self._min_refetch_ms if answered else self._retry_after_failure_ms
        self._attempts[server_name] = _Attempt(self.now_ms() + wait_ms, reason)
        self._attempts.move_to_end(server_name)
        while len(self._attempts) > self._max_cached:
            self._attempts.popitem(last=False)

    async def _from_server(self, server_name: str) -> KeyResponse:
        fetched_ts = self.now_ms()
        raw = await self._ask(
            server_name,
            self._fetch_client.get_json,
            server_name,
            KEY_SERVER_PATH,
            signed=False,
            timeout=self._timeout_s,
        )
        try:
            return parse_key_response(raw, expected_server=server_name, fetched_ts=fetched_ts)
        except KeyResponseError as exc:
            logger.warning("bad key response from %s: %s", server_name, exc)
            raise _SourceFailed(str(exc)) from None

    async def _from_notary(
        self, notary: Notary, server_name: str, wanted: Mapping[str, int]
    ) -> list[KeyResponse]:
        fetched_ts = self.now_ms()
        criteria = {
            key_id: {"minimum_valid_until_ts": max(ts, 0)} for key_id, ts in wanted.items()
        }
        raw = await self._ask(
            notary.server_name,
            self._fetch_client.post_json,
            notary.server_name,
            KEY_QUERY_PATH,
            {"server_keys": {server_name: criteria}},
            signed=False,
            timeout=self._timeout_s,
        )
        entries = raw.get("server_keys") if isinstance(raw, Mapping) else None
        if not isinstance(entries, list):
            raise _SourceFailed("answer has no server_keys list")
        responses, problems = [], []
        for entry in entries:
            if not isinstance(entry, Mapping) or entry.get("server_name") != server_name:
                continue  # keys of servers not asked about are not taken from a notary
            try:
                response = parse_key_response(
                    entry, expected_server=server_name, fetched_ts=fetched_ts
                )
                await self._check_notary_signature(notary, entry)
            except (KeyResponseError, SignatureError, KeyLookupError) as exc:
                logger.warning(
                    "notary %s: bad keys of %s: %s", notary.server_name, server_name, exc
                )
                problems.append(str(exc))
                continue
            responses.append(response)
        if not responses:
            raise _SourceFailed("; ".join(problems) or f"no keys of {server_name}")
        return responses

    async def _check_notary_signature(self, notary: Notary, entry: Mapping[str, Any]) -> None:
        key_ids = signature_key_ids(entry, notary.server_name)
        if notary.verify_keys is not None:
            pinned = [key_id for key_id in key_ids if key_id in notary.verify_keys]
            if not pinned:
                raise SignatureError(f"not signed by a configured key of {notary.server_name}")
            check_signature(entry, notary.server_name, notary.verify_keys[pinned[0]])
            return
        if not key_ids:
            raise SignatureError(f"not signed by {notary.server_name}")
        failures = []
        for key_id in key_ids:
            try:
                key = await self._find(
                    notary.server_name, key_id, self.now_ms(), allow_old=False, direct_only=True
                )
            except KeyLookupError as exc:
                failures.append(str(exc))
                continue
            check_signature(entry, notary.server_name, key.verify_key)
            return
        raise KeyLookupError("; ".join(failures))

    async def _ask(
        self, source: str, method: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        # The boundary of the module docstring: a remote source failing in any way.
        raw: Any = None
        with trio.move_on_after(self._timeout_s) as scope:
            try:
                raw = await method(*args, **kwargs)
            except Exception as exc:
                logger.info("asking %s for keys failed: %s", source, _describe(exc))
                raise _SourceFailed(_describe(exc)) from None
        if scope.cancelled_caught:
            logger.info("asking %s for keys timed out", source)
            raise _SourceFailed("timed out")
        return raw

    async def _remember(self, responses: Sequence[KeyResponse], from_server: str) -> None:
        fetched_ts = self.now_ms()
        rows: list[StoredServerKey] = []
        for response in responses:
            key_json = canonical_json(response.json).decode()
            rows.extend(
                StoredServerKey(
                    server_name=key.server_name,
                    key_id=key.key_id,
                    verify_key=encode_verify_key_base64(key.verify_key),
                    valid_until_ts=key.valid_until_ts,
                    expired_ts=key.expired_ts,
                    fetched_ts=fetched_ts,
                    from_server=from_server,
                    key_json=key_json,
                )
                for key in response.keys
            )
            self._merge(response.server_name, response.keys)
        await self._store.store_server_keys(rows)

    # The notary endpoints.

    async def _notary_answer(
        self, server_name: str, wanted: Mapping[str, int], min_ts: int
    ) -> list[dict[str, Any]]:
        if server_name == self._own.server_name:
            return [self.own_server_keys()]
        stored = await self._store.get_server_keys(server_name)
        if _notary_should_fetch(stored, wanted, min_ts):
            # Asked for keys (or validity) it does not keep, a notary asks the server again
            # even soon after the last time: the asker's needs decide, not our cache.
            await self._refresh(server_name, wanted, direct_only=True, force=True)
            stored = await self._store.get_server_keys(server_name)
        texts = dict.fromkeys(row.key_json for row in stored if not wanted or row.key_id in wanted)
        return [self._own.sign(orjson.loads(text)) for text in texts]


def _notary_should_fetch(
    stored: Sequence[StoredServerKey], wanted: Mapping[str, int], min_ts: int
) -> bool:
    by_id = {row.key_id: row for row in stored}
    if wanted:
        return any(
            (row := by_id.get(key_id)) is None
            or (row.expired_ts is None and row.valid_until_ts < at_ts)
            for key_id, at_ts in wanted.items()
        )
    return not any(row.expired_ts is None and row.valid_until_ts >= min_ts for row in stored)


def _missing(server_name: str, key_id: str, at_ts: int) -> str:
    return f"no key {key_id} of {server_name} valid at {at_ts}"


def _expired_message(key: ServerKey, at_ts: int, *, allow_old: bool) -> str:
    if not allow_old:
        return f"key {key.key_id} of {key.server_name} is an old key, not valid for requests"
    return f"key {key.key_id} of {key.server_name} expired at {key.expired_ts}, before {at_ts}"


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
