"""Keeping background subsystems alive: restart with backoff instead of taking the server down.

Theory of operation
-------------------
Every background subsystem (typing and presence timeouts, self-destructing message expiry, the
events writer, and later pushers and replication) is started through `run_supervised`. The
first start is an ordinary ``nursery.start``: when it fails, the server does not start, which
is what an operator wants for a broken configuration or database. Once started, a subsystem
that raises is logged with its traceback and started again after a pause that doubles from
`FIRST_BACKOFF_S` to `MAX_BACKOFF_S`, while the HTTP API goes on serving. A subsystem that ran
for longer than `MAX_BACKOFF_S` since its last (re)start counts as healthy again, so the next
failure waits `FIRST_BACKOFF_S` once more. A subsystem that returns instead of raising is a bug
too (STYLE S1: they return only when cancelled) and is restarted the same way.

Cancellation (shutdown) is never caught: ``except*`` on `Exception` leaves `trio.Cancelled`,
a `BaseException`, to propagate.

This is the documented boundary of STYLE S4 for background tasks; a subsystem itself lets its
exceptions propagate. A subsystem restarted here must rebuild whatever in-memory state its
failure may have left half-changed when it starts (see `EventPersister.run`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

logger = logging.getLogger(__name__)

FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0

Subsystem = Callable[..., Awaitable[None]]


def next_backoff(
    previous_s: float | None,
    healthy_for_s: float,
    *,
    first_s: float = FIRST_BACKOFF_S,
    max_s: float = MAX_BACKOFF_S,
    healthy_after_s: float = MAX_BACKOFF_S,
) -> float:
    """The pause before the next restart: `first_s`, doubling up to `max_s`, and `first_s`
    again after a run of `healthy_after_s` or more.

    Args:
        previous_s: the pause before the last restart, or None if there was none.
        healthy_for_s: how long the subsystem (or process) ran before this failure.
    """
    if previous_s is None or healthy_for_s >= healthy_after_s:
        return first_s
    return min(previous_s * 2, max_s)


def subsystem_name(subsystem: Subsystem) -> str:
    """A readable name for logs, e.g. ``PresenceHandler.run_timeouts``."""
    name: str = getattr(subsystem, "__qualname__", None) or repr(subsystem)
    return name


async def run_supervised(
    subsystem: Subsystem,
    *,
    name: str | None = None,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run `subsystem` (``run_x(*, task_status)``) and restart it whenever it fails.

    Args:
        subsystem: the subsystem; a restart calls it again with a fresh ``task_status``.
        name: what logs call it (default: its qualified name).

    Calls ``task_status.started(value)`` with the value of the subsystem's first start. An
    exception before that propagates: the server fails to start. Returns only when cancelled.

    Checkpoint: yes (runs until cancelled).
    """
    label = name or subsystem_name(subsystem)
    started = False
    backoff: float | None = None
    while True:
        began = trio.current_time()
        try:
            async with trio.open_nursery() as nursery:
                value = await nursery.start(subsystem)
                if not started:
                    started = True
                    task_status.started(value)
            logger.error("subsystem %s returned, which it must not do", label)
        except* Exception:
            if not started:
                raise
            backoff = next_backoff(backoff, trio.current_time() - began)
            logger.exception("subsystem %s failed; restarting in %.0f s", label, backoff)
        else:
            backoff = next_backoff(backoff, trio.current_time() - began)
        await trio.sleep(backoff)
        logger.info("restarting subsystem %s", label)
