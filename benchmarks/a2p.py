"""Benchmark: Application-to-Point through the REST API into CoAP delivery.

What it does (loopback only, bounded by --seconds and --count):

1. starts ``msgin5g serve`` as a subprocess (fresh SQLite file, durable group
   commit, HTTP on a private port) and provisions ``--ues`` UEs;
2. registers those UEs from this process (our device library, one UDP socket
   each) and one AS through MSGS_ASRegistration;
3. for HTTP/1.1 and then h2c (HTTP/2 prior knowledge, one connection, streams
   multiplexed): ``--concurrency`` workers POST ``deliver-as-message`` in a
   closed loop, round-robin over the UEs; a message counts when the UE *received*
   it over CoAP (the server's CON POST was acknowledged); latency is UE receive
   time minus HTTP send time (p50/p99). The HTTP acknowledgement itself comes
   after the message was stored durably.

The load generator (httpx and the UE clients) shares this one Python process and
is usually the limit on 2 cores; compare the two modes with each other. Run:
``.venv/bin/python benchmarks/a2p.py``. Not a test (never collected by pytest).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from common import free_port

ROOT = Path(__file__).resolve().parents[1]


async def wait_http(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            try:
                await client.get(url + "/")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
    raise SystemExit("server did not start")


async def run_mode(
    http: str, ues: list, mode: str, seconds: float, concurrency: int, count: int
) -> dict[str, float]:
    received: list[float] = []
    latencies: list[float] = []
    done = asyncio.Event()

    async def receiver(client) -> None:  # type: ignore[no-untyped-def]
        while True:
            item = (await client.receive()).item
            sent = float(item.payload.decode())
            now = time.perf_counter()
            received.append(now)
            latencies.append(now - sent)
            if len(received) >= count:
                done.set()

    tasks = [asyncio.create_task(receiver(ue)) for ue in ues]
    http2 = mode == "h2c"
    limits = httpx.Limits(max_connections=1 if http2 else concurrency)
    async with httpx.AsyncClient(
        base_url=http, http1=not http2, http2=http2, limits=limits, timeout=30
    ) as client:
        stop = time.perf_counter() + seconds
        sent = 0

        async def worker(index: int) -> None:
            nonlocal sent
            n = 0
            while time.perf_counter() < stop and sent < count:
                ue = ues[(index + n) % len(ues)].ue_service_id
                n += 1
                sent += 1
                body = {
                    "oriAddr": {"addrType": "AS", "addr": "bench-as"},
                    "destAddr": {"addrType": "UE", "addr": ue},
                    "msgId": f"{mode}-{index}-{n}",
                    "payload": base64.b64encode(
                        repr(time.perf_counter()).encode()
                    ).decode(),
                    "stoAndFwInd": True,
                }
                resp = await client.post(
                    "/msgs-msgdelivery/v1/deliver-as-message",
                    content=json.dumps(body),
                    headers={"content-type": "application/json"},
                )
                if resp.status_code != 200:
                    raise SystemExit(f"{resp.status_code} {resp.text}")

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        try:
            await asyncio.wait_for(done.wait(), timeout=10)
        except TimeoutError:
            pass
    for task in tasks:
        task.cancel()
    elapsed = (received[-1] if received else time.perf_counter()) - start
    lat = sorted(latencies)
    return {
        "messages": len(received),
        "rate": len(received) / elapsed if elapsed > 0 else 0.0,
        "p50_ms": 1000 * statistics.median(lat) if lat else 0.0,
        "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else 0.0,
    }


async def main(args: argparse.Namespace) -> None:
    from msgin5g.client import Client
    from msgin5g.server import provision_ue

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-a2p-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    ids = [f"ue-{i}" for i in range(args.ues)]
    for ue in ids:
        await provision_ue(url, ue, "bench-secret")
    http_port, coap_port = free_port(socket.SOCK_STREAM), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before the load
        [
            sys.executable,
            "-m",
            "msgin5g",
            "serve",
            "--storage",
            url,
            "--coap",
            f"127.0.0.1:{coap_port}",
            "--http",
            f"127.0.0.1:{http_port}",
            "--set",
            "log.level=WARNING",
            "--set",
            f"rest.server={args.server}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    http = f"http://127.0.0.1:{http_port}"
    ues: list[Client] = []
    try:
        await wait_http(http)
        async with httpx.AsyncClient(base_url=http) as client:
            resp = await client.post(
                "/msgs-asregistration/v1/registrations", json={"asSvcId": "bench-as"}
            )
            assert resp.status_code == 201, resp.text
        for ue in ids:
            client = Client(
                ue,
                "bench-secret",
                server=f"coap://127.0.0.1:{coap_port}",
                bind=("127.0.0.1", 0),
            )
            await client.start()
            await client.register()
            ues.append(client)
        print(
            f"A2P through REST into CoAP ({args.server}, {args.ues} UEs, "
            f"{args.concurrency} concurrent requests, durable SQLite)"
        )
        for mode in ("http/1.1", "h2c"):
            figures = await run_mode(
                http, ues, mode, args.seconds, args.concurrency, args.count
            )
            print(
                f"  {mode:8}  {figures['rate']:8.0f} msgs/s  "
                f"p50 {figures['p50_ms']:6.1f} ms  p99 {figures['p99_ms']:6.1f} ms  "
                f"({figures['messages']:.0f} delivered)",
                flush=True,
            )
    finally:
        for client in ues:
            await client.aclose()
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ues", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--server", default="granian", choices=["granian", "hypercorn"])
    asyncio.run(main(parser.parse_args()))
