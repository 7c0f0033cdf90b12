"""SQLite writer: set-based runs of the message path, commit interval, lazy removals.

:func:`~msgin5g.storage.sqlite.queue_ops.run_group` runs a run of
``op_enqueue_once`` / ``op_enqueue`` / ``op_remove`` as a few ``executemany``
calls; each operation must get the result it would have had alone, in order.
The tests run the same operations one by one on a second file and compare
both files and both result lists.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.storage import open_backend
from msgin5g.storage.base import DedupRecord
from msgin5g.storage.sqlite import SqliteBackend
from msgin5g.storage.sqlite import queue_ops as q
from msgin5g.storage.sqlite import writer as writer_module
from msgin5g.storage.sqlite.driver import connect
from msgin5g.storage.sqlite.schema import create_schema
from msgin5g.storage.sqlite.writer import Op, Writer

T0 = 1_700_000_000.0


def row(seq: int, message_id: str, recipient: str = "ue-b") -> tuple[Any, ...]:
    item = QueuedItem(
        recipient,
        Msg(message_id=message_id, recipient_ue_service_id=recipient, payload=b"p"),
        1,
        T0 + 3600,
        True,
    )
    return q.queue_row(item, seq)


def record(message_id: str, tag: bytes = b"f", expires_at: float = T0 + 100) -> Any:
    return DedupRecord("ue-a", message_id, tag, b"answer-" + tag, expires_at)


def once(
    seq: int,
    message_id: str,
    tag: bytes = b"f",
    *,
    now: float = T0,
    routes: list[tuple[Any, ...]] | None = None,
    expires_at: float = T0 + 100,
) -> Op:
    args = (
        row(seq, message_id),
        record(message_id, tag, expires_at),
        now,
        routes or [],
    )
    return (q.op_enqueue_once, args, None)


def remove(seq: int) -> Op:
    return (q.op_remove, (seq,), None)


def plain(seq: int, message_id: str) -> Op:
    return (q.op_enqueue, (row(seq, message_id),), None)


def open_db(path: Path) -> sqlite3.Connection:
    conn = connect(str(path), 1.0, synchronous="OFF")
    conn.execute("BEGIN")
    create_schema(conn)
    conn.execute("COMMIT")
    return conn


def dump(conn: sqlite3.Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {
        table: conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()  # noqa: S608
        for table in ("queue", "dedup", "report_routes", "sqlite_sequence")
    }


def run_both(
    tmp_path: Path,
    ops: list[Op],
    before: list[Op] = (),  # type: ignore[assignment]
) -> list[Any]:
    """Run ``ops`` as one group and one by one; assert same results and files."""
    grouped, alone = open_db(tmp_path / "g.db"), open_db(tmp_path / "a.db")
    try:
        for conn in (grouped, alone):
            conn.execute("BEGIN")
            for fn, args, _ in before:
                assert fn is not None
                fn(conn, *args)
            conn.execute("COMMIT")
        grouped.execute("BEGIN")
        results = q.run_group(grouped, ops)
        grouped.execute("COMMIT")
        alone.execute("BEGIN")
        expected = []
        for fn, args, _ in ops:
            assert fn is not None
            expected.append(fn(alone, *args))
        alone.execute("COMMIT")
        assert results == expected
        assert dump(grouped) == dump(alone)
        return results
    finally:
        grouped.close()
        alone.close()


def test_a_run_of_new_keys_is_stored_whole(tmp_path: Path) -> None:
    routes = [("m2", "ue-b", "ue-a", T0 + 50)]
    ops = [once(n, f"m{n}", routes=routes if n == 2 else None) for n in range(1, 9)]
    assert run_both(tmp_path, ops) == [None] * 8


def test_two_claims_of_one_key_in_a_run_first_wins(tmp_path: Path) -> None:
    routes = [("m1", "ue-b", "ue-a", T0 + 50)]
    ops = [once(n, f"m{n}") for n in range(1, 5)]
    ops.insert(2, once(9, "m1", b"second", now=T0 + 1, routes=routes))
    results = run_both(tmp_path, ops)
    assert results[2] == record("m1")  # the first's record, not the second's
    assert results.count(None) == 4


def test_a_second_claim_after_the_first_expired_replaces_it(tmp_path: Path) -> None:
    ops = [once(n, f"m{n}") for n in range(1, 5)]
    ops.append(once(9, "m1", b"late", now=T0 + 100))  # expires_at <= now: expired
    assert run_both(tmp_path, ops) == [None] * 5


def test_live_records_in_the_file_make_duplicates(tmp_path: Path) -> None:
    before = [once(100, "m2", b"old"), once(101, "m5", b"gone", expires_at=T0)]
    ops = [once(n, f"m{n}") for n in range(1, 7)]
    results = run_both(tmp_path, ops, before)
    assert results[1] == record("m2", b"old")
    assert results.count(None) == 5  # m5's record had expired: replaced


def test_removals_and_plain_inserts_keep_their_order(tmp_path: Path) -> None:
    before = [plain(1, "a"), plain(2, "b")]
    ops = [
        remove(1),
        once(3, "c"),
        plain(4, "d"),
        remove(3),  # inserted earlier in the same run
        once(5, "e"),
        remove(424242),  # unknown
        remove(1),  # twice
        once(6, "f"),
        once(7, "g"),
    ]
    run_both(tmp_path, ops, before)


def test_an_insert_of_a_removed_seq_is_not_undone(tmp_path: Path) -> None:
    ops = [once(1, "a"), once(2, "b"), remove(3), plain(3, "c"), once(4, "d")]
    run_both(tmp_path, ops)


def test_a_short_run_with_a_live_record(tmp_path: Path) -> None:
    before = [once(100, "m1", b"old")]
    ops = [once(1, "m1"), once(2, "m2"), remove(2)]
    assert run_both(tmp_path, ops, before)[0] == record("m1", b"old")


# ---------------------------------------------------------------- through the writer


async def test_concurrent_submissions_match_the_memory_backend(tmp_path: Path) -> None:
    """A gathered burst (one writer batch) answers as the reference backend does."""
    results = {}
    for url in ("memory:", f"sqlite:///{tmp_path / 'w.db'}"):
        backend = open_backend(url)
        await backend.start()
        try:
            await backend.enqueue_once(
                QueuedItem("ue-b", Msg(message_id="m3"), 1, T0 + 60, True),
                record("m3", b"old"),
                T0,
            )
            items = [
                QueuedItem("ue-b", Msg(message_id=f"m{n % 7}"), 1, T0 + 60, True)
                for n in range(30)
            ]
            answers = await asyncio.gather(
                *(
                    backend.enqueue_once(
                        item,
                        record(item.item.message_id, bytes([n])),
                        T0 + n,
                        [ReportRoute(item.item.message_id, "ue-b", "ue-a", T0 + n)],
                    )
                    for n, item in enumerate(items)
                )
            )
            stored = [i.seq for i in await backend.pending_for("ue-b", limit=100)]
            results[url[:6]] = (answers, [i.seq > 0 for i in items], len(stored))
        finally:
            await backend.aclose()
    assert results["memory"] == results["sqlite"]
    assert results["sqlite"][2] == 7  # m3 before, then m0..m6 once each but m3


async def test_scheduled_removals_join_the_next_write(tmp_path: Path) -> None:
    backend = SqliteBackend(
        str(tmp_path / "r.db"), removal_delay=30.0, commit_interval=0.0
    )
    await backend.start()
    try:
        seqs = [
            await backend.enqueue(
                QueuedItem("ue-b", Msg(message_id=f"m{n}"), 1, 2e9, True)
            )
            for n in range(3)
        ]
        commits = backend.commits
        backend.remove_nowait(seqs[0])
        backend.remove_nowait(seqs[1])
        await asyncio.sleep(0.05)  # the removals reach the writer first, alone
        await backend.enqueue(QueuedItem("ue-c", Msg(message_id="x"), 1, 2e9, True))
        assert backend.commits == commits + 1  # one transaction for all three
        assert [i.seq for i in await backend.pending_for("ue-b")] == seqs[2:]
        backend.remove_nowait(seqs[2])  # nothing follows: aclose commits it
    finally:
        await backend.aclose()
    reopened = SqliteBackend(str(tmp_path / "r.db"))
    await reopened.start()
    try:
        assert await reopened.pending_for("ue-b") == []
    finally:
        await reopened.aclose()


def test_a_lone_sequential_caller_stops_the_waits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slept: list[float] = []
    monkeypatch.setattr(writer_module.time, "sleep", slept.append)
    writer = Writer(
        "x.db",
        lambda: sqlite3.connect(":memory:"),
        batch_max=10,
        bulk={},
        commit_interval=60.0,
    )
    for _ in range(writer_module._IDLE_WAITS):
        writer._began = writer_module.time.monotonic()
        writer._wait_interval()  # nothing queued meanwhile: idle
    assert len(slept) == writer_module._IDLE_WAITS
    for _ in range(writer_module._SKIP_AFTER_IDLE_WAITS):
        writer._began = writer_module.time.monotonic()
        writer._wait_interval()
    assert len(slept) == writer_module._IDLE_WAITS  # no more waits meanwhile
    writer._began = writer_module.time.monotonic()
    writer._wait_interval()
    assert len(slept) == writer_module._IDLE_WAITS + 1  # waiting again


def test_a_wait_that_gathers_keeps_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    writer = Writer(
        "x.db",
        lambda: sqlite3.connect(":memory:"),
        batch_max=10,
        bulk={},
        commit_interval=60.0,
    )
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        writer.put(remove(len(slept)))  # another caller's write arrives

    monkeypatch.setattr(writer_module.time, "sleep", sleep)
    for _ in range(3 * writer_module._IDLE_WAITS):
        writer._began = writer_module.time.monotonic()
        writer._wait_interval()
    assert len(slept) == 3 * writer_module._IDLE_WAITS


async def _writer_cache_size(backend: SqliteBackend) -> int:
    await backend.start()
    try:
        size = await backend._submit(
            lambda conn: conn.execute("PRAGMA cache_size").fetchone()[0]
        )
        return int(size)
    finally:
        await backend.aclose()


async def test_the_writer_page_cache_is_bounded_by_the_setting(tmp_path: Path) -> None:
    from msgin5g.storage.sqlite.backend import WRITER_CACHE_MIB

    # negative cache_size: KiB (SQLite's own default is -2000)
    default = SqliteBackend(str(tmp_path / "c.db"))
    assert await _writer_cache_size(default) == -WRITER_CACHE_MIB * 1024
    larger = SqliteBackend(str(tmp_path / "d.db"), writer_cache_mib=64)
    assert await _writer_cache_size(larger) == -64 * 1024


def test_interval_options_are_checked(tmp_path: Path) -> None:
    from msgin5g.errors import ConfigError

    with pytest.raises(ConfigError, match="commit_interval"):
        SqliteBackend(str(tmp_path / "x.db"), commit_interval=-1)
    with pytest.raises(ConfigError, match="removal_delay"):
        SqliteBackend(str(tmp_path / "x.db"), removal_delay=61)
    with pytest.raises(ConfigError, match="writer_cache_mib"):
        SqliteBackend(str(tmp_path / "x.db"), writer_cache_mib=0)


# ---------------------------------------------------------------- schema version 5


async def test_a_version_4_file_opens_without_the_message_index(
    tmp_path: Path,
) -> None:
    """Version 5 dropped ``queue_by_message``; a v4 file keeps its rows and finds."""
    path = tmp_path / "v4.db"
    conn = open_db(path)
    conn.execute("CREATE INDEX queue_by_message ON queue(recipient, message_id)")
    conn.execute("BEGIN")
    q.op_enqueue(conn, row(7, "kept"))
    conn.execute("COMMIT")
    conn.execute("PRAGMA user_version = 4")
    conn.close()
    backend = SqliteBackend(str(path))
    await backend.start()
    try:
        found = await backend.find("ue-b", "kept")
        assert found is not None and found.seq == 7
        assert (
            await backend.enqueue(
                QueuedItem("ue-b", Msg(message_id="new"), 1, 2e9, True)
            )
            == 8
        )
    finally:
        await backend.aclose()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 5
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        assert "queue_by_message" not in names
        assert "queue_by_recipient" in names
    finally:
        conn.close()
