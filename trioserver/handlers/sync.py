"""``GET /sync``: what changed for a user since their last sync, waiting for it if nothing has.

Theory of operation
-------------------
A response covers every stream from the client's ``since`` token to the positions read at the
start of the computation (``now``), which become ``next_batch``. An incremental sync with a
``timeout`` whose response would be empty waits instead (`Notifier.wait_for_change`, under the
user and their joined rooms: a write committed while it computed is never slipped past) until
woken or until the timeout. A wake-up recomputes from the same ``since``; a
request woken for something it then filters out simply waits again. Incremental computations
take one of a few slots per instance (`CONCURRENT_INCREMENTAL_SYNCS`), so that one event
waking many long-polls neither holds every answer until the last is computed nor queues the
other requests of the event loop behind all of them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver.events.relations import MAIN_THREAD
from trioserver.handlers.event_filter import FilterDefinition
from trioserver.handlers.serialize import SerializeOptions
from trioserver.handlers.sync_rooms import SyncContext
from trioserver.streams import StreamToken

if TYPE_CHECKING:
    from trioserver.handlers.notifier import Notifier
    from trioserver.handlers.presence import PresenceHandler
    from trioserver.handlers.sync_rooms import RoomSyncBuilder
    from trioserver.handlers.sync_streams import RoomExtras, SyncStreams
    from trioserver.stores.push_actions import PushActionStore, UnreadCounts
    from trioserver.stores.sync import SyncMembership, SyncStore

JsonDict = dict[str, Any]
MEMBER = "m.room.member"
_ARRIVALS = ("join", "invite", "knock")
# Spec: servers may cap the long-poll; Synapse does not, but an hour keeps sockets honest.
MAX_TIMEOUT_MS = 3_600_000
# Incremental /sync computations an instance runs at once (see `_compute_incremental`).
CONCURRENT_INCREMENTAL_SYNCS = 4


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
    next_batch: StreamToken


class SyncHandler:
    """Computes sync responses and long-polls for them."""

    def __init__(
        self,
        notifier: Notifier,
        rooms: RoomSyncBuilder,
        streams: SyncStreams,
        presence: PresenceHandler,
        sync_store: SyncStore,
        push_actions: PushActionStore,
    ) -> None:
        self._notifier = notifier
        self._push_actions = push_actions
        self._rooms = rooms
        self._streams = streams
        self._presence = presence
        self._sync = sync_store
        self._incremental_slots = trio.CapacityLimiter(CONCURRENT_INCREMENTAL_SYNCS)

    async def sync(self, request: SyncRequest) -> JsonDict:
        """Answer a sync request, waiting up to its timeout when there is nothing new."""
        # The user counts as online (or `set_presence`) for as long as the request runs.
        async with self._presence.user_syncing(request.user_id, request.set_presence):
            result = await self._sync_now_or_later(request)
        self._rooms.sync_answered(request.user_id, request.device_id, result.next_batch)
        return result.body

    async def snapshot(self, request: SyncRequest) -> JsonDict:
        """A response computed now, without waiting and without touching presence (the
        deprecated ``GET /initialSync`` is built on it)."""
        return (await self._compute(request, self._notifier.current_token())).body

    async def _sync_now_or_later(self, request: SyncRequest) -> SyncResult:
        if request.since is None or request.full_state:
            return await self._compute(request, self._notifier.current_token())
        if request.timeout_ms <= 0:
            return (await self._compute_incremental(request))[0]
        now = self._notifier.current_token()
        deadline = trio.current_time() + min(request.timeout_ms, MAX_TIMEOUT_MS) / 1000
        while True:
            # A client that re-polls with the token it was just given has, by definition,
            # nothing new: every stream is where its token says. Skip straight to waiting.
            if request.since != now:
                result, now = await self._compute_incremental(request)
                if not result.empty:
                    return result
            joined = await self._joined_room_ids(request.user_id)
            changed, now = await self._notifier.wait_for_change(
                request.user_id, joined, now, deadline
            )
            if not changed:
                return (await self._compute_incremental(request))[0]

    async def _compute_incremental(self, request: SyncRequest) -> tuple[SyncResult, StreamToken]:
        """An incremental response, computed once one of the instance's slots is free; the
        positions it covers are read then, so it carries all that committed while it waited.

        One event can wake hundreds of long-polls at once. Computed all together, they
        interleave at every read and all finish at about the time the last one does, while
        a send or any other request waits behind all of them in the event loop. Admitted a
        few at a time (no sleep: a slot is free as soon as a computation ends), the first
        answers leave early and other requests keep moving. Measured in BENCHMARKS.md §12.
        Initial and ``full_state`` syncs, the long ones, are not held to the slots.
        """
        async with self._incremental_slots:
            now = self._notifier.current_token()
            return await self._compute(request, now), now

    async def _joined_room_ids(self, user_id: str) -> list[str]:
        rows = await self._sync.memberships(user_id)
        return [row.room_id for row in rows if row.membership == "join"]

    async def _context(self, request: SyncRequest, now: StreamToken) -> SyncContext:
        ctx = SyncContext(
            user_id=request.user_id,
            since=request.since,
            now=now,
            filter=request.filter,
            full_state=request.full_state,
            options=request.options,
            ignored=await self._streams.ignored_users(request.user_id),
            device_id=request.device_id,
        )
        self._rooms.start_sync(ctx)
        return ctx

    async def _compute(self, request: SyncRequest, now: StreamToken) -> SyncResult:
        ctx = await self._context(request, now)
        rows = await self._current_memberships(ctx)
        joined = [row for row in rows if row.membership == "join"]
        joins = {row.room_id for row in joined if await self._rooms.joined_since(ctx, row)}
        # Rooms that need their whole state: all of them for an initial or full_state sync.
        fresh = {row.room_id for row in joined} if ctx.initial or ctx.full_state else joins
        extras = await self._streams.room_extras(ctx, [row.room_id for row in joined], fresh)
        rooms = await self._rooms_section(ctx, rows, _Fresh(fresh, joins), extras)
        presence = await self._streams.presence(ctx, await self._new_members(ctx, joins, rooms))
        account_data = await self._streams.global_account_data(ctx)
        to_device, to_device_position = await self._streams.to_device(ctx, request.device_id)
        next_batch = attrs.evolve(now, to_device=to_device_position)
        changed, left = await self._streams.device_lists(ctx)
        key_counts, fallback_types = await self._streams.key_counts(ctx, request.device_id)
        body: JsonDict = {
            "next_batch": next_batch.to_string(),
            "rooms": rooms,
            "presence": {"events": presence},
            "account_data": {"events": account_data},
            "to_device": {"events": to_device},
            "device_lists": {"changed": sorted(changed), "left": sorted(left)},
            "device_one_time_keys_count": key_counts,
            "device_unused_fallback_key_types": fallback_types,
        }
        empty = not (
            any(rooms[section] for section in rooms)
            or presence
            or account_data
            or to_device
            or changed
            or left
        )
        return SyncResult(body, empty, next_batch)

    async def _new_members(self, ctx: SyncContext, joins: set[str], rooms: JsonDict) -> set[str]:
        """Users whose presence an incremental sync adds even if it did not change: everyone
        in a room the user joined, and whoever joined (or was invited to) a room in this
        response (as Synapse does; SyTest 31sync/03joined presence tests)."""
        if ctx.since is None:
            return set()
        users = await self._sync.users_in_rooms(sorted(joins))
        for entry in rooms["join"].values():
            for part in ("timeline", "state"):
                for event in entry[part]["events"]:
                    content = event.get("content") or {}
                    if event.get("type") == MEMBER and content.get("membership") in _ARRIVALS:
                        users.add(event.get("state_key"))
        users.discard(ctx.user_id)
        return users

    async def _current_memberships(self, ctx: SyncContext) -> list[SyncMembership]:
        rows = await self._sync.memberships(ctx.user_id)
        current = []
        for row in rows:
            if not ctx.filter.room.matches_room(row.room_id):
                continue
            as_of_now = await self._as_of_now(ctx, row)
            if as_of_now is not None:
                current.append(as_of_now)
        return current

    async def _rooms_section(
        self,
        ctx: SyncContext,
        rows: list[SyncMembership],
        fresh: _Fresh,
        extras: RoomExtras,
    ) -> JsonDict:
        sections: JsonDict = {"join": {}, "invite": {}, "leave": {}, "knock": {}}
        changed: set[str] | None = None
        if ctx.since is not None:
            changed = set()
            if ctx.since.events != ctx.now.events:
                changed = await self._sync.rooms_with_events(
                    [row.room_id for row in rows], ctx.since.events, ctx.now.events
                )
            changed |= extras.rooms()
        summaries: list[str] = []
        for row in rows:
            if row.membership == "join":
                entry = await self._joined_entry(ctx, row, fresh, changed, extras)
                if entry is not None and (row.room_id in fresh.full or _has_members(entry)):
                    summaries.append(row.room_id)
            else:
                entry = await self._other_entry(ctx, row)
            if entry is not None:
                section = "leave" if row.membership == "ban" else row.membership
                sections[section][row.room_id] = entry
        await self._add_summaries(ctx, sections["join"], summaries)
        return sections

    async def _as_of_now(self, ctx: SyncContext, row: SyncMembership) -> SyncMembership | None:
        # A membership committed after `now` belongs to the next sync: use the one before it.
        if row.stream_ordering <= ctx.now.events:
            return row
        membership = await self._sync.membership_at(ctx.user_id, row.room_id, ctx.now.events)
        return None if membership is None else attrs.evolve(row, membership=membership)

    async def _other_entry(self, ctx: SyncContext, row: SyncMembership) -> JsonDict | None:
        fresh = ctx.since is None or row.stream_ordering > ctx.since.events
        if row.membership in ("invite", "knock"):
            if not fresh:
                return None
            events = await self._rooms.stripped_state(ctx, row)
            return None if events is None else {f"{row.membership}_state": {"events": events}}
        if row.forgotten:
            return None
        include = (ctx.since is None and ctx.filter.room.include_leave) or (
            ctx.since is not None and fresh
        )
        return await self._left_entry(ctx, row) if include else None

    async def _joined_entry(
        self,
        ctx: SyncContext,
        row: SyncMembership,
        fresh: _Fresh,
        changed: set[str] | None,
        extras: RoomExtras,
    ) -> JsonDict | None:
        full = row.room_id in fresh.full
        if not full and changed is not None and row.room_id not in changed:
            return None
        timeline = await self._rooms.timeline(
            ctx,
            row.room_id,
            upto_stream=ctx.now.events,
            full=full,
            viewer=self._rooms.viewer(ctx, row),
            joined=row.room_id in fresh.joins,
        )
        ephemeral = extras.ephemeral.get(row.room_id, [])
        account_data = extras.account_data.get(row.room_id, [])
        if not (full or timeline.events or timeline.state or ephemeral or account_data):
            return None
        state = await self._rooms.entry_state(ctx, row.room_id, timeline, full=full)
        return {
            "timeline": await self._rooms.serialize_timeline(ctx, timeline),
            "state": await self._rooms.serialize_state(ctx, state),
            "ephemeral": {"events": ephemeral},
            "account_data": {"events": account_data},
        }

    async def _left_entry(self, ctx: SyncContext, row: SyncMembership) -> JsonDict:
        # A room the user joined and left since `since` is new to the client: like a newly
        # joined room it gets the whole state (SyTest "When user joins and leaves a room in
        # the same batch, the full state is still included in the next sync").
        joined = (
            ctx.since is not None
            and row.last_join_stream is not None
            and row.last_join_stream > ctx.since.events
        )
        full = ctx.since is None or joined
        out_of_band = await self._rooms.out_of_band_timeline(row)
        if out_of_band is not None:
            return {
                "timeline": await self._rooms.serialize_timeline(ctx, out_of_band),
                "state": {"events": []},
                "account_data": {"events": []},
            }
        timeline = await self._rooms.timeline(
            ctx,
            row.room_id,
            upto_stream=row.stream_ordering,
            full=full,
            viewer=self._rooms.viewer(ctx, row),
            joined=joined,
        )
        return {
            "timeline": await self._rooms.serialize_timeline(ctx, timeline),
            "state": await self._rooms.serialize_state(
                ctx, await self._rooms.entry_state(ctx, row.room_id, timeline, full=full)
            ),
            "account_data": {"events": []},
        }

    async def _add_summaries(
        self, ctx: SyncContext, joined: JsonDict, summaries: list[str]
    ) -> None:
        """Unread counts for every joined entry; a room ``summary`` for those in `summaries`.

        Spec: the summary's fields are required only when they changed since the last sync,
        so (as Synapse does) an incremental sync sends one only for a newly joined room or
        when membership events are in the entry; other entries get an empty summary.
        """
        if not joined:
            return
        counts = await self._sync.member_counts(summaries) if summaries else {}
        heroes = await self._sync.heroes(summaries, ctx.user_id) if summaries else {}
        unread: dict[str, list[UnreadCounts]] = {}
        for row in await self._push_actions.summaries(ctx.user_id, list(joined)):
            unread.setdefault(row.room_id, []).append(row)
        by_thread = ctx.filter.room.timeline.unread_thread_notifications
        for room_id, entry in joined.items():
            _add_unread_counts(entry, unread.get(room_id, []), by_thread=by_thread)
            count = counts.get(room_id)
            summary: JsonDict = {}
            if count is not None:
                summary["m.joined_member_count"] = count.joined
                summary["m.invited_member_count"] = count.invited
                room_heroes = heroes.get(room_id)
                if room_heroes is not None:
                    summary["m.heroes"] = room_heroes
            entry["summary"] = summary


@attrs.frozen
class _Fresh:
    """Joined rooms that need their whole state (`full`), and those the user joined since
    ``since`` (`joins`, a subset of it)."""

    full: set[str]
    joins: set[str]


def _add_unread_counts(entry: JsonDict, rows: list[UnreadCounts], *, by_thread: bool) -> None:
    """A joined room's ``unread_notifications`` (and ``unread_thread_notifications``).

    Spec "Receiving notifications": with ``unread_thread_notifications`` in the timeline
    filter, the room's counts are those of its main timeline and each thread's are given
    apart, by root id; otherwise they are summed over all threads.
    """
    main = [row for row in rows if row.thread_id == MAIN_THREAD] if by_thread else rows
    entry["unread_notifications"] = {
        "notification_count": sum(row.notifications for row in main),
        "highlight_count": sum(row.highlights for row in main),
    }
    if by_thread:
        threads = {
            row.thread_id: {
                "notification_count": row.notifications,
                "highlight_count": row.highlights,
            }
            for row in rows
            if row.thread_id != MAIN_THREAD
        }
        if threads:
            entry["unread_thread_notifications"] = threads


def _has_members(entry: JsonDict) -> bool:
    """Whether a room entry's timeline or state carries a membership event."""
    return any(
        event.get("type") == "m.room.member"
        for part in ("timeline", "state")
        for event in entry[part]["events"]
    )
