"""Probe: is a legitimate REG answered while 1,000 source ports flood the server?

What it does (loopback only, bounded by ``--seconds``):

1. starts ``msgin5g serve`` in its own process (uvloop, SQLite in a temp dir,
   INFO log written to a file) and provisions one UE for the prober;
2. starts ``--attackers`` processes that send, as fast as they can for
   ``--seconds``, from ``--ports`` source ports (all on 127.0.0.1) a mix of
   hostile datagrams: random bytes, truncated CoAP, bogus ``REG`` for unknown
   UEs, ``REG`` with a wrong credential, deeply nested JSON, huge integers;
3. the prober (this process) sends a valid ``REG`` from a *fresh* port every
   ``--interval`` seconds, retransmitting like a CoAP client (1 s, then 2 s;
   5 s in all), and records whether and how fast it was answered.

Prints: probes answered / sent, probe latency p50/p99, datagrams the attackers
sent, server peak RSS (VmHWM), log bytes written, and the server's own
``dropped`` counter when it has one. ``--src`` selects the source tree the
server runs from (to compare a baseline checkout). Not a test.

Run: ``.venv/bin/python benchmarks/flood_probe.py [--seconds 30] [--ports 1000]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, free_port, provision, reg_body

SECRET = "probe-secret"
PROBE_UE = "probe-ue"
CF_JSON = bytes((0x11, 50))  # Content-Format (12 = 11 + delta 1) = 50


def _coap_post(mid: int, payload: bytes, token: bytes = b"pr") -> bytes:
    """A CON POST /msgin5g with Content-Format 50 (hand-encoded, no imports)."""
    header = bytes((0x40 | len(token), 0x02, mid >> 8, mid & 0xFF)) + token
    return header + bytes((0xB7,)) + b"msgin5g" + CF_JSON + b"\xff" + payload


def _hostile_datagrams(rng: random.Random) -> list[bytes]:
    bogus_reg = json.dumps(
        {
            "messageType": "REG",
            "ueServiceId": "nobody-%d",
            "ueCredentialInfo": {"authType": "PSK_TOKEN", "credential": "AAAA"},
        }
    ).encode()
    wrong_secret = reg_body(PROBE_UE, "not-the-secret")
    deep = b'{"messageType":"REG","x":' + b"[" * 1500 + b"]" * 1500 + b"}"
    huge = (
        b'{"messageType":"REG","ueServiceId":"u","ueCredentialInfo":'
        b'{"authType":"X"},"waitTime":' + b"9" * 40 + b"}"
    )
    out: list[bytes] = []
    for i in range(512):
        kind = i % 6
        mid = rng.getrandbits(16)
        if kind == 0:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 60))))
        elif kind == 1:
            full = _coap_post(mid, bogus_reg)
            out.append(full[: rng.randrange(1, len(full))])
        elif kind == 2:
            out.append(_coap_post(mid, bogus_reg.replace(b"%d", b"%d" % i)))
        elif kind == 3:
            out.append(_coap_post(mid, wrong_secret))
        elif kind == 4:
            out.append(_coap_post(mid, deep))
        else:
            out.append(_coap_post(mid, huge))
    return out


def _attacker(port: int, ports: int, seconds: float, seed: int, out: Any) -> None:
    rng = random.Random(seed)
    datagrams = _hostile_datagrams(rng)
    socks = []
    for _ in range(ports):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        socks.append(sock)
    target = ("127.0.0.1", port)
    sent = 0
    end = time.monotonic() + seconds
    n_socks, n_data = len(socks), len(datagrams)
    i = 0
    while True:
        for _ in range(1000):
            try:
                socks[i % n_socks].sendto(datagrams[i % n_data], target)
                sent += 1
            except OSError:
                pass
            i += 1
        if time.monotonic() >= end:
            break
    for sock in socks:
        sock.close()
    out.put(sent)


async def _probe_once(port: int, mid: int) -> float | None:
    """Send one REG from a fresh port; the latency, or None if unanswered."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    data = _coap_post(mid, reg_body(PROBE_UE, SECRET), token=b"ok")
    start = time.perf_counter()
    try:
        for wait in (1.0, 2.0, 2.0):
            sock.sendto(data, ("127.0.0.1", port))
            try:
                async with asyncio.timeout(wait):
                    while True:
                        reply = await loop.sock_recv(sock, 4096)
                        if len(reply) >= 4 and reply[2:4] == data[2:4]:
                            code = reply[1]
                            if code in (0x41, 0x44):  # 2.01 / 2.04
                                return time.perf_counter() - start
                            return None
            except TimeoutError:
                continue
        return None
    finally:
        sock.close()


