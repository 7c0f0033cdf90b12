"""Benchmark: end-to-end UE -> server -> UE messaging through a running msgin5g server.

What it does (loopback only, bounded by --seconds and counts):

1. starts ``msgin5g serve`` as a subprocess on a private port with a fresh SQLite
   file (durable storage, ``synchronous=FULL`` group commit) and provisions the UEs;
2. **registrations/s**: registers ``--reg-ues`` UEs (from a few sockets, windowed)
   and reads the server's RSS before and after, giving memory per registered UE;
3. **messages/s end to end**: ``--ues`` simulated UEs, one UDP socket each on our
   CoAP engine, register and then each sends ``MSG`` to the next UE in a closed
   loop (one outstanding CON per UE, as NSTART=1 allows). A message counts when the
   *recipient* acknowledged the server's POST; latency is recipient receive time
   minus sender send time (p50/p99);
4. runs the same load against a minimal relay built on aiocoap
   (``benchmarks/aiocoap_relay.py``) in the same invocation and prints the ratio.

The load generator can use several processes (``--workers``) so it does not
become the bottleneck. Run: ``.venv/bin/python benchmarks/p2p.py``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from common import ROOT, free_port, provision, reg_body, rss_kib, start_server

SECRET = "bench-secret"


# ---------------------------------------------------------------- load worker


class _Item(msgspec.Struct):
    payload: bytes


class _Lat(msgspec.Struct, rename="camel"):
    """A delivered MSG, or an AGGMSG bundling several (downlink aggregation)."""

    payload: bytes | None = None
    aggregated_messages: list[_Item] | None = None


async def _worker(
    port: int, ues: list[str], all_ues: list[str], seconds: float, warmup: float
) -> dict[str, Any]:
    from msgin5g.coap import CoapMessage, Code, Endpoint, Site, Type, make_response
    from msgin5g.coap.message import encode_uint, uri_path_options

    options = [*uri_path_options(("msgin5g",)), (12, encode_uint(50))]
    server = ("127.0.0.1", port)
    decoder = msgspec.json.Decoder(_Lat)
    latencies: list[float] = []
    received = 0
    t_start = 0.0
    t_end = 0.0

    async def on_msg(req: Any) -> Any:
        nonlocal received
        now = time.perf_counter()
        if t_start <= now <= t_end:
            body = decoder.decode(req.message.payload)
            payloads = (
                [i.payload for i in body.aggregated_messages]
                if body.aggregated_messages
                else [body.payload or b""]
            )
            for payload in payloads:
                sent_at = struct.unpack("d", payload[:8])[0]
                latencies.append(now - sent_at)
                received += 1
        return make_response(req.message, Code.CHANGED)

    endpoints = []
    for _ in ues:
        site = Site()
        site.add(("msgin5g",), on_msg)
        endpoints.append(await Endpoint.create(("127.0.0.1", 0), site=site))
    for ue, ep in zip(ues, endpoints, strict=True):
        resp = await ep.request(
            CoapMessage(
                Type.CON, Code.POST, options=options, payload=reg_body(ue, SECRET)
            ),
            server,
        )
        assert b"SUCCESS" in resp.payload, resp.payload
    index = {ue: i for i, ue in enumerate(all_ues)}
    sent = 0
    acked = 0

    async def sender(ue: str, ep: Any) -> None:
        nonlocal sent, acked
        target = all_ues[(index[ue] + 1) % len(all_ues)]
        prefix = (
            f'{{"messageType":"MSG","originatingUeServiceId":"{ue}",'
            f'"recipientUeServiceId":"{target}","messageId":"{ue}-'
        ).encode()
        n = 0
        while time.perf_counter() < t_end:
            n += 1
            now = time.perf_counter()
            stamp = base64.b64encode(struct.pack("d", now) + b"x" * 40)
            body = prefix + b'%d","payload":"%s"}' % (n, stamp)
            if now >= t_start:
                sent += 1
            try:
                resp = await ep.request(
                    CoapMessage(Type.CON, Code.POST, options=options, payload=body),
                    server,
                )
            except Exception:
                continue
            if (
                now >= t_start
                and resp.code == Code.CHANGED
                and b"DELY_ACCEPTED" in resp.payload
            ):
                acked += 1

    t_start = time.perf_counter() + warmup
    t_end = t_start + seconds
    await asyncio.gather(
        *(sender(ue, ep) for ue, ep in zip(ues, endpoints, strict=True))
    )
    await asyncio.sleep(0.5)
    for ep in endpoints:
        await ep.aclose()
    return {
        "received": received,
        "latencies": latencies,
        "sent": sent,
        "acked": acked,
        "seconds": seconds,
        "window": (t_start, t_end),  # perf_counter (system-wide monotonic clock)
    }


def _worker_main(args: tuple[Any, ...], out: Any) -> None:
    from msgin5g.coap import use_uvloop

    use_uvloop()
    out.put(asyncio.run(_worker(*args)))


def run_load(port: int, ues: list[str], workers: int, seconds: float) -> dict[str, Any]:
    queue: Any = mp.get_context("fork").Queue()
    procs = []
    for w in range(workers):
        mine = ues[w::workers]
        p = mp.get_context("fork").Process(
            target=_worker_main, args=((port, mine, ues, seconds, 1.0), queue)
        )
        p.start()
        procs.append(p)
    results = [queue.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(10)
    lat = sorted(x for r in results for x in r["latencies"])
    received = sum(r["received"] for r in results)
    return {
        "msgs_per_s": received / seconds,
        "p50_ms": statistics.median(lat) * 1000 if lat else float("nan"),
        "p99_ms": lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan"),
        "received": received,
        "sent": sum(r["sent"] for r in results),
        "accepted": sum(r["acked"] for r in results),
        "window": (
            min(r["window"][0] for r in results),
            max(r["window"][1] for r in results),
        ),
    }


# ---------------------------------------------------------------- registration phase


async def register_many(
    port: int, ids: list[str], sockets: int = 8, window: int = 64
) -> float:
    from msgin5g.coap import CoapMessage, Code, Endpoint, Type
    from msgin5g.coap.message import encode_uint, uri_path_options

    options = [*uri_path_options(("msgin5g",)), (12, encode_uint(50))]
    eps = [await Endpoint.create(("127.0.0.1", 0)) for _ in range(sockets)]
    queue = list(reversed(ids))
    failures = 0

    async def lane(ep: Any) -> None:
        nonlocal failures
        while queue:
            ue = queue.pop()
            resp = await ep.request(
                CoapMessage(
                    Type.CON, Code.POST, options=options, payload=reg_body(ue, SECRET)
                ),
                ("127.0.0.1", port),
            )
            if b"SUCCESS" not in resp.payload:
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(lane(eps[i % sockets]) for i in range(window)))
    elapsed = time.perf_counter() - start
    for ep in eps:
        await ep.aclose()
    if failures:
        print(f"  registration failures: {failures}")
    return len(ids) / elapsed


# ---------------------------------------------------------------- main


def start_aiocoap(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "aiocoap_relay.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ues", type=int, default=400, help="UEs in the messaging phase"
    )
    parser.add_argument(
        "--reg-ues", type=int, default=20000, help="UEs in the registration phase"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="messaging phase length"
    )
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="load generator processes"
    )
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-bench-"))
    db = tmp / "bench.db"
    msg_ues = [f"ue-{i:05d}" for i in range(args.ues)]
    reg_ues = [f"reg-{i:07d}" for i in range(args.reg_ues)]
    asyncio.run(provision(f"sqlite:///{db}", msg_ues + reg_ues, SECRET))
    print(
        f"msgin5g p2p benchmark: {os.cpu_count()} cores, loopback, SQLite (FULL) at {db}"
    )

    port = free_port()
    server = start_server(port, db)
    try:
        time.sleep(0.5)
        rss0 = rss_kib(server.pid)
        regs = asyncio.run(register_many(port, reg_ues))
        rss1 = rss_kib(server.pid)
        per_ue = (rss1 - rss0) * 1024 / max(1, len(reg_ues))
        print(
            f"registrations: {regs:,.0f}/s ({len(reg_ues)} UEs); server RSS "
            f"{rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB = {per_ue:,.0f} B per registered UE"
        )
        ours = run_load(port, msg_ues, args.workers, args.seconds)
        print(
            f"msgin5g  end-to-end: {ours['msgs_per_s']:,.0f} msgs/s, p50 {ours['p50_ms']:.1f} ms,"
            f" p99 {ours['p99_ms']:.1f} ms ({ours['received']} delivered in the window, "
            f"{ours['sent']} sent, {ours['accepted']} DELY_ACCEPTED,"
            f" {args.ues} UEs, {args.workers} generator process(es))"
        )
        print(f"server RSS after load: {rss_kib(server.pid) / 1024:.1f} MiB")
    finally:
        server.terminate()
        server.wait(20)
    if args.skip_baseline:
        return
    port = free_port()
    relay = start_aiocoap(port)
    try:
        base = run_load(port, msg_ues, args.workers, args.baseline_seconds)
    finally:
        relay.terminate()
        relay.wait(20)
    print(
        f"aiocoap  end-to-end: {base['msgs_per_s']:,.0f} msgs/s, p50 {base['p50_ms']:.1f} ms,"
        f" p99 {base['p99_ms']:.1f} ms ({base['received']} received)"
    )
    if base["msgs_per_s"]:
        print(
            f"ratio msgin5g / aiocoap relay: {ours['msgs_per_s'] / base['msgs_per_s']:.1f}x"
        )


if __name__ == "__main__":
    main()
