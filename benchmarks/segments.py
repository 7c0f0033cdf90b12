"""Benchmark: segmentation and aggregation (issue 5), loopback only, bounded.

1. **1 MB transfer in 1 KB segments** UE -> server -> UE through a running
   ``msgin5g serve`` subprocess (SQLite FULL): the sender's client segments, the
   server reassembles (every acknowledged segment stored durably) and re-segments
   to the recipient's announced ``maxSegmentSize``; prints seconds and MB/s.
2. **10k stored messages delivered to a UE that registers**: once with downlink
   aggregation (default) and once with ``delivery.aggregate_downlink=false``, same
   run; prints messages/s and the ratio.

Run: ``.venv/bin/python benchmarks/segments.py [--stored 10000]``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from common import free_port, start_server


async def provision(db: Path) -> None:
    from msgin5g.server import provision_ue

    for ue in ("ue1", "ue2"):
        await provision_ue(f"sqlite:///{db}", ue, f"s-{ue}")


async def big_transfer(port: int, size: int) -> float:
    from msgin5g.client import Client

    server = f"coap://127.0.0.1:{port}"
    payload = os.urandom(size)
    async with (
        Client(
            "ue1", "s-ue1", server=server, bind=("127.0.0.1", 0), segment_size=1024
        ) as ue1,
        Client("ue2", "s-ue2", server=server, bind=("127.0.0.1", 0)) as ue2,
    ):
        await ue1.register()
        await ue2.register(max_segment_size=1024)
        start_at = time.perf_counter()
        await ue1.send("ue2", payload)
        got = await ue2.receive(timeout=300)
        elapsed = time.perf_counter() - start_at
        assert got.item.payload == payload  # type: ignore[union-attr]
    return elapsed


async def stored_backlog(port: int, count: int) -> float:
    from msgin5g.client import Client

    server = f"coap://127.0.0.1:{port}"
    async with Client("ue1", "s-ue1", server=server, bind=("127.0.0.1", 0)) as ue1:
        await ue1.register()
        for i in range(count):
            await ue1.send("ue2", f"reading {i}")
    async with Client(
        "ue2", "s-ue2", server=server, bind=("127.0.0.1", 0), queue_size=count + 10
    ) as ue2:
        start_at = time.perf_counter()
        await ue2.register()
        for _ in range(count):
            await ue2.receive(timeout=300)
        return time.perf_counter() - start_at


def run(coro_factory, *extra: str) -> float:  # type: ignore[no-untyped-def]
    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-seg-"))
    db = tmp / "b.db"
    asyncio.run(provision(db))
    port = free_port()
    proc = start_server(port, db, *extra)
    try:
        return asyncio.run(coro_factory(port))
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1024 * 1024)
    parser.add_argument("--stored", type=int, default=10_000)
    args = parser.parse_args()
    seconds = run(lambda port: big_transfer(port, args.size))
    print(
        f"{args.size / 1e6:.1f} MB in 1 KB segments UE->server->UE: {seconds:.2f} s "
        f"({args.size / 1e6 / seconds:.2f} MB/s, {2 * args.size // 1024 / seconds:,.0f} "
        "segments/s over both hops)"
    )
    agg = run(lambda port: stored_backlog(port, args.stored))
    single = run(
        lambda port: stored_backlog(port, args.stored),
        "--set",
        "delivery.aggregate_downlink=false",
    )
    print(
        f"{args.stored} stored messages to a UE that registers: aggregated "
        f"{args.stored / agg:,.0f} msgs/s ({agg:.2f} s), single "
        f"{args.stored / single:,.0f} msgs/s ({single:.2f} s), ratio {single / agg:.1f}x"
    )


if __name__ == "__main__":
    main()
