"""Benchmark: end-to-end UE -> server -> UE messaging through a running msgin5g server.

What it does (loopback only, bounded by --seconds and counts); the load is
``msgin5g bench`` (the package :mod:`msgin5g.bench`: raw-CoAP UEs, one UDP
socket each, in ``--workers`` uvloop processes apart from the server):

1. starts ``msgin5g serve`` as a subprocess on a private port with a fresh SQLite
   file (durable storage, ``synchronous=FULL`` group commit) and provisions the
   UEs with ``msgin5g bench provision`` (the ``ue import`` path);
2. **registrations/s**: ``bench reg`` over ``--reg-ues`` UEs (8 sockets, 8 REGs
   in flight each) and the server's RSS before and after, giving memory per
   registered UE;
3. **messages/s end to end**: ``bench p2p``: ``--ues`` UEs register and each
   sends ``MSG`` to the next UE in a closed loop (``--window`` outstanding CONs
   per UE, 1 as NSTART=1 allows). A message counts when the *recipient*
   received it; latency is recipient receive time minus sender send time.
   ``--rounds`` rounds; with ``--before SRC`` a second server from another
   tree (the code before issue 13, say) runs beside it and the rounds
   alternate between the two (the order flips every round): the ratio of the
   median rounds and each server's CPU per message;
4. **paced**: for each ``--rate R`` the same load offered at R msgs/s (p50/p99
   at a fixed load), ``--paced-rounds`` rounds (3): the median round by p99 and
   the spread of the rounds' p99;
5. runs the saturation load against a minimal relay built on aiocoap
   (``benchmarks/aiocoap_relay.py``) in the same invocation and prints the ratio.

The generator is ``msgin5g bench --engine c`` (coapgen, a fraction of the
server's CPU per message, so the server is the limit) when it builds here, else
the Python engine (``--engine`` chooses; the first line printed says which).

Run: ``.venv/bin/python benchmarks/p2p.py``. Not a test.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    SECRET,
    add_engine_option,
    alternating,
    bench,
    choose_engine,
    cpu_seconds,
    figures,
    free_port,
    provision_bench,
    provision_with_tree,
    rss_kib,
    serve,
    start_server,
)

__all__ = ["SECRET", "run_load"]


def run_load(
    port: int,
    ues: int,
    workers: int,
    seconds: float,
    *,
    prefix: str = "ue-",
    rate: float = 0.0,
    window: int = 1,
    store: bool = False,
    engine: str = "python",
) -> dict[str, Any]:
    """``bench p2p`` against ``port``; the figures the benchmarks print."""
    summary = bench(
        port,
        "p2p",
        ues,
        seconds,
        prefix=prefix,
        workers=workers,
        rate=rate,
        window=window,
        store=store,
        engine=engine,
    )
    return figures(summary)


def start_aiocoap(port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / "aiocoap_relay.py"), str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _saturation(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """The closed-loop load of this invocation against ``port``."""
    return run_load(
        port,
        args.ues,
        args.workers,
        args.seconds,
        window=args.window,
        store=args.store,
        engine=args.engine,
    )


def start_before(src: Path, tmp: Path, args: argparse.Namespace) -> tuple[Any, int]:
    """``msgin5g serve`` from the tree ``src`` (process, port), ready for load.

    Its SQLite file is provisioned by that tree's own code (an older server may
    not open a file a newer one created).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    env["PYTHONPATH"] = str(src.resolve())
    url = f"sqlite:///{tmp / 'before.db'}"
    pairs = [(f"ue-{i:05d}", SECRET) for i in range(1, args.ues + 1)]
    provision_with_tree(src, url, pairs)
    port = free_port()
    server, _ = serve(port, url, env=env)
    return server, port


