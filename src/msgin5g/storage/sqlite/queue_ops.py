"""SQL of the message queue: items, fan-out payloads, dedup records, report routes.

What:
    Every ``op_*`` function runs as ``fn(conn, *args)``: writes in the writer
    thread inside the batch transaction (:mod:`.writer`), reads on the reader
    connection. They implement :class:`~msgin5g.storage.base.MessageQueue` and
    :class:`~msgin5g.storage.base.ReportStore` on the tables of :mod:`.schema`.
    The pure helpers (:func:`queue_row`, :func:`route_rows`) build the rows in
    the event loop, so the writer thread only executes SQL.

Why rows and not items:
    The writer holds the GIL while it runs; encoding JSON there would slow the
    event loop that fills its queue. Bodies are encoded before submission.

Set-based group commit (:func:`run_group`):
    Every message the server accepts is one :func:`op_enqueue_once` and, once
    delivered, one :func:`op_remove`. A run of these operations in one writer
    batch runs as a few ``executemany`` calls for the whole run (duplicate
    records one by one, then queue rows, routes, removals) instead of two to
    four ``execute`` calls per operation, with the results each operation
    would have had alone (see :func:`run_group` for how order and duplicates
    are kept).

Claiming a duplicate-detection key:
    :data:`_DEDUP_CLAIM` writes the record unless a LIVE record of the key exists
    (``ON CONFLICT ... DO UPDATE ... WHERE dedup.expires_at <= now``), and its
    change count says which happened: one statement where a read then a write
    took two. The stored record is read only for a duplicate.
"""

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final, TypeAlias

import msgspec

from msgin5g.errors import StorageError
from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.queue import QueuedItem, ReportRoute, member_copy
from msgin5g.storage.base import DedupRecord, stored_size

__all__ = [
    "ITEM_DECODER",
    "ITEM_ENCODER",
    "REMOVE_SQL",
    "member_rows",
    "op_count",
    "op_enqueue",
    "op_enqueue_fanout",
    "op_enqueue_once",
    "op_find",
    "op_find_dedup",
    "op_pending_for",
    "op_purge_dedup",
    "op_purge_payloads",
    "op_purge_report_routes",
    "op_put_report_route",
    "op_recipients_with_pending",
    "op_remove",
    "op_set_expiry",
    "op_stored_usage",
    "op_take_all_for",
    "op_take_expired",
    "op_take_report_route",
    "queue_row",
    "route_rows",
    "row_to_item",
    "run_group",
]

GroupOp: TypeAlias = tuple[
    Callable[..., Any] | None, tuple[Any, ...], asyncio.Future[Any] | None
]
"""A writer operation as :func:`run_group` gets it (the writer's ``Op``)."""

ITEM_ENCODER: Final = msgspec.json.Encoder()
ITEM_DECODER: Final = msgspec.json.Decoder(Msg | Imdn)

_QUEUE_SELECT: Final = (
    "SELECT q.seq, q.recipient, q.priority, q.expires_at, q.store, q.body, p.body "
    "FROM queue q LEFT JOIN payloads p ON p.pid = q.pid "
)
"""Queue rows with the shared payload of fan-out rows (``pid`` set, own body empty)."""

REMOVE_SQL: Final = "DELETE FROM queue WHERE seq = ?"
"""What :func:`op_remove` runs; the writer runs a run of removals as one executemany."""

