"""SqliteBackend under crashes and failures.

* kill -9 right after awaited writes: every write whose await returned is there;
* driver errors become StorageError subclasses (``from`` the driver error);
* a failing batch fails its futures and the writer thread keeps running.
"""

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from msgin5g.errors import StorageConflict, StorageError, StorageUnavailable
from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem
from msgin5g.storage.sqlite import SCHEMA_VERSION, SqliteBackend, map_driver_errors

SRC = Path(__file__).resolve().parents[2] / "src"

CRASH_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, signal, sys

    from msgin5g.model.messages import Msg
    from msgin5g.model.queue import QueuedItem
    from msgin5g.storage.sqlite import SqliteBackend

    def item(i):
        msg = Msg(message_id=f"m{i}", recipient_ue_service_id="ue-b", payload=b"x" * 64)
        return QueuedItem("ue-b", msg, i % 3, 2e9, True)

    async def main(path, n):
        backend = SqliteBackend(path, synchronous=sys.argv[3])
        await backend.start()
        seqs = [await backend.enqueue(item(i)) for i in range(5)]  # one by one
        seqs += await asyncio.gather(*(backend.enqueue(item(i)) for i in range(5, n)))
        await backend.put_credential("ue-b", b"digest")
        print(json.dumps(seqs))
        print("ok", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no aclose, no checkpoint, no atexit

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL"])
async def test_awaited_writes_survive_kill_9(tmp_path: Path, synchronous: str) -> None:
    path = tmp_path / "crash.db"
    n = 300
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])}
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(path), str(n), synchronous],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    seqs_line, ok_line = proc.stdout.splitlines()
    assert ok_line == "ok"
    seqs = json.loads(seqs_line)
    assert len(set(seqs)) == n
    assert Path(f"{path}-wal").exists()  # killed before any clean shutdown

    backend = SqliteBackend(str(path))
    await backend.start()
    try:
        assert await backend.count() == n
        items = await backend.pending_for("ue-b", limit=10 * n)
        assert sorted(item.seq for item in items) == sorted(seqs)
        assert {item.item.message_id for item in items} == {f"m{i}" for i in range(n)}
        assert await backend.get_credential("ue-b") == b"digest"
    finally:
        await backend.aclose()


# ---------------------------------------------------------------- helpers


def make_item(message_id: str) -> QueuedItem:
    return QueuedItem("ue-b", Msg(message_id=message_id), 1, 2e9, True)


@pytest.fixture
async def sqlite_backend(tmp_path: Path) -> SqliteBackend:
    backend = SqliteBackend(str(tmp_path / "store.db"), busy_timeout=0.05)
    await backend.start()
    yield backend  # type: ignore[misc]
    await backend.aclose()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("driver_error", "expected"),
    [
        (sqlite3.OperationalError("database is locked"), StorageUnavailable),
        (sqlite3.OperationalError("unable to open database file"), StorageUnavailable),
        (sqlite3.OperationalError("disk I/O error"), StorageUnavailable),
        (sqlite3.IntegrityError("UNIQUE constraint failed"), StorageConflict),
        (sqlite3.OperationalError("no such table: x"), StorageError),
        (sqlite3.DatabaseError("file is not a database"), StorageError),
    ],
)
def test_map_driver_errors_picks_most_specific(
    driver_error: sqlite3.Error, expected: type[StorageError]
) -> None:
    with pytest.raises(StorageError) as info, map_driver_errors():
        raise driver_error
    assert type(info.value) is expected
    assert info.value.__cause__ is driver_error


def test_map_driver_errors_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError), map_driver_errors():
        raise KeyError("x")


async def test_start_on_unopenable_path_raises_unavailable(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "missing-dir" / "x.db"))
    with pytest.raises(StorageUnavailable) as info:
        await backend.start()
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    await backend.aclose()


async def test_start_refuses_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    backend = SqliteBackend(str(path))
    with pytest.raises(StorageError, match="schema version"):
        await backend.start()
    await backend.aclose()


async def test_schema_version_and_wal(sqlite_backend: SqliteBackend) -> None:
    conn = sqlite3.connect(sqlite_backend.path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        indexes = {
            tuple(col[2] for col in conn.execute(f"PRAGMA index_info({name})"))
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' "
                "AND tbl_name = 'queue' AND sql IS NOT NULL"
            )
        }
    finally:
        conn.close()
    assert {("recipient", "priority", "seq"), ("expires_at",)} <= indexes
    assert ("recipient", "message_id") not in indexes  # dropped in version 5