async def _prober(port: int, seconds: float, interval: float) -> list[float | None]:
    results: list[asyncio.Task[float | None]] = []
    end = time.monotonic() + seconds
    mid = 1
    while time.monotonic() < end:
        results.append(asyncio.create_task(_probe_once(port, mid)))
        mid += 1
        await asyncio.sleep(interval)
    return list(await asyncio.gather(*results))


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start_server(
    src: Path, port: int, db: Path, log_file: Path, settings: list[str]
) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(src))
    log = log_file.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "msgin5g",
            "--log-level",
            "INFO",
            "serve",
            "--coap",
            f"127.0.0.1:{port}",
            "--storage",
            f"sqlite:///{db}",
            "--set",
            "rest.enabled=false",
            *(arg for item in settings for arg in ("--set", item)),
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert b"serving" in line, line
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="flood length")
    parser.add_argument("--ports", type=int, default=1000, help="attacker ports")
    parser.add_argument("--attackers", type=int, default=1, help="processes")
    parser.add_argument("--interval", type=float, default=1.0, help="between probes")
    parser.add_argument(
        "--src", type=Path, default=ROOT / "src", help="source tree of the server"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="server setting, e.g. coap.source_rate=1 (repeatable)",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-flood-"))
    db = tmp / "flood.db"
    log_file = tmp / "server.log"
    asyncio.run(provision(f"sqlite:///{db}", [PROBE_UE], SECRET))
    port = free_port()
    server = _start_server(args.src.resolve(), port, db, log_file, args.set)
    print(
        f"flood probe: {os.cpu_count()} cores, server from {args.src}, "
        f"{args.attackers} attacker process(es) x {args.ports // args.attackers} "
        f"ports, {args.seconds:.0f} s"
    )
    try:
        time.sleep(0.3)
        log_before = log_file.stat().st_size
        quiet = asyncio.run(_prober(port, 3.0, 1.0))
        ctx = mp.get_context("fork")
        queue: Any = ctx.Queue()
        attackers = [
            ctx.Process(
                target=_attacker,
                args=(port, args.ports // args.attackers, args.seconds, n, queue),
            )
            for n in range(args.attackers)
        ]
        for proc in attackers:
            proc.start()
        time.sleep(0.5)  # let the flood build up
        probes = asyncio.run(_prober(port, args.seconds - 1.0, args.interval))
        sent = sum(queue.get(timeout=args.seconds + 60) for _ in attackers)
        for proc in attackers:
            proc.join(10)
        time.sleep(1.0)
        after = asyncio.run(_prober(port, 3.0, 1.0))
        rss = _peak_rss_mib(server.pid)
        log_bytes = log_file.stat().st_size - log_before
    finally:
        server.terminate()
        server.wait(20)
    answered = sorted(p for p in probes if p is not None)
    print(f"baseline before the flood: {sum(p is not None for p in quiet)}/3 answered")
    print(
        f"attackers sent {sent:,} datagrams = {sent / args.seconds:,.0f}/s "
        f"from {args.ports} ports"
    )
    print(f"probes answered during the flood: {len(answered)}/{len(probes)}")
    if answered:
        p99 = answered[min(len(answered) - 1, int(len(answered) * 0.99))]
        print(
            f"probe latency p50 {statistics.median(answered) * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms"
        )
    print(f"after the flood: {sum(p is not None for p in after)}/3 answered")
    print(
        f"server peak RSS {rss:.1f} MiB; log written during the flood: {log_bytes:,} B"
    )
    dropped = [
        line
        for line in log_file.read_text(errors="replace").splitlines()
        if "rate limit" in line
    ]
    if dropped:
        print(f"last drop report: {dropped[-1][-160:]}")


if __name__ == "__main__":
    main()