_QUEUE_INSERT: Final = (
    "INSERT INTO queue(seq, recipient, message_id, priority, expires_at, store, "
    "body, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

_DEDUP_CLAIM: Final = (
    "INSERT INTO dedup(originator, message_id, fingerprint, response, expires_at) "
    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(originator, message_id) DO UPDATE SET "
    "fingerprint = excluded.fingerprint, response = excluded.response, "
    "expires_at = excluded.expires_at WHERE dedup.expires_at <= ?"
)
"""Write a record unless a live one of its key exists: 1 change, or 0 (duplicate).

Parameters: the record's five columns, then ``now``.
"""

_ROUTE_UPSERT: Final = (
    "INSERT INTO report_routes(message_id, reporter, originator, expires_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT(message_id, reporter) DO UPDATE SET "
    "originator = excluded.originator, expires_at = excluded.expires_at"
)

# ---------------------------------------------------------------- rows (event loop)


def queue_row(item: QueuedItem, seq: int) -> tuple[Any, ...]:
    """The ``queue`` row of ``item`` under ``seq`` (body encoded here).

    Columns: ``(seq, recipient, message_id, priority, expires_at, store, body,
    size)``, as :func:`op_enqueue` inserts them.
    """
    return (
        seq,
        item.recipient,
        item.item.message_id,
        item.priority,
        item.expires_at,
        item.store,
        ITEM_ENCODER.encode(item.item),
        stored_size(item.item),
    )


def member_rows(
    items: list[QueuedItem], first: int, size: int
) -> list[tuple[Any, ...]]:
    """Fan-out member rows with seqs from ``first`` on (also set on the items).

    Columns: ``(seq, recipient, message_id, priority, expires_at, store, size)``;
    the body is the shared payload (:func:`op_enqueue_fanout`).
    """
    rows = []
    for offset, item in enumerate(items):
        item.seq = first + offset
        rows.append(
            (
                item.seq,
                item.recipient,
                item.item.message_id,
                item.priority,
                item.expires_at,
                item.store,
                size,
            )
        )
    return rows


def route_rows(routes: Iterable[ReportRoute]) -> list[tuple[Any, ...]]:
    """``report_routes`` rows: ``(message_id, reporter, originator, expires_at)``."""
    return [(r.message_id, r.reporter, r.originator, r.expires_at) for r in routes]


def row_to_item(row: tuple[Any, ...]) -> QueuedItem:
    """A :data:`_QUEUE_SELECT` row as an item (fan-out rows as member copies)."""
    seq, recipient, priority, expires_at, store, body, shared = row
    item: Msg | Imdn
    if shared is not None:
        template = ITEM_DECODER.decode(shared)
        if not isinstance(template, Msg):  # pragma: no cover - only MSG fans out
            raise StorageError(f"sqlite: shared payload of item {seq} is not a MSG")
        item = member_copy(template, recipient)
    else:
        item = ITEM_DECODER.decode(body)
    return QueuedItem(
        recipient=recipient,
        item=item,
        priority=priority,
        expires_at=expires_at,
        store=bool(store),
        seq=seq,
    )


# ---------------------------------------------------------------- writes


def op_enqueue(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Insert a :func:`queue_row`."""
    conn.execute(_QUEUE_INSERT, row)


def op_enqueue_once(
    conn: sqlite3.Connection,
    row: tuple[Any, ...],
    record: DedupRecord,
    now: float,
    routes: list[tuple[Any, ...]],
) -> DedupRecord | None:
    """The live record of the key, or insert the record, queue row and routes."""
    existing = _claim_dedup(conn, record, now)
    if existing is not None:
        return existing
    op_enqueue(conn, row)
    if routes:
        _put_routes(conn, routes)
    return None


def op_enqueue_fanout(
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
        existing = _claim_dedup(conn, *dedup)
        if existing is not None:
            return existing
    cur = conn.execute("INSERT INTO payloads(body) VALUES (?)", (body,))
    pid = cur.lastrowid
    conn.executemany(
        "INSERT INTO queue(seq, recipient, message_id, priority, expires_at, store, "
        "size, body, pid) VALUES (?, ?, ?, ?, ?, ?, ?, x'', ?)",
        [(*row, pid) for row in rows],
    )
    if routes:
        _put_routes(conn, routes)
    return None


def _claim_dedup(
    conn: sqlite3.Connection, record: DedupRecord, now: float
) -> DedupRecord | None:
    """The live record of ``record``'s key, or None after writing ``record``."""
    if conn.execute(_DEDUP_CLAIM, _claim_row(record, now)).rowcount:
        return None
    return _live_record(conn, record, now)


def _claim_row(record: DedupRecord, now: float) -> tuple[Any, ...]:
    return (
        record.originator,
        record.message_id,
        record.fingerprint,
        record.response,
        record.expires_at,
        now,
    )


def _live_record(
    conn: sqlite3.Connection, record: DedupRecord, now: float
) -> DedupRecord:
    """The live record that kept :data:`_DEDUP_CLAIM` from writing ``record``."""
    existing = op_find_dedup(conn, record.originator, record.message_id, now)
    if existing is None:  # pragma: no cover - the claim saw it in this transaction
        raise StorageError(
            f"sqlite: dedup record of {record.message_id!r} vanished in a transaction"
        )
    return existing


def run_group(conn: sqlite3.Connection, ops: Sequence[GroupOp]) -> list[Any]:
    """Run consecutive :func:`op_enqueue_once`, :func:`op_enqueue` and :func:`op_remove`.

    The writer calls this for a run of these operations in one batch (inside
    its transaction); the results are those each operation would have returned
    run alone, in order:

    * the duplicate-detection claims of the run go first, one
      :data:`_DEDUP_CLAIM` each, in order: of two claims of ONE key in the
      run the first writes and the second gets the first's record (or
      replaces it if it has expired by the second's ``now``). One
      ``executemany`` in a savepoint was tried: the savepoint's journal of
      the pages it dirtied (random keys: one dedup leaf per claim) cost twice
      the claims themselves;
    * then the queue rows of the claimed (and plain) operations, one
      ``executemany``; then their report routes, one ``executemany`` in order
      (a later route of the same key replaces an earlier one, as run alone);
    * then the removals, one ``executemany``. A removal only meets the queue
      row of its own seq; an insert of a seq removed EARLIER in the run (never
      done by the backend: seqs are not reused) starts a new segment, so it is
      not undone by the deferred removal.

    Args:
        conn: the writer connection, in the batch's transaction.
        ops: ``(fn, args, future)`` operations, ``fn`` one of the three.

    Returns:
        One result per operation.
    """
    results: list[Any] = []
    start = 0
    removed: set[int] = set()
    for index, (fn, args, _) in enumerate(ops):
        if fn is op_remove:
            removed.add(args[0])
        elif removed and args[0][0] in removed:  # re-insert of a removed seq
            results.extend(_run_segment(conn, ops[start:index]))
            start = index
            removed.clear()
    results.extend(_run_segment(conn, ops[start:]))
    return results


def _run_segment(conn: sqlite3.Connection, ops: Sequence[GroupOp]) -> list[Any]:
    results: list[Any] = [None] * len(ops)
    claims: list[tuple[int, DedupRecord, float]] = []
    removals: list[tuple[int]] = []
    for index, (fn, args, _) in enumerate(ops):
        if fn is op_enqueue_once:
            claims.append((index, args[1], args[2]))
        elif fn is op_remove:
            removals.append(args)
    claimed = _claim_all(conn, claims, results)
    rows: list[tuple[Any, ...]] = []
    routes: list[tuple[Any, ...]] = []
    for index, (fn, args, _) in enumerate(ops):
        if fn is op_remove:
            continue
        if fn is op_enqueue_once:
            if index not in claimed:
                continue  # a duplicate: nothing stored
            if args[3]:
                routes.extend(args[3])
        rows.append(args[0])
    if rows:
        conn.executemany(_QUEUE_INSERT, rows)
    if routes:
        conn.executemany(_ROUTE_UPSERT, routes)
    if removals:
        conn.executemany(REMOVE_SQL, removals)
    return results


def _claim_all(
    conn: sqlite3.Connection,
    claims: list[tuple[int, DedupRecord, float]],
    results: list[Any],
) -> set[int]:
    """Claim every key in order; set the duplicates' results; the claimed indexes."""
    claimed: set[int] = set()
    for index, record, now in claims:
        existing = _claim_dedup(conn, record, now)
        if existing is None:
            claimed.add(index)
        else:
            results[index] = existing
    return claimed


def _put_routes(conn: sqlite3.Connection, routes: list[tuple[Any, ...]]) -> None:
    conn.executemany(_ROUTE_UPSERT, routes)


def op_purge_dedup(conn: sqlite3.Connection, now: float) -> int:
    """Delete records with ``expires_at <= now``; how many."""
    cur = conn.execute("DELETE FROM dedup WHERE expires_at <= ?", (now,))
    return cur.rowcount


def op_purge_payloads(conn: sqlite3.Connection) -> int:
    """Delete payload rows no queue row refers to; how many."""
    cur = conn.execute(
        "DELETE FROM payloads WHERE NOT EXISTS "
        "(SELECT 1 FROM queue WHERE queue.pid = payloads.pid)"
    )
    return cur.rowcount


def op_remove(conn: sqlite3.Connection, seq: int) -> None:
    """Delete one item (unknown ``seq``: nothing)."""
    conn.execute(REMOVE_SQL, (seq,))


def op_take_expired(
    conn: sqlite3.Connection, now: float, limit: int
) -> list[QueuedItem]:
    """Delete and return up to ``limit`` items with ``expires_at <= now``."""
    rows = conn.execute(
        _QUEUE_SELECT  # constant
        + "WHERE expires_at <= ? ORDER BY expires_at, seq LIMIT ?",
        (now, limit),
    ).fetchall()
    if rows:
        conn.executemany(REMOVE_SQL, [(row[0],) for row in rows])
    return [row_to_item(row) for row in rows]


def op_set_expiry(conn: sqlite3.Connection, seq: int, expires_at: float) -> bool:
    """Change an item's expiry; True if it exists."""
    cur = conn.execute(
        "UPDATE queue SET expires_at = ? WHERE seq = ?", (expires_at, seq)
    )
    return cur.rowcount > 0


def op_take_all_for(conn: sqlite3.Connection, recipient: str) -> list[QueuedItem]:
    """Delete and return every item of ``recipient``, by (priority, seq)."""
    rows = conn.execute(
        _QUEUE_SELECT  # constant
        + "WHERE recipient = ? ORDER BY priority, seq",
        (recipient,),
    ).fetchall()
    if rows:
        conn.execute("DELETE FROM queue WHERE recipient = ?", (recipient,))
    return [row_to_item(row) for row in rows]


def op_put_report_route(conn: sqlite3.Connection, route: ReportRoute) -> None:
    """Insert or replace one route."""
    _put_routes(conn, route_rows((route,)))


def op_take_report_route(
    conn: sqlite3.Connection, message_id: str, reporter: str
) -> ReportRoute | None:
    """Delete and return the route, or None."""
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


def op_purge_report_routes(conn: sqlite3.Connection, now: float) -> int:
    """Delete routes with ``expires_at <= now``; how many."""
    cur = conn.execute("DELETE FROM report_routes WHERE expires_at <= ?", (now,))
    return cur.rowcount


# ---------------------------------------------------------------- reads


def op_find_dedup(
    conn: sqlite3.Connection, originator: str, message_id: str, now: float
) -> DedupRecord | None:
    """The record of (originator, messageId) if ``expires_at > now``."""
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


def op_stored_usage(conn: sqlite3.Connection) -> dict[str, tuple[int, int]]:
    """Per recipient: (rows, sum of ``size``)."""
    rows = conn.execute(
        "SELECT recipient, COUNT(*), SUM(size) FROM queue GROUP BY recipient"
    ).fetchall()
    return {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}


def op_pending_for(
    conn: sqlite3.Connection, recipient: str, after_seq: int, limit: int
) -> list[QueuedItem]:
    """Items of ``recipient`` with ``seq > after_seq``, by (priority, seq)."""
    rows = conn.execute(
        _QUEUE_SELECT  # constant
        + "WHERE recipient = ? AND seq > ? ORDER BY priority, seq LIMIT ?",
        (recipient, after_seq, limit),
    ).fetchall()
    return [row_to_item(row) for row in rows]


def op_recipients_with_pending(conn: sqlite3.Connection) -> list[str]:
    """Distinct recipients with items, sorted."""
    rows = conn.execute(
        "SELECT DISTINCT recipient FROM queue ORDER BY recipient"
    ).fetchall()
    return [row[0] for row in rows]


def op_find(
    conn: sqlite3.Connection, recipient: str, message_id: str
) -> QueuedItem | None:
    """The lowest-seq ``MSG`` of ``recipient`` with that Message ID."""
    rows = conn.execute(
        _QUEUE_SELECT  # constant
        + "WHERE recipient = ? AND message_id = ? ORDER BY seq",
        (recipient, message_id),
    ).fetchall()
    for row in rows:
        item = row_to_item(row)
        if isinstance(item.item, Msg):
            return item
    return None


def op_count(conn: sqlite3.Connection) -> int:
    """Number of queue rows."""
    row = conn.execute("SELECT COUNT(*) FROM queue").fetchone()
    return int(row[0])
