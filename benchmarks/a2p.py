"""Benchmark: Application-to-Point through the REST API into CoAP delivery.

Processes besides this coordinator, loopback only, bounded by --seconds:

1. the **server**: ``msgin5g serve`` (fresh SQLite file, durable group commit,
   HTTP on a private port), optionally under cProfile (``--profile FILE``);
2. the **generator**: ``msgin5g bench a2p`` (the package :mod:`msgin5g.bench`)
   in ``--workers`` processes: each registers its share of ``--ues`` UEs (one
   UDP socket each, acknowledging the server's CON POSTs) and keeps
   ``--concurrency`` ``deliver-as-message`` requests in flight in a closed loop,
   a fresh ``msgId`` each, round-robin over the UEs: HTTP/1.1 keep-alive on
   that many connections, then h2c (prior knowledge, one connection, that many
   streams). A message counts when its UE *received* it; its latency is receipt
   minus the time the POST was written (``time.perf_counter`` is
   CLOCK_MONOTONIC, one clock for all processes on Linux). The generator reports
   its own CPU: near 100 % of a core it would be the limit.

``h2load`` (Debian ``nghttp2-client``) cannot vary the body, so every request
after the first is a duplicate ``msgId`` answered from the duplicate cache: with
``--h2load`` its figure is printed as the ceiling of the HTTP stack + validation
+ duplicate check (no storage, no delivery), a check that the Python generator
is not the limit.

Reported per mode: messages delivered to UEs per second, end-to-end p50/p99, the
HTTP answer p99, refusals (429/503 with Retry-After under overload), generator
CPU, server and generator CPU per delivered message. Run:
``.venv/bin/python benchmarks/a2p.py [--store]``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, SECRET, free_port, provision_bench

PATH = "/msgs-msgdelivery/v1/deliver-as-message"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_http(port: int) -> None:
    for _ in range(400):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def h2load(port: int, args: argparse.Namespace, tmp: Path) -> str:
    """h2load's figure for one duplicate body (HTTP stack ceiling)."""
    body = tmp / "body.json"
    body.write_text(
        json.dumps(
            {
                "oriAddr": {"addrType": "AS", "addr": "bench-as"},
                "destAddr": {"addrType": "UE", "addr": "ue-00001"},
                "msgId": "dup-1",
                "payload": "ZHVw",
                "stoAndFwInd": args.store,
            }
        )
    )
    out = []
    for flag, label in (("--h1", "http/1.1"), ("", "h2c")):
        cmd = [
            "h2load",
            *([flag] if flag else []),
            "-D",
            str(int(args.seconds)),
            "-c",
            str(max(args.concurrency) if flag else 1),
            "-m",
            "1" if flag else str(max(args.concurrency)),
            "-d",
            str(body),
            "-H",
            "content-type: application/json",
            f"http://127.0.0.1:{port}{PATH}",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next(
            (x for x in res.stdout.splitlines() if x.startswith("finished in")), "?"
        )
        status = next(
            (x for x in res.stdout.splitlines() if x.startswith("status codes")), ""
        )
        out.append(f"  h2load {label:8} duplicates: {line.strip()} [{status.strip()}]")
    return "\n".join(out)


def start_server(
    args: argparse.Namespace, url: str, coap: int, http: int
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    env["PYTHONPATH"] = args.src or str(ROOT / "src")
    prof = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    extra = [x for s in args.set for x in ("--set", s)]
    return subprocess.Popen(
        [
            sys.executable,
            *prof,
            "-m",
            "msgin5g",
            "--log-level",
            "WARNING",
            "serve",
            "--storage",
            url,
            "--coap",
            f"127.0.0.1:{coap}",
            "--http",
            f"127.0.0.1:{http}",
            "--set",
            f"rest.server={args.server}",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )


def main(args: argparse.Namespace) -> None:
    from msgin5g.bench import BenchOptions, run

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-a2p-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    provision_bench(url, args.ues, "ue-")
    http_port, coap_port = free_port(socket.SOCK_STREAM), free_port()
    server = start_server(args, url, coap_port, http_port)
    try:
        wait_http(http_port)
        print(
            f"A2P through REST into CoAP ({args.server}, {args.ues} UEs, "
            f"{'/'.join(map(str, args.concurrency))} requests in flight per "
            "generator process, "
            f"stoAndFwInd={args.store}, durable SQLite; generator and UEs in "
            f"{args.workers} process(es) of msgin5g bench)",
            flush=True,
        )
        for mode, concurrency in [(m, c) for m in args.modes for c in args.concurrency]:
            cpu0 = cpu_seconds(server.pid)
            summary = run(
                BenchOptions(
                    mode="a2p",
                    server=f"coap://127.0.0.1:{coap_port}",
                    http=f"http://127.0.0.1:{http_port}",
                    ues=args.ues,
                    secret=SECRET,
                    prefix="ue-",
                    duration=args.seconds,
                    workers=args.workers,
                    connections=concurrency,
                    h2c=mode == "h2c",
                    store=args.store,
                )
            )
            server_cpu = cpu_seconds(server.pid) - cpu0
            print(
                f"  {mode:8} {concurrency:4d} in flight {summary.rate:7.0f} msgs/s "
                "delivered  "
                f"e2e p50 {summary.p50_ms:6.1f} ms p99 {summary.p99_ms:6.1f} ms  "
                f"HTTP ack p99 {summary.answer_p99_ms:6.1f} ms  "
                f"({summary.received} delivered, {summary.sent} sent, refused "
                f"{summary.refused}, lost {summary.lost}, generator CPU "
                f"{summary.generator_cpu_pct:.0f} %)",
                flush=True,
            )
            if summary.received:
                generator_cpu = (
                    summary.generator_cpu_pct
                    / 100
                    * summary.duration_s
                    * summary.workers
                )
                print(
                    f"            CPU per delivered message: server "
                    f"{1e6 * server_cpu / summary.received:.0f} us (warm-up and "
                    f"drain included), generator with UEs <= "
                    f"{1e6 * generator_cpu / summary.received:.0f} us",
                    flush=True,
                )
        if args.h2load and shutil.which("h2load"):
            print(h2load(http_port, args, tmp), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ues", type=int, default=50)
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[32, 64],
        help="requests in flight per generator process; several values: one row "
        "each (default 32 64)",
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=1, help="generator processes")
    parser.add_argument("--server", default="granian", choices=["granian", "hypercorn"])
    parser.add_argument("--store", action="store_true", help="stoAndFwInd true")
    parser.add_argument("--modes", nargs="+", default=["http/1.1", "h2c"])
    parser.add_argument("--h2load", action="store_true", help="also run h2load")
    parser.add_argument("--profile", help="run the server under cProfile to FILE")
    parser.add_argument("--set", action="append", default=[], help="server --set")
    parser.add_argument("--src", help="source tree the server runs (before/after)")
    main(parser.parse_args())
