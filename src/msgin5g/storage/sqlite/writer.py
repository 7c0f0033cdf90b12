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
    it. Runs of consecutive operations listed in ``bulk`` (a burst of
    registrations) run as one ``executemany``; runs of consecutive operations
    listed in ``group`` (the message path: store once, remove) are handed to
    the group runner in one call (:func:`.queue_ops.run_group`), which runs
    them set-based with the results they would have alone.

Commit interval:
    Each commit costs the thread about 80 µs of CPU with ``synchronous=FULL``
    (the WAL write and its fsync) whatever it carries, and each batch costs a
    thread wake-up both ways. At a moderate load (3,000 messages/s) every
    message came alone, so it paid a whole commit. With ``commit_interval``
    the thread starts a transaction at most once per interval: what arrives
    while it waits joins the batch. Below one message per interval nothing
    waits (the wait is counted from the previous transaction's start), so the
    added latency is at most the interval and only under load. Four waits in
    a row that gathered nothing (one caller awaiting each write before the
    next) turn waiting off for the next :data:`_SKIP_AFTER_IDLE_WAITS` batches.

Batches nobody waits for:
    A batch of fire-and-forget operations only (removals of delivered items,
    ``remove_nowait``) waits up to ``removal_delay`` for another operation and
    commits with it: at a moderate load each delivered message otherwise paid
    a commit of its own for its removal. The promise of ``remove_nowait`` holds
    (any write awaited after it commits in the same or a later transaction);
    a crash in that window forgets the removal, and the item, already
    delivered, is delivered again (as a crash just before the commit would).

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
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeAlias

from msgin5g.storage.sqlite.driver import clone_error, is_disk_full, map_driver_errors

__all__ = ["Op", "Writer"]

_log = logging.getLogger(__name__)

_IDLE_WAITS = 4
"""Waits in a row for the commit interval that gathered nothing: a lone caller."""

_SKIP_AFTER_IDLE_WAITS = 64
"""Batches that start at once after :data:`_IDLE_WAITS` idle waits.

A caller that awaits each write before the next (a sequential loop) never adds
to a batch while the thread waits; it pays the wait in 4 of 68 writes. At
3,000 messages/s about one wait in five gathered nothing (arrivals bunch up),
so one idle wait alone does not turn waiting off (four in a row: ~0.2 %).
"""

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
        commit_interval: least time (seconds) between the starts of two
            transactions; 0: none.
        removal_delay: longest time (seconds) a batch without waiters (only
            scheduled removals) waits for another operation; 0: none.
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
        group: Callable[[sqlite3.Connection, Sequence[Op]], list[Any]] | None = None,
        group_fns: Collection[Callable[..., Any]] = (),
        commit_interval: float = 0.0,
        removal_delay: float = 0.0,
    ) -> None:
        """Configure the writer; no thread runs before :meth:`start`.

        Args:
            path: the database file, for names and messages.
            opener: opens the connection and prepares the file (schema); runs
                in the writer thread; its ``sqlite3`` errors are mapped.
            batch_max: upper bound of operations per transaction (>= 1).
            bulk: ``{fn: sql}``: consecutive operations of ``fn`` run as one
                ``conn.executemany(sql, [args, ...])``.
            group: ``group(conn, ops)`` runs two or more consecutive operations
                of ``group_fns`` and returns one result per operation.
            group_fns: the operations ``group`` runs.
            commit_interval: least seconds between the starts of two
                transactions (0: start each as soon as something is queued).
            removal_delay: longest seconds a batch of fire-and-forget
                operations only waits for an operation with a waiter to join
                it (0: commit it at once).
        """
        self.path = path
        self.batch_max = batch_max
        self.commit_interval = commit_interval
        self.removal_delay = removal_delay
        self._began = 0.0  # monotonic start of the last transaction (interval)
        self._skip = 0  # batches left that do not wait (see _wait_interval)
        self._idle_waits = 0  # waits in a row that gathered nothing
        self._group = group
        self._group_fns = frozenset(group_fns) if group is not None else frozenset()
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
        get = self._queue.get
        while True:
            batch: list[Op] = []
            stop = self._add(batch, get())
            if not batch:  # the stop sentinel alone
                return stop
            if stop is None and self.removal_delay and _nobody_waits(batch):
                stop = self._collect(batch)
                if stop is None and _nobody_waits(batch):
                    try:
                        more = get(timeout=self.removal_delay)
                    except queue.Empty:
                        pass
                    else:
                        stop = self._add(batch, more)
            if stop is None:
                if self.commit_interval and len(batch) < self.batch_max:
                    self._wait_interval()
                stop = self._collect(batch)
            self._began = time.monotonic()
            try:
                _resolve(self._execute(conn, batch))
            except Exception:  # pragma: no cover - a bug; keep the writer alive
                _log.exception("sqlite writer: unexpected failure")
            if stop is not None:
                return stop

    @staticmethod
    def _add(batch: list[Op], queued: Op | list[Op]) -> asyncio.Future[Any] | None:
        """Append ``queued`` to ``batch``; the stop sentinel's future instead."""
        if isinstance(queued, list):  # never split: it may pass batch_max
            batch.extend(queued)
            return None
        if queued[0] is None:
            return queued[2]
        batch.append(queued)
        return None

    def _collect(self, batch: list[Op]) -> asyncio.Future[Any] | None:
        """Add what is queued (up to ``batch_max``); the stop sentinel's future."""
        get_nowait = self._queue.get_nowait
        while len(batch) < self.batch_max:
            try:
                queued = get_nowait()
            except queue.Empty:
                return None
            stop = self._add(batch, queued)
            if stop is not None:
                return stop
        return None

    def _wait_interval(self) -> None:
        """Sleep until ``commit_interval`` after the previous transaction began.

        Whatever is queued meanwhile joins the batch. A wait that gathered
        nothing turns waiting off for :data:`_SKIP_AFTER_IDLE_WAITS` batches.
        """
        wait = self._began + self.commit_interval - time.monotonic()
        if self._skip:
            self._skip -= 1
        elif wait > 0:
            queued = self._queue.qsize()
            time.sleep(wait)
            if self._queue.qsize() > queued:
                self._idle_waits = 0
            else:
                self._idle_waits += 1
                if self._idle_waits >= _IDLE_WAITS:  # a lone, sequential caller
                    self._idle_waits = 0
                    self._skip = _SKIP_AFTER_IDLE_WAITS

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
        bulk, group, group_fns = self._bulk, self._group, self._group_fns
        i, n = 0, len(batch)
        while i < n:
            fn, args, _ = batch[i]
            if fn in group_fns:
                j = i + 1
                while j < n and batch[j][0] in group_fns:
                    j += 1
                if j - i > 1:
                    assert group is not None  # noqa: S101 - group_fns is empty else
                    results.extend(group(conn, batch[i:j]))
                    i = j
                    continue
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


def _nobody_waits(batch: list[Op]) -> bool:
    """Whether every operation of ``batch`` is fire-and-forget (no future)."""
    return all(op[2] is None for op in batch)


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
