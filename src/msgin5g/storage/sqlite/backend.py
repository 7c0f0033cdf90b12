"""SqliteBackend: the async methods of the storage port on one SQLite file.

What:
    :class:`SqliteBackend` implements every protocol of :mod:`msgin5g.storage.base`.
    Each method encodes its arguments in the event loop, then hands an operation
    of :mod:`.queue_ops` or :mod:`.record_ops` to the group-commit
    :class:`~.writer.Writer` (writes) or to the :class:`~.reader.Reader` (reads)
    and awaits it. :meth:`SqliteBackend.start` opens the file in WAL mode and
    brings its schema up to date (:func:`~.migrations.migrate`) in the writer
    thread before anything else runs.

Seqs:
    Item seqs are assigned here, in the event loop, in submission order
    (:meth:`SqliteBackend._take_seqs`), from one past the largest seq the file
    ever used; the writer inserts them in that order. One server process writes a
    database's queue.
"""

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from msgin5g.errors import ConfigError, StorageUnavailable
from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.model.registry import UERegistration
from msgin5g.storage.base import DedupRecord, R, stored_size
from msgin5g.storage.rules import decode_record, decode_records, encode_record
from msgin5g.storage.sqlite import queue_ops as q
from msgin5g.storage.sqlite import record_ops as rec
from msgin5g.storage.sqlite.driver import SYNCHRONOUS_MODES, connect
from msgin5g.storage.sqlite.migrations import migrate
from msgin5g.storage.sqlite.reader import Reader
from msgin5g.storage.sqlite.writer import Op, Writer

__all__ = ["SqliteBackend"]

_log = logging.getLogger(__name__)

COMMIT_INTERVAL = 0.0
"""Default least seconds between two writer transactions (see :mod:`.writer`).

0: a transaction starts as soon as something is queued (latency first). The
setting ``storage.commit_interval = 0.002`` cut the commits at 3,000 messages/s
from ~1,400/s to ~500/s and the writer's CPU per message by about a fifth, for
~1.5 ms more median latency, and changed nothing at saturation
(docs/performance.md, "SQLite writer: CPU per stored message").
"""

REMOVAL_DELAY = 0.05
"""Default longest seconds scheduled removals wait to join a write (:mod:`.writer`)."""

WRITER_CACHE_MIB = 16
"""Default page cache of the writer connection (MiB; SQLite's default is ~2).

The setting ``storage.writer_cache_mib``. Every stored message's
duplicate-detection claim writes a table that holds a day of records under
random keys; pages the cache does not hold are read through ``pread``. In a
300,000-row table (93 MiB) a claim cost ~16.5 µs of CPU with 2 MiB, ~15.9 µs
with 16 MiB, ~13.0 µs with 64 MiB (benchmarks/dedup_claims.py); in a
1,000,000-row table no size made a difference. The cache fills
as pages are read, whatever table they belong to (registrations too), so
its size is memory the server keeps: 64 MiB was ~67 B per UE at 1 M
registered UEs (docs/performance.md, "Memory per registered idle UE").
"""

CREDENTIAL_CHUNK = 10_000
"""Pairs per writer operation of :meth:`SqliteBackend.put_credentials`."""


