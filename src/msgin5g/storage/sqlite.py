"""SQLite storage backend: the embedded default (WAL + group commit).

What:
    :class:`SqliteBackend` implements every protocol of :mod:`msgin5g.storage.base`
    on one SQLite file. Queued messages and reports live in the ``queue`` table
    (the ``MSG``/``IMDN`` body as msgspec JSON, routing columns beside it),
    registrations in ``registrations`` (msgspec msgpack), credentials in
    ``credentials``, expected report routes in ``report_routes`` and the
    duplicate-detection records (originator, messageId) -> (fingerprint, answer)
    in ``dedup``, written in the same transaction as the message they guard. The
    schema is created on :meth:`SqliteBackend.start`; its version is ``PRAGMA
    user_version`` (v3 -> v4 added ``dedup`` and ``queue.size``, filled in place).

Why group commit:
    With ``synchronous=FULL`` every commit fsyncs the write-ahead log, which costs
    from tens of microseconds (NVMe) to tens of milliseconds (cloud volumes). One
    transaction per write would cap the server at that fsync rate. Instead one
    dedicated writer thread owns the writing connection: async callers put their
    operation on a queue and await a future; the writer drains everything queued
    (up to ``batch_max`` operations), runs it all in ONE transaction, commits once,
    and then resolves every future of the batch with a single
    ``loop.call_soon_threadsafe`` call. Under load many writes share one fsync;
    with a single writer the latency is one commit, as without batching.

Durability semantics:
    The await of a write method returns only after the transaction holding that
    write committed. With ``synchronous=FULL`` (default) the WAL was fsynced, so
    the write survives a power loss; with ``NORMAL`` it survives a crash or
    ``kill -9`` of the process (the WAL is in the OS page cache) but may be lost on
    power loss. :meth:`SqliteBackend.remove_nowait` only schedules a delete; it is
    committed by the writer's next batch (normally within one commit time).
    Reads run on a second connection in a reader thread and therefore see every
    write whose await returned (WAL readers see all committed transactions).
    ``:memory:`` databases have a single connection, so reads go through the
    writer thread as well.

Failures:
    Driver errors are translated by :func:`map_driver_errors`. If an operation of
    a batch fails, the batch is rolled back and its operations are retried one
    per transaction, so only the offending operation fails; if ``BEGIN`` or
    ``COMMIT`` fails, every future of the batch fails with the mapped error. The
    writer thread keeps running in both cases.
"""

import asyncio
import concurrent.futures
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, TypeAlias

import msgspec

from msgin5g.errors import (
    ConfigError,
    StorageConflict,
    StorageError,
    StorageUnavailable,
)
from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.queue import QueuedItem, ReportRoute, member_copy
from msgin5g.model.registry import UERegistration
from msgin5g.storage.base import DedupRecord, R, stored_size

__all__ = ["SCHEMA_VERSION", "SqliteBackend", "map_driver_errors"]

_log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 4
"""Value of ``PRAGMA user_version`` for the schema this module creates."""

_SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS credentials (
        ue_service_id TEXT PRIMARY KEY,
        digest BLOB NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS registrations (
        ue_service_id TEXT PRIMARY KEY,
        body BLOB NOT NULL
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS queue (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        recipient TEXT NOT NULL,
        message_id TEXT NOT NULL,
        priority INTEGER NOT NULL,
        expires_at REAL NOT NULL,
        store INTEGER NOT NULL,
        body BLOB NOT NULL,
        pid INTEGER,
        size INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS payloads (
        pid INTEGER PRIMARY KEY,
        body BLOB NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS queue_by_recipient ON queue(recipient, priority, seq)",
    "CREATE INDEX IF NOT EXISTS queue_by_payload ON queue(pid) WHERE pid IS NOT NULL",
    "CREATE INDEX IF NOT EXISTS queue_by_expiry ON queue(expires_at)",
    "CREATE INDEX IF NOT EXISTS queue_by_message ON queue(recipient, message_id)",
    """CREATE TABLE IF NOT EXISTS report_routes (
        message_id TEXT NOT NULL,
        reporter TEXT NOT NULL,
        originator TEXT NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (message_id, reporter)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS report_routes_by_expiry ON report_routes(expires_at)",
    """CREATE TABLE IF NOT EXISTS records (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS dedup (
        originator TEXT NOT NULL,
        message_id TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        response BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (originator, message_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS dedup_by_expiry ON dedup(expires_at)",
)

# Primary SQLite result codes meaning "the database cannot be used right now".
_UNAVAILABLE_CODES: Final = frozenset(
    {
        3,  # SQLITE_PERM
        5,  # SQLITE_BUSY
        6,  # SQLITE_LOCKED
        8,  # SQLITE_READONLY
        10,  # SQLITE_IOERR
        13,  # SQLITE_FULL
        14,  # SQLITE_CANTOPEN
        15,  # SQLITE_PROTOCOL
    }
)
_UNAVAILABLE_TEXT: Final = (
    "database is locked",
    "database table is locked",
    "unable to open",
    "disk i/o error",
    "database or disk is full",
    "readonly database",
)

_Op: TypeAlias = tuple[
    Callable[..., Any] | None, tuple[Any, ...], asyncio.Future[Any] | None
]
"""A queued write: ``fn(conn, *args)``, its args, and the future to resolve.

``fn`` is None only for the stop sentinel queued by :meth:`SqliteBackend.aclose`.
"""
_Outcome: TypeAlias = tuple[asyncio.Future[Any] | None, Any, BaseException | None]

_ITEM_ENCODER: Final = msgspec.json.Encoder()
_ITEM_DECODER: Final = msgspec.json.Decoder(Msg | Imdn)
_REG_ENCODER: Final = msgspec.msgpack.Encoder()
_REG_DECODER: Final = msgspec.msgpack.Decoder(UERegistration)

_QUEUE_SELECT: Final = (
    "SELECT q.seq, q.recipient, q.priority, q.expires_at, q.store, q.body, p.body "
    "FROM queue q LEFT JOIN payloads p ON p.pid = q.pid "
)
"""Queue rows with the shared payload of fan-out rows (``pid`` set, own body empty)."""


@contextmanager
def map_driver_errors() -> Iterator[None]:
    """Translate sqlite3 (and stored-data decoding) errors into StorageError.

    * locked/busy database, file that cannot be opened, I/O error, full disk,
      read-only file -> :class:`~msgin5g.errors.StorageUnavailable`;
    * constraint violation (``sqlite3.IntegrityError``) ->
      :class:`~msgin5g.errors.StorageConflict`;
    * any other ``sqlite3.Error`` or an undecodable stored row ->
      :class:`~msgin5g.errors.StorageError`.

    The driver exception is kept as ``__cause__``.

    Raises:
        StorageError: or a subclass, for every driver error raised in the block.
    """
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise StorageConflict(f"sqlite: {exc}") from exc
    except sqlite3.OperationalError as exc:
        if _is_unavailable(exc):
            raise StorageUnavailable(f"sqlite: {exc}") from exc
        raise StorageError(f"sqlite: {exc}") from exc
    except sqlite3.Error as exc:
        raise StorageError(f"sqlite: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise StorageError(f"sqlite: undecodable stored row: {exc}") from exc


def _is_unavailable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) in _UNAVAILABLE_CODES:
        return True
    text = str(exc).lower()
    return any(fragment in text for fragment in _UNAVAILABLE_TEXT)


def _is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or its driver cause) is SQLITE_FULL."""
    cause = exc.__cause__ if isinstance(exc.__cause__, sqlite3.Error) else exc
    code = getattr(cause, "sqlite_errorcode", None)
    if isinstance(code, int) and (code & 0xFF) == 13:  # SQLITE_FULL
        return True
    return "disk is full" in str(exc).lower()


def _clone_error(exc: BaseException) -> BaseException:
    """A fresh instance of ``exc`` (same type, args and cause) for another waiter."""
    try:
        clone = type(exc)(*exc.args)
    except Exception:  # exotic constructor: share the instance
        return exc
    clone.__cause__ = exc.__cause__
    return clone


# --------------------------------------------------------------------------------------
# Operations. Each runs as fn(conn, *args) in the writer thread (writes) or the reader
# thread (reads); writes run inside the batch transaction.
# --------------------------------------------------------------------------------------


def _row_to_item(row: tuple[Any, ...]) -> QueuedItem:
    seq, recipient, priority, expires_at, store, body, shared = row
    item: Msg | Imdn
    if shared is not None:
        template = _ITEM_DECODER.decode(shared)
        if not isinstance(template, Msg):  # pragma: no cover - only MSG fans out
            raise StorageError(f"sqlite: shared payload of item {seq} is not a MSG")
        item = member_copy(template, recipient)
    else:
        item = _ITEM_DECODER.decode(body)
    return QueuedItem(
        recipient=recipient,
        item=item,
        priority=priority,
        expires_at=expires_at,
        store=bool(store),
        seq=seq,
    )


def _op_put_credential(conn: sqlite3.Connection, ue: str, digest: bytes) -> None:
    conn.execute(
        "INSERT INTO credentials(ue_service_id, digest) VALUES (?, ?) "
        "ON CONFLICT(ue_service_id) DO UPDATE SET digest = excluded.digest",
        (ue, digest),
    )


def _op_get_credential(conn: sqlite3.Connection, ue: str) -> bytes | None:
    row = conn.execute(
        "SELECT digest FROM credentials WHERE ue_service_id = ?", (ue,)
    ).fetchone()
    return None if row is None else bytes(row[0])


def _op_delete_credential(conn: sqlite3.Connection, ue: str) -> bool:
    cur = conn.execute("DELETE FROM credentials WHERE ue_service_id = ?", (ue,))
    return cur.rowcount > 0


def _op_list_credentials(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT ue_service_id FROM credentials ORDER BY ue_service_id"
    ).fetchall()
    return [row[0] for row in rows]


def _op_put_registration(conn: sqlite3.Connection, ue: str, body: bytes) -> None:
    conn.execute(
        "INSERT INTO registrations(ue_service_id, body) VALUES (?, ?) "
        "ON CONFLICT(ue_service_id) DO UPDATE SET body = excluded.body",
        (ue, body),
    )


def _op_delete_registration(conn: sqlite3.Connection, ue: str) -> bool:
    cur = conn.execute("DELETE FROM registrations WHERE ue_service_id = ?", (ue,))
    return cur.rowcount > 0


def _op_load_registrations(conn: sqlite3.Connection) -> list[UERegistration]:
    rows = conn.execute(
        "SELECT body FROM registrations ORDER BY ue_service_id"
    ).fetchall()
    return [_REG_DECODER.decode(row[0]) for row in rows]


def _op_enqueue(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Insert ``(seq, recipient, message_id, priority, expires_at, store, body, size)``."""
    conn.execute(
        "INSERT INTO queue(seq, recipient, message_id, priority, expires_at, store, "
        "body, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )


def _live_dedup(
    conn: sqlite3.Connection, originator: str, message_id: str, now: float
) -> DedupRecord | None:
    row = conn.execute(
        "SELECT fingerprint, response, expires_at FROM dedup "
        "WHERE originator = ? AND message_id = ? AND expires_at > ?",
        (originator, message_id, now),
    ).fetchone()
    if row is None:
        return None
    return DedupRecord(
        originator=originator,
        message_id=message_id,
        fingerprint=bytes(row[0]),
        response=bytes(row[1]),
        expires_at=row[2],
    )


def _put_dedup(conn: sqlite3.Connection, record: DedupRecord) -> None:
    conn.execute(
        "INSERT INTO dedup(originator, message_id, fingerprint, response, "
        "expires_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(originator, message_id) "
        "DO UPDATE SET fingerprint = excluded.fingerprint, "
        "response = excluded.response, expires_at = excluded.expires_at",
        (
            record.originator,
            record.message_id,
            record.fingerprint,
            record.response,
            record.expires_at,
        ),
    )


def _op_enqueue_once(
    conn: sqlite3.Connection,
    row: tuple[Any, ...],
    record: DedupRecord,
    now: float,
    routes: list[tuple[Any, ...]],
) -> DedupRecord | None:
    """The live record of the key, or insert the record, queue row and routes."""
    existing = _live_dedup(conn, record.originator, record.message_id, now)
    if existing is not None:
        return existing
    _put_dedup(conn, record)
    _op_enqueue(conn, row)
    if routes:
        _put_routes(conn, routes)
    return None


def _put_routes(conn: sqlite3.Connection, routes: list[tuple[Any, ...]]) -> None:
    conn.executemany(
        "INSERT INTO report_routes(message_id, reporter, originator, expires_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(message_id, reporter) DO UPDATE SET "
        "originator = excluded.originator, expires_at = excluded.expires_at",
        routes,
    )


def _op_find_dedup(
    conn: sqlite3.Connection, originator: str, message_id: str, now: float
) -> DedupRecord | None:
    return _live_dedup(conn, originator, message_id, now)


def _op_purge_dedup(conn: sqlite3.Connection, now: float) -> int:
    cur = conn.execute("DELETE FROM dedup WHERE expires_at <= ?", (now,))
    return cur.rowcount


def _op_stored_usage(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    rows = conn.execute(
        "SELECT recipient, COUNT(*), SUM(size) FROM queue GROUP BY recipient"
    ).fetchall()
    return {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}


def _fill_sizes(conn: sqlite3.Connection) -> None:
    """Schema v4 upgrade: compute ``queue.size`` of the rows stored before it."""
    last = 0
    while True:
        rows = conn.execute(
            "SELECT q.seq, q.body, p.body FROM queue q "
            "LEFT JOIN payloads p ON p.pid = q.pid WHERE q.seq > ? "
            "ORDER BY q.seq LIMIT 1000",
            (last,),
        ).fetchall()
        if not rows:
            return
        conn.executemany(
            "UPDATE queue SET size = ? WHERE seq = ?",
            [
                (stored_size(_ITEM_DECODER.decode(shared or body)), seq)
                for seq, body, shared in rows
            ],
        )
        last = rows[-1][0]


def _op_enqueue_fanout(
    conn: sqlite3.Connection,
    body: bytes,
    rows: list[tuple[Any, ...]],
    routes: list[tuple[Any, ...]],
    dedup: tuple[DedupRecord, float] | None,
) -> DedupRecord | None:
    """One payload row, one queue row per member (body empty, ``pid`` set).

    With a duplicate-detection record (and the time ``now``): nothing is
    written if a live record of the same key exists (it is returned), else the
    record is written too.
    """
    if dedup is not None:
        record, now = dedup
        existing = _live_dedup(conn, record.originator, record.message_id, now)
        if existing is not None:
            return existing
        _put_dedup(conn, record)
    cur = conn.execute("INSERT INTO payloads(body) VALUES (?)", (body,))
    pid = cur.lastrowid
    conn.executemany(
        "INSERT INTO queue(seq, recipient, message_id, priority, expires_at, store, "
        "size, body, pid) VALUES (?, ?, ?, ?, ?, ?, ?, x'', ?)",
        [(*row, pid) for row in rows],
    )
    if routes:
        conn.executemany(
            "INSERT INTO report_routes(message_id, reporter, originator, expires_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT(message_id, reporter) DO UPDATE SET "
            "originator = excluded.originator, expires_at = excluded.expires_at",
            routes,
        )
    return None


def _run_batch(conn: sqlite3.Connection, batch: list[_Op], results: list[Any]) -> None:
    """Run the operations of a batch in order; runs of removals in one statement.

    The delivery hot path queues one removal per delivered item; a fan-out to
    10,000 UEs queues 10,000 of them within a second.
    """
    i, n = 0, len(batch)
    while i < n:
        fn, args, _ = batch[i]
        if fn is _op_remove:
            j = i + 1
            while j < n and batch[j][0] is _op_remove:
                j += 1
            if j - i > 1:
                conn.executemany(
                    "DELETE FROM queue WHERE seq = ?", [op[1] for op in batch[i:j]]
                )
                results.extend([None] * (j - i))
                i = j
                continue
        results.append(fn(conn, *args))  # type: ignore[misc]
        i += 1


def _op_purge_payloads(conn: sqlite3.Connection) -> int:
    cur = conn.execute(
        "DELETE FROM payloads WHERE NOT EXISTS "
        "(SELECT 1 FROM queue WHERE queue.pid = payloads.pid)"
    )
    return cur.rowcount


def _op_remove(conn: sqlite3.Connection, seq: int) -> None:
    conn.execute("DELETE FROM queue WHERE seq = ?", (seq,))


def _op_pending_for(
    conn: sqlite3.Connection, recipient: str, after_seq: int, limit: int
) -> list[QueuedItem]:
    rows = conn.execute(
        _QUEUE_SELECT  # constant
        + "WHERE recipient = ? AND seq > ? ORDER BY priority, seq LIMIT ?",
        (recipient, after_seq, limit),
    ).fetchall()
    return [_row_to_item(row) for row in rows]


def _op_recipients_with_pending(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT DISTINCT recipient FROM queue ORDER BY recipient"
    ).fetchall()
    return [row[0] for row in rows]


def _op_take_expired(
    conn: sqlite3.Connection, now: float, limit: int
) -> list[QueuedItem]:
    rows = conn.execute(
        _QUEUE_SELECT  # constant
        + "WHERE expires_at <= ? ORDER BY expires_at, seq LIMIT ?",
        (now, limit),
    ).fetchall()
    if rows:
        conn.executemany("DELETE FROM queue WHERE seq = ?", [(row[0],) for row in rows])
    return [_row_to_item(row) for row in rows]


def _op_find(
    conn: sqlite3.Connection, recipient: str, message_id: str
) -> QueuedItem | None:
    rows = conn.execute(
        _QUEUE_SELECT  # constant
        + "WHERE recipient = ? AND message_id = ? ORDER BY seq",
        (recipient, message_id),
    ).fetchall()
    for row in rows:
        item = _row_to_item(row)
        if isinstance(item.item, Msg):
            return item
    return None


def _op_set_expiry(conn: sqlite3.Connection, seq: int, expires_at: float) -> bool:
    cur = conn.execute(
        "UPDATE queue SET expires_at = ? WHERE seq = ?", (expires_at, seq)
    )
    return cur.rowcount > 0


def _op_take_all_for(conn: sqlite3.Connection, recipient: str) -> list[QueuedItem]:
    rows = conn.execute(
        _QUEUE_SELECT  # constant
        + "WHERE recipient = ? ORDER BY priority, seq",
        (recipient,),
    ).fetchall()
    if rows:
        conn.execute("DELETE FROM queue WHERE recipient = ?", (recipient,))
    return [_row_to_item(row) for row in rows]


def _op_count(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COUNT(*) FROM queue").fetchone()
    return int(row[0])


def _op_put_report_route(conn: sqlite3.Connection, route: ReportRoute) -> None:
    conn.execute(
        "INSERT INTO report_routes(message_id, reporter, originator, expires_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT(message_id, reporter) DO UPDATE SET "
        "originator = excluded.originator, expires_at = excluded.expires_at",
        (route.message_id, route.reporter, route.originator, route.expires_at),
    )


def _op_take_report_route(
    conn: sqlite3.Connection, message_id: str, reporter: str
) -> ReportRoute | None:
    row = conn.execute(
        "SELECT originator, expires_at FROM report_routes "
        "WHERE message_id = ? AND reporter = ?",
        (message_id, reporter),
    ).fetchone()
    if row is None:
        return None
    conn.execute(
        "DELETE FROM report_routes WHERE message_id = ? AND reporter = ?",
        (message_id, reporter),
    )
    return ReportRoute(
        message_id=message_id, reporter=reporter, originator=row[0], expires_at=row[1]
    )


def _op_purge_report_routes(conn: sqlite3.Connection, now: float) -> int:
    cur = conn.execute("DELETE FROM report_routes WHERE expires_at <= ?", (now,))
    return cur.rowcount


# --------------------------------------------------------------------------------------


class SqliteBackend:
    """SQLite implementation of :class:`msgin5g.storage.base.Backend`.

    Writes are group-committed by one writer thread (see the module docstring);
    reads run on a second connection in a reader thread.

    Attributes:
        path: the database file, or ``":memory:"``.
        synchronous: the ``PRAGMA synchronous`` mode (``FULL`` fsyncs every commit).
        batch_max: most operations committed in one transaction.
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
    ) -> None:
        """Configure the backend; nothing is opened before :meth:`start`.

        Args:
            path: database file path, or ``":memory:"`` for a private in-memory
                database (not durable).
            synchronous: ``OFF``, ``NORMAL``, ``FULL`` (default) or ``EXTRA``.
            batch_max: upper bound of operations per group commit (>= 1).
            busy_timeout: seconds to wait for a lock held by another process
                before failing with :class:`~msgin5g.errors.StorageUnavailable`.

        Raises:
            ConfigError: an option has an invalid value.
        """
        mode = synchronous.upper()
        if mode not in _SYNCHRONOUS_MODES:
            raise ConfigError(
                f"storage.synchronous: {synchronous!r} is not one of "
                f"{', '.join(sorted(_SYNCHRONOUS_MODES))}"
            )
        if batch_max < 1:
            raise ConfigError(f"storage.batch_max: must be >= 1, got {batch_max}")
        if busy_timeout < 0:
            raise ConfigError(f"storage.busy_timeout: must be >= 0, got {busy_timeout}")
        self.path = path
        self.synchronous = mode
        self.batch_max = batch_max
        self.busy_timeout = busy_timeout
        self.commits = 0
        self.writes = 0
        self.disk_full = False
        self._in_memory = path == ":memory:" or path.startswith("file::memory:")
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._rconn: sqlite3.Connection | None = None
        self._started = False
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._next_seq = 1

    def __repr__(self) -> str:
        return f"SqliteBackend({self.path!r}, synchronous={self.synchronous!r})"

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Open the database, create the schema, start the writer/reader threads.

        Calling it again on a started backend does nothing.

        Raises:
            StorageUnavailable: the file cannot be opened or is locked.
            StorageError: the schema is newer than this version supports.
        """
        if self._started:
            return
        if self._closed:
            raise StorageUnavailable("sqlite: backend was closed")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        writer = threading.Thread(
            target=self._writer_main,
            args=(ready,),
            name=f"msgin5g-sqlite-writer:{self.path}",
            daemon=True,
        )
        writer.start()
        try:
            await asyncio.wrap_future(ready)
        except BaseException:
            await asyncio.to_thread(writer.join)
            raise
        self._writer = writer
        self._started = True
        if not self._in_memory:
            self._reader = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="msgin5g-sqlite-reader"
            )
            try:
                await asyncio.get_running_loop().run_in_executor(
                    self._reader, self._open_reader
                )
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
        loop = asyncio.get_running_loop()
        self._closing = loop.create_future()
        self._closed = True
        try:
            if self._writer is not None:
                stopped: asyncio.Future[Any] = loop.create_future()
                self._queue.put((None, (), stopped))
                await stopped
                await asyncio.to_thread(self._writer.join)
            if self._reader is not None:
                await loop.run_in_executor(self._reader, self._close_reader)
                self._reader.shutdown(wait=True)
        finally:
            self._closing.set_result(None)

    # ---------------------------------------------------------------- connections

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            uri=self.path.startswith("file:"),
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal" and not self._in_memory:
            raise StorageUnavailable(f"sqlite: cannot enable WAL (journal_mode={mode})")
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"sqlite: {self.path} has schema version {version}, newer than "
                    f"the supported {SCHEMA_VERSION}"
                )
            if 0 < version < 3:
                # v3 adds shared fan-out payloads: queue.pid + table payloads
                conn.execute("ALTER TABLE queue ADD COLUMN pid INTEGER")
            if 0 < version < 4:
                # v4 adds table dedup and queue.size (storage quotas)
                conn.execute(
                    "ALTER TABLE queue ADD COLUMN size INTEGER NOT NULL DEFAULT 0"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            if 0 < version < 4:
                _fill_sizes(conn)
            if version != SCHEMA_VERSION:
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            last = conn.execute(
                "SELECT MAX(m) FROM (SELECT MAX(seq) AS m FROM queue UNION ALL "
                "SELECT seq FROM sqlite_sequence WHERE name = 'queue')"
            ).fetchone()[0]
            self._next_seq = int(last or 0) + 1
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def _open_reader(self) -> None:
        with map_driver_errors():
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout,
                isolation_level=None,
                uri=self.path.startswith("file:"),
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA query_only = 1")
        self._rconn = conn

    def _close_reader(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    # ---------------------------------------------------------------- writer thread

    def _writer_main(self, ready: concurrent.futures.Future[None]) -> None:
        try:
            with map_driver_errors():
                conn = self._connect()
                try:
                    self._init_schema(conn)
                except BaseException:
                    conn.close()
                    raise
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
                self._resolve([(stop, None, None)])

    def _drain(self, conn: sqlite3.Connection) -> asyncio.Future[Any] | None:
        """Run batches until the stop sentinel; return the sentinel's future."""
        get, get_nowait = self._queue.get, self._queue.get_nowait
        while True:
            batch = [get()]
            stop: asyncio.Future[Any] | None = None
            if batch[0][0] is None:
                return batch[0][2]
            while len(batch) < self.batch_max:
                try:
                    op = get_nowait()
                except queue.Empty:
                    break
                if op[0] is None:
                    stop = op[2]
                    break
                batch.append(op)
            try:
                self._resolve(self._execute(conn, batch))
            except Exception:  # pragma: no cover - a bug; keep the writer alive
                _log.exception("sqlite writer: unexpected failure")
            if stop is not None:
                return stop

    def _execute(self, conn: sqlite3.Connection, batch: list[_Op]) -> list[_Outcome]:
        """Run ``batch`` in one transaction; return one outcome per operation."""
        try:
            with map_driver_errors():
                conn.execute("BEGIN IMMEDIATE")
        except Exception as exc:
            return self._fail_all(batch, exc)
        results: list[Any] = []
        try:
            with map_driver_errors():
                _run_batch(conn, batch, results)
        except Exception as exc:
            self._rollback(conn)
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
            self._rollback(conn)
            return self._fail_all(batch, exc)
        self.commits += 1
        self.writes += len(batch)
        if self.disk_full:
            self.disk_full = False
            _log.warning("sqlite: %s is writable again (disk space freed)", self.path)
        return [
            (op[2], result, None) for op, result in zip(batch, results, strict=True)
        ]

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # pragma: no cover - connection is broken
                _log.exception("sqlite writer: ROLLBACK failed")

    def _fail_all(self, batch: list[_Op], exc: BaseException) -> list[_Outcome]:
        if not self.disk_full and _is_disk_full(exc):
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
            outcomes.append((fut, None, exc if index == 0 else _clone_error(exc)))
        return outcomes

    @staticmethod
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

    # ---------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise StorageUnavailable("sqlite: backend is closed")
        if not self._started:
            raise StorageUnavailable("sqlite: backend not started (call start())")

    def _submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        self._check_open()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put((fn, args, fut))
        return fut

    async def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        self._check_open()
        if self._reader is None:  # :memory: has one connection: the writer's
            return await self._submit(fn, *args)
        return await asyncio.get_running_loop().run_in_executor(
            self._reader, self._run_read, fn, args
        )

    def _run_read(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        conn = self._rconn
        if conn is None:
            raise StorageUnavailable("sqlite: backend is closed")
        with map_driver_errors():
            return fn(conn, *args)

    # ---------------------------------------------------------------- CredentialStore

    async def put_credential(self, ue_service_id: str, digest: bytes) -> None:
        """Create or replace the credential digest of a UE."""
        await self._submit(_op_put_credential, ue_service_id, bytes(digest))

    async def get_credential(self, ue_service_id: str) -> bytes | None:
        """Return the credential digest, or None if the UE is not provisioned."""
        result: bytes | None = await self._read(_op_get_credential, ue_service_id)
        return result

    async def delete_credential(self, ue_service_id: str) -> bool:
        """Remove a provisioned UE; True if it existed."""
        result: bool = await self._submit(_op_delete_credential, ue_service_id)
        return result

    async def list_credentials(self) -> list[str]:
        """All provisioned UE Service IDs, sorted."""
        result: list[str] = await self._read(_op_list_credentials)
        return result

    # ---------------------------------------------------------------- RegistrationStore

    async def put_registration(self, registration: UERegistration) -> None:
        """Create or replace the registration of ``registration.ue_service_id``."""
        body = _REG_ENCODER.encode(registration)
        await self._submit(_op_put_registration, registration.ue_service_id, body)

    async def delete_registration(self, ue_service_id: str) -> bool:
        """Remove a registration; True if it existed."""
        result: bool = await self._submit(_op_delete_registration, ue_service_id)
        return result

    async def load_registrations(self) -> list[UERegistration]:
        """Every stored registration, ordered by UE Service ID."""
        result: list[UERegistration] = await self._read(_op_load_registrations)
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
        body = _ITEM_ENCODER.encode(item.item)
        seq = self._take_seqs(1)
        row = (
            seq,
            item.recipient,
            item.item.message_id,
            item.priority,
            item.expires_at,
            item.store,
            body,
            stored_size(item.item),
        )
        await self._submit(_op_enqueue, row)
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
        body = _ITEM_ENCODER.encode(item.item)
        seq = self._take_seqs(1)
        row = (
            seq,
            item.recipient,
            item.item.message_id,
            item.priority,
            item.expires_at,
            item.store,
            body,
            stored_size(item.item),
        )
        route_rows = [
            (r.message_id, r.reporter, r.originator, r.expires_at) for r in routes
        ]
        existing: DedupRecord | None = await self._submit(
            _op_enqueue_once, row, dedup, now, route_rows
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
        body = _ITEM_ENCODER.encode(template)
        size = stored_size(template)
        first = self._take_seqs(len(items))
        rows = []
        for offset, i in enumerate(items):
            i.seq = first + offset
            rows.append(
                (
                    i.seq,
                    i.recipient,
                    i.item.message_id,
                    i.priority,
                    i.expires_at,
                    i.store,
                    size,
                )
            )
        route_rows = [
            (r.message_id, r.reporter, r.originator, r.expires_at) for r in routes
        ]
        return self._submit(
            _op_enqueue_fanout,
            body,
            rows,
            route_rows,
            None if dedup is None else (dedup, now),
        )

    async def find_dedup(
        self, originator: str, message_id: str, now: float
    ) -> DedupRecord | None:
        """The live record of (originator, messageId) (reader connection)."""
        result: DedupRecord | None = await self._read(
            _op_find_dedup, originator, message_id, now
        )
        return result

    async def purge_dedup(self, now: float) -> int:
        """Drop records with ``expires_at <= now``; return how many."""
        result: int = await self._submit(_op_purge_dedup, now)
        return result

    async def stored_usage(self) -> dict[str, tuple[int, int]]:
        """Per recipient: (stored items, sum of ``queue.size``)."""
        result: dict[str, tuple[int, int]] = await self._read(_op_stored_usage)
        return result

    async def purge_payloads(self) -> int:
        """Drop payload rows that no queue row refers to any more."""
        result: int = await self._submit(_op_purge_payloads)
        return result

    async def remove(self, seq: int) -> None:
        """Forget a delivered/expired/failed item; unknown ``seq`` is ignored."""
        await self._submit(_op_remove, seq)

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
        self._queue.put((_op_remove, (seq,), None))

    async def pending_for(
        self, recipient: str, *, after_seq: int = 0, limit: int = 100
    ) -> list[QueuedItem]:
        """Items for ``recipient`` with ``seq > after_seq``, by (priority, seq)."""
        result: list[QueuedItem] = await self._read(
            _op_pending_for, recipient, after_seq, limit
        )
        return result

    async def recipients_with_pending(self) -> list[str]:
        """Distinct recipients that have at least one item, sorted."""
        result: list[str] = await self._read(_op_recipients_with_pending)
        return result

    async def take_expired(self, now: float, *, limit: int = 1000) -> list[QueuedItem]:
        """Remove and return up to ``limit`` items with ``expires_at <= now``.

        Items come soonest-expiring first (then by seq).
        """
        result: list[QueuedItem] = await self._submit(_op_take_expired, now, limit)
        return result

    async def find(self, recipient: str, message_id: str) -> QueuedItem | None:
        """The stored ``MSG`` for ``recipient`` with that MSGin5G Message ID.

        ``IMDN`` items (which carry the ID of the message they report on) are
        never returned. With duplicates the earliest (lowest seq) wins.
        """
        result: QueuedItem | None = await self._read(_op_find, recipient, message_id)
        return result

    async def set_expiry(self, seq: int, expires_at: float) -> bool:
        """Change the expiry of an item; True if it exists."""
        result: bool = await self._submit(_op_set_expiry, seq, expires_at)
        return result

    async def take_all_for(self, recipient: str) -> list[QueuedItem]:
        """Remove and return every item of ``recipient``, by (priority, seq)."""
        result: list[QueuedItem] = await self._submit(_op_take_all_for, recipient)
        return result

    async def count(self) -> int:
        """Number of items stored."""
        result: int = await self._read(_op_count)
        return result

    # ---------------------------------------------------------------- ReportStore

    async def put_report_route(self, route: ReportRoute) -> None:
        """Remember (or replace) the route for ``(message_id, reporter)``."""
        await self._submit(_op_put_report_route, route)

    async def take_report_route(
        self, message_id: str, reporter: str
    ) -> ReportRoute | None:
        """Remove and return the route, or None if none is expected.

        Expiry is not checked here; :meth:`purge_report_routes` drops old routes.
        """
        result: ReportRoute | None = await self._submit(
            _op_take_report_route, message_id, reporter
        )
        return result

    async def purge_report_routes(self, now: float) -> int:
        """Drop routes with ``expires_at <= now``; return how many."""
        result: int = await self._submit(_op_purge_report_routes, now)
        return result

    # ---------------------------------------------------------------- RecordStore

    async def put_record(self, kind: str, key: str, record: msgspec.Struct) -> None:
        """Create or replace a record (msgpack-encoded)."""
        await self._submit(_op_put_record, kind, key, msgspec.msgpack.encode(record))

    async def get_record(self, kind: str, key: str, type_: type[R]) -> R | None:
        """The record decoded as ``type_``, or None."""
        body: bytes | None = await self._read(_op_get_record, kind, key)
        return None if body is None else msgspec.msgpack.decode(body, type=type_)

    async def delete_record(self, kind: str, key: str) -> bool:
        """Remove a record; True if it existed."""
        result: bool = await self._submit(_op_delete_record, kind, key)
        return result

    async def load_records(self, kind: str, type_: type[R]) -> list[R]:
        """Every record of ``kind`` ordered by key."""
        bodies: list[bytes] = await self._read(_op_load_records, kind)
        decoder = msgspec.msgpack.Decoder(type_)
        return [decoder.decode(body) for body in bodies]


def _op_put_record(conn: sqlite3.Connection, kind: str, key: str, body: bytes) -> None:
    conn.execute(
        "INSERT INTO records(kind, key, body) VALUES (?, ?, ?) "
        "ON CONFLICT(kind, key) DO UPDATE SET body = excluded.body",
        (kind, key, body),
    )


def _op_get_record(conn: sqlite3.Connection, kind: str, key: str) -> bytes | None:
    row = conn.execute(
        "SELECT body FROM records WHERE kind = ? AND key = ?", (kind, key)
    ).fetchone()
    return None if row is None else bytes(row[0])


def _op_delete_record(conn: sqlite3.Connection, kind: str, key: str) -> bool:
    cur = conn.execute("DELETE FROM records WHERE kind = ? AND key = ?", (kind, key))
    return cur.rowcount > 0


def _op_load_records(conn: sqlite3.Connection, kind: str) -> list[bytes]:
    rows = conn.execute(
        "SELECT body FROM records WHERE kind = ? ORDER BY key", (kind,)
    ).fetchall()
    return [bytes(row[0]) for row in rows]


def _set_outcomes(outcomes: list[_Outcome]) -> None:
    """Event-loop side of a batch: complete every future that still waits."""
    for fut, result, exc in outcomes:
        if fut is None or fut.done():  # cancelled by its caller
            continue
        if exc is None:
            fut.set_result(result)
        else:
            fut.set_exception(exc)
