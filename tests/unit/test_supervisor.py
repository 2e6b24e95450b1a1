"""The supervisor restarts failed subsystems with backoff (virtual time: autojump_clock)."""

from __future__ import annotations

import logging

import pytest

import trio
from trio.testing import MockClock

from trioserver.supervisor import FIRST_BACKOFF_S, MAX_BACKOFF_S, next_backoff, run_supervised


class Flaky:
    """A subsystem that fails on its first `failures` runs, recording when each run began."""

    def __init__(self, failures: int, *, healthy_s: float = 0.0) -> None:
        self.failures = failures
        self.healthy_s = healthy_s
        self.starts: list[float] = []

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        self.starts.append(trio.current_time())
        task_status.started(f"run {len(self.starts)}")
        await trio.sleep(self.healthy_s)
        if len(self.starts) <= self.failures:
            raise RuntimeError(f"injected failure {len(self.starts)}")
        await trio.sleep_forever()


def test_backoff_doubles_to_a_minute_and_resets_after_a_healthy_minute() -> None:
    pauses = [FIRST_BACKOFF_S]
    for _ in range(8):
        pauses.append(next_backoff(pauses[-1], healthy_for_s=0))
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert next_backoff(60, healthy_for_s=MAX_BACKOFF_S) == FIRST_BACKOFF_S
    assert next_backoff(None, healthy_for_s=0) == FIRST_BACKOFF_S


async def test_a_failing_subsystem_is_logged_and_restarted_with_backoff(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    flaky = Flaky(failures=3)
    async with trio.open_nursery() as nursery:
        value = await nursery.start(run_supervised, flaky.run)
        assert value == "run 1"  # the first start's value is passed on
        await trio.sleep(100)
        nursery.cancel_scope.cancel()
    assert flaky.starts == [0, 1, 3, 7]  # 1 s, then 2 s, then 4 s after each failure
    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 3
    assert "Flaky.run failed; restarting in 1 s" in failures[0].getMessage()
    assert failures[0].exc_info is not None  # with the traceback
    assert "injected failure 1" in caplog.text


async def test_a_subsystem_healthy_for_a_minute_restarts_after_one_second_again(
    autojump_clock: MockClock,
) -> None:
    flaky = Flaky(failures=3, healthy_s=MAX_BACKOFF_S)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_supervised, flaky.run)
        await trio.sleep(1000)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(flaky.starts, flaky.starts[1:], strict=False)]
    assert gaps == [MAX_BACKOFF_S + 1] * 3


async def test_a_subsystem_that_returns_is_restarted(autojump_clock: MockClock) -> None:
    runs = 0

    async def returns(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal runs
        runs += 1
        task_status.started()

    with trio.move_on_after(10):
        await run_supervised(returns)
    assert runs >= 4


async def test_a_failure_before_the_first_start_stops_the_server(
    autojump_clock: MockClock,
) -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise OSError("database is unreadable")

    with pytest.RaisesGroup(pytest.RaisesExc(OSError, match="unreadable"), flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(run_supervised, broken)


async def test_cancellation_is_not_caught(autojump_clock: MockClock) -> None:
    flaky = Flaky(failures=0)
    with trio.move_on_after(5) as scope:
        await run_supervised(flaky.run)
    assert scope.cancelled_caught
    assert flaky.starts == [0]
