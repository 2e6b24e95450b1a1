"""The non-timeline parts of a /sync response: ephemeral events, account data, presence,
to-device messages and device-list changes, each read from its stream between ``since`` and
``now``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from trioserver.handlers.account_data import AccountDataHandler
from trioserver.handlers.e2e_keys import E2eKeysHandler
from trioserver.handlers.presence import PresenceHandler
from trioserver.handlers.receipts import ReceiptsHandler
from trioserver.handlers.to_device import ToDeviceHandler
from trioserver.handlers.typing import TypingHandler

if TYPE_CHECKING:
    from collections.abc import Sequence

    from trioserver.handlers.sync_rooms import SyncContext

JsonDict = dict[str, Any]
TO_DEVICE_LIMIT = 100


@attrs.frozen
class StreamHandlers:
    """The handlers of the streams /sync carries besides events."""

    typing: TypingHandler
    receipts: ReceiptsHandler
    account_data: AccountDataHandler
    presence: PresenceHandler
    to_device: ToDeviceHandler
    e2e_keys: E2eKeysHandler


@attrs.frozen
class RoomExtras:
    """Per-room ephemeral events and account data for one sync."""

    ephemeral: dict[str, list[JsonDict]]
    account_data: dict[str, list[JsonDict]]

    def rooms(self) -> set[str]:
        """Rooms with anything to report."""
        return {r for r, e in self.ephemeral.items() if e} | {
            r for r, a in self.account_data.items() if a
        }


class SyncStreams:
    """Reads the streams for one user's sync."""

    def __init__(self, handlers: StreamHandlers) -> None:
        self._h = handlers

    async def room_extras(
        self, ctx: SyncContext, joined: Sequence[str], fresh: set[str]
    ) -> RoomExtras:
        """Typing, receipts and room account data for joined rooms (all of it for `fresh`)."""
        since = ctx.since
        old = [r for r in joined if r not in fresh]
        typing = self._h.typing.typing_for_rooms(old, since.typing if since else 0)
        typing.update(self._h.typing.typing_for_rooms(fresh, 0))
        receipts: dict[str, JsonDict] = {}
        if since is None or since.receipts != ctx.now.receipts:
            receipts = await self._h.receipts.receipts_for_rooms(
                ctx.user_id, old, since.receipts if since else None
            )
        if fresh:
            receipts.update(
                await self._h.receipts.receipts_for_rooms(ctx.user_id, list(fresh), None)
            )
        ephemeral: dict[str, list[JsonDict]] = {}
        for room_id in joined:
            events: list[JsonDict] = []
            if room_id in typing:
                events.append({"type": "m.typing", "content": {"user_ids": typing[room_id]}})
            if room_id in receipts:
                events.append({"type": "m.receipt", "content": receipts[room_id]})
            kept = ctx.filter.room.ephemeral.filter_json(events)
            if kept:
                ephemeral[room_id] = [dict(e) for e in kept]
        return RoomExtras(ephemeral, await self.room_account_data(ctx, joined, fresh))

    async def room_account_data(
        self, ctx: SyncContext, room_ids: Sequence[str], fresh: set[str]
    ) -> dict[str, list[JsonDict]]:
        """Room account data (and tags) changed since ``since`` (all of it for `fresh`)."""
        since = ctx.since.account_data if ctx.since else None
        old = [r for r in room_ids if r not in fresh]
        data: dict[str, list[JsonDict]] = {}
        if since is None or since != ctx.now.account_data:
            data = await self._h.account_data.rooms_since(ctx.user_id, old, since)
        if fresh:
            data.update(await self._h.account_data.rooms_since(ctx.user_id, list(fresh), None))
        account_filter = ctx.filter.room.account_data
        return {r: [dict(e) for e in account_filter.filter_json(v)] for r, v in data.items()}

    async def ignored_users(self, user_id: str) -> frozenset[str]:
        """Whom the user ignores (``m.ignored_user_list``)."""
        return await self._h.account_data.ignored_users(user_id)

    async def global_account_data(self, ctx: SyncContext) -> list[JsonDict]:
        """The user's global account data changed since ``since``."""
        since = ctx.since.account_data if ctx.since else None
        if since is not None and since == ctx.now.account_data:
            return []
        events = await self._h.account_data.global_since(ctx.user_id, since)
        return [dict(e) for e in ctx.filter.account_data.filter_json(events)]

    async def presence(self, ctx: SyncContext, new_members: set[str]) -> list[JsonDict]:
        """Presence of the user and those sharing a room, changed since ``since``; plus the
        presence of members the user newly shares a room with."""
        events: list[JsonDict] = []
        if ctx.since is None or ctx.since.presence != ctx.now.presence:
            events = await self._h.presence.presence_since(
                ctx.user_id, ctx.since.presence if ctx.since else None
            )
        if new_members:
            seen = {e.get("sender") for e in events}
            extra = self._h.presence.presence_for_users(new_members - seen)
            events = [*events, *extra]
        return [dict(e) for e in ctx.filter.presence.filter_json(events)]

    async def to_device(self, ctx: SyncContext, device_id: str) -> tuple[list[JsonDict], int]:
        """Messages for this device, acknowledging (deleting) those the client already got.

        Returns:
            The messages and the to-device position the next token must carry (short of
            ``now`` when there were more than a page).
        """
        handler = self._h.to_device
        since = ctx.since.to_device if ctx.since else 0
        if ctx.since is not None:
            # Spec: a message is delivered until the client's next `since` acknowledges it.
            await handler.delete_delivered(ctx.user_id, device_id, since)
        return await handler.messages_for(
            ctx.user_id, device_id, since, ctx.now.to_device, limit=TO_DEVICE_LIMIT
        )

    async def device_lists(self, ctx: SyncContext) -> tuple[set[str], set[str]]:
        """Users whose devices the client should re-fetch (``changed``) or forget (``left``):
        device-list stream changes plus users who started or stopped sharing a room."""
        if ctx.since is None:
            return set(), set()
        # Changes come from the device-list stream and from memberships (events stream).
        if (ctx.since.device_lists, ctx.since.events) == (ctx.now.device_lists, ctx.now.events):
            return set(), set()
        changes = await self._h.e2e_keys.device_list_changes(ctx.user_id, ctx.since, ctx.now)
        return set(changes.changed), set(changes.left)

    async def key_counts(self, ctx: SyncContext, device_id: str) -> tuple[JsonDict, list[str]]:
        """One-time key counts and unused fallback key types of this device."""
        counts = await self._h.e2e_keys.one_time_key_counts(ctx.user_id, device_id)
        fallback = await self._h.e2e_keys.unused_fallback_key_types(ctx.user_id, device_id)
        return dict(counts), list(fallback)
