"""A clock that moves only when a test moves it (like trio's ``MockClock``).

:class:`ManualClock` implements :class:`msgin5g.runtime.Clock`: ``sleep`` and
``call_later`` register timers that fire when :meth:`ManualClock.advance` moves
time past them, so code that waits seconds or minutes runs in a test without
real sleeping. The server side (:mod:`msgin5g.service`) takes the same clock:
the delivery engine's sweeper sleeps on it and its AS back-off timers are its
``call_later``.
"""

import asyncio
import heapq
import itertools
from collections.abc import Callable

__all__ = ["ManualClock"]


class _ManualTimer:
    __slots__ = ("callback", "cancelled")

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """Fake wall and monotonic time with timers fired by :meth:`advance`.

    Args:
        start: the initial epoch time.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.value = start
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        """Current fake epoch time."""
        return self.value

    def monotonic(self) -> float:
        """Same as :meth:`now` (fake time never goes back)."""
        return self.value

    def call_later(self, delay: float, callback: Callable[[], None]) -> _ManualTimer:
        """Run ``callback`` when time has been advanced by ``delay``."""
        timer = _ManualTimer(callback)
        when = self.value + max(0.0, delay)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        return timer

    async def sleep(self, seconds: float) -> None:
        """Wait until the clock is advanced by ``seconds`` (0: just yield)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)

        timer = self.call_later(seconds, wake)
        try:
            await future
        finally:
            timer.cancel()

    @property
    def timers(self) -> int:
        """Timers (sleeps included) not fired nor cancelled."""
        return sum(1 for _, _, t in self._timers if not t.cancelled)

    def next_deadline(self) -> float | None:
        """When the earliest live timer fires, or None."""
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def advance(self, seconds: float) -> None:
        """Move time forward, firing due timers in order (synchronously).

        Tasks woken by a timer run at the next ``await``; timers they set
        inside the window fire only at a later :meth:`advance` (use
        :meth:`run_for` for that).
        """
        target = self.value + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if timer.cancelled:
                continue
            self.value = max(self.value, when)
            timer.callback()
        self.value = target

    async def settle(self, rounds: int = 20) -> None:
        """Let ready tasks run (yield to the event loop ``rounds`` times)."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def run_for(self, seconds: float, *, rounds: int = 20) -> None:
        """Advance ``seconds`` timer by timer, letting tasks run after each.

        Timers that woken tasks set within the window fire too, so a loop that
        sleeps repeatedly makes all the rounds it would make in real time.
        """
        await self.settle(rounds)
        target = self.value + seconds
        while True:
            deadline = self.next_deadline()
            if deadline is None or deadline > target:
                break
            self.advance(max(0.0, deadline - self.value))
            await self.settle(rounds)
        self.advance(max(0.0, target - self.value))
        await self.settle(rounds)
