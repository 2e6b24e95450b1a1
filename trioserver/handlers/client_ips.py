"""Where and with what each device was last seen (``last_seen_*`` of ``GET /devices``, the
connections of ``GET /admin/whois``).

Theory of operation
-------------------
Every authenticated request calls `record_nowait`, which only writes to a dict: a request must
not cost a database write (DESIGN.md, "HTTP edge"). `run` writes what changed to the devices
table every `FLUSH_INTERVAL` seconds, as Synapse does with its client IPs, and once more when
it is cancelled. Readers see the newest values without waiting for a flush: `overlay` lays the
pending ones over rows read from the database. A login writes its values directly (see
`AccountStore.add_login`), so a device is never without them. Nothing pending, no wake-ups.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import attrs

import trio

from trioserver.stores.accounts import LastSeen

if TYPE_CHECKING:
    from collections.abc import Callable

    from trioserver.handlers.auth import Requester
    from trioserver.stores.accounts import AccountStore, DeviceRow


# Synapse flushes its client IPs every five seconds.
FLUSH_INTERVAL = 5.0
# A device seen again from the same place within this time is not worth a write.
SAME_CLIENT_RESOLUTION_MS = 60_000
# A final flush at shutdown gets this long before it is abandoned.
FINAL_FLUSH_SECONDS = 5.0


class ClientIpRecorder:
    """Remembers the last IP, user agent and time of each device, flushing in batches."""

    def __init__(self, accounts: AccountStore, *, clock: Callable[[], float] = time.time) -> None:
        self._accounts = accounts
        self._clock = clock
        self._pending: dict[tuple[str, str], LastSeen] = {}
        self._flushed: dict[tuple[str, str], LastSeen] = {}
        # Set when something is pending: an idle server does not wake up to flush nothing.
        self._has_pending = trio.Event()

    def record_nowait(self, requester: Requester, ip: str | None, user_agent: str | None) -> None:
        """Note that `requester`'s device made a request now (never blocks)."""
        key = (requester.user_id, requester.device_id)
        now_ms = int(self._clock() * 1000)
        last = self._pending.get(key) or self._flushed.get(key)
        if (
            last is not None
            and last.ip == ip
            and last.user_agent == user_agent
            and now_ms - last.ts < SAME_CLIENT_RESOLUTION_MS
        ):
            return
        self._pending[key] = LastSeen(
            requester.user_id, requester.device_id, ip, user_agent, now_ms
        )
        self._has_pending.set()

    def overlay(self, devices: list[DeviceRow]) -> list[DeviceRow]:
        """`devices` with the values not yet flushed."""
        return [self._overlay_one(d) for d in devices]

    def _overlay_one(self, device: DeviceRow) -> DeviceRow:
        seen = self._pending.get((device.user_id, device.device_id))
        if seen is None or (device.last_seen_ts or 0) > seen.ts:
            return device
        return attrs.evolve(
            device,
            last_seen_ip=seen.ip,
            last_seen_user_agent=seen.user_agent,
            last_seen_ts=seen.ts,
        )

    async def flush(self) -> None:
        """Write what was recorded since the last flush. Checkpoint: yes."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        await self._accounts.update_last_seen(list(batch.values()))
        self._flushed.update(batch)
        if len(self._flushed) > 100_000:
            self._flushed.clear()  # only an optimisation: at worst a few extra writes

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Flush `FLUSH_INTERVAL` seconds after something was recorded, until cancelled; then
        once more."""
        task_status.started()
        try:
            while True:
                await self._has_pending.wait()
                await trio.sleep(FLUSH_INTERVAL)
                self._has_pending = trio.Event()
                await self.flush()
        finally:
            # Shielded: the final flush of what requests recorded, bounded in time.
            with trio.move_on_after(FINAL_FLUSH_SECONDS) as scope:
                scope.shield = True
                await self.flush()
