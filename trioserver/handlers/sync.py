"""``GET /sync``: what changed for a user since their last sync, waiting for it if nothing has.

Theory of operation
-------------------
A response covers every stream from the client's ``since`` token to the positions read at the
start of the computation (``now``), which become ``next_batch``. An incremental sync with a
``timeout`` whose response would be empty waits instead: it registers a listener with the
notifier under the user and their joined rooms, checks once more that the stream positions have
not moved since it computed (no checkpoint in between, so a write cannot slip past unseen),
and sleeps until woken or until the timeout. A wake-up recomputes from the same ``since``; a
request woken for something it then filters out simply waits again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver.handlers.event_filter import FilterDefinition
from trioserver.handlers.serialize import SerializeOptions
from trioserver.handlers.sync_rooms import SyncContext
from trioserver.streams import StreamToken

if TYPE_CHECKING:
    from trioserver.handlers.notifier import Notifier
    from trioserver.handlers.sync_rooms import RoomSyncBuilder
    from trioserver.stores.sync import SyncMembership, SyncStore

JsonDict = dict[str, Any]
# Spec: servers may cap the long-poll; Synapse does not, but an hour keeps sockets honest.
MAX_TIMEOUT_MS = 3_600_000


@attrs.frozen
class SyncRequest:
    """A parsed ``/sync`` request."""

    user_id: str
    device_id: str
    since: StreamToken | None
    timeout_ms: int
    full_state: bool
    filter: FilterDefinition
    options: SerializeOptions
    set_presence: str | None = None


@attrs.frozen
class SyncResult:
    """A response and whether it carries anything."""

    body: JsonDict
    empty: bool


class SyncHandler:
    """Computes sync responses and long-polls for them."""

    def __init__(self, notifier: Notifier, rooms: RoomSyncBuilder, sync_store: SyncStore) -> None:
        self._notifier = notifier
        self._rooms = rooms
        self._sync = sync_store

    async def sync(self, request: SyncRequest) -> JsonDict:
        """Answer a sync request, waiting up to its timeout when there is nothing new."""
        now = self._notifier.current_token()
        if request.since is None or request.full_state or request.timeout_ms <= 0:
            return (await self._compute(request, now)).body
        deadline = trio.current_time() + min(request.timeout_ms, MAX_TIMEOUT_MS) / 1000
        while True:
            result = await self._compute(request, now)
            if not result.empty:
                return result.body
            joined = await self._joined_room_ids(request.user_id)
            with self._notifier.listen(request.user_id, joined) as listener:
                latest = self._notifier.current_token()
                if latest != now:
                    now = latest  # something committed while we computed: look again
                    continue
                remaining = deadline - trio.current_time()
                woken = remaining > 0 and await listener.wait(remaining)
            now = self._notifier.current_token()
            if not woken:
                return (await self._compute(request, now)).body

    async def _joined_room_ids(self, user_id: str) -> list[str]:
        rows = await self._sync.memberships(user_id)
        return [row.room_id for row in rows if row.membership == "join"]

    async def _compute(self, request: SyncRequest, now: StreamToken) -> SyncResult:
        ctx = SyncContext(
            user_id=request.user_id,
            since=request.since,
            now=now,
            filter=request.filter,
            full_state=request.full_state,
            options=request.options,
        )
        rooms = await self._rooms_section(ctx)
        body: JsonDict = {
            "next_batch": now.to_string(),
            "rooms": rooms,
            "presence": {"events": []},
            "account_data": {"events": []},
            "to_device": {"events": []},
            "device_lists": {"changed": [], "left": []},
            "device_one_time_keys_count": {},
            "device_unused_fallback_key_types": [],
        }
        empty = not any(rooms[section] for section in rooms)
        return SyncResult(body, empty)

    async def _rooms_section(self, ctx: SyncContext) -> JsonDict:
        sections: JsonDict = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        rows = await self._sync.memberships(ctx.user_id)
        rows = [row for row in rows if ctx.filter.room.matches_room(row.room_id)]
        changed: set[str] | None = None
        if ctx.since is not None:
            changed = await self._sync.rooms_with_events(
                [row.room_id for row in rows], ctx.since.events, ctx.now.events
            )
        for row in rows:
            current = await self._as_of_now(ctx, row)
            if current is None:
                continue
            entry = await self._room_entry(ctx, current, changed)
            if entry is not None:
                section = "leave" if current.membership == "ban" else current.membership
                sections[section][current.room_id] = entry
        await self._add_summaries(ctx, sections["join"])
        return sections

    async def _as_of_now(self, ctx: SyncContext, row: SyncMembership) -> SyncMembership | None:
        # A membership committed after `now` belongs to the next sync: use the one before it.
        if row.stream_ordering <= ctx.now.events:
            return row
        membership = await self._sync.membership_at(ctx.user_id, row.room_id, ctx.now.events)
        return None if membership is None else attrs.evolve(row, membership=membership)

    async def _room_entry(
        self, ctx: SyncContext, row: SyncMembership, changed: set[str] | None
    ) -> JsonDict | None:
        fresh = ctx.since is None or row.stream_ordering > ctx.since.events
        if row.membership == "join":
            return await self._joined_entry(ctx, row, changed)
        if row.membership == "invite":
            return (
                {"invite_state": {"events": await self._rooms.stripped_state(row)}}
                if fresh
                else None
            )
        if row.membership == "knock":
            return (
                {"knock_state": {"events": await self._rooms.stripped_state(row)}}
                if fresh
                else None
            )
        if row.forgotten:
            return None
        include = (ctx.since is None and ctx.filter.room.include_leave) or (
            ctx.since is not None and fresh
        )
        return await self._left_entry(ctx, row) if include else None

    async def _joined_entry(
        self, ctx: SyncContext, row: SyncMembership, changed: set[str] | None
    ) -> JsonDict | None:
        full = await self._rooms.newly_joined(ctx, row)
        if not full and changed is not None and row.room_id not in changed:
            return None
        timeline = await self._rooms.timeline(
            ctx,
            row.room_id,
            upto_stream=ctx.now.events,
            full=full,
            viewer=self._rooms.viewer(ctx, row),
        )
        if not full and not timeline.events and not timeline.state:
            return None
        state = self._rooms.lazy_members(ctx, timeline)
        return {
            "timeline": await self._rooms.serialize_timeline(ctx, timeline),
            "state": await self._rooms.serialize_state(ctx, state),
            "ephemeral": {"events": []},
            "account_data": {"events": []},
            "unread_notifications": {"notification_count": 0, "highlight_count": 0},
        }

    async def _left_entry(self, ctx: SyncContext, row: SyncMembership) -> JsonDict:
        timeline = await self._rooms.timeline(
            ctx,
            row.room_id,
            upto_stream=row.stream_ordering,
            full=ctx.since is None,
            viewer=self._rooms.viewer(ctx, row),
        )
        return {
            "timeline": await self._rooms.serialize_timeline(ctx, timeline),
            "state": await self._rooms.serialize_state(
                ctx, self._rooms.lazy_members(ctx, timeline)
            ),
            "account_data": {"events": []},
        }

    async def _add_summaries(self, ctx: SyncContext, joined: JsonDict) -> None:
        if not joined:
            return
        counts = await self._sync.member_counts(list(joined))
        for room_id, entry in joined.items():
            count = counts[room_id]
            entry["summary"] = {
                "m.heroes": await self._sync.heroes(room_id, ctx.user_id),
                "m.joined_member_count": count.joined,
                "m.invited_member_count": count.invited,
            }
