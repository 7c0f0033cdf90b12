"""Durable duplicate detection and stored usage (every backend), schema v3 -> v4.

The (originator, messageId) record is written in the same transaction as the
message it guards; a live record makes a second write of the same key a no-op
that returns the first record.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.queue import QueuedItem, ReportRoute, fanout_template, member_copy
from msgin5g.spec.delivery import ReportDeliveryStatus
from msgin5g.storage import Backend, open_backend
from msgin5g.storage.base import ITEM_OVERHEAD, DedupRecord, stored_size
from msgin5g.storage.sqlite import SCHEMA_VERSION

if TYPE_CHECKING:
    from conftest import BackendFactory

T0 = 1_700_000_000.0


def msg(message_id: str, recipient: str = "ue-b", payload: bytes = b"hello") -> Msg:
    return Msg(
        message_id=message_id,
        originating_ue_service_id="ue-a",
        recipient_ue_service_id=recipient,
        payload=payload,
    )


def item(
    message_id: str, recipient: str = "ue-b", payload: bytes = b"hello"
) -> QueuedItem:
    return QueuedItem(
        recipient, msg(message_id, recipient, payload), 1, T0 + 3600, True
    )


def record(
    message_id: str, fingerprint: bytes = b"f1", expires_at: float = T0 + 100
) -> DedupRecord:
    return DedupRecord(
        originator="ue-a",
        message_id=message_id,
        fingerprint=fingerprint,
        response=b"answer-" + fingerprint,
        expires_at=expires_at,
    )


def group_template(message_id: str = "g1") -> Msg:
    return fanout_template(
        Msg(
            message_id=message_id,
            originating_ue_service_id="ue-a",
            recipient_group_service_id="grp",
            payload=b"to all",
        )
    )


def members(template: Msg, recipients: list[str]) -> list[QueuedItem]:
    return [
        QueuedItem(r, member_copy(template, r), 1, T0 + 60, True) for r in recipients
    ]


async def test_enqueue_once_stores_item_and_record(backend: Backend) -> None:
    first = item("m1")
    assert await backend.enqueue_once(first, record("m1"), T0) is None
    assert first.seq > 0
    assert await backend.find_dedup("ue-a", "m1", T0) == record("m1")
    assert [i.seq for i in await backend.pending_for("ue-b")] == [first.seq]


async def test_enqueue_once_of_a_live_key_stores_nothing(backend: Backend) -> None:
    await backend.enqueue_once(item("m1"), record("m1", b"f1"), T0)
    again = item("m1")
    existing = await backend.enqueue_once(again, record("m1", b"f2"), T0 + 1)
    assert existing == record("m1", b"f1")  # the first answer, not the new one
    assert again.seq == 0
    assert await backend.count() == 1


async def test_expired_record_is_replaced(backend: Backend) -> None:
    await backend.enqueue_once(item("m1"), record("m1", b"f1", T0 + 10), T0)
    assert await backend.find_dedup("ue-a", "m1", T0 + 10) is None
    fresh = record("m1", b"f2", T0 + 200)
    assert await backend.enqueue_once(item("m1"), fresh, T0 + 10) is None
    assert await backend.find_dedup("ue-a", "m1", T0 + 10) == fresh
    assert await backend.count() == 2


async def test_keys_are_per_originator(backend: Backend) -> None:
    await backend.enqueue_once(item("m1"), record("m1"), T0)
    other = DedupRecord("as/app", "m1", b"f", b"r", T0 + 100)
    assert await backend.enqueue_once(item("m1"), other, T0) is None
    assert await backend.find_dedup("as/app", "m1", T0) == other
    assert await backend.find_dedup("ue-x", "m1", T0) is None


async def test_purge_dedup_drops_expired_records_only(backend: Backend) -> None:
    await backend.enqueue_once(item("old"), record("old", expires_at=T0 + 5), T0)
    await backend.enqueue_once(item("new"), record("new", expires_at=T0 + 50), T0)
    assert await backend.purge_dedup(T0 + 5) == 1
    assert await backend.find_dedup("ue-a", "old", 0.0) is None
    assert await backend.find_dedup("ue-a", "new", T0) is not None
    assert await backend.count() == 2  # the messages stay


async def test_fanout_with_record_is_written_once(backend: Backend) -> None:
    template = group_template()
    routes = [ReportRoute("g1", "ue-b", "ue-a", T0 + 99)]
    first = members(template, ["ue-b", "ue-c"])
    assert (
        await backend.enqueue_fanout(template, first, routes, record("g1"), T0) is None
    )
    assert await backend.find_dedup("ue-a", "g1", T0) == record("g1")
    second = members(template, ["ue-b", "ue-c", "ue-d"])
    existing = await backend.enqueue_fanout(
        template, second, routes, record("g1", b"other"), T0 + 1
    )
    assert existing == record("g1")
    assert await backend.count() == 2
    assert await backend.pending_for("ue-d") == []


async def test_record_survives_reopen(backend_factory: BackendFactory) -> None:
    backend = await backend_factory.open()
    await backend.enqueue_once(item("m1"), record("m1"), T0)
    template = group_template()
    await backend.enqueue_fanout(
        template, members(template, ["ue-c"]), [], record("g1"), T0
    )
    backend = await backend_factory.reopen(backend)
    assert await backend.find_dedup("ue-a", "m1", T0) == record("m1")
    assert await backend.find_dedup("ue-a", "g1", T0) == record("g1")
    assert await backend.enqueue_once(item("m1"), record("m1", b"x"), T0) == record(
        "m1"
    )
    assert await backend.count() == 2


async def test_stored_usage_counts_items_and_sizes(backend: Backend) -> None:
    assert await backend.stored_usage() == {}
    await backend.enqueue(item("m1", payload=b"x" * 100))
    await backend.enqueue_once(item("m2", payload=b"y" * 10), record("m2"), T0)
    report = QueuedItem(
        "ue-a",
        Imdn(
            message_id="m1",
            delivery_status=ReportDeliveryStatus.REPT_DELY_SUCCESS,
            originating_ue_service_id="ue-b",
            recipient_ue_service_id="ue-a",
        ),
        0,
        T0 + 60,
        True,
    )
    await backend.enqueue(report)
    template = group_template()
    shared = members(template, ["ue-b", "ue-c"])
    await backend.enqueue_fanout(template, shared, [])
    usage = await backend.stored_usage()
    assert usage == {
        "ue-b": (3, 3 * ITEM_OVERHEAD + 100 + 10 + len(b"to all")),
        "ue-c": (1, ITEM_OVERHEAD + len(b"to all")),
        "ue-a": (1, ITEM_OVERHEAD),
    }
    assert stored_size(report.item) == ITEM_OVERHEAD
    await backend.remove(shared[0].seq)
    taken = await backend.take_all_for("ue-c")
    assert len(taken) == 1
    usage = await backend.stored_usage()
    assert usage["ue-b"] == (2, 2 * ITEM_OVERHEAD + 110)
    assert "ue-c" not in usage


async def test_version_3_database_is_upgraded(tmp_path: Path) -> None:
    """A v3 file (no dedup table, no queue.size) is upgraded in place."""
    path = tmp_path / "v3.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE queue (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            recipient TEXT NOT NULL,
            message_id TEXT NOT NULL,
            priority INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            store INTEGER NOT NULL,
            body BLOB NOT NULL,
            pid INTEGER
        );
        CREATE TABLE payloads (pid INTEGER PRIMARY KEY, body BLOB NOT NULL);
        INSERT INTO queue(recipient, message_id, priority, expires_at, store, body)
        VALUES ('ue-b', 'old', 1, 1e12, 1,
                '{"messageType":"MSG","messageId":"old","payload":"aGk="}');
        INSERT INTO payloads(pid, body) VALUES (7,
                '{"messageType":"MSG","messageId":"g","payload":"aGVsbG8="}');
        INSERT INTO queue(recipient, message_id, priority, expires_at, store, body, pid)
        VALUES ('ue-c', 'g', 1, 1e12, 1, x'', 7);
        PRAGMA user_version = 3;
        """
    )
    conn.close()
    backend = open_backend(f"sqlite:///{path}")
    await backend.start()
    try:
        (old,) = await backend.pending_for("ue-b")
        assert old.item.message_id == "old"
        assert await backend.stored_usage() == {
            "ue-b": (1, ITEM_OVERHEAD + len(b"hi")),
            "ue-c": (1, ITEM_OVERHEAD + len(b"hello")),
        }
        assert await backend.enqueue_once(item("m1"), record("m1"), T0) is None
        assert await backend.find_dedup("ue-a", "m1", T0) == record("m1")
    finally:
        await backend.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


