"""The clock and the task supervisor (no real sleeping)."""

import asyncio
import logging

import pytest

from msgin5g.runtime import Supervisor, wait_for
from msgin5g.testing import ManualClock

pytestmark = pytest.mark.timeout(10)


async def test_failing_task_is_logged_and_counted_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    done = asyncio.Event()

    async def boom() -> None:
        raise ValueError("broken task")

    async def sibling() -> None:
        await asyncio.sleep(0)
        done.set()

    async with Supervisor("test") as tasks:
        with caplog.at_level(logging.ERROR, logger="msgin5g.runtime.supervisor"):
            tasks.spawn(boom())
            tasks.spawn(sibling())
            await asyncio.wait_for(done.wait(), 5)
            for _ in range(5):
                await asyncio.sleep(0)
        assert tasks.failures == 1
        assert "broken task" in caplog.text
        assert tasks.running == 0  # the failure did not cancel the sibling


async def test_aclose_cancels_running_tasks_and_refuses_new_ones() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    tasks = Supervisor("test")
    await tasks.start()
    tasks.spawn(forever())
    await asyncio.wait_for(started.wait(), 5)
    await tasks.aclose()
    assert cancelled.is_set() and tasks.running == 0 and tasks.failures == 0

    async def never() -> None:  # pragma: no cover - closed, not run
        raise AssertionError

    with pytest.raises(RuntimeError):
        tasks.spawn(never())


async def test_manual_clock_sleep_and_wait_for() -> None:
    clock = ManualClock()
    woke: list[float] = []

    async def sleeper() -> None:
        await clock.sleep(60)
        woke.append(clock.now())

    task = asyncio.create_task(sleeper())
    await clock.run_for(59)
    assert woke == []
    await clock.run_for(1)
    assert woke == [1_700_000_060.0]
    await task
    never = asyncio.Event()
    waiting = asyncio.create_task(wait_for(clock, never.wait(), 5))
    await clock.run_for(5)
    with pytest.raises(TimeoutError):
        await waiting
    ready = asyncio.Event()
    ready.set()
    assert await wait_for(clock, ready.wait(), 5) is True
    assert clock.timers == 0


async def test_wait_for_passes_outer_cancellation_through() -> None:
    clock = ManualClock()
    inner = asyncio.create_task(wait_for(clock, asyncio.Event().wait(), 100))
    await clock.settle()
    inner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await inner
