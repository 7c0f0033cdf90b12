"""The read connection: one ``query_only`` connection in one worker thread.

What:
    :class:`Reader` runs read operations (``fn(conn, *args)``, see
    :mod:`.queue_ops` and :mod:`.record_ops`) on its own connection, so reads
    neither wait for a group commit nor block the event loop.

Why it sees every acknowledged write:
    In WAL mode a read transaction sees every transaction committed before it
    started, and the writer resolves a write's future only after its commit.
    ``:memory:`` databases cannot be shared between connections; the backend
    then sends reads through the writer (:class:`Reader` is not used).
"""

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable
from typing import Any

from msgin5g.errors import StorageUnavailable
from msgin5g.storage.sqlite.driver import connect, map_driver_errors

__all__ = ["Reader"]


class Reader:
    """A single-thread executor holding the read connection of one file."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        """Configure; nothing is opened before :meth:`start`.

        Args:
            path: the database file (or ``file:`` URI).
            busy_timeout: seconds to wait for a lock.
        """
        self._path = path
        self._busy_timeout = busy_timeout
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    async def start(self) -> None:
        """Start the thread and open the connection in it.

        Raises:
            StorageError: (or a subclass) the file cannot be opened.
        """
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="msgin5g-sqlite-reader"
        )
        await asyncio.get_running_loop().run_in_executor(self._executor, self._open)

    def run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Run ``fn(conn, *args)`` in the reader thread; driver errors mapped."""
        executor = self._executor
        if executor is None:
            raise StorageUnavailable("sqlite: reader is not running")
        return asyncio.get_running_loop().run_in_executor(executor, self._run, fn, args)

    async def stop(self) -> None:
        """Close the connection and end the thread (safe if never started)."""
        if self._executor is None:
            return
        await asyncio.get_running_loop().run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)
        self._executor = None

    def _open(self) -> None:
        with map_driver_errors():
            self._conn = connect(self._path, self._busy_timeout, query_only=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        conn = self._conn
        if conn is None:
            raise StorageUnavailable("sqlite: backend is closed")
        with map_driver_errors():
            return fn(conn, *args)
