"""Storage backends side by side: SQLite (FULL) vs NATS JetStream, same run.

What it measures (loopback only; nats-server started here from the installed
binary on a free port with a tmp store dir; every phase bounded by counts and
``--seconds``):

1. **storage operations** (this process is the generator; the stores are a file
   and a separate nats-server process): ``enqueue`` with 1 and with 100
   concurrent writers, then awaited ``remove`` with 100 concurrent removers;
2. **JetStream's own ceiling**: a loop of acknowledged ``js.publish`` (1 and 100
   in flight) in a SEPARATE process, ~200-octet bodies like a stored ``MSG``;
3. **end to end**: ``benchmarks/p2p.py``'s closed-loop UE -> server -> UE load
   against ``msgin5g serve --storage sqlite:///...`` and ``--storage nats://...``.

Run: ``.venv/bin/python benchmarks/storage_ops.py [--seconds 5] [--ues 100]``.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, free_port, provision_bench, start_server

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.storage.nats_server import NatsServer

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem
from msgin5g.storage import open_backend

SECRET = "bench-secret"


def _item(i: int) -> QueuedItem:
    msg = Msg(
        message_id=f"00000000-0000-4000-8000-{i:012d}",
        originating_ue_service_id="ue-a",
        recipient_ue_service_id=f"ue-{i % 100}",
        payload=b"x" * 64,
    )
    return QueuedItem(
        msg.recipient_ue_service_id or "", msg, 1, time.time() + 3600, True
    )


async def _ops(url: str, count: int, seconds: float) -> dict[str, float]:
    backend = open_backend(url, synchronous="FULL")
    await backend.start()
    out: dict[str, float] = {}
    try:
        seqs: list[int] = []
        start = time.perf_counter()
        deadline = start + seconds
        i = 0
        while i < count and time.perf_counter() < deadline:
            seqs.append(await backend.enqueue(_item(i)))
            i += 1
        out["enqueue x1"] = i / (time.perf_counter() - start)

        async def writer(first: int, n: int) -> None:
            for k in range(first, first + n):
                seqs.append(await backend.enqueue(_item(k)))

        per = max(1, count // 100)
        start = time.perf_counter()
        await asyncio.wait_for(
            asyncio.gather(*(writer(1_000_000 + w * per, per) for w in range(100))),
            timeout=seconds * 10,
        )
        out["enqueue x100"] = per * 100 / (time.perf_counter() - start)

        async def remover(mine: list[int]) -> None:
            for seq in mine:
                await backend.remove(seq)

        start = time.perf_counter()
        await asyncio.gather(*(remover(seqs[w::100]) for w in range(100)))
        out["remove x100"] = len(seqs) / (time.perf_counter() - start)
    finally:
        await backend.aclose()
    return out


def _ceiling_main(url: str, seconds: float, inflight: int, out: Any) -> None:
    async def run() -> float:
        import nats

        nc = await nats.connect(url)
        js = nc.jetstream()
        await js.add_stream(name="ceiling", subjects=["ceiling.>"])
        body = b"y" * 200
        done = 0
        deadline = time.perf_counter() + seconds

        async def lane(n: int) -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                await js.publish(f"ceiling.{n}", body)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(lane(n) for n in range(inflight)))
        rate = done / (time.perf_counter() - start)
        await js.delete_stream("ceiling")
        await nc.close()
        return rate

    out.put(asyncio.run(run()))


def ceiling(url: str, seconds: float, inflight: int) -> float:
    ctx = mp.get_context("spawn")
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=_ceiling_main, args=(url, seconds, inflight, queue))
    proc.start()
    rate: float = queue.get(timeout=seconds + 60)
    proc.join(10)
    return rate


def e2e(storage: str, ues: int, seconds: float, workdir: Path) -> dict[str, Any]:
    from p2p import run_load

    provision_bench(storage, ues, "ue-")
    port = free_port()
    server = start_server(port, workdir / "unused.db", "--storage", storage)
    try:
        time.sleep(0.5)
        return run_load(port, ues, 1, seconds)
    finally:
        server.terminate()
        server.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=5000, help="items per ops phase")
    parser.add_argument("--ues", type=int, default=100)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-storage-ops-"))
    binary = shutil.which("nats-server")
    if binary is None:
        sys.exit("nats-server is not installed (scripts/install installs it)")
    js = NatsServer(binary, tmp / "js", free_port())
    js.start()
    try:
        print(
            f"storage ops, {args.count} items, loopback; nats-server {js.url} store {tmp}"
        )
        urls = {
            "sqlite FULL": f"sqlite:///{tmp / 'ops.db'}",
            "nats (R1, file)": f"{js.url}?prefix=ops",
        }
        for name, url in urls.items():
            figures = asyncio.run(_ops(url, args.count, args.seconds))
            print(
                f"  {name:16s} "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in figures.items())
            )
        for inflight in (1, 100):
            rate = ceiling(js.url, args.seconds, inflight)
            print(
                f"  JetStream acked publish, {inflight:3d} in flight (separate process): "
                f"{rate:,.0f}/s"
            )
        for name, storage in (
            ("sqlite FULL", f"sqlite:///{tmp / 'e2e.db'}"),
            ("nats", f"{js.url}?prefix=e2e"),
        ):
            r = e2e(storage, args.ues, args.seconds, tmp)
            print(
                f"  end to end {name:12s}: {r['msgs_per_s']:,.0f} msgs/s, p50 "
                f"{r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms ({r['received']} delivered, "
                f"{args.ues} UEs)"
            )
    finally:
        js.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
