"""Ordered schema migrations: every older SQLite file up to :data:`.SCHEMA_VERSION`.

What:
    :data:`MIGRATIONS` lists one small step per schema version, oldest first;
    step ``n`` brings a file from version ``n - 1`` to ``n``. :func:`migrate`
    reads ``PRAGMA user_version`` and then

    * ``0`` (a new file): creates the current schema from :mod:`.schema`;
    * ``1`` .. ``SCHEMA_VERSION - 1``: runs every later step in order;
    * newer than this code: refuses (:class:`~msgin5g.errors.StorageError`);

    and sets ``user_version``, all in the caller's transaction (the writer opens
    it with ``BEGIN IMMEDIATE``), so a failed upgrade leaves the file untouched.

History (what each version added):
    1. credentials, registrations, queue, report_routes;
    2. records (:class:`~msgin5g.storage.base.RecordStore`);
    3. fan-out: ``queue.pid`` and the shared ``payloads``;
    4. durable duplicate detection (``dedup``) and ``queue.size`` for quotas,
       computed for the rows already stored;
    5. ``queue_by_message`` dropped: it cost every stored message an index
       insert and delete for a rare lookup (``MSGUPD``).

Why the steps spell out their DDL:
    A step is history: it must create what that version created even after
    :data:`.schema.SCHEMA` has moved on, so it never reuses the current DDL.

Adding a version:
    Append a :class:`Migration` here, bump :data:`.schema.SCHEMA_VERSION` and
    change :data:`.schema.SCHEMA` to match. The test that migrates a version 1
    file and compares it with a new one (``tests/storage/test_sqlite_migrations.py``)
    fails until the two agree.
"""

import sqlite3
from collections.abc import Callable
from typing import Final, NamedTuple

from msgin5g.errors import StorageError
from msgin5g.storage.base import stored_size
from msgin5g.storage.sqlite.queue_ops import ITEM_DECODER
from msgin5g.storage.sqlite.schema import SCHEMA_VERSION, create_schema

__all__ = ["MIGRATIONS", "OLDEST_VERSION", "Migration", "migrate"]

OLDEST_VERSION: Final = 1
"""The oldest schema version :func:`migrate` upgrades."""


class Migration(NamedTuple):
    """One step: brings a file from ``version - 1`` to ``version``."""

    version: int
    summary: str
    apply: Callable[[sqlite3.Connection], None]


def _v2_records(conn: sqlite3.Connection) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS records (
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        body BLOB NOT NULL,
        PRIMARY KEY (kind, key)
    ) WITHOUT ROWID"""
    )


def _v3_fanout_payloads(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE queue ADD COLUMN pid INTEGER")
    conn.execute(
        """CREATE TABLE IF NOT EXISTS payloads (
        pid INTEGER PRIMARY KEY,
        body BLOB NOT NULL
    )"""
    )
    conn.execute(
        "CREATE INDEX IF NOT EXISTS queue_by_payload ON queue(pid) WHERE pid IS NOT NULL"
    )


def _v4_dedup_and_sizes(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE queue ADD COLUMN size INTEGER NOT NULL DEFAULT 0")
    conn.execute(
        """CREATE TABLE IF NOT EXISTS dedup (
        originator TEXT NOT NULL,
        message_id TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        response BLOB NOT NULL,
        expires_at REAL NOT NULL,
        PRIMARY KEY (originator, message_id)
    ) WITHOUT ROWID"""
    )
    conn.execute("CREATE INDEX IF NOT EXISTS dedup_by_expiry ON dedup(expires_at)")
    _fill_sizes(conn)


def _fill_sizes(conn: sqlite3.Connection) -> None:
    """Compute ``queue.size`` of the rows stored before version 4, 1,000 at a time."""
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
                (stored_size(ITEM_DECODER.decode(shared or body)), seq)
                for seq, body, shared in rows
            ],
        )
        last = rows[-1][0]


def _v5_drop_queue_by_message(conn: sqlite3.Connection) -> None:
    conn.execute("DROP INDEX IF EXISTS queue_by_message")


MIGRATIONS: Final = (
    Migration(2, "records: generic (kind, key) -> Struct store", _v2_records),
    Migration(3, "fan-out: queue.pid and shared payloads", _v3_fanout_payloads),
    Migration(4, "dedup records and queue.size (quotas)", _v4_dedup_and_sizes),
    Migration(
        5, "queue: drop the (recipient, message_id) index", _v5_drop_queue_by_message
    ),
)
"""Every step, oldest first; the last one produces :data:`.SCHEMA_VERSION`."""


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Bring the database to :data:`.SCHEMA_VERSION` inside the open transaction.

    Args:
        conn: the writer connection, in a transaction the caller commits (or
            rolls back if this raises).
        path: the file, for the error message.

    Returns:
        The version the file had before.

    Raises:
        StorageError: the file's schema is newer than this code supports.
        sqlite3.Error: a step failed (the caller maps it and rolls back).
    """
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"sqlite: {path} has schema version {version}, newer than "
            f"the supported {SCHEMA_VERSION}"
        )
    if version == 0:
        create_schema(conn)
    else:
        for step in MIGRATIONS:
            if step.version > version:
                step.apply(conn)
    if version != SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return version
