"""The one owner of background tasks: a supervised :class:`asyncio.TaskGroup`.

Before, four classes each kept a ``set`` of tasks filled by a ``_spawn`` helper;
an exception in such a task was stored in the task and never seen. A
:class:`Supervisor` runs every task inside one ``TaskGroup`` through a guard that
logs the traceback at ERROR and counts it in :attr:`Supervisor.failures`, so one
failing task neither vanishes silently nor cancels its siblings (a plain
``TaskGroup`` would). :meth:`Supervisor.aclose` cancels what still runs and waits
for it, which makes it a natural entry of an :class:`contextlib.AsyncExitStack`.
"""

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["Supervisor"]

log = logging.getLogger(__name__)


class Supervisor:
    """Runs background tasks; logs and counts their failures.

    Args:
        name: shown in log lines (e.g. ``"gateway gw-1"``).

    Use as ``async with Supervisor(...) as tasks:`` or :meth:`start` /
    :meth:`aclose`.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.failures = 0
        """Tasks that ended with an exception other than cancellation."""
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Open the task group (call from the task that will own it)."""
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group

    @property
    def running(self) -> int:
        """Tasks not finished yet."""
        return len(self._tasks)

    def spawn(
        self, coro: Coroutine[Any, Any, None], *, name: str | None = None
    ) -> "asyncio.Task[None]":
        """Run ``coro`` as a supervised task; returns the task (to cancel it).

        Raises:
            RuntimeError: the supervisor is not started or already closed (the
                coroutine is closed, not leaked).
        """
        if self._group is None:
            coro.close()
            raise RuntimeError(f"{self.name}: supervisor not running")
        task = self._group.create_task(self._guard(coro), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # a task cancelled before its first step never awaited ``coro``
        task.add_done_callback(lambda _: coro.close())
        return task

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            log.exception("%s: background task failed", self.name)

    async def aclose(self) -> None:
        """Cancel every task and wait until all ended."""
        group, self._group = self._group, None
        if group is None:
            return
        for task in list(self._tasks):
            task.cancel()
        await group.__aexit__(None, None, None)

    async def __aenter__(self) -> "Supervisor":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
