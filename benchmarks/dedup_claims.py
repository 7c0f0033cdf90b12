"""Cost of one duplicate-detection claim in a large ``dedup`` table, per writer cache.

The SQLite writer claims (originator, messageId) for every stored message with
one ``INSERT ... ON CONFLICT DO UPDATE`` (``queue_ops._DEDUP_CLAIM``) into a
table that holds a day of records under random keys. This harness builds such
a file once (``--rows`` records, 400 originators, random Message IDs, a
~130-octet answer each, as the server writes them), then for each
``--cache-kib`` value opens a fresh writer connection (``driver.connect`` with
that ``cache_size``, WAL, ``synchronous=FULL``) on a copy of it, warms it with
``--warm`` claims and times ``--claims`` more, ``--batch`` claims per
transaction, each followed by the queue insert and removal of its message as
in a writer batch. The cache sizes run in alternating order for ``--rounds``
rounds. Each figure is CPU µs per claim: ``thread_time`` around each
statement, so time the thread spends descheduled on a busy machine does not
count, while reads that miss the cache (``pread`` system calls) do; the median
of the batches' means. The process's RSS growth over a cell is printed too
(freed memory is reused by later cells, so only the first cells say much).

    PYTHONPATH=src .venv/bin/python benchmarks/dedup_claims.py \
        --cache-kib 2000 16384 65536 [--rows 300000]

Not collected by pytest.
"""

import argparse
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from msgin5g.storage.sqlite.driver import connect
from msgin5g.storage.sqlite.queue_ops import _DEDUP_CLAIM
from msgin5g.storage.sqlite.schema import create_schema

ORIGINATORS = [f"ue-{i:05d}" for i in range(400)]
RESPONSE = (
    b'{"messageType":"MSGRESP","messageId":"00000000-0000-0000-0000-000000000000",'
    b'"originatingUEServiceId":"ue-00000","deliveryStatus":"STORED"}'
)


def rss_kib() -> int:
    """This process's resident set size (KiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def claim_row(now: float) -> tuple[object, ...]:
    return (
        random.choice(ORIGINATORS),
        str(uuid.uuid4()),
        random.randbytes(16),
        RESPONSE,
        now + 86400.0,
        now,
    )


def build(path: str, rows: int) -> None:
    """A file with ``rows`` live dedup records (and the rest of the schema)."""
    conn = connect(path, 5.0, synchronous="OFF")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    create_schema(conn)
    now = time.time()
    for start in range(0, rows, 10_000):
        conn.executemany(
            _DEDUP_CLAIM, [claim_row(now) for _ in range(min(10_000, rows - start))]
        )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


def cell(
    path: str, cache_kib: int, warm: int, claims: int, batch: int
) -> tuple[float, int]:
    """CPU µs per claim (median of the batch means) with a ``cache_kib`` writer cache,
    and the process's RSS growth (KiB) from opening the connection to the end."""
    before = rss_kib()
    conn = connect(path, 5.0, synchronous="FULL", cache_kib=cache_kib)
    conn.execute("PRAGMA journal_mode = WAL")
    seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM queue").fetchone()[0])
    means = []
    for n, timed in ((warm, False), (claims, True)):
        for _ in range(0, n, batch):
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            spent = 0.0
            for _ in range(batch):
                row = claim_row(now)
                t0 = time.thread_time()
                conn.execute(_DEDUP_CLAIM, row)
                spent += time.thread_time() - t0
                seq += 1
                conn.execute(
                    "INSERT INTO queue(seq, recipient, message_id, priority, "
                    "expires_at, store, body, size) VALUES (?, ?, ?, 1, ?, 1, ?, 300)",
                    (seq, row[0], row[1], now + 86400, b"x" * 300),
                )
                conn.execute("DELETE FROM queue WHERE seq = ?", (seq - batch,))
            conn.execute("COMMIT")
            if timed:
                means.append(spent / batch * 1e6)
    grown = rss_kib() - before
    conn.close()
    return statistics.median(means), grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--cache-kib", type=int, nargs="+", default=[2000, 65536])
    parser.add_argument("--warm", type=int, default=40_000)
    parser.add_argument("--claims", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "dedup.db")
        t0 = time.perf_counter()
        build(path, args.rows)
        size = os.path.getsize(path) / 2**20
        print(
            f"{args.rows:,} dedup rows, {size:.0f} MiB file, "
            f"built in {time.perf_counter() - t0:.0f} s"
        )
        results: dict[int, list[float]] = {k: [] for k in args.cache_kib}
        for round_ in range(args.rounds):
            order = args.cache_kib if round_ % 2 == 0 else args.cache_kib[::-1]
            for kib in order:
                copy = os.path.join(tmp, "cell.db")
                shutil.copyfile(path, copy)  # every cell starts from the same rows
                us, grown = cell(copy, kib, args.warm, args.claims, args.batch)
                for suffix in ("", "-wal", "-shm"):
                    Path(copy + suffix).unlink(missing_ok=True)
                results[kib].append(us)
                print(
                    f"  round {round_ + 1} cache {kib:>6} KiB: {us:5.1f} µs/claim "
                    f"(RSS {grown:+,} KiB over the cell)",
                    flush=True,
                )
        for kib, values in results.items():
            print(
                f"cache {kib:>6} KiB: median {statistics.median(values):5.1f} µs/claim "
                f"({', '.join(f'{v:.1f}' for v in values)})"
            )


if __name__ == "__main__":
    main()
