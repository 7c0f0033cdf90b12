"""Benchmark: MQTT UE -> server -> MQTT UE through Mosquitto at QoS 1, beside the broker alone.

What it does (loopback only, bounded by --seconds per phase):

1. starts a private ``mosquitto`` on a free port (never the system's 1883) and
   ``msgin5g serve --mqtt`` on it, with a fresh SQLite file (durable storage,
   ``synchronous=FULL`` group commit), and provisions the UEs;
2. in a **separate generator process**:

   * **broker alone**: ``--pairs`` sender/receiver pairs of the same MQTT client
     stack the device library uses (:class:`msgin5g.mqtt.link.BrokerLink`,
     aiomqtt) publish QoS 1 straight to each other's topic, ``--window``
     publications outstanding per sender: Mosquitto's own UE->UE rate, the
     ceiling (one broker hop, no application ack);
   * **end to end**: the same number of :class:`msgin5g.client.Client` pairs
     with ``server="mqtt://…"`` send ``MSG`` (``--window`` outstanding per
     sender); a message counts when the recipient's Client queued it. Each
     message crosses the broker twice (UE->server, server->UE), is committed to
     SQLite before its ``MSGRESP``, and is acknowledged by the recipient on its
     ack topic before the server deletes it;

   latency is receive time minus send time (same process clock), p50/p99.

Run: ``.venv/bin/python benchmarks/mqtt.py [--seconds 5 --pairs 4 --window 4]``.
Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import free_port, provision, start_server

SECRET = "bench-secret"


def _start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port(socket.SOCK_STREAM)
    conf = workdir / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "allow_anonymous true",
             "persistence false", "max_queued_messages 100000", "set_tcp_nodelay true",
             "max_inflight_messages 0"]  # fmt: skip
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mosquitto did not start")


def _figures(latencies: list[float], count: int, seconds: float) -> dict[str, float]:
    ordered = sorted(latencies) or [0.0]
    return {
        "rate": count / seconds,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


async def _broker_alone(
    url: str, pairs: int, window: int, seconds: float
) -> dict[str, float]:
    from msgin5g.mqtt.link import Broker, BrokerLink, publish_properties

    latencies: list[float] = []
    received = 0

    def on_message(message: Any) -> None:
        nonlocal received
        (sent,) = struct.unpack_from("!d", message.payload)
        latencies.append(time.perf_counter() - sent)
        received += 1

    receivers = [
        BrokerLink(Broker(url), f"bench-rx{n}", (f"bench/ue/{n}",), on_message)
        for n in range(pairs)
    ]
    senders = [
        BrokerLink(Broker(url), f"bench-tx{n}", (), lambda _m: None)
        for n in range(pairs)
    ]
    for link in receivers + senders:
        await link.start()
    props = publish_properties(correlation=b"12345678")
    deadline = time.perf_counter() + seconds

    async def sender(n: int) -> None:
        async def one() -> None:
            while time.perf_counter() < deadline:
                payload = struct.pack("!d", time.perf_counter()) + b"x" * 120
                await senders[n].publish(f"bench/ue/{n}", payload, props)

        await asyncio.gather(*(one() for _ in range(window)))

    start = time.perf_counter()
    await asyncio.gather(*(sender(n) for n in range(pairs)))
    await asyncio.sleep(0.5)  # the last publications arrive
    elapsed = time.perf_counter() - start
    for link in receivers + senders:
        await link.aclose()
    return _figures(latencies, received, elapsed)


async def _end_to_end(
    url: str, pairs: int, window: int, seconds: float
) -> dict[str, float]:
    from msgin5g.client import Client

    latencies: list[float] = []
    received = 0
    tx = [Client(f"tx{n}", SECRET, server=url) for n in range(pairs)]
    rx = [Client(f"rx{n}", SECRET, server=url) for n in range(pairs)]
    for client in tx + rx:
        await client.start()
        await client.register()
    deadline = time.perf_counter() + seconds
    stop = asyncio.Event()

    async def reader(client: Client) -> None:
        nonlocal received
        while not stop.is_set():
            try:
                got = await client.receive(timeout=0.5)
            except TimeoutError:
                continue
            (sent,) = struct.unpack_from("!d", got.item.payload or b"\0" * 8)
            latencies.append(time.perf_counter() - sent)
            received += 1

    async def sender(n: int) -> None:
        async def one() -> None:
            while time.perf_counter() < deadline:
                payload = struct.pack("!d", time.perf_counter()) + b"x" * 120
                await tx[n].send(f"rx{n}", payload, store_and_forward=False)

        await asyncio.gather(*(one() for _ in range(window)))

    readers = [asyncio.create_task(reader(c)) for c in rx]
    start = time.perf_counter()
    await asyncio.gather(*(sender(n) for n in range(pairs)))
    await asyncio.sleep(1.0)  # the last deliveries arrive
    elapsed = time.perf_counter() - start
    stop.set()
    await asyncio.gather(*readers)
    for client in tx + rx:
        await client.aclose()
    return _figures(latencies, received, elapsed)


def _generator(url: str, pairs: int, window: int, seconds: float, out: Any) -> None:
    import uvloop

    async def run() -> dict[str, dict[str, float]]:
        alone = await _broker_alone(url, pairs, window, seconds)
        e2e = await _end_to_end(url, pairs, window, seconds)
        return {"broker": alone, "e2e": e2e}

    out.put(uvloop.run(run()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--window", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="msgin5g-mqtt-bench-") as tmp:
        workdir = Path(tmp)
        broker, mqtt_port = _start_mosquitto(workdir)
        url = f"mqtt://127.0.0.1:{mqtt_port}"
        db = workdir / "bench.db"
        ids = [f"{kind}{n}" for kind in ("tx", "rx") for n in range(args.pairs)]
        asyncio.run(provision(f"sqlite:///{db}", ids, SECRET))
        server = start_server(free_port(), db, "--mqtt", url,
                              "--set", "delivery.retry_interval=1")  # fmt: skip
        try:
            out: mp.Queue[Any] = mp.get_context("spawn").Queue()
            proc = mp.get_context("spawn").Process(
                target=_generator,
                args=(url, args.pairs, args.window, args.seconds, out),
            )
            proc.start()
            result = out.get(timeout=args.seconds * 4 + 60)
            proc.join(30)
        finally:
            server.terminate()
            server.wait(15)
            broker.terminate()
            broker.wait(15)
    broker_alone, e2e = result["broker"], result["e2e"]
    print(f"MQTT QoS 1 through mosquitto, {args.pairs} pairs x window {args.window}, "
          f"{args.seconds:g} s per phase (generator in its own process)")  # fmt: skip
    for name, fig in (("mosquitto UE->UE (ceiling)", broker_alone),
                      ("msgin5g UE->server->UE", e2e)):  # fmt: skip
        print(f"  {name:28s} {fig['rate']:9,.0f} msgs/s   "
              f"p50 {fig['p50_ms']:7.2f} ms   p99 {fig['p99_ms']:7.2f} ms")  # fmt: skip
    if broker_alone["rate"]:
        print(f"  end to end / broker alone: {e2e['rate'] / broker_alone['rate']:.2f}")


if __name__ == "__main__":
    main()
