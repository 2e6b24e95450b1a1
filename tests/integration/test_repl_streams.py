"""The replicated streams (issue 13): main's writer streams, and a worker's follower handlers
over the same database applying them, answer the same reads as main.

Main is the real component set (`writer_env`); the follower set is built here the way a worker
builds it (``writer=False``), on a second `open_configured_database` of the same database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

import trio
from trio.testing import MockClock

from trioserver.errors import MatrixError
from trioserver.handlers.account_data import AccountDataHandler
from trioserver.handlers.auth import AuthHandler, Requester
from trioserver.handlers.e2e_keys import E2eKeysHandler
from trioserver.handlers.notifier import Notifier
from trioserver.handlers.presence import SYNC_LINGER_S, PresenceHandler
from trioserver.handlers.push_rules import PushRulesHandler
from trioserver.handlers.receipts import ReceiptsHandler
from trioserver.handlers.room_reads import RoomReadHandler
from trioserver.handlers.to_device import ToDeviceHandler
from trioserver.handlers.typing import TypingHandler
from trioserver.internal.errors import WriterUnavailable
from trioserver.repl.caches import CacheInvalidations
from trioserver.repl.db_streams import EventsFollower
from trioserver.repl.stream_wiring import (
    apply_invalidations,
    follower_streams,
    writer_streams,
)
from trioserver.repl.streams import REPLICATED_STREAMS, FollowerStream, UpdatePage, WriterStream
from trioserver.stores.account_data import AccountDataStore
from trioserver.stores.accounts import AccountStore
from trioserver.stores.database import Database, open_configured_database
from trioserver.stores.erasure import ErasureStore
from trioserver.stores.events import EventCache, EventStore
from trioserver.stores.push_rules import PushRuleStore
from trioserver.stores.relations import RelationStore
from trioserver.stores.room_reads import RoomReadStore
from trioserver.stores.state import StateStore
from trioserver.stores.stream_updates import StreamUpdateStore
from trioserver.streams import NotStreamWriter, StreamPositions

from tests.integration.writer_env import WriterEnv, trio_wall_clock, writer_env

SERVER = "blue"


@attrs.define
class Follower:
    db: Database
    notifier: Notifier
    positions: StreamPositions
    auth: AuthHandler
    push_rules: PushRulesHandler
    typing: TypingHandler
    receipts: ReceiptsHandler
    account_data: AccountDataHandler
    presence: PresenceHandler
    to_device: ToDeviceHandler
    e2e_keys: E2eKeysHandler
    events: EventsFollower
    events_store: EventStore
    caches: CacheInvalidations
    streams: dict[str, FollowerStream]
    forwarded: list[tuple[str, str | None, bool]]


@attrs.define
class Pair:
    env: WriterEnv
    main: dict[str, WriterStream]
    caches: CacheInvalidations
    worker: Follower

    async def replicate(self, *names: str) -> None:
        """Catch the follower up on `names` (all streams by default), page by page."""
        for name in names or REPLICATED_STREAMS:
            writer, follower = self.main[name], self.worker.streams[name]
            while follower.current_token() < writer.current_token():
                page = await follower.get_updates(
                    follower.current_token(), writer.current_token(), 100
                )
                await follower.apply(page.upto_token, [row for _, row in page.updates])


async def _build_follower(db: Database, fetch: Any) -> Follower:
    positions = StreamPositions()
    notifier = Notifier(positions)
    state = StateStore(db, server_name=SERVER)
    events = EventStore(db, EventCache())
    ads = AccountDataStore(db)
    relations = RelationStore(db)
    auth = AuthHandler(AccountStore(db), bcrypt_rounds=4)
    push_rules = PushRulesHandler(PushRuleStore(db))
    common: dict[str, Any] = {"server_name": SERVER, "writer": False}
    account_data = AccountDataHandler(ads, notifier, positions, state, **common)
    account_data.serve_push_rules(push_rules)
    room_reads = RoomReadHandler(
        events, state, RoomReadStore(db), ErasureStore(db), server_name=SERVER, account_data=ads
    )
    forwarded: list[tuple[str, str | None, bool]] = []

    async def forward_sync(user_id: str, state_: str | None, syncing: bool) -> None:
        forwarded.append((user_id, state_, syncing))
        await trio.lowlevel.checkpoint()

    follower_events = EventsFollower(events.cache, relations, notifier, 0)
    typing = TypingHandler(db, notifier, positions, state, **common)
    receipts = ReceiptsHandler(
        db,
        notifier,
        positions,
        state,
        events=events,
        room_reads=room_reads,
        account_data=account_data,
        **common,
    )
    presence = PresenceHandler(
        db,
        notifier,
        positions,
        state,
        forward_sync=forward_sync,
        clock=trio_wall_clock,  # main's clock in writer_env (last_active_ago compares)
        **common,
    )
    to_device = ToDeviceHandler(db, notifier, positions, state, **common)
    e2e_keys = E2eKeysHandler(db, notifier, positions, state, **common)
    store = StreamUpdateStore(db)
    caches = CacheInvalidations(store, notifier, writer=False)
    for handler in (typing, receipts, account_data, presence, to_device, e2e_keys, caches):
        await handler.load()
    await relations.load()
    positions.register("events", follower_events.position)
    apply_invalidations(
        caches,
        auth=auth,
        push_rules=push_rules,
        erasure=ErasureStore(db),
        event_cache=events.cache,
    )
    streams = follower_streams(
        store,
        fetch=fetch,
        events=follower_events,
        typing=typing,
        receipts=receipts,
        account_data=account_data,
        presence=presence,
        to_device=to_device,
        e2e_keys=e2e_keys,
        caches=caches,
    )
    return Follower(
        db,
        notifier,
        positions,
        auth,
        push_rules,
        typing,
        receipts,
        account_data,
        presence,
        to_device,
        e2e_keys,
        follower_events,
        events,
        caches,
        {s.name: s for s in streams},
        forwarded,
    )


@asynccontextmanager
async def main_and_worker(tmp_path: Path) -> AsyncIterator[Pair]:
    async with writer_env(tmp_path) as env:
        deps = env.components.deps
        assert env.components.persister is not None
        persister = env.components.persister
        # Main's own caches stream, announced by build_components.
        caches = env.components.caches
        main = writer_streams(
            StreamUpdateStore(env.db),
            events_position=lambda: persister.stream_position,
            typing=deps.typing,
            receipts=deps.receipts,
            account_data=deps.account_data,
            presence=deps.presence,
            to_device=deps.to_device,
            e2e_keys=deps.e2e_keys,
            caches=caches,
        )
        by_name = {s.name: s for s in main}

        async def fetch(stream: str, from_token: int, upto_token: int) -> UpdatePage:
            # What Helper C's MainClient.stream_updates returns: main's writer page.
            return await by_name[stream].get_updates(from_token, upto_token, 100)

        async with open_configured_database(env.config) as fdb:
            yield Pair(env, by_name, caches, await _build_follower(fdb, fetch))


async def _pages(stream: WriterStream, limit: int) -> list[UpdatePage]:
    pages, token = [], 0
    while True:
        page = await stream.get_updates(token, stream.current_token(), limit)
        pages.append(page)
        token = page.upto_token
        if not page.limited:
            return pages


async def test_writer_pages_250_rows_without_splitting_a_token(tmp_path: Path) -> None:
    async with main_and_worker(tmp_path) as pair:
        alice = await pair.env.user("alice")
        for i in range(250):
            await pair.env.components.deps.account_data.set_account_data(
                alice, None, f"org.example.{i}", {"i": i}
            )
        pages = await _pages(pair.main["account_data"], 100)
        assert [p.limited for p in pages] == [True, True, False]
        assert [len(p.updates) for p in pages] == [100, 100, 50]
        tokens = [t for p in pages for t, _ in p.updates]
        assert tokens == sorted(tokens)
        assert len(set(tokens)) == 250
        assert pages[0].upto_token == pages[0].updates[-1][0]
        assert pages[0].updates[0][1] == {
            "user_id": alice,
            "room_id": None,
            "data_type": "org.example.0",
        }

        # One to-device send to three devices: three rows under one token, never split.
        bob = await pair.env.user("bob")
        for n in range(3):
            await pair.env.components.deps.accounts.login_with_password(
                bob, "pw", device_id=f"D{n}", device_display_name=None, ip=None
            )
        sender = pair.env.requester("alice")
        for i in range(40):
            await pair.env.components.deps.to_device.send(
                sender, "m.test", f"t{i}", {bob: {"*": {"i": i}}}
            )
        pages = await _pages(pair.main["to_device"], 100)
        assert [p.limited for p in pages] == [True, False]
        assert [len(p.updates) for p in pages] == [102, 18]
        first = {t for t, _ in pages[0].updates}
        assert first.isdisjoint(t for t, _ in pages[1].updates)
        assert pages[0].upto_token == max(first)


async def test_follower_answers_like_main_and_wakes_waiters(tmp_path: Path) -> None:
    async with main_and_worker(tmp_path) as pair:
        deps, worker = pair.env.components.deps, pair.worker
        alice, bob = await pair.env.user("alice"), await pair.env.user("bob")
        room = await pair.env.create_room(alice, preset="public_chat")
        await deps.membership.update_membership(bob, room, bob, "join")
        await pair.replicate()
        message = await pair.env.send_text(alice, room, "hello")

        with worker.notifier.listen(bob, [room]) as listener:
            await pair.replicate("events")
            assert await listener.wait(0)
        assert worker.positions.current_token().events == pair.main["events"].current_token()

        await deps.receipts.post_receipt(alice, room, "m.read", message.event_id, None)
        await deps.account_data.set_account_data(alice, room, "org.example", {"a": 1})
        assert await worker.account_data.ignored_users(alice) == frozenset()  # now cached
        await deps.account_data.set_account_data(
            alice, None, "m.ignored_user_list", {"ignored_users": {bob: {}}}
        )
        # The worker's cached copy is stale until the account data row arrives.
        assert await worker.account_data.ignored_users(alice) == frozenset()
        await deps.typing.set_typing(alice, room, alice, True, 30_000)
        await deps.to_device.send(pair.env.requester("bob"), "m.test", "t1", {alice: {"*": {}}})
        await deps.presence.set_presence(alice, alice, "online", "busy")
        await deps.e2e_keys.upload_keys(
            Requester(alice, "ADEV", "tok"),
            {"one_time_keys": {}},
        )
        with worker.notifier.listen(alice, [room]) as listener:
            await pair.replicate()
            assert await listener.wait(0)

        for name in REPLICATED_STREAMS:
            assert worker.streams[name].current_token() == pair.main[name].current_token(), name
        assert await worker.receipts.receipts_for_rooms(
            alice, [room], None
        ) == await deps.receipts.receipts_for_rooms(alice, [room], None)
        assert await worker.account_data.rooms_since(
            alice, [room], None
        ) == await deps.account_data.rooms_since(alice, [room], None)
        assert await worker.account_data.ignored_users(alice) == frozenset([bob])
        assert worker.typing.typing_for_rooms([room], 0) == {room: [alice]}
        assert worker.typing.typing_for_rooms([room], 0) == deps.typing.typing_for_rooms([room], 0)
        assert worker.presence.presence_for_users([alice]) == deps.presence.presence_for_users(
            [alice]
        )
        upto = pair.main["to_device"].current_token()
        assert await worker.to_device.messages_for(
            alice, "ADEV", 0, upto
        ) == await deps.to_device.messages_for(alice, "ADEV", 0, upto)

        # A redaction on main: the follower's cached copy of the target is dropped.
        cached = await worker.events_store.get_event(message.event_id)
        assert cached is not None
        assert cached.redacted_by is None
        redaction = await deps.send.redact(
            pair.env.requester("alice"), room, message.event_id, "spam", "txn-r"
        )
        await pair.replicate("events")
        redacted = await worker.events_store.get_event(message.event_id)
        assert redacted is not None
        assert redacted.redacted_by == redaction

        # Typing stops on main: the row reaches the follower and clears the room.
        await deps.typing.set_typing(alice, room, alice, False, 0)
        since = worker.typing.position()
        await pair.replicate("typing")
        assert worker.typing.typing_for_rooms([room], since) == {room: []}


async def test_follower_write_methods_raise_and_write_nothing(tmp_path: Path) -> None:
    async with main_and_worker(tmp_path) as pair:
        alice = await pair.env.user("alice")
        room = await pair.env.create_room(alice)
        await pair.replicate()
        worker = pair.worker
        before = pair.env.query("SELECT COUNT(*) FROM account_data")
        with pytest.raises(NotStreamWriter):
            await worker.account_data.set_account_data(alice, None, "org.x", {})
        with pytest.raises(NotStreamWriter):
            await worker.account_data.put_tag(alice, alice, room, "u.t", {})
        with pytest.raises(NotStreamWriter):
            await worker.receipts.post_receipt(alice, room, "m.read", "$x", None)
        with pytest.raises(NotStreamWriter):
            await worker.typing.set_typing(alice, room, alice, True, 1000)
        with pytest.raises(NotStreamWriter):
            await worker.presence.set_presence(alice, alice, "online", None)
        with pytest.raises(NotStreamWriter):
            await worker.presence.bump_active(alice)
        with pytest.raises(NotStreamWriter):
            await worker.to_device.send(pair.env.requester("alice"), "m.t", "1", {alice: {}})
        with pytest.raises(NotStreamWriter):
            await worker.e2e_keys.upload_keys(Requester(alice, "D", "t"), {})
        with pytest.raises(NotStreamWriter):
            await worker.caches.invalidate("push_rules", [alice])
        assert pair.env.query("SELECT COUNT(*) FROM account_data") == before
        assert pair.env.query("SELECT COUNT(*) FROM cache_invalidations") == [(0,)]
        assert pair.env.query("SELECT COUNT(*) FROM presence") == [(0,)]
        assert worker.typing.typing_for_rooms([room], 0) == {}


async def test_caches_stream_invalidates_tokens_and_push_rules(tmp_path: Path) -> None:
    async with main_and_worker(tmp_path) as pair:
        deps, worker = pair.env.components.deps, pair.worker
        login = await deps.accounts.register("alice", "pw")
        assert login.access_token is not None
        requester = await worker.auth.requester_for_token(login.access_token)
        assert requester.user_id == login.user_id
        rules = await worker.push_rules.rules_json(login.user_id)

        await deps.accounts.logout(requester)
        await deps.push_rules.put_rule(
            login.user_id, "override", "org.example.rule", {"conditions": [], "actions": []}
        )
        # Not yet applied: the worker's caches still answer from before.
        assert (await worker.auth.requester_for_token(login.access_token)) == requester
        assert await worker.push_rules.rules_json(login.user_id) == rules
        assert pair.caches.position() == 2

        await pair.replicate("caches")
        with pytest.raises(MatrixError) as raised:
            await worker.auth.requester_for_token(login.access_token)
        assert raised.value.errcode == "M_UNKNOWN_TOKEN"
        changed = await worker.push_rules.rules_json(login.user_id)
        assert changed != rules
        assert changed == await deps.push_rules.rules_json(login.user_id)


async def test_presence_syncs_forward_and_count_on_main(
    tmp_path: Path, db_clock: MockClock
) -> None:
    async with main_and_worker(tmp_path) as pair:
        deps, worker = pair.env.components.deps, pair.worker
        alice = await pair.env.user("alice")
        async with trio.open_nursery() as lingering:
            lingering.start_soon(worker.presence.run_sync_lingering)
            async with worker.presence.user_syncing(alice, None):
                assert worker.forwarded == [(alice, "online", True)]
            # Back-to-back long-polls are one announcement: nothing more is sent...
            await trio.sleep(SYNC_LINGER_S / 2)
            async with worker.presence.user_syncing(alice, None):
                pass
            assert worker.forwarded == [(alice, "online", True)]
            # ...until the user has not synced here for SYNC_LINGER_S.
            await trio.sleep(SYNC_LINGER_S + 1)
            assert worker.forwarded == [(alice, "online", True), (alice, "online", False)]
            lingering.cancel_scope.cancel()

        await deps.presence.remote_user_sync("w1", alice, "online", True)
        (event,) = deps.presence.presence_for_users([alice])
        assert event["content"]["presence"] == "online"
        await pair.replicate("presence")
        assert worker.presence.presence_for_users([alice]) == deps.presence.presence_for_users(
            [alice]
        )
        # While the worker's sync is in flight the user never times out to offline.
        await trio.sleep(120)
        (event,) = deps.presence.presence_for_users([alice])
        assert event["content"]["presence"] != "offline"
        await deps.presence.remote_user_sync("w1", alice, "online", False)
        await trio.sleep(60)
        (event,) = deps.presence.presence_for_users([alice])
        assert event["content"]["presence"] == "offline"
        await pair.replicate("presence")
        (event,) = worker.presence.presence_for_users([alice])
        assert event["content"]["presence"] == "offline"

        # A worker that goes away while its user syncs: the sync counts as ended then.
        await deps.presence.remote_user_sync("w2", alice, "online", True)
        deps.presence.remote_instance_gone_nowait("w2")
        deps.presence.remote_instance_gone_nowait("w2")  # twice: nothing left to end
        await trio.sleep(60)
        (event,) = deps.presence.presence_for_users([alice])
        assert event["content"]["presence"] == "offline"


async def test_typing_writer_pages_each_room_at_its_latest_change(tmp_path: Path) -> None:
    async with main_and_worker(tmp_path) as pair:
        typing = pair.env.components.deps.typing
        alice = await pair.env.user("alice")
        rooms = [await pair.env.create_room(alice) for _ in range(3)]
        for room in rooms:
            await typing.set_typing(alice, room, alice, True, 30_000)
        await typing.set_typing(alice, rooms[0], alice, False, 0)  # position 4
        stream = pair.main["typing"]
        assert stream.current_token() == 4
        first = await stream.get_updates(0, 4, 1)
        assert first.limited
        assert first.updates == [(2, {"room_id": rooms[1], "user_ids": [alice]})]
        rest = await stream.get_updates(first.upto_token, 4, 100)
        assert not rest.limited
        assert rest.updates == [
            (3, {"room_id": rooms[2], "user_ids": [alice]}),
            (4, {"room_id": rooms[0], "user_ids": []}),
        ]
        assert await stream.get_updates(4, 4, 100) == UpdatePage([], 4, False)

        # A worker whose writer restarted forgets its typists and reports every room again.
        await pair.replicate("typing")
        assert pair.worker.typing.typing_for_rooms(rooms, 0) == {
            rooms[1]: [alice],
            rooms[2]: [alice],
        }
        pair.worker.streams["typing"].reset(0)
        assert pair.worker.typing.typing_for_rooms(rooms, 4) == {room: [] for room in rooms}


async def test_push_rules_marker_alone_refreshes_the_worker_rules(tmp_path: Path) -> None:
    async with main_and_worker(tmp_path) as pair:
        deps, worker = pair.env.components.deps, pair.worker
        alice = await pair.env.user("alice")
        before = await worker.push_rules.rules_json(alice)
        await deps.push_rules.put_rule(
            alice, "override", "org.example.rule", {"conditions": [], "actions": []}
        )
        # The account data stream's m.push_rules marker can arrive before the caches row.
        await pair.replicate("account_data")
        (event,) = await worker.account_data.global_since(alice, 0)
        assert event["type"] == "m.push_rules"
        assert event["content"] != before
        assert event["content"] == await deps.push_rules.rules_json(alice)


async def test_a_worker_sync_goes_on_when_main_cannot_be_told(
    tmp_path: Path, db_clock: MockClock
) -> None:
    """Presence is best effort: a read on a worker answers while main is down (seed 3)."""
    async with main_and_worker(tmp_path) as pair:
        alice = await pair.env.user("alice")
        calls: list[bool] = []

        async def main_down(user_id: str, state: str | None, syncing: bool) -> None:
            calls.append(syncing)
            await trio.lowlevel.checkpoint()
            raise WriterUnavailable("ConnectError: connection refused")

        async def follower_presence(forward: Any) -> PresenceHandler:
            positions = StreamPositions()
            presence = PresenceHandler(
                pair.worker.db,
                Notifier(positions),
                positions,
                StateStore(pair.worker.db, server_name=SERVER),
                forward_sync=forward,
                clock=trio_wall_clock,
                server_name=SERVER,
                writer=False,
            )
            await presence.load()
            return presence

        presence = await follower_presence(main_down)
        async with presence.user_syncing(alice, None):
            pass
        await presence.set_presence_from_sync(alice, "online")
        # Main never counted a start, so it is not told of an end.
        assert calls == [True, True]

        # Main reachable for the start but gone by the end: the sync still ends cleanly.
        async def gone_by_the_end(user_id: str, state: str | None, syncing: bool) -> None:
            calls.append(syncing)
            await trio.lowlevel.checkpoint()
            if not syncing:
                raise WriterUnavailable("ConnectError: connection refused")

        calls.clear()
        presence = await follower_presence(gone_by_the_end)
        async with trio.open_nursery() as lingering:
            lingering.start_soon(presence.run_sync_lingering)
            async with presence.user_syncing(alice, None):
                pass
            await trio.sleep(SYNC_LINGER_S + 1)
            lingering.cancel_scope.cancel()
        assert calls == [True, False]
