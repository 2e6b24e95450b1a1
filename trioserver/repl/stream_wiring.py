"""One call each for the writer streams (main) and the follower streams (a worker).

The order of the tuples is `REPLICATED_STREAMS`' order. Every handler passed to
`follower_streams` must have been built with ``writer=False`` (and loaded), and the worker's
"events" position must be registered from `EventsFollower.position`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trioserver.repl.caches import ACCESS_TOKENS, ERASURE, EVENTS, PUSH_RULES
from trioserver.repl.db_streams import (
    DbFollowerStream,
    DbWriterStream,
    Fetch,
    TypingFollowerStream,
    TypingWriterStream,
)
from trioserver.repl.streams import REPLICATED_STREAMS, FollowerStream, WriterStream
from trioserver.stores.stream_updates import (
    AccountDataStreamRow,
    CacheRow,
    DeviceListStreamRow,
    EventRow,
    PresenceStreamRow,
    ReceiptStreamRow,
    ToDeviceStreamRow,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.handlers.account_data import AccountDataHandler
    from trioserver.handlers.auth import AuthHandler
    from trioserver.handlers.e2e_keys import E2eKeysHandler
    from trioserver.handlers.presence import PresenceHandler
    from trioserver.handlers.push_rules import PushRulesHandler
    from trioserver.handlers.receipts import ReceiptsHandler
    from trioserver.handlers.to_device import ToDeviceHandler
    from trioserver.handlers.typing import TypingHandler
    from trioserver.repl.caches import CacheInvalidations
    from trioserver.repl.db_streams import EventsFollower
    from trioserver.storage.expiry import EventExpirer
    from trioserver.stores.erasure import ErasureStore
    from trioserver.stores.events import EventCache
    from trioserver.stores.stream_updates import StreamUpdateStore


def writer_streams(
    store: StreamUpdateStore,
    *,
    events_position: Callable[[], int],
    typing: TypingHandler,
    receipts: ReceiptsHandler,
    account_data: AccountDataHandler,
    presence: PresenceHandler,
    to_device: ToDeviceHandler,
    e2e_keys: E2eKeysHandler,
    caches: CacheInvalidations,
) -> tuple[WriterStream, ...]:
    """Main's side of every replicated stream (`events_position`: the persister's)."""
    streams: tuple[WriterStream, ...] = (
        DbWriterStream("events", store, events_position),
        TypingWriterStream(typing),
        DbWriterStream("receipts", store, receipts.position),
        DbWriterStream("account_data", store, account_data.position),
        DbWriterStream("presence", store, presence.position),
        DbWriterStream("to_device", store, to_device.position),
        DbWriterStream("device_lists", store, e2e_keys.position),
        DbWriterStream("caches", store, caches.position),
    )
    assert tuple(s.name for s in streams) == REPLICATED_STREAMS
    return streams


def follower_streams(
    store: StreamUpdateStore,
    *,
    fetch: Fetch,
    events: EventsFollower | None,
    typing: TypingHandler,
    receipts: ReceiptsHandler,
    account_data: AccountDataHandler,
    presence: PresenceHandler,
    to_device: ToDeviceHandler,
    e2e_keys: E2eKeysHandler,
    caches: CacheInvalidations,
) -> tuple[FollowerStream, ...]:
    """A follower's side of every replicated stream (`fetch`: main's ``stream_updates``);
    without `events` (this instance writes events) the events stream is left out."""

    async def apply_receipts(token: int, rows: Sequence[ReceiptStreamRow]) -> None:
        receipts.on_replicated(token, rows)

    async def apply_account_data(token: int, rows: Sequence[AccountDataStreamRow]) -> None:
        account_data.on_replicated(token, rows)

    async def apply_presence(token: int, rows: Sequence[PresenceStreamRow]) -> None:
        presence.on_replicated(token, rows)
        await presence.notify_replicated(rows)

    async def apply_to_device(token: int, rows: Sequence[ToDeviceStreamRow]) -> None:
        to_device.on_replicated(token, rows)

    streams: tuple[FollowerStream, ...] = (
        *(
            ()
            if events is None
            else (
                DbFollowerStream("events", store, EventRow, events.position, events.on_replicated),
            )
        ),
        TypingFollowerStream(typing, fetch),
        DbFollowerStream("receipts", store, ReceiptStreamRow, receipts.position, apply_receipts),
        DbFollowerStream(
            "account_data", store, AccountDataStreamRow, account_data.position, apply_account_data
        ),
        DbFollowerStream("presence", store, PresenceStreamRow, presence.position, apply_presence),
        DbFollowerStream(
            "to_device", store, ToDeviceStreamRow, to_device.position, apply_to_device
        ),
        DbFollowerStream(
            "device_lists", store, DeviceListStreamRow, e2e_keys.position, e2e_keys.on_replicated
        ),
        DbFollowerStream("caches", store, CacheRow, caches.position, caches.on_replicated),
    )
    assert tuple(s.name for s in streams) == REPLICATED_STREAMS[events is None :]
    return streams


def announce_invalidations(
    caches: CacheInvalidations,
    *,
    auth: AuthHandler,
    push_rules: PushRulesHandler,
    erasure: ErasureStore,
    expirer: EventExpirer | None,
) -> None:
    """On main: write a caches-stream row wherever main changes a cached fact."""

    async def tokens(keys: Sequence[str]) -> None:
        await caches.invalidate(ACCESS_TOKENS, keys)

    async def rules(user_id: str) -> None:
        await caches.invalidate(PUSH_RULES, [user_id])

    async def erased(user_id: str) -> None:
        await caches.invalidate(ERASURE, [user_id])

    async def expired(event_id: str) -> None:
        await caches.invalidate(EVENTS, [event_id])

    auth.add_invalidation_listener(tokens)
    push_rules.add_change_listener(rules)
    erasure.add_erasure_listener(erased)
    if expirer is not None:
        expirer.add_expiry_listener(expired)


def apply_invalidations(
    caches: CacheInvalidations,
    *,
    auth: AuthHandler,
    push_rules: PushRulesHandler,
    erasure: ErasureStore,
    event_cache: EventCache,
) -> None:
    """On a worker: what each caches-stream row does to this instance's caches."""

    def tokens(keys: Sequence[str] | None) -> None:
        # A whole-cache invalidation is never written for tokens; ignore one defensively.
        auth.forget_tokens_nowait(keys or ())

    def expired(keys: Sequence[str] | None) -> None:
        event_cache.invalidate(keys or ())

    caches.register(ACCESS_TOKENS, tokens)
    caches.register(PUSH_RULES, push_rules.invalidate_nowait)
    caches.register(ERASURE, erasure.forget_nowait)
    caches.register(EVENTS, expired)
