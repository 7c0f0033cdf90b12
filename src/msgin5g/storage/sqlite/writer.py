"""The group-commit writer: one thread, one connection, one transaction per batch.

What:
    :class:`Writer` owns the writing connection in a dedicated thread. Async
    callers put an operation ``(fn, args, future)`` on its queue
    (:meth:`Writer.put`) and await the future; the thread drains everything
    queued (up to ``batch_max`` operations), runs it all in ONE transaction,
    commits once, and then resolves every future of the batch with a single
    ``loop.call_soon_threadsafe`` call per event loop.

Why group commit:
    With ``synchronous=FULL`` every commit fsyncs the write-ahead log, which costs
    from tens of microseconds (NVMe) to tens of milliseconds (cloud volumes). One
    transaction per write would cap the server at that fsync rate. Under load many
    writes share one fsync; with a single writer the latency is one commit, as
    without batching.

Ordering:
    Operations run in the order they were queued, so a write queued after
    another is committed in the same or a later transaction. An operation with
    no future (a scheduled removal) becomes durable with the batch that carries
    it. Runs of consecutive operations listed in ``bulk`` (the removals of the
    delivery hot path) run as one ``executemany``.

Failures:
    If an operation of a batch fails, the batch is rolled back and its operations
    are retried one per transaction, so only the offending operation fails; if
    ``BEGIN`` or ``COMMIT`` fails, every future of the batch fails with the
    mapped error (one instance per waiter). The thread keeps running in both
    cases. ``SQLITE_FULL`` sets :attr:`Writer.disk_full`, logged once at ERROR,
    and once at WARNING when a commit succeeds again.
"""

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

from msgin5g.storage.sqlite.driver import clone_error, is_disk_full, map_driver_errors

__all__ = ["Op", "Writer"]

_log = logging.getLogger(__name__)

Op: TypeAlias = tuple[
    Callable[..., Any] | None, tuple[Any, ...], asyncio.Future[Any] | None
]
"""A queued write: ``fn(conn, *args)``, its args, and the future to resolve.

``fn`` is None only for the stop sentinel queued by :meth:`Writer.stop`; the
future is None for fire-and-forget operations (``remove_nowait``).
"""
_Outcome: TypeAlias = tuple[asyncio.Future[Any] | None, Any, BaseException | None]


