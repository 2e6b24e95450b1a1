"""Delivering notifications to HTTP pushers: the `run_pushers` subsystem.

Theory of operation
-------------------
Push actions are written with their events, in the events writer's transaction. After each
commit the writer calls `PusherPool.on_persisted`, which only sets a flag and an event of
each pusher's worker: sending an event never waits for a push gateway.

`PusherPool.run_pushers` runs one worker task per pusher. A worker reads its user's notifying
push actions after its pusher's ``last_stream_ordering``, POSTs one notification per event to
the pusher's URL (``/_matrix/push/v1/notify``), and records the position after each, so a
restart neither resends nor skips. A gateway that fails (error status, connection error,
timeout of ``push.timeout``) is retried after a pause that doubles from
``push.initial_backoff`` to ``push.max_backoff``, without moving the position; a notification
still failing after ``push.give_up_after`` is dropped, as Synapse does, so that a gateway that
comes back is not flooded with old notifications. Workers are independent: a hanging gateway
delays only its own pushers. A response whose ``rejected`` list names the pushkey deletes the
pusher.

A read receipt that changes a user's badge sends each of their pushers a counts-only update.
Pushers set or deleted through the API reach the subsystem through `pushers_changed_nowait`:
the workers of that user are restarted from the database.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import attrs
import httpx

import trio

from trioserver.guarded_http import AddressPolicy, GuardedTransport, parse_networks
from trioserver.handlers.push_notification import JsonDict, badge_notification
from trioserver.stores.pushers import PusherRow

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from trioserver.config import PushConfig
    from trioserver.handlers.push_notification import NotificationBuilder
    from trioserver.stores.events import EventStore, StoredEvent
    from trioserver.stores.pushers import PushAction, PusherStore

logger = logging.getLogger(__name__)

# Push actions read per query; a worker loops until it has caught up.
_BATCH = 50


@attrs.define(eq=False)
class _Worker:
    """One pusher's delivery task and what wakes it."""

    pusher: PusherRow
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    wake: trio.Event = attrs.field(factory=trio.Event)
    events_pending: bool = True
    badge_pending: bool = False
    # The badge last sent, to skip receipt updates that change nothing (Synapse).
    last_badge: int | None = None
    failing_since: float | None = None


class _Rejected(Exception):
    """The gateway rejected the pushkey: the pusher is deleted and its worker stops."""


