"""Probe: slow-header connections (slowloris) against the REST port (issue 10 item 13).

What it does (loopback only, bounded by --seconds and --connections):

1. starts ``msgin5g serve`` as a subprocess (fresh SQLite file, HTTP on a private
   port, ``--set rest.header_timeout=…`` / ``rest.max_connections=…``);
2. starts the attacker in a separate process: ``--connections`` TCP connections
   from 127.0.0.1, each sending an unfinished request head and then one header
   line every ``--drip`` seconds, reopening a connection as soon as the server
   closes it (so it tries to hold its slots for the whole run);
3. meanwhile this process sends a legitimate request (``GET /openapi.json``,
   new connection, 3 s timeout) every 0.25 s and counts the answers.

Prints: legitimate probes answered / sent during the attack (and their p50 /
max latency), how many slow connections the server closed and how long they
had lived (the header timeout at work), and how many the attacker held open.
Run: ``.venv/bin/python benchmarks/slowloris_probe.py [--header-timeout 30]``.
Not a test (never collected by pytest).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from common import free_port

ROOT = Path(__file__).resolve().parents[1]
HEAD = b"POST /msgs-asregistration/v1/registrations HTTP/1.1\r\nHost: victim\r\n"


async def _attack(
    port: int,
    connections: int,
    drip: float,
    seconds: float,
    report: Callable[[dict[str, object]], None],
) -> None:
    """Hold ``connections`` slow-header connections for ``seconds``."""
    deadline = time.monotonic() + seconds
    lifetimes: list[float] = []
    open_now = 0
    refused = 0

    async def one() -> None:
        nonlocal open_now, refused
        while time.monotonic() < deadline:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                refused += 1
                await asyncio.sleep(0.5)
                continue
            born = time.monotonic()
            open_now += 1
            try:
                writer.write(HEAD)
                await writer.drain()
                while time.monotonic() < deadline:
                    try:
                        data = await asyncio.wait_for(reader.read(1024), drip)
                    except TimeoutError:
                        writer.write(b"X-Slow: 1\r\n")
                        await writer.drain()
                        continue
                    if not data:
                        break  # closed by the server
                else:
                    return  # still open at the end: the server never closed it
                lifetimes.append(time.monotonic() - born)
            except OSError:
                lifetimes.append(time.monotonic() - born)
            finally:
                open_now -= 1
                writer.close()

    tasks = [asyncio.create_task(one()) for _ in range(connections)]
    await asyncio.sleep(min(3.0, seconds / 4))
    report({"connected": open_now})
    held: list[int] = []
    while time.monotonic() < deadline - 0.5:
        held.append(open_now)
        await asyncio.sleep(0.5)
    await asyncio.gather(*tasks, return_exceptions=True)
    report(
        {
            "closed_by_server": len(lifetimes),
            "lifetime_p50": statistics.median(lifetimes) if lifetimes else None,
            "lifetime_max": max(lifetimes) if lifetimes else None,
            "held_median": statistics.median(held) if held else 0,
            "connect_refused": refused,
        }
    )


def legit(port: int) -> float | None:
    """One legitimate request on a new connection: seconds, or None on failure."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.settimeout(3)
            sock.sendall(
                b"GET /openapi.json HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
            )
            data = sock.recv(64)
    except OSError:
        return None
    return time.monotonic() - start if data.startswith(b"HTTP/1.1 200") else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=1100)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--drip", type=float, default=2.0)
    parser.add_argument("--header-timeout", type=float, default=None)
    parser.add_argument("--max-connections", type=int, default=None)
    parser.add_argument("--server", choices=["granian", "hypercorn"], default="granian")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-slowloris-"))
    port = free_port(socket.SOCK_STREAM)
    settings = ["--set", f"rest.server={args.server}", "--set", "log.level=ERROR"]
    if args.header_timeout is not None:
        settings += ["--set", f"rest.header_timeout={args.header_timeout}"]
    if args.max_connections is not None:
        settings += ["--set", f"rest.max_connections={args.max_connections}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "msgin5g",
            "serve",
            "--storage",
            f"sqlite:///{tmp / 'probe.db'}",
            "--coap",
            f"127.0.0.1:{free_port()}",
            "--http",
            f"127.0.0.1:{port}",
            *settings,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    try:
        for _ in range(200):
            if legit(port) is not None:
                break
            time.sleep(0.1)
        else:
            print("server did not start", file=sys.stderr)
            return 1
        reader, writer = multiprocessing.Pipe(duplex=False)
        proc = multiprocessing.Process(
            target=_run_attacker,
            args=(writer, port, args.connections, args.drip, args.seconds),
        )
        proc.start()
        connected = json.loads(reader.recv())
        sent, answered = 0, []
        end = time.monotonic() + args.seconds - 5
        while time.monotonic() < end:
            sent += 1
            took = legit(port)
            if took is not None:
                answered.append(took)
            time.sleep(0.25)
        summary = json.loads(reader.recv())
        proc.join(30)
        print(
            f"slowloris probe ({args.server}, header_timeout="
            f"{args.header_timeout or 'default'}, max_connections="
            f"{args.max_connections or 'default'}): {args.connections} slow-header "
            f"connections from 127.0.0.1, {connected['connected']} open after 3 s"
        )
        print(
            f"  legitimate requests answered during the attack: {len(answered)}/{sent}"
            + (
                f" (p50 {statistics.median(answered) * 1000:.1f} ms, "
                f"max {max(answered) * 1000:.1f} ms)"
                if answered
                else ""
            )
        )
        life = summary["lifetime_p50"]
        print(
            f"  slow connections closed by the server: {summary['closed_by_server']}"
            + (
                f" after p50 {life:.1f} s (max {summary['lifetime_max']:.1f} s)"
                if life is not None
                else ""
            )
            + f"; median held open by the attacker: {summary['held_median']}"
            + f"; connects refused: {summary['connect_refused']}"
        )
    finally:
        server.terminate()
        server.wait(10)
    return 0


def _run_attacker(
    pipe: Connection, port: int, connections: int, drip: float, seconds: float
) -> None:
    """The attacker process: reports go back through ``pipe`` as JSON text."""
    asyncio.run(
        _attack(port, connections, drip, seconds, lambda d: pipe.send(json.dumps(d)))
    )


if __name__ == "__main__":
    sys.exit(main())
