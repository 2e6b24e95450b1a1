"""Presence: online/unavailable/offline and status messages (spec "Presence").

Theory of operation
-------------------
Each local user's presence lives in memory (`_states`, read from the ``presence`` table at
start) with two more facts that never leave memory: how many ``/sync`` requests they have in
flight, and when their client was last seen (a sync ended, or presence was set).

A change goes through `_change`, under one lock: it computes the new state, and when the
change is worth telling others about (state or status message changed, ``currently_active``
flipped, or an idle user's last activity moved; Synapse's rules) it stores it with the next
``presence`` stream position and then wakes everyone who shares a room with the user. Other
changes (a busy user's last-active time) stay in memory; ``last_active_ago`` is always computed
from memory when presence is served.

Timers (Synapse's defaults), run by the one task `run_timeouts`, which sleeps until the earliest
deadline and is woken by every change:

- online and inactive for 5 minutes: ``unavailable`` (spec "Idle timeout");
- no sync in flight and the client not seen (nor any activity) for 30 s: ``offline``;
- ``currently_active`` holds for 1 minute after the last activity.

Activity is: setting presence online, a sync with ``set_presence`` online, sending a message,
typing, and sending receipts or read markers (what Synapse counts). It brings an
``unavailable`` user back online. Presence is tracked per user, not per device: the latest
setter wins (Synapse combines devices, taking the "most online").

Across instances (issue 13) main owns presence. A worker's handler (``writer=False``) keeps
the same in-memory states, filled from the stored rows at start and then from the presence
stream (`on_replicated`); it changes nothing itself and runs no timers. Its ``/sync`` requests
tell main through the injected `forward_sync` (user, ``set_presence``, syncing): main's
`remote_user_sync` counts them like local syncs, per instance, so a user syncing on any
instance stays online. Presence is best effort where reads must not fail: when main cannot
be reached (`WriterUnavailable`), a worker's ``/sync`` goes on without telling it.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any

import attrs

import trio

from trioserver.errors import MatrixError
from trioserver.events import is_valid_user_id
from trioserver.internal.errors import WriterUnavailable
from trioserver.stores.presence import PresenceRow, PresenceStore
from trioserver.streams import StreamIdGenerator

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

    from trioserver.handlers.notifier import Notifier
    from trioserver.stores.database import Database
    from trioserver.stores.events import StoredEvent
    from trioserver.stores.state import StateStore
    from trioserver.stores.stream_updates import EventRow, PresenceStreamRow
    from trioserver.streams import StreamPositions

JsonDict = dict[str, Any]
ONLINE = "online"
UNAVAILABLE = "unavailable"
OFFLINE = "offline"
PRESENCE_STATES = (ONLINE, UNAVAILABLE, OFFLINE)
IDLE_TIMEOUT_MS = 5 * 60 * 1000
SYNC_ONLINE_TIMEOUT_MS = 30 * 1000
LAST_ACTIVE_GRANULARITY_MS = 60 * 1000
# How long a worker's end-of-sync notice to main may take (it is sent while cancelled too).
FORWARD_END_TIMEOUT_S = 5.0
# A follower tells main that a user stopped syncing this long after their last sync here
# ended (a client long-polls back to back; Synapse's workers wait 10 s too).
SYNC_LINGER_S = 10.0


@attrs.frozen
class UserPresence:
    """What others may learn of a user's presence."""

    user_id: str
    state: str = OFFLINE
    status_msg: str | None = None
    last_active_ts: int = 0
    currently_active: bool = False

    def content(self, now_ms: int) -> JsonDict:
        """The ``m.presence`` content (and ``GET /presence`` body) as of `now_ms`."""
        content: JsonDict = {"presence": self.state}
        if self.last_active_ts:
            content["last_active_ago"] = max(0, now_ms - self.last_active_ts)
        if self.status_msg:
            content["status_msg"] = self.status_msg
        if self.state == ONLINE:
            content["currently_active"] = self.currently_active
        return content


def should_notify(old: UserPresence, new: UserPresence) -> bool:
    """Whether a change is worth a stream position and waking others (Synapse's rules)."""
    if old.state != new.state or old.status_msg != new.status_msg:
        return True
    bumped = new.last_active_ts - old.last_active_ts > LAST_ACTIVE_GRANULARITY_MS
    if old.state == ONLINE:
        # While currently_active, clients treat the user as active: no need for last-active
        # updates until it flips (spec "Last active ago").
        return old.currently_active != new.currently_active or (
            bumped and not new.currently_active
        )
    return bumped