async def test_locked_database_fails_whole_batch_then_writer_recovers(
    sqlite_backend: SqliteBackend,
) -> None:
    other = sqlite3.connect(sqlite_backend.path, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # holds the write lock
        results = await asyncio.gather(
            *(sqlite_backend.enqueue(make_item(f"m{i}")) for i in range(5)),
            return_exceptions=True,
        )
        assert all(isinstance(r, StorageUnavailable) for r in results), results
        assert all(isinstance(r.__cause__, sqlite3.OperationalError) for r in results)  # type: ignore[union-attr]
        assert len({id(r) for r in results}) == len(results)  # one error per caller
        other.execute("ROLLBACK")
    finally:
        other.close()

    seq = await sqlite_backend.enqueue(make_item("after"))  # writer still running
    assert [i.seq for i in await sqlite_backend.pending_for("ue-b")] == [seq]


def _bad_insert(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO credentials(ue_service_id, digest) VALUES (NULL, NULL)")


async def test_failing_operation_fails_only_its_own_future(
    sqlite_backend: SqliteBackend,
) -> None:
    # Hold the writer so that all operations below land in one batch (wait until
    # it runs the held operation: writes reach it once per event-loop pass).
    gate = threading.Event()
    entered = threading.Event()

    def hold(_conn: object) -> bool:
        entered.set()
        return gate.wait(10)

    held = sqlite_backend._submit(hold)
    assert await asyncio.to_thread(entered.wait, 10)
    good = [
        asyncio.ensure_future(sqlite_backend.enqueue(make_item(f"g{i}")))
        for i in range(20)
    ]
    await asyncio.sleep(0)  # let the enqueues submit
    bad = sqlite_backend._submit(_bad_insert)
    more = [
        asyncio.ensure_future(sqlite_backend.enqueue(make_item(f"h{i}")))
        for i in range(20)
    ]
    await asyncio.sleep(0)  # the enqueues run and schedule their list's flush
    await asyncio.sleep(0)  # the flush runs: every operation is queued before release
    commits = sqlite_backend.commits
    gate.set()
    results = await asyncio.gather(held, *good, bad, *more, return_exceptions=True)

    assert isinstance(results[21], StorageConflict)
    assert isinstance(results[21].__cause__, sqlite3.IntegrityError)
    assert all(isinstance(r, int) for r in results[1:21] + results[22:])
    assert await sqlite_backend.count() == 40
    # the batch was rolled back and replayed one operation per transaction
    assert sqlite_backend.commits - commits >= 40
    seq = await sqlite_backend.enqueue(make_item("after"))  # writer still running
    assert seq > max(r for r in results[1:] if isinstance(r, int))


async def test_use_after_aclose_raises_unavailable(tmp_path: Path) -> None:
    backend = SqliteBackend(str(tmp_path / "x.db"))
    with pytest.raises(StorageUnavailable, match="not started"):
        await backend.count()
    await backend.start()
    seq = await backend.enqueue(make_item("m"))
    await backend.aclose()
    with pytest.raises(StorageUnavailable, match="closed"):
        await backend.enqueue(make_item("n"))
    with pytest.raises(StorageUnavailable, match="closed"):
        await backend.count()
    backend.remove_nowait(seq)  # ignored, no error


async def test_aclose_flushes_scheduled_removals(tmp_path: Path) -> None:
    path = str(tmp_path / "x.db")
    backend = SqliteBackend(path)
    await backend.start()
    seqs = [await backend.enqueue(make_item(f"m{i}")) for i in range(3)]
    for seq in seqs[:2]:
        backend.remove_nowait(seq)
    await backend.aclose()

    backend = SqliteBackend(path)
    await backend.start()
    try:
        assert [i.seq for i in await backend.pending_for("ue-b")] == seqs[2:]
    finally:
        await backend.aclose()


async def test_group_commit_resolves_batch_in_one_callback(
    sqlite_backend: SqliteBackend,
) -> None:
    loop = asyncio.get_running_loop()
    calls = 0
    original = loop.call_soon_threadsafe

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)

    commits = sqlite_backend.commits
    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        await asyncio.gather(
            *(sqlite_backend.enqueue(make_item(f"m{i}")) for i in range(200))
        )
    finally:
        del loop.call_soon_threadsafe
    assert calls == sqlite_backend.commits - commits
    assert calls < 200 / 5
