"""Benchmark: end-to-end messages/s over OSCORE beside plain CoAP, same run.

What it does (loopback only, bounded by ``--seconds`` per phase):

1. starts ``msgin5g serve`` (its own process, fresh SQLite file, flood control
   off so the generator is not throttled) and provisions ``2 * --pairs`` UEs;
2. for each mode (plain CoAP, then OSCORE end to end) a *separate generator
   process* runs ``--pairs`` sender/receiver pairs of :class:`msgin5g.client.Client`
   (``oscore=True`` in the second phase): every sender keeps one ``MSG`` in
   flight to its receiver (closed loop, as NSTART = 1 allows); a message counts
   when its receiver got it. Both phases use the same client library, so the
   difference is what OSCORE costs (AES-CCM and HKDF on both sides, the Echo
   round trip of each UE's first request, protected downlink).
3. prints msgs/s, p50/p99 of the sender's MSG → MSGRESP latency, the server's
   RSS after each phase, and the OSCORE/plain ratio.

Run: ``.venv/bin/python benchmarks/security_oscore.py [--pairs 20] [--seconds 10]``.
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from common import free_port, provision, rss_kib, start_server

SECRET = "bench-secret"
PAYLOAD = b"x" * 64


async def _generate(
    port: int, pairs: int, seconds: float, oscore: bool, state_dir: str
) -> dict[str, Any]:
    from msgin5g.client import Client

    server = f"coap://127.0.0.1:{port}"

    def client(ue: str) -> Client:
        return Client(
            ue, SECRET, server=server, bind=("127.0.0.1", 0), auto_report=False,
            oscore=oscore,
            oscore_state=f"{state_dir}/{ue}.json" if oscore else None,
        )  # fmt: skip

    senders = [client(f"s{i}") for i in range(pairs)]
    receivers = [client(f"r{i}") for i in range(pairs)]
    everyone = senders + receivers
    for ue in everyone:
        await ue.start()
    await asyncio.gather(*(ue.register() for ue in everyone))
    latencies: list[float] = []
    received = 0
    deadline = time.monotonic() + seconds

    async def send_loop(sender: Client, to: str) -> None:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            await sender.send(to, PAYLOAD)
            latencies.append(time.perf_counter() - start)

    async def receive_loop(receiver: Client) -> None:
        nonlocal received
        while time.monotonic() < deadline + 2:
            try:
                await receiver.receive(
                    timeout=max(0.1, deadline + 2 - time.monotonic())
                )
            except TimeoutError:
                return
            received += 1

    begin = time.monotonic()
    await asyncio.gather(
        *(send_loop(s, f"r{i}") for i, s in enumerate(senders)),
        *(receive_loop(r) for r in receivers),
        return_exceptions=True,
    )
    elapsed = min(time.monotonic() - begin, seconds)
    for ue in everyone:
        await ue.aclose()
    latencies.sort()
    return {
        "sent": len(latencies),
        "received": received,
        "rate": received / elapsed if elapsed else 0.0,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else 0.0,
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))]
        if latencies
        else 0.0,
    }


def _worker(args: tuple[Any, ...], out: Any) -> None:
    from msgin5g.coap import use_uvloop

    use_uvloop()
    out.put(asyncio.run(_generate(*args)))


def run_phase(port: int, pairs: int, seconds: float, oscore: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as state_dir:
        out: Any = mp.get_context("spawn").Queue()
        proc = mp.get_context("spawn").Process(
            target=_worker, args=((port, pairs, seconds, oscore, state_dir), out)
        )
        proc.start()
        result: dict[str, Any] = out.get(timeout=seconds + 120)
        proc.join(30)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        ues = [f"{k}{i}" for i in range(args.pairs) for k in ("s", "r")]
        asyncio.run(provision(f"sqlite:///{db}", ues, SECRET))
        port = free_port()
        server = start_server(
            port, db, "--set", "coap.source_rate=0", "--set", "limits.submit_rate=0"
        )
        try:
            results = {}
            for name, oscore in (("plain CoAP", False), ("OSCORE", True)):
                results[name] = run_phase(port, args.pairs, args.seconds, oscore)
                results[name]["rss_mib"] = rss_kib(server.pid) / 1024
                r = results[name]
                print(
                    f"{name:>10}: {r['rate']:8.0f} msgs/s end to end "
                    f"({r['received']} received, {r['sent']} sent), "
                    f"MSG->MSGRESP p50 {r['p50_ms']:.2f} ms p99 {r['p99_ms']:.2f} ms, "
                    f"server RSS {r['rss_mib']:.0f} MiB",
                    flush=True,
                )
            plain, sealed = results["plain CoAP"]["rate"], results["OSCORE"]["rate"]
            if plain:
                print(f"OSCORE / plain = {sealed / plain:.2f}")
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
