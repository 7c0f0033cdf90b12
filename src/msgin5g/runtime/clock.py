"""One clock for time stamps, timers and sleeps (STYLE.md: "driven by an injected clock").

Every module that reads the time or waits goes through a :class:`Clock`, so a
test can hand in :class:`msgin5g.testing.ManualClock` and move time forward
without sleeping (the shape of trio's ``MockClock``). :class:`SystemClock` is the
real one: ``time.time`` for epoch stamps that are stored (they must survive a
restart), the event loop's monotonic clock for timers.

:func:`wait_for` is :func:`asyncio.wait_for` on a given clock: the timeout is a
``call_later`` of that clock, so it fires when a manual clock is advanced.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

__all__ = ["Clock", "SystemClock", "Timer", "wait_for"]

T = TypeVar("T")


class Timer(Protocol):
    """A scheduled callback (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None:
        """Do not run the callback (no effect once it ran)."""
        ...


class Clock(Protocol):
    """Time source and timers of one component."""

    def now(self) -> float:
        """Wall-clock time in seconds since the epoch (stored time stamps)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (durations, deadlines)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Run ``callback`` once, ``delay`` seconds from now on this clock."""
        ...


class SystemClock:
    """The real clock: ``time.time`` and the running event loop."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()

    def monotonic(self) -> float:
        """The event loop's clock (``time.monotonic`` outside a loop)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(seconds)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """``loop.call_later`` on the running loop."""
        return asyncio.get_running_loop().call_later(delay, callback)


async def wait_for(clock: Clock, awaitable: Awaitable[T], timeout: float | None) -> T:  # noqa: ASYNC109
    """Await ``awaitable``, giving up after ``timeout`` seconds of ``clock``.

    Args:
        clock: the clock whose ``call_later`` bounds the wait.
        awaitable: what to wait for; cancelled on timeout.
        timeout: seconds; None waits for ever.

    Raises:
        TimeoutError: ``timeout`` elapsed first.
    """
    if timeout is None:
        return await awaitable
    task = asyncio.ensure_future(awaitable)
    if timeout <= 0:  # like asyncio.wait_for: only what is ready at once
        await asyncio.sleep(0)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise TimeoutError("no result at once")
    fired = False

    def expire() -> None:
        nonlocal fired
        if not task.done():
            fired = True
            task.cancel()

    timer = clock.call_later(timeout, expire)
    try:
        return await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if fired and (current is None or not current.cancelling()):
            raise TimeoutError(f"no result within {timeout} s") from None
        raise
    finally:
        timer.cancel()
