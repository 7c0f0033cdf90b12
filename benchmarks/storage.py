"""Enqueue throughput of the storage backends under concurrent writers.

Runs ``enqueue`` from 1, 10, 100 and 1000 concurrent tasks against the memory
backend and SQLite with ``synchronous=FULL`` and ``NORMAL``, and prints writes/s
and commits/s (group commit: with many writers, many writes share one commit).

``--mode once`` runs the server's per-message path instead: ``enqueue_once``
(item + duplicate-detection record in one transaction), then ``remove_nowait``
of the stored item as after its delivery, and prints the CPU the SQLite writer
thread spent per message (from ``/proc/self/task/<tid>/stat``) as well as the
whole process's; ``--rate`` paces the messages (0: as fast as the writers go).

Bounded: each cell stops after ``--seconds`` or ``--max-writes``, whichever comes
first. Not collected by pytest.

    .venv/bin/python benchmarks/storage.py [--seconds 1.0] [--dir /path/on/disk]
    .venv/bin/python benchmarks/storage.py --mode once --rate 3000 --writers 100
"""

import argparse
import asyncio
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem
from msgin5g.storage import Backend, open_backend
from msgin5g.storage.base import DedupRecord

WRITERS = (1, 10, 100, 1000)
CONFIGS = ("memory", "sqlite FULL", "sqlite NORMAL")


@dataclass
class Result:
    config: str
    writers: int
    writes: int
    seconds: float
    commits: int | None
    writer_cpu: float | None = None  # seconds of the writer thread (mode once)
    process_cpu: float | None = None  # seconds of the whole process (mode once)
    latencies: list[float] | None = None  # seconds per enqueue_once (mode once)


def make_item(i: int, message_id: str | None = None) -> QueuedItem:
    msg = Msg(
        message_id=message_id or f"00000000-0000-0000-0000-{i:012d}",
        originating_ue_service_id="ue-a",
        recipient_ue_service_id=f"ue-{i % 1000}",
        payload=b"x" * 160,
    )
    return QueuedItem(f"ue-{i % 1000}", msg, i % 3, 2e9, True)


COMMIT_INTERVAL: float | None = None  # --commit-interval (None: the default)


def open_config(config: str, directory: str) -> Backend:
    if config == "memory":
        return open_backend("memory:")
    _, synchronous = config.split()
    path = os.path.join(directory, f"bench-{synchronous}-{time.monotonic_ns()}.db")
    if COMMIT_INTERVAL is not None:
        from msgin5g.storage.sqlite import SqliteBackend

        return SqliteBackend(
            path, synchronous=synchronous, commit_interval=COMMIT_INTERVAL
        )
    return open_backend(f"sqlite:///{path}", synchronous=synchronous)


async def run_cell(
    config: str, writers: int, seconds: float, max_writes: int, directory: str
) -> Result:
    backend = open_config(config, directory)
    await backend.start()
    items = [make_item(i) for i in range(max_writes)]
    next_index = 0
    deadline = 0.0

    async def writer() -> None:
        nonlocal next_index
        while next_index < max_writes and time.perf_counter() < deadline:
            item = items[next_index]
            next_index += 1
            await backend.enqueue(item)

    commits_before = getattr(backend, "commits", None)
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    commits_after = getattr(backend, "commits", None)
    await backend.aclose()
    commits = (
        None
        if commits_before is None or commits_after is None
        else commits_after - commits_before
    )
    return Result(config, writers, next_index, elapsed, commits)


def thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def writer_thread_id(backend: Backend) -> int | None:
    writer = getattr(backend, "_writer", None)
    thread = getattr(writer, "_thread", None)
    return None if thread is None else thread.native_id