class SqliteBackend:
    """SQLite implementation of :class:`msgin5g.storage.base.Backend`.

    Writes are group-committed by one writer thread (:mod:`.writer`); reads run
    on a second connection in a reader thread (:mod:`.reader`).

    Attributes:
        path: the database file, or ``":memory:"``.
        synchronous: the ``PRAGMA synchronous`` mode (``FULL`` fsyncs every commit).
        batch_max: most operations committed in one transaction.
        writer_cache_mib: the writer connection's page cache (MiB).
        commits: number of transactions committed by the writer so far.
        writes: number of operations those transactions carried.
        disk_full: the last write failed because the disk (or the file's
            ``max_page_count``) is full; logged once at ERROR, and once at
            WARNING when a write succeeds again.

    Example:
        >>> backend = SqliteBackend("msgin5g.db")  # doctest: +SKIP
        >>> await backend.start()  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        batch_max: int = 2000,
        busy_timeout: float = 5.0,
        commit_interval: float = COMMIT_INTERVAL,
        removal_delay: float = REMOVAL_DELAY,
        writer_cache_mib: int = WRITER_CACHE_MIB,
    ) -> None:
        """Configure the backend; nothing is opened before :meth:`start`.

        Args:
            path: database file path, or ``":memory:"`` for a private in-memory
                database (not durable).
            synchronous: ``OFF``, ``NORMAL``, ``FULL`` (default) or ``EXTRA``.
            batch_max: upper bound of operations per group commit (>= 1).
            busy_timeout: seconds to wait for a lock held by another process
                before failing with :class:`~msgin5g.errors.StorageUnavailable`.
            commit_interval: least seconds between the starts of two writer
                transactions (:mod:`.writer`); 0 starts each at once.
            removal_delay: longest seconds a removal-only batch waits to
                join a write (:mod:`.writer`).
            writer_cache_mib: page cache of the writer connection, in MiB
                (``PRAGMA cache_size``; 1 to 65,536).

        Raises:
            ConfigError: an option has an invalid value.
        """
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ConfigError(
                f"storage.synchronous: {synchronous!r} is not one of "
                f"{', '.join(sorted(SYNCHRONOUS_MODES))}"
            )
        if batch_max < 1:
            raise ConfigError(f"storage.batch_max: must be >= 1, got {batch_max}")
        if busy_timeout < 0:
            raise ConfigError(f"storage.busy_timeout: must be >= 0, got {busy_timeout}")
        if not 0 <= commit_interval <= 1:
            raise ConfigError(
                f"storage.commit_interval: must be in [0, 1] s, got {commit_interval}"
            )
        if not 0 <= removal_delay <= 60:
            raise ConfigError(
                f"storage.removal_delay: must be in [0, 60] s, got {removal_delay}"
            )
        if not 1 <= writer_cache_mib <= 65_536:
            raise ConfigError(
                "storage.writer_cache_mib: must be in [1, 65536] MiB, "
                f"got {writer_cache_mib}"
            )
        self.path = path
        self.synchronous = mode
        self.writer_cache_mib = writer_cache_mib
        self.batch_max = batch_max
        self.busy_timeout = busy_timeout
        self._in_memory = path == ":memory:" or path.startswith("file::memory:")
        self._writer = Writer(
            path,
            self._open_writer,
            batch_max=batch_max,
            # a burst of REGs: consecutive registration upserts, one statement
            bulk={rec.op_put_registration: rec.PUT_REGISTRATION_SQL},
            # the message path: store once, store, remove; set-based per run
            group=q.run_group,
            group_fns=(q.op_enqueue_once, q.op_enqueue, q.op_remove),
            commit_interval=commit_interval,
            removal_delay=removal_delay,
        )
        self._put = self._writer.put
        self._pending: list[Op] = []  # see _enqueue
        self._reader: Reader | None = None
        self._started = False
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._next_seq = 1

    def __repr__(self) -> str:
        return f"SqliteBackend({self.path!r}, synchronous={self.synchronous!r})"

    @property
    def commits(self) -> int:
        """Transactions committed by the writer so far."""
        return self._writer.commits

    @property
    def writes(self) -> int:
        """Operations carried by those transactions."""
        return self._writer.writes

    @property
    def disk_full(self) -> bool:
        """Whether the last write failed on a full disk."""
        return self._writer.disk_full

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the database, migrate the schema, start the writer/reader threads.

        Calling it again on a started backend does nothing.

        Raises:
            StorageUnavailable: the file cannot be opened or is locked.
            StorageError: the schema is newer than this version supports.
        """
        if self._started:
            return
        if self._closed:
            raise StorageUnavailable("sqlite: backend was closed")
        await self._writer.start()
        self._started = True
        if not self._in_memory:
            self._reader = Reader(self.path, self.busy_timeout)
            try:
                await self._reader.start()
            except BaseException:
                await self.aclose()
                raise

    async def aclose(self) -> None:
        """Commit every queued write, stop the threads and close the connections.

        Safe to call more than once (later calls wait for the first to finish).
        Operations after it fail with :class:`~msgin5g.errors.StorageUnavailable`;
        :meth:`remove_nowait` is ignored.
        """
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        self._closed = True
        try:
            self._flush()
            await self._writer.stop()
            if self._reader is not None:
                await self._reader.stop()
        finally:
            self._closing.set_result(None)

    def _open_writer(self) -> sqlite3.Connection:
        """Writer thread: open the file in WAL mode, migrate, find the next seq."""
        conn = connect(
            self.path,
            self.busy_timeout,
            synchronous=self.synchronous,
            cache_kib=self.writer_cache_mib * 1024,
        )
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal" and not self._in_memory:
                raise StorageUnavailable(
                    f"sqlite: cannot enable WAL (journal_mode={mode})"
                )
            conn.execute("BEGIN IMMEDIATE")
            migrate(conn, self.path)
            last = conn.execute(
                "SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM queue UNION ALL "
                "SELECT seq FROM sqlite_sequence WHERE name = 'queue')"
            ).fetchone()[0]
            self._next_seq = int(last or 0) + 1
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
        return conn

    # ---------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise StorageUnavailable("sqlite: backend is closed")
        if not self._started:
            raise StorageUnavailable("sqlite: backend not started (call start())")

    def _submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._enqueue((fn, args, fut), loop)
        return fut

    def _enqueue(self, op: Op, loop: asyncio.AbstractEventLoop) -> None:
        """Queue ``op`` for the writer with the others of this loop iteration.

        The operations queued by one pass of the event loop (a burst of REGs,
        say) reach the writer as one list: one queue put and one thread wake-up
        instead of one each. Order is kept: everything goes through this list.
        """
        pending = self._pending
        if not pending:
            loop.call_soon(self._flush)
        pending.append(op)

    def _flush(self) -> None:
        if self._pending:
            ops, self._pending = self._pending, []
            self._put(ops)

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_open()
        if self._reader is None:  # :memory: has one connection: the writer's
            return await self._submit(fn, *args)
        return await self._reader.run(fn, args)

    # ---------------------------------------------------------------- CredentialStore

    async def put_credential(self, ue_service_id: str, digest: bytes) -> None:
        """Create or replace the credential digest of a UE."""
        await self._submit(rec.op_put_credential, ue_service_id, bytes(digest))

    async def get_credentials(self, ue_service_ids: Sequence[str]) -> dict[str, bytes]:
        """The digests of the provisioned UEs among ``ue_service_ids`` (one read)."""
        result: dict[str, bytes] = await self._read(
            rec.op_get_credentials, list(ue_service_ids)
        )
        return result

    async def load_credentials(self) -> list[tuple[str, bytes]]:
        """Every ``(ue_service_id, digest)``, sorted by ID."""
        result: list[tuple[str, bytes]] = await self._read(rec.op_load_credentials)
        return result

    async def put_credentials(
        self, credentials: Sequence[tuple[str, bytes]], *, replace: bool = False
    ) -> list[str]:
        """Provision many UEs: one writer operation (``executemany``) per chunk.

        Chunks of :data:`CREDENTIAL_CHUNK` pairs are queued together and each
        commits with the writer's group commit; returns the IDs that were
        already provisioned.
        """
        rows = [(ue, bytes(digest)) for ue, digest in credentials]
        futures = [
            self._submit(
                rec.op_put_credentials,
                rows[start : start + CREDENTIAL_CHUNK],
                replace,
            )
            for start in range(0, len(rows), CREDENTIAL_CHUNK)
        ]
        existing: list[str] = []
        for found in await asyncio.gather(*futures):
            existing.extend(found)
        return existing

    async def get_credential(self, ue_service_id: str) -> bytes | None:
        """Return the credential digest, or None if the UE is not provisioned."""
        result: bytes | None = await self._read(rec.op_get_credential, ue_service_id)
        return result

    async def delete_credential(self, ue_service_id: str) -> bool:
        """Remove a provisioned UE; True if it existed."""
        result: bool = await self._submit(rec.op_delete_credential, ue_service_id)
        return result

    async def list_credentials(self) -> list[str]:
        """All provisioned UE Service IDs, sorted."""
        result: list[str] = await self._read(rec.op_list_credentials)
        return result

    # ---------------------------------------------------------------- RegistrationStore

    async def put_registration(self, registration: UERegistration) -> None:
        """Create or replace the registration of ``registration.ue_service_id``."""
        body = rec.REG_ENCODER.encode(registration)
        await self._submit(rec.op_put_registration, registration.ue_service_id, body)

    async def delete_registration(self, ue_service_id: str) -> bool:
        """Remove a registration; True if it existed."""
        result: bool = await self._submit(rec.op_delete_registration, ue_service_id)
        return result

    async def load_registrations(self) -> list[UERegistration]:
        """Every stored registration, ordered by UE Service ID."""
        result: list[UERegistration] = await self._read(rec.op_load_registrations)
        return result

    # ---------------------------------------------------------------- MessageQueue

    def _take_seqs(self, count: int) -> int:
        """Reserve ``count`` consecutive seqs; return the first.

        Seqs are assigned here, in the event loop, in submission order, so a
        fan-out knows its seqs before its write commits and the writer inserts
        them in increasing order (the rowid of an ``AUTOINCREMENT`` table:
        never reused). One server process writes a database's queue.
        """
        first = self._next_seq
        self._next_seq += count
        return first

    async def enqueue(self, item: QueuedItem) -> int:
        """Store ``item`` durably, assign and return its ``seq`` (also set on item).

        The seq is increasing and never reused (see :meth:`_take_seqs`).
        """
        seq = self._take_seqs(1)
        await self._submit(q.op_enqueue, q.queue_row(item, seq))
        item.seq = seq
        return seq

    async def enqueue_once(
        self,
        item: QueuedItem,
        dedup: DedupRecord,
        now: float,
        routes: Sequence[ReportRoute] = (),
    ) -> DedupRecord | None:
        """Store ``item`` with ``dedup`` in one transaction, unless a duplicate.

        See :meth:`msgin5g.storage.base.MessageQueue.enqueue_once`. The check
        runs inside the writer's transaction, so two concurrent submissions of
        one key store the item once whatever their order.
        """
        seq = self._take_seqs(1)
        existing: DedupRecord | None = await self._submit(
            q.op_enqueue_once, q.queue_row(item, seq), dedup, now, q.route_rows(routes)
        )
        if existing is None:
            item.seq = seq
        return existing

    def enqueue_fanout(
        self,
        template: Msg,
        items: list[QueuedItem],
        routes: list[ReportRoute],
        dedup: DedupRecord | None = None,
        now: float = 0.0,
    ) -> asyncio.Future[DedupRecord | None]:
        """One transaction: the template once, a small row per member, the routes.

        Member rows keep their own recipient, Message ID, priority, expiry and
        store flag (the per-member delivery state) and refer to the payload row.
        Seqs are set on the items at once; the returned future completes when
        the transaction is durable, with the existing duplicate-detection record
        if ``dedup`` turned out to be a duplicate (then nothing was written).
        """
        self._check_open()
        body = q.ITEM_ENCODER.encode(template)
        first = self._take_seqs(len(items))
        rows = q.member_rows(items, first, stored_size(template))
        return self._submit(
            q.op_enqueue_fanout,
            body,
            rows,
            q.route_rows(routes),
            None if dedup is None else (dedup, now),
        )

    async def find_dedup(
        self, originator: str, message_id: str, now: float
    ) -> DedupRecord | None:
        """The live record of (originator, messageId) (reader connection)."""
        result: DedupRecord | None = await self._read(
            q.op_find_dedup, originator, message_id, now
        )
        return result

    async def purge_dedup(self, now: float) -> int:
        """Drop records with ``expires_at <= now``; return how many."""
        result: int = await self._submit(q.op_purge_dedup, now)
        return result

    async def stored_usage(self) -> dict[str, tuple[int, int]]:
        """Per recipient: (stored items, sum of ``queue.size``)."""
        result: dict[str, tuple[int, int]] = await self._read(q.op_stored_usage)
        return result

    async def purge_payloads(self) -> int:
        """Drop payload rows that no queue row refers to any more."""
        result: int = await self._submit(q.op_purge_payloads)
        return result

    async def remove(self, seq: int) -> None:
        """Forget a delivered/expired/failed item; unknown ``seq`` is ignored."""
        await self._submit(q.op_remove, seq)

    def remove_nowait(self, seq: int) -> None:
        """Schedule removal of ``seq``; durable with the writer's next commit.

        Any write awaited after this call is committed in the same or a later
        transaction, so once that await returns the removal is durable and visible.
        Ignored after :meth:`aclose`.
        """
        if self._closed:
            _log.debug("sqlite: remove_nowait(%d) after aclose ignored", seq)
            return
        if not self._started:
            raise StorageUnavailable("sqlite: backend not started (call start())")
        op: Op = (q.op_remove, (seq,), None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside the loop: behind what is pending
            self._flush()
            self._put(op)
        else:
            self._enqueue(op, loop)

    async def pending_for(
        self, recipient: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[QueuedItem]:
        """Items for ``recipient`` with ``seq > after_seq``, by (priority, seq)."""
        result: list[QueuedItem] = await self._read(
            q.op_pending_for, recipient, after_seq, limit
        )
        return result

    async def recipients_with_pending(self) -> list[str]:
        """Distinct recipients that have at least one item, sorted."""
        result: list[str] = await self._read(q.op_recipients_with_pending)
        return result

    async def take_expired(self, now: float, *, limit: int = 1000) -> list[QueuedItem]:
        """Remove and return up to ``limit`` items with ``expires_at <= now``.

        Items come soonest-expiring first (then by seq).
        """
        result: list[QueuedItem] = await self._submit(q.op_take_expired, now, limit)
        return result

    async def find(self, recipient: str, message_id: str) -> QueuedItem | None:
        """The stored ``MSG`` for ``recipient`` with that MSGin5G Message ID.

        ``IMDN`` items (which carry the ID of the message they report on) are
        never returned. With duplicates the earliest (lowest seq) wins.
        """
        result: QueuedItem | None = await self._read(q.op_find, recipient, message_id)
        return result

    async def set_expiry(self, seq: int, expires_at: float) -> bool:
        """Change the expiry of an item; True if it exists."""
        result: bool = await self._submit(q.op_set_expiry, seq, expires_at)
        return result

    async def take_all_for(self, recipient: str) -> list[QueuedItem]:
        """Remove and return every item of ``recipient``, by (priority, seq)."""
        result: list[QueuedItem] = await self._submit(q.op_take_all_for, recipient)
        return result

    async def count(self) -> int:
        """Number of items stored."""
        result: int = await self._read(q.op_count)
        return result

    # ---------------------------------------------------------------- ReportStore

    async def put_report_route(self, route: ReportRoute) -> None:
        """Remember (or replace) the route for ``(message_id, reporter)``."""
        await self._submit(q.op_put_report_route, route)

    async def take_report_route(
        self, message_id: str, reporter: str
    ) -> ReportRoute | None:
        """Remove and return the route, or None if none is expected.

        Expiry is not checked here; :meth:`purge_report_routes` drops old routes.
        """
        result: ReportRoute | None = await self._submit(
            q.op_take_report_route, message_id, reporter
        )
        return result

    async def purge_report_routes(self, now: float) -> int:
        """Drop routes with ``expires_at <= now``; return how many."""
        result: int = await self._submit(q.op_purge_report_routes, now)
        return result

    # ---------------------------------------------------------------- RecordStore

    async def put_record(self, kind: str, key: str, record: msgspec.Struct) -> None:
        """Create or replace a record (msgpack-encoded)."""
        await self._submit(rec.op_put_record, kind, key, encode_record(record))

    async def get_record(self, kind: str, key: str, type_: type[R]) -> R | None:
        """The record decoded as ``type_``, or None."""
        body: bytes | None = await self._read(rec.op_get_record, kind, key)
        return None if body is None else decode_record(body, type_)

    async def delete_record(self, kind: str, key: str) -> bool:
        """Remove a record; True if it existed."""
        result: bool = await self._submit(rec.op_delete_record, kind, key)
        return result

    async def load_records(self, kind: str, type_: type[R]) -> list[R]:
        """Every record of ``kind`` ordered by key."""
        bodies: list[bytes] = await self._read(rec.op_load_records, kind)
        return decode_records(bodies, type_)
