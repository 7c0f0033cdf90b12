"""Enqueue throughput of the storage backends under concurrent writers.

Runs ``enqueue`` from 1, 10, 100 and 1000 concurrent tasks against the memory
backend and SQLite with ``synchronous=FULL`` and ``NORMAL``, and prints writes/s
and commits/s (group commit: with many writers, many writes share one commit).

Bounded: each cell stops after ``--seconds`` or ``--max-writes``, whichever comes
first. Not collected by pytest.

    .venv/bin/python benchmarks/storage.py [--seconds 1.0] [--dir /path/on/disk]
"""

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem
from msgin5g.storage import Backend, open_backend

WRITERS = (1, 10, 100, 1000)
CONFIGS = ("memory", "sqlite FULL", "sqlite NORMAL")


@dataclass
class Result:
    config: str
    writers: int
    writes: int
    seconds: float
    commits: int | None


def make_item(i: int) -> QueuedItem:
    msg = Msg(
        message_id=f"00000000-0000-0000-0000-{i:012d}",
        originating_ue_service_id="ue-a",
        recipient_ue_service_id=f"ue-{i % 1000}",
        payload=b"x" * 160,
    )
    return QueuedItem(f"ue-{i % 1000}", msg, i % 3, 2e9, True)


def open_config(config: str, directory: str) -> Backend:
    if config == "memory":
        return open_backend("memory:")
    _, synchronous = config.split()
    path = os.path.join(directory, f"bench-{synchronous}-{time.monotonic_ns()}.db")
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


def report(result: Result) -> None:
    rate = result.writes / result.seconds
    if result.commits:
        commits = f"{result.commits / result.seconds:>10,.0f}"
        per_commit = f"{result.writes / result.commits:>8.1f}"
    else:
        commits, per_commit = f"{'-':>10}", f"{'-':>8}"
    print(
        f"{result.config:<14} {result.writers:>7} {result.writes:>8} "
        f"{result.seconds:>6.2f} {rate:>11,.0f} {commits} {per_commit}",
        flush=True,
    )


async def main(args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="msgin5g-bench-", dir=args.dir)
    print(f"database directory: {directory}")
    print(
        f"{'backend':<14} {'writers':>7} {'writes':>8} {'secs':>6} "
        f"{'writes/s':>11} {'commits/s':>10} {'w/commit':>8}"
    )
    try:
        for config in CONFIGS:
            for writers in WRITERS:
                report(
                    await run_cell(
                        config, writers, args.seconds, args.max_writes, directory
                    )
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per cell")
    parser.add_argument("--max-writes", type=int, default=100_000, help="per cell")
    parser.add_argument("--dir", default=None, help="where to put the database files")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    arguments = parser.parse_args()
    if arguments.uvloop:
        import uvloop

        uvloop.install()
    asyncio.run(main(arguments))