CRASH_SCRIPT = """
import asyncio, os, signal, sys

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem
from msgin5g.storage.base import DedupRecord
from msgin5g.storage.sqlite import SqliteBackend

async def main(path):
    backend = SqliteBackend(path)
    await backend.start()
    for i in range(50):
        msg = Msg(message_id=f"m{i}", originating_ue_service_id="ue-a",
                  recipient_ue_service_id="ue-b", payload=b"x")
        rec = DedupRecord("ue-a", f"m{i}", b"fp", b"resp", 2e9)
        await backend.enqueue_once(QueuedItem("ue-b", msg, 1, 2e9, True), rec, 1.0)
    print("committed", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # before any answer could be sent

asyncio.run(main(sys.argv[1]))
"""


async def test_record_and_message_survive_kill_9_together(tmp_path: Path) -> None:
    """Killed after the commit, before answering: the retry finds the record."""
    import os
    import signal
    import subprocess
    import sys

    src = Path(__file__).resolve().parents[2] / "src"
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "committed"
    backend = open_backend(f"sqlite:///{path}")
    await backend.start()
    try:
        for i in range(50):
            retry = item(f"m{i}")
            existing = await backend.enqueue_once(retry, record(f"m{i}"), T0)
            assert existing is not None and existing.fingerprint == b"fp"
            assert retry.seq == 0
        assert await backend.count() == 50
    finally:
        await backend.aclose()