async def run_once_cell(
    config: str,
    writers: int,
    seconds: float,
    max_writes: int,
    directory: str,
    rate: float,
) -> Result:
    """``enqueue_once`` + ``remove_nowait`` per message, as the server does."""
    backend = open_config(config, directory)
    await backend.start()
    # random Message IDs from 400 originators, as UEs send them: the dedup
    # table's inserts land on random pages, as in the server
    items = [make_item(i, str(uuid.uuid4())) for i in range(max_writes)]
    records = [
        DedupRecord(f"ue-{i % 400}", item.item.message_id, b"f" * 32, b"r" * 80, 2e9)
        for i, item in enumerate(items)
    ]
    next_index = 0
    started = time.perf_counter()
    deadline = started + seconds
    interval = writers / rate if rate > 0 else 0.0
    latencies: list[float] = []

    async def writer(lane: int) -> None:
        nonlocal next_index
        due = started + lane * (interval / writers) if interval else 0.0
        while next_index < max_writes and time.perf_counter() < deadline:
            if interval:
                due += interval
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            index = next_index
            next_index += 1
            item = items[index]
            sent = time.perf_counter()
            existing = await backend.enqueue_once(item, records[index], 1e9)
            latencies.append(time.perf_counter() - sent)
            if existing is None:
                backend.remove_nowait(item.seq)

    tid = writer_thread_id(backend)
    commits_before = getattr(backend, "commits", None)
    cpu0 = None if tid is None else thread_cpu(tid)
    process0 = time.process_time()
    await asyncio.gather(*(writer(lane) for lane in range(writers)))
    elapsed = time.perf_counter() - started
    await backend.count()  # the last removals are committed (and read back)
    cpu1 = None if tid is None else thread_cpu(tid)
    process1 = time.process_time()
    commits_after = getattr(backend, "commits", None)
    await backend.aclose()
    commits = (
        None
        if commits_before is None or commits_after is None
        else commits_after - commits_before
    )
    return Result(
        config,
        writers,
        next_index,
        elapsed,
        commits,
        None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
        process1 - process0,
        latencies,
    )


def report(result: Result) -> None:
    rate = result.writes / result.seconds
    if result.commits:
        commits = f"{result.commits / result.seconds:>10,.0f}"
        per_commit = f"{result.writes / result.commits:>8.1f}"
    else:
        commits, per_commit = f"{'-':>10}", f"{'-':>8}"
    print(
        f"{result.config:<14} {result.writers:>7} {result.writes:>8} "
        f"{result.seconds:>6.2f} {rate:>11,.0f} {commits} {per_commit}"
        + cpu_columns(result),
        flush=True,
    )


def cpu_columns(result: Result) -> str:
    if result.process_cpu is None or not result.writes:
        return ""
    per = 1e6 / result.writes
    writer = "-" if result.writer_cpu is None else f"{result.writer_cpu * per:.1f}"
    columns = f" {writer:>10} {result.process_cpu * per:>10.1f}"
    if result.latencies:
        ordered = sorted(result.latencies)
        p50 = ordered[len(ordered) // 2] * 1e3
        p99 = ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)] * 1e3
        columns += f" {p50:>7.2f} {p99:>7.2f}"
    return columns


async def main(args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="msgin5g-bench-", dir=args.dir)
    print(f"database directory: {directory}")
    once = args.mode == "once"
    print(
        f"{'backend':<14} {'writers':>7} {'writes':>8} {'secs':>6} "
        f"{'writes/s':>11} {'commits/s':>10} {'w/commit':>8}"
        + (
            f" {'writer us':>10} {'process us':>10} {'p50 ms':>7} {'p99 ms':>7}"
            if once
            else ""
        )
    )
    configs = args.config or CONFIGS
    writer_counts = args.writers or WRITERS
    try:
        for config in configs:
            for writers in writer_counts:
                if once:
                    result = await run_once_cell(
                        config,
                        writers,
                        args.seconds,
                        args.max_writes,
                        directory,
                        args.rate,
                    )
                else:
                    result = await run_cell(
                        config, writers, args.seconds, args.max_writes, directory
                    )
                report(result)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per cell")
    parser.add_argument("--max-writes", type=int, default=100_000, help="per cell")
    parser.add_argument("--dir", default=None, help="where to put the database files")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument(
        "--mode",
        choices=("enqueue", "once"),
        default="enqueue",
        help="enqueue: plain enqueue; once: enqueue_once + remove_nowait per message",
    )
    parser.add_argument(
        "--rate", type=float, default=0.0, help="messages/s in all (mode once; 0: max)"
    )
    parser.add_argument(
        "--config", action="append", choices=CONFIGS, help="backend (repeatable)"
    )
    parser.add_argument(
        "--writers", action="append", type=int, help="concurrent writers (repeatable)"
    )
    parser.add_argument(
        "--commit-interval",
        type=float,
        default=None,
        help="SQLite writer: least seconds between two transactions",
    )
    arguments = parser.parse_args()
    COMMIT_INTERVAL = arguments.commit_interval
    if arguments.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(arguments))
