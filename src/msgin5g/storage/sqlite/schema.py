"""The SQLite schema of the current version (what a new database file gets).

What:
    :data:`SCHEMA` is the DDL of schema :data:`SCHEMA_VERSION`, the value kept in
    ``PRAGMA user_version``. A new (version 0) file is created from it in one
    step; an older file is brought here by :mod:`.migrations`, one version at a
    time. ``tests/storage/test_sqlite_migrations.py`` checks that both roads end
    at the same ``sqlite_master``.

Tables:
    * ``credentials``: UE Service ID -> SHA-256 of its PSK_TOKEN;
    * ``registrations``: UE Service ID -> msgpack ``UERegistration``;
    * ``queue``: one row per stored item; the ``MSG``/``IMDN`` body as msgspec
      JSON, or, for a fan-out member, an empty body and ``pid`` naming the shared
      ``payloads`` row; ``size`` is :func:`~msgin5g.storage.base.stored_size`;
      ``seq`` is ``AUTOINCREMENT`` so a seq is never reused;
    * ``payloads``: the shared template of a fan-out;
    * ``report_routes``: (message_id, reporter) -> originator, expiry;
    * ``records``: (kind, key) -> msgpack Struct (:class:`~msgin5g.storage.base.RecordStore`);
    * ``dedup``: (originator, message_id) -> fingerprint, answer, expiry.

Indexes:
    Every index of ``queue`` and ``dedup`` is written on every stored message
    (and ``queue``'s again on its removal), and each one adds a page to the WAL
    of a small commit. ``queue`` keeps the ones the hot paths read
    (by recipient, by expiry, by payload: only fan-out rows); version 5 dropped
    ``queue(recipient, message_id)``: :func:`~.queue_ops.op_find` (``MSGUPD``,
    the operator's delete) reads the recipient's rows instead.

Changing the schema:
    Bump :data:`SCHEMA_VERSION`, change :data:`SCHEMA`, and append the step from
    the previous version to :data:`~.migrations.MIGRATIONS`.
"""

import sqlite3
from typing import Final

__all__ = ["SCHEMA", "SCHEMA_VERSION", "create_schema"]

SCHEMA_VERSION: Final = 5
"""Value of ``PRAGMA user_version`` for the schema this package creates."""

SCHEMA: Final = (
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
"""DDL of schema :data:`SCHEMA_VERSION`, in creation order."""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create every table and index of the current schema (inside a transaction).

    Args:
        conn: the writer connection, in a transaction the caller commits.
    """
    for statement in SCHEMA:
        conn.execute(statement)