async def test_full_disk_is_reported_once_and_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLITE_FULL (here: max_page_count) is logged clearly; writes resume after."""
    import logging

    from msgin5g.errors import StorageUnavailable
    from msgin5g.storage.sqlite import SqliteBackend

    backend = SqliteBackend(str(tmp_path / "full.db"))
    await backend.start()
    try:
        pages = await backend._submit(
            lambda conn: conn.execute("PRAGMA page_count").fetchone()[0]
        )
        await backend._submit(
            lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 24}")
        )
        caplog.set_level(logging.WARNING, logger="msgin5g.storage.sqlite")
        big = b"z" * 20_000
        stored = 0
        with pytest.raises(StorageUnavailable, match="full"):  # noqa: PT012
            for i in range(20):
                await backend.enqueue(item(f"big{i}", payload=big))
                stored += 1
        assert 0 < stored < 20
        with pytest.raises(StorageUnavailable):
            await backend.enqueue(item("more", payload=big))
        assert backend.disk_full
        errors = [r for r in caplog.records if "STORAGE FULL" in r.getMessage()]
        assert len(errors) == 1 and errors[0].levelname == "ERROR"
        await backend._submit(
            lambda conn: conn.execute("PRAGMA max_page_count = 1000000")
        )
        await backend.enqueue(item("after", payload=big))
        assert not backend.disk_full
        assert any("writable again" in r.getMessage() for r in caplog.records)
    finally:
        await backend.aclose()
