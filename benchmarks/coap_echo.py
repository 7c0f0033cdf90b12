"""Benchmark: msgin5g.coap Endpoint vs aiocoap as a CoAP echo server (loopback only).

Each server runs in its own process and answers CON POST /echo with 2.04 and a
JSON body (it decodes the request JSON and encodes a reply). A windowed,
closed-loop load generator on raw uvloop UDP sockets keeps ``--window``
confirmable requests outstanding, matches replies by Message ID and records the
latency of each. Several source sockets are used so that no (address, Message
ID) pair repeats within a run (the server's duplicate cache would otherwise
answer from cache). Bounded by ``--count`` requests and ``--seconds``.

Run: ``.venv/bin/python benchmarks/coap_echo.py [--count 60000] [--window 200]``.
Prints requests/s, p50 and p99 per server and the ratio. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import msgspec

BODY = msgspec.json.encode(
    {
        "msgId": "0b6f5a2e-9c1d-4a57-8f1e-3f6d2b9a7c41",
        "originator": "ue-000123@msgin5g.example",
        "recipient": "as-42",
        "payload": "aGVsbG8gd29ybGQsIHRoaXMgaXMgYSBiZW5jaG1hcmsgbWVzc2FnZQ==",
        "priority": "NORMAL",
        "deliveryReport": True,
    }
)


def serve_ours(port_queue: Any) -> None:
    from msgin5g.coap import Code, Endpoint, Request, Site, make_response, use_uvloop

    decoder = msgspec.json.Decoder()
    encoder = msgspec.json.Encoder()

    async def echo(req: Request) -> Any:
        body = decoder.decode(req.message.payload)
        reply = encoder.encode({"msgId": body["msgId"], "result": "ACCEPTED"})
        return make_response(req.message, Code.CHANGED, reply, content_format=50)

    async def main() -> None:
        site = Site()
        site.add(("echo",), echo)
        endpoint = await Endpoint.create(("127.0.0.1", 0), site=site)
        port_queue.put(endpoint.local_address[1])
        await asyncio.Event().wait()

    use_uvloop()
    asyncio.run(main())


def serve_aiocoap(port_queue: Any) -> None:
    import json
    import socket

    import aiocoap
    import aiocoap.resource

    class Echo(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_post(self, request: Any) -> Any:
            body = json.loads(request.payload)
            reply = json.dumps({"msgId": body["msgId"], "result": "ACCEPTED"}).encode()
            return aiocoap.Message(
                code=aiocoap.CHANGED, payload=reply, content_format=50
            )

    async def main() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        root = aiocoap.resource.Site()
        root.add_resource(["echo"], Echo())
        await aiocoap.Context.create_server_context(root, bind=("127.0.0.1", port))
        port_queue.put(port)
        await asyncio.Event().wait()

    asyncio.run(main())


class Load(asyncio.DatagramProtocol):
    """One source socket: keeps ``window`` CON POSTs outstanding."""

    def __init__(self, total: int, window: int, done: asyncio.Future[None]) -> None:
        self.total = total
        self.window = window
        self.done = done
        self.sent = 0
        self.received = 0
        self.start_times: dict[int, float] = {}
        self.datagrams: dict[int, bytes] = {}
        self.errors = 0
        self.retransmissions = 0
        self.latencies: list[float] = []
        self.transport: Any = None
        self.mid_base = os.getpid() & 0x7FFF

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def begin(self) -> None:
        for _ in range(self.window):
            self.send_one()

    def send_one(self) -> None:
        if self.sent >= self.total:
            return
        mid = (self.mid_base + self.sent) & 0xFFFF
        self.sent += 1
        header = bytes((0x44, 0x02, mid >> 8, mid & 0xFF)) + mid.to_bytes(4, "big")
        # Uri-Path "echo", Content-Format 50, payload
        datagram = header + b"\xb4echo\x11\x32\xff" + BODY
        self.start_times[mid] = time.perf_counter()
        self.datagrams[mid] = datagram
        self.transport.sendto(datagram)

    def retransmit_stale(self, older_than: float) -> None:
        """Resend requests outstanding longer than ``older_than`` s (lost datagrams)."""
        limit = time.perf_counter() - older_than
        for mid, started in list(self.start_times.items()):
            if started < limit:
                self.retransmissions += 1
                self.transport.sendto(self.datagrams[mid])

    def datagram_received(self, data: bytes, addr: Any) -> None:
        mid = data[2] << 8 | data[3]
        started = self.start_times.pop(mid, None)
        if started is None:
            return
        del self.datagrams[mid]
        if data[1] != 0x44:
            self.errors += 1
        self.latencies.append(time.perf_counter() - started)
        self.received += 1
        if self.received >= self.total:
            if not self.done.done():
                self.done.set_result(None)
            return
        self.send_one()


async def drive(
    port: int, count: int, window: int, seconds: float, sockets: int
) -> dict[str, float]:
    import socket

    loop = asyncio.get_running_loop()
    per_socket = count // sockets
    loads: list[Load] = []
    transports = []
    for _ in range(sockets):
        done: asyncio.Future[None] = loop.create_future()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        sock.connect(("127.0.0.1", port))
        transport, load = await loop.create_datagram_endpoint(
            lambda d=done: Load(per_socket, window // sockets, d), sock=sock
        )
        loads.append(load)
        transports.append(transport)
    start = time.perf_counter()
    for load in loads:
        load.begin()

    async def retransmitter() -> None:
        while True:
            await asyncio.sleep(0.5)
            for load in loads:
                load.retransmit_stale(2.0)

    watchdog = asyncio.create_task(retransmitter())
    try:
        await asyncio.wait_for(asyncio.gather(*(ld.done for ld in loads)), seconds)
    except TimeoutError:
        pass
    watchdog.cancel()
    elapsed = time.perf_counter() - start
    for transport in transports:
        transport.close()
    latencies = sorted(x for ld in loads for x in ld.latencies)
    received = len(latencies)
    return {
        "rps": received / elapsed,
        "received": received,
        "errors": sum(ld.errors for ld in loads),
        "retransmissions": sum(ld.retransmissions for ld in loads),
        "p50_ms": 1000 * statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": 1000 * latencies[int(0.99 * (received - 1))]
        if latencies
        else float("nan"),
    }


def run(name: str, target: Any, args: argparse.Namespace) -> dict[str, float]:
    import uvloop

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(queue,), daemon=True)
    proc.start()
    try:
        port = queue.get(timeout=30)
        # warm-up, then the measured run (fresh source sockets => fresh MIDs)
        uvloop.run(drive(port, min(2000, args.count), args.window, 5, 1))
        result = uvloop.run(
            drive(port, args.count, args.window, args.seconds, args.sockets)
        )
    finally:
        proc.terminate()
        proc.join(5)
    print(
        f"{name:>8}: {result['rps']:9,.0f} req/s  p50 {result['p50_ms']:6.1f} ms"
        f"  p99 {result['p99_ms']:7.1f} ms  ({result['received']:.0f} replies,"
        f" {result['errors']:.0f} not 2.04,"
        f" {result['retransmissions']:.0f} retransmitted)",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=60_000, help="requests per server")
    parser.add_argument("--aiocoap-count", type=int, default=15_000)
    parser.add_argument("--window", type=int, default=200)
    parser.add_argument("--sockets", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    ours = run("msgin5g", serve_ours, args)
    args.count = args.aiocoap_count
    theirs = run("aiocoap", serve_aiocoap, args)
    print(f"   ratio: {ours['rps'] / theirs['rps']:.1f}x aiocoap", flush=True)


if __name__ == "__main__":
    main()