class PresenceHandler:
    """Presence: online/unavailable/offline and status messages."""

    def __init__(
        self,
        db: Database,
        notifier: Notifier,
        positions: StreamPositions,
        state: StateStore,
        *,
        server_name: str,
        clock: Callable[[], float] = time.time,
        writer: bool = True,
        forward_sync: Callable[[str, str | None, bool], Awaitable[None]] | None = None,
    ) -> None:
        if not writer and forward_sync is None:
            raise ValueError("a presence follower needs forward_sync")
        self._writer = writer
        self._forward_sync = forward_sync
        # (instance, user id) -> syncs in flight there (main only; see remote_user_sync).
        self._remote_syncs: dict[tuple[str, str], int] = {}
        # A follower's record of what main was told (see `_forwarded_sync`): user -> the
        # state announced, this instance's syncs in flight, trio time the last one ended.
        self._announced: dict[str, str] = {}
        self._local_syncs: dict[str, int] = {}
        self._sync_ended: dict[str, float] = {}
        self._linger_wakeup = trio.Event()
        self._store = PresenceStore(db)
        self._notifier = notifier
        self._positions = positions
        self._state = state
        self._server_suffix = ":" + server_name
        self._clock = clock
        self._ids = StreamIdGenerator(0)
        self._position = 0
        self._states: dict[str, UserPresence] = {}
        self._syncs_in_flight: dict[str, int] = {}
        self._last_seen: dict[str, int] = {}
        self._pending_activity: set[str] = set()
        self._lock = trio.Lock()
        self._wakeup = trio.Event()
        # When the timeout task next wakes by itself (ms); -inf while it is not asleep.
        self._sleeping_until = -math.inf
        # The earliest deadline the timeout task knows of (ms), and the users whose deadline
        # may have come sooner since: a wake-up for a sent message looks at those alone.
        self._planned = -math.inf
        self._moved: set[str] = set()

    async def load(self) -> None:
        """Read stored presence and the stream position; register it. Checkpoint: yes."""
        now = self._now_ms()
        for row in await self._store.all_presence():
            self._states[row.user_id] = UserPresence(
                row.user_id, row.state, row.status_msg, row.last_active_ts, row.currently_active
            )
            # Whoever was online before a restart gets the usual grace to sync again.
            self._last_seen[row.user_id] = now
        self._position = await self._store.max_stream_id()
        self._ids = StreamIdGenerator(self._position, writer=self._writer)
        self._positions.register("presence", self.position)

    def position(self) -> int:
        """The presence stream's position: every change up to it is committed."""
        return self._position

    # -- The HTTP API ----------------------------------------------------------------------

    async def get_presence(self, requester: str, user_id: str) -> JsonDict:
        """``GET /presence/{userId}/status``.

        Raises:
            MatrixError: 400 for an invalid user id, 404 for an unknown user, 403 for a user
                who shares no room with the requester.
        """
        if not is_valid_user_id(user_id, historical=True):
            raise MatrixError("M_INVALID_PARAM", f"Invalid user id: {user_id}")
        if user_id != requester and not await self._store.shares_room(requester, user_id):
            if not await self._store.user_exists(user_id):
                raise MatrixError("M_NOT_FOUND", "No presence for that user")
            raise MatrixError("M_FORBIDDEN", "You are not allowed to see their presence.")
        return self._current(user_id).content(self._now_ms())

    async def set_presence(
        self, requester: str, user_id: str, presence: str, status_msg: str | None
    ) -> None:
        """``PUT /presence/{userId}/status`` (an absent status message clears it).

        Raises:
            MatrixError: 403 for someone else's presence, 400 for an unknown state.
            NotStreamWriter: on an instance that does not write the presence stream.
        """
        self._ids.check_writer("presence")
        if user_id != requester:
            raise MatrixError("M_FORBIDDEN", "Can only set your own presence state")
        if presence not in PRESENCE_STATES:
            raise MatrixError("M_INVALID_PARAM", f"Invalid presence state: {presence!r}")
        now = self._now_ms()
        self._last_seen[user_id] = now

        def change(old: UserPresence) -> UserPresence:
            active = now if presence == ONLINE else old.last_active_ts
            return attrs.evolve(old, state=presence, status_msg=status_msg, last_active_ts=active)

        await self._change(user_id, change)

    # -- For /sync and other handlers ------------------------------------------------------

    async def set_presence_from_sync(self, user_id: str, state: str | None) -> None:
        """Apply a ``/sync``'s ``set_presence`` (None: ``online``) at the start of the sync.

        ``offline`` leaves presence alone (spec: the client "is not marked as being online";
        Synapse ignores such syncs for presence). Prefer `user_syncing`, which also knows when
        the sync ends; on its own this counts the sync as ended when it starts.

        Raises:
            MatrixError: 400 for an unknown state.

        Checkpoint: yes.
        """
        state = ONLINE if state is None else state
        if state not in PRESENCE_STATES:
            raise MatrixError("M_INVALID_PARAM", f"Invalid set_presence: {state!r}")
        if not self._writer:
            # A sync that ends as it starts (main counts start and end).
            async with self._forwarded_sync(user_id, state):
                return
        if state == OFFLINE:
            await trio.lowlevel.checkpoint()
            return
        now = self._now_ms()
        self._last_seen[user_id] = now

        def change(old: UserPresence) -> UserPresence:
            active = now if state == ONLINE else old.last_active_ts
            return attrs.evolve(old, state=state, last_active_ts=active)

        await self._change(user_id, change)

    @asynccontextmanager
    async def user_syncing(self, user_id: str, state: str | None) -> AsyncIterator[None]:
        """Wrap a ``/sync`` request: applies `set_presence_from_sync` and keeps the user from
        timing out to ``offline`` while the request is in flight (30 s after it ends).

        On a follower, main is told when the sync starts and when it ends (`forward_sync`)."""
        if not self._writer:
            async with self._forwarded_sync(user_id, state):
                yield
            return
        await self.set_presence_from_sync(user_id, state)
        if state == OFFLINE:
            yield
            return
        self._syncs_in_flight[user_id] = self._syncs_in_flight.get(user_id, 0) + 1
        try:
            yield
        finally:
            self._end_sync(user_id)

    def _end_sync(self, user_id: str) -> None:
        remaining = self._syncs_in_flight[user_id] - 1
        if remaining:
            self._syncs_in_flight[user_id] = remaining
        else:
            del self._syncs_in_flight[user_id]
        self._last_seen[user_id] = self._now_ms()
        self._replan_if_sooner(user_id)

    @asynccontextmanager
    async def _forwarded_sync(self, user_id: str, state: str | None) -> AsyncIterator[None]:
        # Main is told when this instance's syncs of a user start (with their state) and,
        # `SYNC_LINGER_S` after the last one ended, that they stopped; not per request (a
        # client long-polls back to back), as Synapse's workers' USER_SYNC.
        state = ONLINE if state is None else state
        if state not in PRESENCE_STATES:
            raise MatrixError("M_INVALID_PARAM", f"Invalid set_presence: {state!r}")
        announced = self._announced.get(user_id)
        if announced != state:
            if announced is not None:
                await self._announce_end(user_id)
            assert self._forward_sync is not None
            try:
                await self._forward_sync(user_id, state, True)
            except WriterUnavailable as exc:
                # A read must answer while main is down (restarting): the sync goes on; main
                # did not count its start, so it is told nothing of its end either.
                logger.info("presence: main not told of %s syncing: %s", user_id, exc.message)
                yield
                return
            self._announced[user_id] = state
        self._local_syncs[user_id] = self._local_syncs.get(user_id, 0) + 1
        self._sync_ended.pop(user_id, None)
        try:
            yield
        finally:
            remaining = self._local_syncs[user_id] - 1
            if remaining:
                self._local_syncs[user_id] = remaining
            else:
                del self._local_syncs[user_id]
                self._sync_ended[user_id] = trio.current_time()
                self._linger_wakeup.set()

    async def _announce_end(self, user_id: str) -> None:
        """Tell main this instance's syncs of `user_id` stopped (best effort)."""
        state = self._announced.pop(user_id, None)
        if state is None:
            return
        assert self._forward_sync is not None
        with (
            trio.CancelScope(shield=True),  # main would count the user as syncing forever
            trio.move_on_after(FORWARD_END_TIMEOUT_S),
            suppress(WriterUnavailable),  # main went away: it forgot this sync anyway
        ):
            await self._forward_sync(user_id, state, False)

    def forget_announced_nowait(self) -> None:
        """The replication link to main dropped, and main ended this instance's syncs: the
        next sync of each user is announced again (follower only)."""
        self._announced.clear()
        self._sync_ended.clear()

    async def run_sync_lingering(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """On a follower: tell main of users whose syncs here ended `SYNC_LINGER_S` ago, until
        cancelled (STYLE S1)."""
        task_status.started()
        while True:
            self._linger_wakeup = trio.Event()
            now = trio.current_time()
            for user_id in [u for u, at in self._sync_ended.items() if at + SYNC_LINGER_S <= now]:
                del self._sync_ended[user_id]
                await self._announce_end(user_id)
            deadline = min(self._sync_ended.values(), default=math.inf) + SYNC_LINGER_S
            with trio.move_on_at(deadline):
                await self._linger_wakeup.wait()

    async def remote_user_sync(
        self, instance: str, user_id: str, state: str | None, syncing: bool
    ) -> None:
        """A ``/sync`` of `user_id` started (`syncing`) or ended on another instance: the
        same effect as `user_syncing` around a local one (main only).

        Raises:
            MatrixError: 400 for an unknown state.
            NotStreamWriter: on an instance that does not write the presence stream.

        Checkpoint: yes.
        """
        self._ids.check_writer("presence")
        key = (instance, user_id)
        if syncing:
            await self.set_presence_from_sync(user_id, state)
            if state != OFFLINE:
                self._remote_syncs[key] = self._remote_syncs.get(key, 0) + 1
                self._syncs_in_flight[user_id] = self._syncs_in_flight.get(user_id, 0) + 1
            return
        await trio.lowlevel.checkpoint()
        if self._remote_syncs.get(key, 0) == 0:
            return  # an offline sync (never counted), or a repeated end
        self._remote_syncs[key] -= 1
        if not self._remote_syncs[key]:
            del self._remote_syncs[key]
        self._end_sync(user_id)

    def remote_instance_gone_nowait(self, instance: str) -> None:
        """An instance went away (its replication connection closed): end its syncs, so
        that its users time out as if their syncs had ended now (main only)."""
        for key in [key for key in self._remote_syncs if key[0] == instance]:
            for _ in range(self._remote_syncs.pop(key)):
                self._end_sync(key[1])

    def on_replicated(self, token: int, rows: Sequence[PresenceStreamRow]) -> None:
        """A follower applied main's presence changes up to `token`: take the new states;
        `notify_replicated` then wakes whom main woke."""
        for row in rows:
            self._states[row.user_id] = UserPresence(
                row.user_id, row.state, row.status_msg, row.last_active_ts, row.currently_active
            )
        self._position = max(self._position, token)

    async def notify_replicated(self, rows: Sequence[PresenceStreamRow]) -> None:
        """Wake everyone sharing a room with the rows' users, and the users (as `_change`
        does on main). Checkpoint: yes."""
        rooms: set[str] = set()
        for row in rows:
            rooms.update(await self._store.joined_rooms(row.user_id))
        self._notifier.notify(rooms=rooms, users={row.user_id for row in rows})

    async def bump_active(self, user_id: str) -> None:
        """The user did something (sent a message, typed, read): update their last-active
        time and bring them back ``online`` from ``unavailable``. Checkpoint: yes.

        Raises:
            NotStreamWriter: on an instance that does not write the presence stream.
        """
        self._ids.check_writer("presence")
        now = self._now_ms()

        def change(old: UserPresence) -> UserPresence:
            state = ONLINE if old.state == UNAVAILABLE else old.state
            return attrs.evolve(old, state=state, last_active_ts=now)

        await self._change(user_id, change)

    def on_new_events(self, stored: Sequence[StoredEvent]) -> None:
        """Count local users' messages as activity (a persister listener; the timeout task
        applies it, as listeners cannot wait)."""
        if not self._writer:
            return
        for item in stored:
            sender = item.event.sender
            if item.event.type == "m.room.message" and sender.endswith(self._server_suffix):
                self._pending_activity.add(sender)
                self._wakeup.set()

    def on_replicated_events(self, rows: Sequence[EventRow]) -> None:
        """`on_new_events` for events written by an events writer elsewhere."""
        if not self._writer:
            return
        for row in rows:
            if row.type == "m.room.message" and row.sender.endswith(self._server_suffix):
                self._pending_activity.add(row.sender)
                self._wakeup.set()

    async def presence_since(self, user_id: str, since: int | None) -> list[JsonDict]:
        """``m.presence`` events for the user and everyone sharing a joined room with them.

        Args:
            since: the client's presence position: only users whose presence changed after
                it; None for everyone with a known presence (initial sync).

        Returns:
            ``{"type": "m.presence", "sender", "content"}`` events.

        Checkpoint: yes.
        """
        return self.presence_for_users(await self._store.changed_for(user_id, since))

    def presence_for_users(self, user_ids: Iterable[str]) -> list[JsonDict]:
        """``m.presence`` events for these users, e.g. for the members of a room the syncing
        user newly joined. A user never seen online is ``offline`` (as Synapse reports them:
        SyTest "Get presence for newly joined members in incremental sync")."""
        now = self._now_ms()
        return [
            {"type": "m.presence", "sender": uid, "content": self._current(uid).content(now)}
            for uid in sorted(user_ids)
        ]

    # -- Timeouts ----------------------------------------------------------------------------

    async def run_timeouts(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Apply idle, offline and currently-active timeouts and queued activity, until
        cancelled (STYLE S1). A follower has none to apply (main's become rows)."""
        task_status.started()
        if not self._writer:
            await trio.sleep_forever()
        while True:
            self._wakeup = trio.Event()
            while self._pending_activity:
                await self.bump_active(self._pending_activity.pop())
            now = self._now_ms()
            if now >= self._planned:
                # Something is due (or a planned deadline moved later): a pass over everyone.
                for user_id in [u for u in self._states if self._deadline(u) <= now]:
                    await self._change(user_id, lambda old: old)
                self._moved.clear()
                planned = min((self._deadline(u) for u in self._states), default=math.inf)
            else:
                # Woken for activity or a sooner deadline: only the users that moved. Every
                # message wakes this task; a pass over every online user each time cost main
                # a share of its CPU that grew with the number of users.
                moved, self._moved = self._moved, set()
                planned = min(
                    [self._planned, *(self._deadline(u) for u in moved if u in self._states)]
                )
            self._planned = self._sleeping_until = planned
            # Clamped: the clock was read again after the awaits above, so a deadline may
            # have passed meanwhile (or the wall clock stepped); then just go round again.
            with trio.move_on_after(max(0.0, (planned - self._now_ms()) / 1000)):
                await self._wakeup.wait()
            self._sleeping_until = -math.inf  # awake: every change is seen on the next pass

    def _deadline(self, user_id: str) -> float:
        """When the next timeout of this user falls due (ms), if ever."""
        state = self._states[user_id]
        if state.state == OFFLINE:
            return math.inf
        deadlines = [math.inf]
        if state.state == ONLINE:
            deadlines.append(state.last_active_ts + IDLE_TIMEOUT_MS)
            if state.currently_active:
                deadlines.append(state.last_active_ts + LAST_ACTIVE_GRANULARITY_MS)
        if user_id not in self._syncs_in_flight:
            seen = max(self._last_seen.get(user_id, 0), state.last_active_ts)
            deadlines.append(seen + SYNC_ONLINE_TIMEOUT_MS)
        return min(deadlines)

    def _timed_out(self, user_id: str, new: UserPresence, now: int) -> UserPresence:
        """`new` with the timeouts due at `now` applied."""
        state = new.state
        if state == ONLINE and now - new.last_active_ts >= IDLE_TIMEOUT_MS:
            state = UNAVAILABLE
        if state != OFFLINE and user_id not in self._syncs_in_flight:
            seen = max(self._last_seen.get(user_id, 0), new.last_active_ts)
            if now - seen >= SYNC_ONLINE_TIMEOUT_MS:
                state = OFFLINE
        active = state == ONLINE and now - new.last_active_ts < LAST_ACTIVE_GRANULARITY_MS
        return attrs.evolve(new, state=state, currently_active=active)

    # -- Changes -----------------------------------------------------------------------------

    def _current(self, user_id: str) -> UserPresence:
        return self._states.get(user_id) or UserPresence(user_id)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def _change(self, user_id: str, change: Callable[[UserPresence], UserPresence]) -> None:
        async with self._lock:
            old = self._current(user_id)
            new = self._timed_out(user_id, change(old), self._now_ms())
            if should_notify(old, new):
                row = PresenceRow(
                    user_id,
                    new.state,
                    new.status_msg,
                    new.last_active_ts,
                    new.currently_active,
                    stream_id=0,
                )
                stream_id = await self._store.upsert(row, self._ids.next_id)
                self._states[user_id] = new
                # Publish the position only once the row is committed.
                self._position = max(self._position, stream_id)
                rooms = await self._store.joined_rooms(user_id)
                self._notifier.notify(rooms=rooms, users=[user_id])
            elif new != old or user_id in self._states:
                self._states[user_id] = new
            self._replan_if_sooner(user_id)

    def _replan_if_sooner(self, user_id: str) -> None:
        """Wake the timeout task if this user's next deadline comes before the one it sleeps
        until (a wake-up costs it a pass over every user, and every /sync changes presence
        state)."""
        self._moved.add(user_id)
        if user_id in self._states and self._deadline(user_id) < self._sleeping_until:
            self._wakeup.set()