class PusherPool:
    """The pushers' delivery workers, and the hooks that wake them."""

    def __init__(
        self,
        store: PusherStore,
        events: EventStore,
        notifications: NotificationBuilder,
        config: PushConfig,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._events = events
        self._notifications = notifications
        self._config = config
        self._clock = clock
        # User id -> pusher id -> its worker.
        self._workers: dict[str, dict[int, _Worker]] = {}
        self._changed_users: set[str] = set()
        self._changed = trio.Event()
        self._persisted = trio.Event()
        self._persisted_up_to = 0

    def on_persisted(self, stored: Sequence[StoredEvent]) -> None:
        """Persist listener: new events may notify users with pushers. Never blocks."""
        self._persisted_up_to = max(self._persisted_up_to, stored[-1].stream_ordering)
        self._persisted.set()

    def on_events_position(self, token: int) -> None:
        """The same as `on_persisted` from the events stream's replicated position (main,
        when the events writer is another instance). Never blocks."""
        self._persisted_up_to = max(self._persisted_up_to, token)
        self._persisted.set()

    def on_receipt(self, user_id: str) -> None:
        """Receipt listener: the user's badge may have changed. Never blocks."""
        for worker in self._workers.get(user_id, {}).values():
            worker.badge_pending = True
            worker.wake.set()

    def pushers_changed_nowait(self, user_id: str) -> None:
        """The user's pushers were set or deleted: restart their workers. Never blocks."""
        self._changed_users.add(user_id)
        self._changed.set()

    async def run_pushers(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """The subsystem: deliver every pusher's notifications until cancelled (STYLE S1).

        Checkpoint: yes (runs until cancelled).
        """
        self._workers.clear()
        if self._config.enabled:
            await self._serve(task_status)
        else:
            task_status.started()
            await trio.sleep_forever()

    async def _serve(self, task_status: trio.TaskStatus[None]) -> None:
        # trust_env off: requests go to pusher URLs only, never through an environment proxy;
        # and only to addresses the policy permits (see guarded_http).
        policy = AddressPolicy(
            parse_networks(self._config.ip_range_blocklist),
            parse_networks(self._config.ip_range_allowlist),
        )
        transport = GuardedTransport(policy, verify_tls=self._config.verify_tls)
        timeout = httpx.Timeout(self._config.timeout)
        async with (
            httpx.AsyncClient(
                transport=transport, timeout=timeout, trust_env=False, follow_redirects=False
            ) as client,
            trio.open_nursery() as nursery,
        ):
            dispatched = await self._store.stream_end()
            # Each worker catches up from its own position when it starts.
            for pusher in await self._store.all_pushers():
                self._start(nursery, client, pusher)
            nursery.start_soon(self._dispatch, dispatched)
            task_status.started()
            while True:
                await self._changed.wait()
                self._changed = trio.Event()
                users, self._changed_users = self._changed_users, set()
                await self._reload(nursery, client, users)

    async def _dispatch(self, dispatched: int) -> None:
        """Wake the workers of the users that new events notify: one query per commit (or
        per several, when commits come faster than the query), not one per pusher."""
        while True:
            await self._persisted.wait()
            self._persisted = trio.Event()
            up_to = self._persisted_up_to
            if up_to <= dispatched:
                continue
            if not self._workers:
                # No pushers, no query (a worker started later catches up by itself).
                dispatched = up_to
                continue
            users = await self._store.users_notified_between(dispatched, up_to)
            dispatched = up_to
            for user_id in users:
                for worker in self._workers.get(user_id, {}).values():
                    worker.events_pending = True
                    worker.wake.set()

    async def _reload(
        self, nursery: trio.Nursery, client: httpx.AsyncClient, users: set[str]
    ) -> None:
        for user_id in users:
            for worker in self._workers.pop(user_id, {}).values():
                worker.scope.cancel()
        for user_id in users:
            for pusher in await self._store.user_pushers(user_id):
                self._start(nursery, client, pusher)  # /pushers/set stores http ones only

    def _start(self, nursery: trio.Nursery, client: httpx.AsyncClient, pusher: PusherRow) -> None:
        worker = _Worker(pusher)
        self._workers.setdefault(pusher.user_id, {})[pusher.id] = worker
        nursery.start_soon(self._run_worker, client, worker)

    async def _run_worker(self, client: httpx.AsyncClient, worker: _Worker) -> None:
        with worker.scope:
            try:
                while True:
                    if not (worker.events_pending or worker.badge_pending):
                        await worker.wake.wait()
                    worker.wake = trio.Event()
                    if worker.events_pending:
                        worker.events_pending = False
                        await self._deliver_pending(client, worker)
                    if worker.badge_pending:
                        worker.badge_pending = False
                        await self._update_badge(client, worker)
            except _Rejected:
                pusher = worker.pusher
                logger.info("push gateway rejected pushkey %s: removing it", pusher.pushkey)
                await self._store.delete_pusher(pusher.app_id, pusher.pushkey, pusher.user_id)
        of_user = self._workers.get(worker.pusher.user_id, {})
        if of_user.get(worker.pusher.id) is worker:
            del of_user[worker.pusher.id]
            if not of_user:
                del self._workers[worker.pusher.user_id]

    async def _deliver_pending(self, client: httpx.AsyncClient, worker: _Worker) -> None:
        pusher = worker.pusher
        while True:
            position = pusher.last_stream_ordering
            actions = await self._store.notify_actions_after(pusher.user_id, position, _BATCH)
            if not actions:
                return
            for action in actions:
                delivered = await self._deliver_one(client, worker, action)
                pusher = attrs.evolve(pusher, last_stream_ordering=action.stream_ordering)
                worker.pusher = pusher
                success_ms = int(self._clock() * 1000) if delivered else None
                await self._store.advance_pusher(pusher.id, action.stream_ordering, success_ms)

    async def _deliver_one(
        self, client: httpx.AsyncClient, worker: _Worker, action: PushAction
    ) -> bool:
        """Push one event; whether the gateway took it (False: nothing to push, given up).
        `action` notifies: only such rows are read (`stores.pushers`)."""
        stored = await self._events.get_event(action.event_id)
        if stored is None or stored.rejected is not None:
            return False
        badge = await self._badge(worker.pusher.user_id)
        body = await self._notifications.event_notification(
            worker.pusher, stored, action.actions, badge
        )
        if not await self._post_with_retries(client, worker, body):
            return False
        worker.last_badge = badge
        return True

    async def _update_badge(self, client: httpx.AsyncClient, worker: _Worker) -> None:
        badge = await self._badge(worker.pusher.user_id)
        if badge == worker.last_badge:
            return
        if await self._post_with_retries(client, worker, badge_notification(worker.pusher, badge)):
            worker.last_badge = badge

    async def _badge(self, user_id: str) -> int:
        return await self._store.badge(user_id, by_room=self._config.group_unread_count_by_room)

    async def _post_with_retries(
        self, client: httpx.AsyncClient, worker: _Worker, body: JsonDict
    ) -> bool:
        """POST until the gateway accepts (True) or the notification is given up (False).

        Raises:
            _Rejected: the gateway rejected the pushkey.
        """
        backoff = self._config.initial_backoff
        while True:
            rejected = await self._post(client, worker.pusher, body)
            if rejected is not None:
                if worker.failing_since is not None:
                    worker.failing_since = None
                    await self._store.set_pusher_failing(worker.pusher.id, None)
                if worker.pusher.pushkey in rejected:
                    raise _Rejected
                return True
            now = trio.current_time()
            if worker.failing_since is None:
                worker.failing_since = now
                since_ms = int(self._clock() * 1000)
                await self._store.set_pusher_failing(worker.pusher.id, since_ms)
            elif now - worker.failing_since >= self._config.give_up_after:
                logger.warning(
                    "giving up on a notification to %s (pushkey %s) after %.0f s of failures",
                    worker.pusher.user_id,
                    worker.pusher.pushkey,
                    now - worker.failing_since,
                )
                worker.failing_since = None
                await self._store.set_pusher_failing(worker.pusher.id, None)
                return False
            logger.info("push to %s failed: retrying in %.1f s", worker.pusher.user_id, backoff)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, self._config.max_backoff)

    async def _post(
        self, client: httpx.AsyncClient, pusher: PusherRow, body: JsonDict
    ) -> list[str] | None:
        """One POST to the pusher's gateway: the pushkeys it rejected, or None on failure."""
        url = pusher.data["url"]
        with trio.move_on_after(self._config.timeout) as scope:
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as exc:  # boundary: one outbound request; retried
                logger.warning("push to %s failed: %s", url, exc)
                return None
        if scope.cancelled_caught:
            logger.warning("push to %s timed out after %.1f s", url, self._config.timeout)
            return None
        if not response.is_success:
            logger.warning("push to %s failed with status %d", url, response.status_code)
            return None
        try:
            parsed = response.json()
        except ValueError:
            logger.warning("push gateway %s answered with invalid JSON", url)
            return None
        rejected = parsed.get("rejected") if isinstance(parsed, dict) else None
        if not isinstance(rejected, list):
            return []
        return [key for key in rejected if isinstance(key, str)]
