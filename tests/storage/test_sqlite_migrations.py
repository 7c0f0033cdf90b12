"""SQLite schema migrations: every old file ends where a new file starts.

A version 1 file (the DDL the first release wrote, kept here as history) is
migrated step by step; the result must have the same tables, columns and indexes
(``sqlite_master``, whitespace aside) and ``user_version`` as a file created new,
and keep its data. The v2 -> v3 and v3 -> v4 upgrades have their own tests in
test_fanout_storage.py and test_dedup_storage.py.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from msgin5g.errors import StorageError
from msgin5g.storage import open_backend
from msgin5g.storage.base import ITEM_OVERHEAD
from msgin5g.storage.sqlite import SCHEMA_VERSION
from msgin5g.storage.sqlite.migrations import MIGRATIONS, OLDEST_VERSION

V1_SCHEMA = """
CREATE TABLE credentials (
    ue_service_id TEXT PRIMARY KEY,
    digest BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE registrations (
    ue_service_id TEXT PRIMARY KEY,
    body BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    message_id TEXT NOT NULL,
    priority INTEGER NOT NULL,
    expires_at REAL NOT NULL,
    store INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX queue_by_recipient ON queue(recipient, priority, seq);
CREATE INDEX queue_by_expiry ON queue(expires_at);
CREATE INDEX queue_by_message ON queue(recipient, message_id);
CREATE TABLE report_routes (
    message_id TEXT NOT NULL,
    reporter TEXT NOT NULL,
    originator TEXT NOT NULL,
    expires_at REAL NOT NULL,
    PRIMARY KEY (message_id, reporter)
) WITHOUT ROWID;
CREATE INDEX report_routes_by_expiry ON report_routes(expires_at);
"""
"""What schema version 1 (commit f56b5fc) created."""

V1_DATA = """
INSERT INTO credentials VALUES ('ue-b', x'00ff');
INSERT INTO queue(recipient, message_id, priority, expires_at, store, body)
VALUES ('ue-b', 'old', 1, 1e12, 1,
        '{"messageType":"MSG","messageId":"old","payload":"aGk="}');
INSERT INTO report_routes VALUES ('old', 'ue-b', 'ue-a', 1e12);
PRAGMA user_version = 1;
"""


def _normalize(sql: str | None) -> str | None:
    """DDL without layout: ``ALTER TABLE ... ADD COLUMN`` splices text in."""
    if sql is None:
        return None
    return re.sub(r"\s*([(),])\s*", r"\1", re.sub(r"\s+", " ", sql)).strip()


def schema_of(path: Path) -> tuple[int, list[tuple[str, str, str, str | None]]]:
    """(user_version, normalized sqlite_master rows) of a file."""
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        rows = conn.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()
    return version, [(t, n, tbl, _normalize(sql)) for t, n, tbl, sql in rows]


async def _start_and_close(path: Path) -> None:
    backend = open_backend(f"sqlite:///{path}")
    await backend.start()
    await backend.aclose()


@pytest.fixture
async def fresh_schema(tmp_path: Path) -> tuple[int, list[tuple[str, ...]]]:
    path = tmp_path / "fresh.db"
    await _start_and_close(path)
    return schema_of(path)  # type: ignore[return-value]


def test_migrations_step_through_every_version() -> None:
    assert [m.version for m in MIGRATIONS] == list(
        range(OLDEST_VERSION + 1, SCHEMA_VERSION + 1)
    )
    assert all(m.summary for m in MIGRATIONS)


def _file_at(path: Path, version: int) -> None:
    """A file at ``version``: the v1 DDL and data, then the steps up to it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(V1_SCHEMA + V1_DATA)
    conn.execute("BEGIN")
    for step in MIGRATIONS:
        if step.version <= version:
            step.apply(conn)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.execute("COMMIT")
    conn.close()


@pytest.mark.parametrize("version", range(OLDEST_VERSION, SCHEMA_VERSION))
async def test_old_file_migrates_to_the_fresh_schema(
    tmp_path: Path, version: int, fresh_schema: tuple[int, list[tuple[str, ...]]]
) -> None:
    path = tmp_path / f"v{version}.db"
    _file_at(path, version)
    assert schema_of(path)[0] == version
    assert schema_of(path) != fresh_schema

    backend = open_backend(f"sqlite:///{path}")
    await backend.start()
    try:
        (old,) = await backend.pending_for("ue-b")
        assert old.item.message_id == "old"
        assert await backend.get_credential("ue-b") == b"\x00\xff"
        assert await backend.stored_usage() == {"ue-b": (1, ITEM_OVERHEAD + 2)}
        route = await backend.take_report_route("old", "ue-b")
        assert route is not None and route.originator == "ue-a"
        first_seq = old.seq
        assert await backend.enqueue(old) > first_seq  # seqs continue
    finally:
        await backend.aclose()

    assert schema_of(path) == fresh_schema
    assert fresh_schema[0] == SCHEMA_VERSION


async def test_failed_migration_leaves_the_file_untouched(tmp_path: Path) -> None:
    """The steps run in one transaction: a failing step rolls all of them back."""
    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA + V1_DATA)
    conn.execute(  # v4 computes sizes from bodies: this one cannot be decoded
        "INSERT INTO queue(recipient, message_id, priority, expires_at, store, body) "
        "VALUES ('ue-c', 'bad', 1, 1e12, 1, 'not json')"
    )
    conn.commit()
    conn.close()
    before = schema_of(path)

    backend = open_backend(f"sqlite:///{path}")
    with pytest.raises(StorageError, match="undecodable"):
        await backend.start()
    await backend.aclose()

    assert schema_of(path) == before
    assert before[0] == 1