def saturation_rounds(
    servers: dict[str, tuple[Any, int]], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """``--rounds`` closed-loop rounds per server, alternating (the order flips
    every round); per round a line with the server's CPU per message; returns
    each server's median round (by rate) with its median CPU per message."""
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for round_, name in alternating(list(servers), args.rounds):
        server, port = servers[name]
        cpu = cpu_seconds(server.pid)
        r = _saturation(port, args)
        r["server_us"] = (cpu_seconds(server.pid) - cpu) * 1e6 / max(1, r["received"])
        rows[name].append(r)
        print(_line(f"  round {round_ + 1} {name:7s}", r, args), flush=True)
    medians = {}
    for name, runs in rows.items():
        middle = sorted(runs, key=lambda r: r["msgs_per_s"])[len(runs) // 2]
        middle["server_us"] = statistics.median(r["server_us"] for r in runs)
        medians[name] = middle
    return medians


def paced_rounds(port: int, rate: float, args: argparse.Namespace) -> None:
    """``--paced-rounds`` rounds at ``rate``: a line each, then the median round
    by p99 and the spread (one round's p99 moves by 2x on a noisy machine)."""
    runs = []
    for round_ in range(args.paced_rounds):
        r = run_load(
            port,
            args.ues,
            args.workers,
            args.seconds,
            rate=rate,
            window=args.window,
            store=args.store,
            engine=args.engine,
        )
        runs.append(r)
        print(_line(f"  paced round {round_ + 1}", r, args), flush=True)
    ordered = sorted(runs, key=lambda r: r["p99_ms"])
    middle = ordered[len(ordered) // 2]
    spread = f"{ordered[0]['p99_ms']:.1f}-{ordered[-1]['p99_ms']:.1f}"
    print(
        _line(
            f"msgin5g  paced {rate:,.0f}/s (median of {len(runs)} by p99)", middle, args
        )
        + f"; p99 of the rounds {spread} ms"
    )


def _line(name: str, r: dict[str, Any], args: argparse.Namespace) -> str:
    behind = f" {r['behind']} paced sends behind," if r["behind"] else ""
    return (
        f"{name}: {r['msgs_per_s']:,.0f} msgs/s, p50 {r['p50_ms']:.1f} ms,"
        f" p99 {r['p99_ms']:.1f} ms ({r['received']} delivered in the window, "
        f"{r['sent']} sent, {r['accepted']} DELY_ACCEPTED, {r['lost']} lost,{behind}"
        f" {args.ues} UEs, {args.workers} generator process(es) busy up to "
        f"{r['cpu']:.0f} %, {r['generator_us']:.0f} µs generator CPU per message)"
    )


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
        "--reg-seconds", type=float, default=5.0, help="registration phase length"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="messaging phase length"
    )
    parser.add_argument("--baseline-seconds", type=float, default=5.0)
    parser.add_argument(
        "--workers", type=int, default=1, help="load generator processes"
    )
    parser.add_argument("--window", type=int, default=1, help="CONs in flight per UE")
    parser.add_argument(
        "--rate",
        type=float,
        action="append",
        default=[],
        help="also a paced run at this offered msgs/s (repeatable)",
    )
    parser.add_argument(
        "--paced-rounds",
        type=int,
        default=3,
        help="rounds per --rate (the median by p99 is reported, with the spread)",
    )
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="saturation rounds per server (alternating with --before's)",
    )
    add_engine_option(parser, "every load of the run (before, aiocoap relay)")
    parser.add_argument(
        "--store",
        action="store_true",
        help="every message asks for storage (storeAndForwardFlag): stored "
        "durably before its answer (the default load does not ask)",
    )
    parser.add_argument(
        "--before",
        metavar="SRC",
        help="also run the saturation load against a server from another source "
        "tree (its src/ directory; scripts/bench extracts the code before issue "
        "13 with git archive) and print the ratio",
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-bench-"))
    db = tmp / "bench.db"
    provision_bench(f"sqlite:///{db}", args.ues, "ue-")
    if args.reg_ues:
        provision_bench(f"sqlite:///{db}", args.reg_ues, "reg-")
    print(
        f"msgin5g p2p benchmark: {os.cpu_count()} cores, loopback, SQLite (FULL) at {db}"
    )
    args.engine = choose_engine(args.engine, args.workers)

    port = free_port()
    server = start_server(port, db)
    servers = {"msgin5g": (server, port)}
    try:
        if args.before:
            servers["before"] = start_before(Path(args.before), tmp, args)
        time.sleep(0.5)
        if args.reg_ues:
            rss0 = rss_kib(server.pid)
            regs = bench(
                port,
                "reg",
                args.reg_ues,
                args.reg_seconds,
                prefix="reg-",
                sockets=8,
                window=8,
                workers=args.workers,
                engine=args.engine,
            )
            rss1 = rss_kib(server.pid)
            registered = min(args.reg_ues, regs.received)
            per_ue = (rss1 - rss0) * 1024 / max(1, registered)
            print(
                f"registrations: {regs.rate:,.0f}/s (p99 {regs.p99_ms:.1f} ms, "
                f"{registered} UEs); server RSS {rss0 / 1024:.1f} -> "
                f"{rss1 / 1024:.1f} MiB = {per_ue:,.0f} B per registered UE"
            )
        print(f"saturation: {args.rounds} round(s) of {args.seconds:g} s per server")
        medians = saturation_rounds(servers, args)
        ours = medians["msgin5g"]
        print(_line("msgin5g  end-to-end (median round)", ours, args))
        if "before" in medians:
            before = medians["before"]
            print(_line("before   end-to-end (median round)", before, args))
            if before["msgs_per_s"]:
                print(
                    "ratio msgin5g / before: "
                    f"{ours['msgs_per_s'] / before['msgs_per_s']:.2f}x (median rounds), "
                    f"server CPU per message {before['server_us']:.0f} -> "
                    f"{ours['server_us']:.0f} µs"
                )
            stopping, _ = servers.pop("before")
            stopping.terminate()
            stopping.wait(20)
        for rate in args.rate:
            paced_rounds(port, rate, args)
        print(f"server RSS after load: {rss_kib(server.pid) / 1024:.1f} MiB")
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(20)
    if args.skip_baseline:
        return
    port = free_port()
    relay = start_aiocoap(port)
    try:
        base = run_load(
            port,
            args.ues,
            args.workers,
            args.baseline_seconds,
            window=args.window,
            engine=args.engine,
        )
    finally:
        relay.terminate()
        relay.wait(20)
    print(_line("aiocoap  end-to-end", base, args))
    if base["msgs_per_s"]:
        print(
            f"ratio msgin5g / aiocoap relay: {ours['msgs_per_s'] / base['msgs_per_s']:.1f}x"
        )


if __name__ == "__main__":
    main()