class Writer:
    """The writer thread of one database file.

    Attributes:
        path: the database file (for thread names and log lines).
        batch_max: most operations committed in one transaction.
        commits: transactions committed so far.
        writes: operations those transactions carried.
        disk_full: the last write failed because the disk (or the file's
            ``max_page_count``) is full.
        put: queue an :data:`Op`, or a list of them that stays in one
            transaction (thread-safe, never blocks).
    """

    def __init__(
        self,
        path: str,
        opener: Callable[[], sqlite3.Connection],
        *,
        batch_max: int,
        bulk: Mapping[Callable[..., Any], str],
    ) -> None:
        """Configure the writer; no thread runs before :meth:`start`.

        Args:
            path: the database file, for names and messages.
            opener: opens the connection and prepares the file (schema); runs
                in the writer thread; its ``sqlite3`` errors are mapped.
            batch_max: upper bound of operations per transaction (>= 1).
            bulk: ``{fn: sql}``: consecutive operations of ``fn`` run as one
                ``conn.executemany(sql, [args, ...])``.
        """
        self.path = path
        self.batch_max = batch_max
        self.commits = 0
        self.writes = 0
        self.disk_full = False
        self._opener = opener
        self._bulk = dict(bulk)
        self._queue: queue.SimpleQueue[Op | list[Op]] = queue.SimpleQueue()
        self.put = self._queue.put
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        """Whether :meth:`start` succeeded and :meth:`stop` has not returned."""
        return self._thread is not None

    async def start(self) -> None:
        """Start the thread; return when the connection is open and prepared.

        Raises:
            StorageError: (or a subclass) the opener failed; no thread is left.
        """
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._main,
            args=(ready,),
            name=f"msgin5g-sqlite-writer:{self.path}",
            daemon=True,
        )
        thread.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.to_thread(thread.join)
            raise
        self._thread = thread

    async def stop(self) -> None:
        """Commit everything queued before this call, then end the thread."""
        thread = self._thread
        if thread is None:
            return
        stopped: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((None, (), stopped))
        await stopped
        await asyncio.to_thread(thread.join)
        self._thread = None

    # ---------------------------------------------------------------- thread

    def _main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            with map_driver_errors():
                conn = self._opener()
        except BaseException as exc:
            ready.set_exception(exc)
            return
        ready.set_result(None)
        stop: asyncio.Future[Any] | None = None
        try:
            stop = self._drain(conn)
        finally:
            conn.close()
            if stop is not None:
                _resolve([(stop, None, None)])

    def _drain(self, conn: sqlite3.Connection) -> asyncio.Future[Any] | None:
        """Run batches until the stop sentinel; return the sentinel's future."""
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            first = get()
            batch = first if isinstance(first, list) else [first]
            stop: asyncio.Future[Any] | None = None
            if batch[0][0] is None:
                return batch[0][2]
            while len(batch) < self.batch_max:
                try:
                    op = get_nowait()
                except queue.Empty:
                    break
                if isinstance(op, list):  # never split: it may pass batch_max
                    batch.extend(op)
                    continue
                if op[0] is None:
                    stop = op[2]
                    break
                batch.append(op)
            try:
                _resolve(self._execute(conn, batch))
            except Exception:  # pragma: no cover - a bug; keep the writer alive
                _log.exception("sqlite writer: unexpected failure")
            if stop is not None:
                return stop

    def _execute(self, conn: sqlite3.Connection, batch: list[Op]) -> list[_Outcome]:
        """Run ``batch`` in one transaction; return one outcome per operation."""
        try:
            with map_driver_errors():
                conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            return self._fail_all(batch, exc)
        results: list[Any] = []
        try:
            with map_driver_errors():
                self._run_batch(conn, batch, results)
        except Exception as exc:
            _rollback(conn)
            if len(batch) == 1:
                return self._fail_all(batch, exc)
            # Isolate the culprit: one transaction per operation.
            outcomes: list[_Outcome] = []
            for op in batch:
                outcomes.extend(self._execute(conn, [op]))
            return outcomes
        try:
            with map_driver_errors():
                conn.execute("COMMIT")
        except Exception as exc:
            _rollback(conn)
            return self._fail_all(batch, exc)
        self.commits += 1
        self.writes += len(batch)
        if self.disk_full:
            self.disk_full = False
            _log.warning("sqlite: %s is writable again (disk space freed)", self.path)
        return [
            (op[2], result, None) for op, result in zip(batch, results, strict=True)
        ]

    def _run_batch(
        self, conn: sqlite3.Connection, batch: list[Op], results: list[Any]
    ) -> None:
        """Run the operations of a batch in order; ``bulk`` runs in one statement.

        The delivery hot path queues one removal per delivered item; a fan-out to
        10,000 UEs queues 10,000 of them within a second.
        """
        bulk = self._bulk
        i, n = 0, len(batch)
        while i < n:
            fn, args, _ = batch[i]
            sql = bulk.get(fn)  # type: ignore[arg-type]
            if sql is not None:
                j = i + 1
                while j < n and batch[j][0] is fn:
                    j += 1
                if j - i > 1:
                    conn.executemany(sql, [op[1] for op in batch[i:j]])
                    results.extend([None] * (j - i))
                    i = j
                    continue
            results.append(fn(conn, *args))  # type: ignore[misc]
            i += 1

    def _fail_all(self, batch: list[Op], exc: BaseException) -> list[_Outcome]:
        if not self.disk_full and is_disk_full(exc):
            self.disk_full = True
            _log.error(
                "sqlite: STORAGE FULL at %s: every write is refused (clients get "
                "5.03 SERVER_CONGESTION) until disk space is freed; lower "
                "limits.stored_bytes_total so quotas refuse before the disk fills",
                self.path,
            )
        outcomes: list[_Outcome] = []
        for index, (_, _, fut) in enumerate(batch):
            if fut is None:
                _log.error("sqlite: scheduled removal not committed: %s", exc)
            outcomes.append((fut, None, exc if index == 0 else clone_error(exc)))
        return outcomes


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:  # pragma: no cover - connection is broken
            _log.exception("sqlite writer: ROLLBACK failed")


def _resolve(outcomes: list[_Outcome]) -> None:
    """Hand the outcomes to their event loop(s): one callback per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        fut = outcome[0]
        if fut is not None:
            by_loop.setdefault(fut.get_loop(), []).append(outcome)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_outcomes, group)
        except RuntimeError:  # the loop is closed; nobody is waiting any more
            pass


def _set_outcomes(outcomes: list[_Outcome]) -> None:
    """Event-loop side of a batch: complete every future that still waits."""
    for fut, result, exc in outcomes:
        if fut is None or fut.done():  # cancelled by its caller
            continue
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)
