"""Benchmark: provisioning N UEs, memory per registered idle UE, registrations/s.

Loopback only, bounded by ``--ues`` (default 1,000,000) and ``--reg-ues``.
What one run does:

1. **provisioning**: writes ``--ues`` UEs (plus a gateway) as a CSV
   ``ueServiceId,secret`` and imports it with ``msgin5g ue import`` into a fresh
   SQLite file (a real CLI process): wall time;
2. starts ``msgin5g serve`` in its own process (``coap.max_payload`` 60,000 so
   a ``BULKREG`` of ~500 entries fits one datagram; durable, ``synchronous``
   FULL, group commit) on ``--src`` (default: this tree's ``src``) and, with
   ``--before SRC``, a second server on another tree's ``src`` (its own file,
   provisioned by its own code), for a before/after ratio in the same run;
3. **registrations/s**: ``--rounds`` rounds of ``msgin5g bench reg`` (the C
   engine when it builds here, ``--engine``: its generator costs a fraction of
   the server's CPU per REG) of ``--reg-seconds`` each, alternating between the
   servers (the order flips every round); each round registers a fresh set of
   ``--reg-ues`` UEs (prefix ``f<round>-``), a single ``REG`` each (PSK_TOKEN
   checked, registration written durably before REGRESP), over ``--sockets``
   sockets with ``--window / --sockets`` REGs in flight each (``--window`` may
   list several totals: rounds for each); per round the rate,
   p50/p99 and the server's CPU per REG, then the medians and their ratio.
   Then ``--bench-seconds`` of REGs of UEs registering again and again
   (``--reg-ues`` UEs, prefix ``breg-``) on this tree's server;
4. **memory**: a Gateway UE registers every UE with ``BULKREG`` (a UDP source
   address is one UE; 1 M UEs cannot each have a socket here, so they register
   through one gateway, as constrained UEs would); the server's RSS is sampled
   at 100k, 250k, 500k and 1M registered UEs (those up to ``--ues``), after a
   2 s idle pause, and printed as bytes per UE registered by the gateway above
   the baseline RSS, on a fresh server process of this tree with its own file
   (the UEs and the gateway, imported in step 1) started after the REG servers
   were stopped: a server that did the REG rounds holds freed memory that new
   registrations re-use (it read 23 B per UE).

Run: ``.venv/bin/python benchmarks/registrations.py [--ues 1000000]``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    SECRET,
    add_engine_option,
    alternating,
    bench,
    choose_engine,
    cpu_seconds,
    free_port,
    provision_bench,
    provision_with_tree,
    rss_kib,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from msgin5g.coap.endpoint import Endpoint, use_uvloop  # noqa: E402
from msgin5g.coap.message import CoapMessage, encode_uint  # noqa: E402
from msgin5g.coap.numbers import Code, OptionNumber, Type  # noqa: E402
from msgin5g.codec.ue_payload import decode_response, encode  # noqa: E402
from msgin5g.model.credentials import psk_token  # noqa: E402
from msgin5g.model.messages import (  # noqa: E402
    BulkReg,
    BulkRegResp,
    Reg,
    UECredentialInfo,
)

OPTIONS = [
    (OptionNumber.URI_PATH, b"msgin5g"),
    (OptionNumber.CONTENT_FORMAT, encode_uint(50)),
]
MAX_PAYLOAD = 60_000
PER_BULK = 380  # ~150 octets per entry: one BULKREG stays under MAX_PAYLOAD


def secret(ue: str) -> str:
    return f"s-{ue}"


def info(ue: str) -> UECredentialInfo:
    return UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token(secret(ue), ue))


def provision(db: Path, ues: list[str], tmp: Path, src: Path) -> float:
    """``msgin5g ue import`` of a generated CSV; returns the wall time."""
    csv = tmp / "ues.csv"
    with csv.open("w") as out:
        out.write("ueServiceId,secret\n")
        out.writelines(f"{ue},{secret(ue)}\n" for ue in ues)
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "msgin5g",
            "ue",
            "import",
            str(csv),
            "--storage",
            f"sqlite:///{db}",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-2000:]
    print(f"  {result.stderr.strip().splitlines()[-1]}")
    return elapsed


def start_server(port: int, db: Path, src: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "msgin5g",
            "serve",
            "--coap",
            f"127.0.0.1:{port}",
            "--storage",
            f"sqlite:///{db}",
            "--set",
            "rest.enabled=false",
            "--set",
            f"coap.max_payload={MAX_PAYLOAD}",
            "--set",
            "log.level=WARNING",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving" in line, line
    return proc


async def bulk_curve(
    port: int, pid: int, ues: list[str], checkpoints: list[int]
) -> list[tuple[int, float, float]]:
    """Register ``ues`` via one gateway; RSS (KiB) at each checkpoint."""
    peer = ("127.0.0.1", port)
    endpoint = await Endpoint.create(("127.0.0.1", 0))
    gw = Reg(ue_service_id="gw", ue_credential_info=info("gw"))
    message = CoapMessage(Type.CON, Code.POST, options=OPTIONS, payload=encode(gw))
    response = await endpoint.request(message, peer)
    assert response.code in (Code.CREATED, Code.CHANGED)
    await asyncio.sleep(1.0)
    base = rss_kib(pid)
    curve = [(0, base / 1024, 0.0)]
    print(f"          0 more      RSS {base / 1024:8.1f} MiB  (baseline)", flush=True)
    gw_info = info("gw")
    done = 0
    start = time.perf_counter()
    for offset in range(0, len(ues), PER_BULK):
        entries = [
            Reg(ue_service_id=ue, ue_credential_info=info(ue))
            for ue in ues[offset : offset + PER_BULK]
        ]
        body = BulkReg(
            ue_service_id="gw",
            ue_credential_info=gw_info,
            num_of_reg_requests=len(entries),
            reg_requests=entries,
        )
        message = CoapMessage(
            Type.CON, Code.POST, options=OPTIONS, payload=encode(body)
        )
        response = await endpoint.request(message, peer)
        answer = decode_response(response.payload)
        assert isinstance(answer, BulkRegResp), response.payload[:200]
        ok = sum(r.registration_result == "SUCCESS" for r in answer.reg_responses)
        assert ok == len(entries), answer.reg_responses[:3]
        done += len(entries)
        if checkpoints and done >= checkpoints[0]:
            checkpoints.pop(0)
            await asyncio.sleep(2.0)  # idle: let the server settle
            rss = rss_kib(pid)
            per_ue = (rss - base) * 1024 / done
            curve.append((done, rss / 1024, per_ue))
            rate = done / (time.perf_counter() - start)
            print(
                f"  {done:>9,} registered  RSS {rss / 1024:8.1f} MiB  "
                f"{per_ue:6.0f} B/UE  ({rate:,.0f} bulk reg/s so far)",
                flush=True,
            )
    await endpoint.aclose()
    return curve


async def run(args: argparse.Namespace) -> None:
    ues = [f"u{i:07d}" for i in range(args.ues)]
    trees = [("after", args.src)] + ([("before", args.before)] if args.before else [])
    prefixes = [
        f"f{window}-{round_}-"
        for window in args.window
        for round_ in range(args.rounds)
    ]
    with tempfile.TemporaryDirectory(prefix="msgin5g-reg-") as name:
        tmp = Path(name)
        servers: dict[str, tuple[subprocess.Popen[str], int]] = {}
        try:
            memory_db = tmp / "memory.db"
            provision_tree(memory_db, args.src, ["gw", *ues], tmp)
            for label, src in trees:
                db = tmp / f"{label}.db"
                provision_reg_sets(db, src, [*prefixes, _BENCH_PREFIX], args.reg_ues)
                port = free_port()
                servers[label] = (start_server(port, db, src), port)
            engine = choose_engine(args.engine, 1)
            for i, window in enumerate(args.window):
                mine = prefixes[i * args.rounds : (i + 1) * args.rounds]
                await asyncio.to_thread(
                    fresh_rounds, servers, mine, window, engine, args
                )
            port, pid = servers["after"][1], servers["after"][0].pid
            if args.bench_seconds:
                await asyncio.to_thread(bench_reg, port, pid, engine, args)
            # the memory curve runs alone, on a server that did nothing else: after
            # the REG rounds the heap holds freed memory that new registrations
            # would re-use, and the curve would read a few bytes per UE
            for server, _ in servers.values():
                stop(server)
            servers = {}
            if args.ues:
                port = free_port()
                servers["memory"] = (start_server(port, memory_db, args.src), port)
                pid = servers["memory"][0].pid
                await asyncio.sleep(1.0)
                marks = [
                    m for m in (100_000, 250_000, 500_000, 1_000_000) if m <= args.ues
                ]
                marks = marks or [args.ues]
                print(
                    f"memory per registered idle UE (BULKREG x {PER_BULK} via one gateway):"
                )
                await bulk_curve(port, pid, ues, marks)
        finally:
            for server, _ in servers.values():
                stop(server)


def stop(server: subprocess.Popen[str]) -> None:
    server.terminate()
    server.wait(timeout=60)


def provision_tree(db: Path, src: Path, ues: list[str], tmp: Path) -> None:
    """The memory curve's UEs (each its own secret) into ``db``, by ``src``'s code:
    ``msgin5g ue import`` for this tree (timed, printed), else the storage API
    (a server from an older tree may refuse a file a newer tree created)."""
    if not ues:
        return
    if src == (ROOT / "src").resolve():
        elapsed = provision(db, ues, tmp, ROOT / "src")
        print(
            f"provisioning: {len(ues):,} UEs with msgin5g ue import in "
            f"{elapsed:.1f} s ({len(ues) / elapsed:,.0f}/s)"
        )
    else:
        provision_with_tree(src, f"sqlite:///{db}", [(ue, secret(ue)) for ue in ues])


def provision_reg_sets(db: Path, src: Path, prefixes: list[str], count: int) -> None:
    """``count`` bench UEs (the bench secret) per prefix into ``db``."""
    if src == (ROOT / "src").resolve():
        for prefix in prefixes:
            provision_bench(f"sqlite:///{db}", count, prefix)
        return
    pairs = [
        (f"{prefix}{i:05d}", SECRET) for prefix in prefixes for i in range(1, count + 1)
    ]
    provision_with_tree(src, f"sqlite:///{db}", pairs)


def fresh_rounds(
    servers: dict[str, tuple[subprocess.Popen[str], int]],
    prefixes: list[str],
    outstanding: int,
    engine: str,
    args: argparse.Namespace,
) -> None:
    """Fresh single REGs, ``outstanding`` in flight over all sockets, rounds
    alternating between the servers; prints the medians and, with two
    servers, their ratio."""
    window = max(1, outstanding // args.sockets)
    rates: dict[str, list[float]] = {label: [] for label in servers}
    cpus: dict[str, list[float]] = {label: [] for label in servers}
    print(
        f"single REG of fresh UEs (PSK check, durable): {args.rounds} rounds x "
        f"{args.reg_seconds:g} s per server, {args.reg_ues:,} fresh UEs a round, "
        f"{args.sockets} sockets x {window} in flight, {engine} engine"
    )
    for round_, label in alternating(list(servers), len(prefixes)):
        prefix = prefixes[round_]
        server, port = servers[label]
        cpu = cpu_seconds(server.pid)
        summary = bench(
            port,
            "reg",
            args.reg_ues,
            args.reg_seconds,
            prefix=prefix,
            sockets=args.sockets,
            window=window,
            engine=engine,
            warmup=0.5,
            run_id=f"{label}{round_}",
        )
        per_reg = (cpu_seconds(server.pid) - cpu) * 1e6 / max(1, summary.received)
        rates[label].append(summary.rate)
        cpus[label].append(per_reg)
        used = summary.sent * (1 + 0.5 / args.reg_seconds) + args.sockets
        again = (
            " (some UEs registered twice: raise --reg-ues)"
            if used > args.reg_ues
            else ""
        )
        print(
            f"  round {round_ + 1} {label:6s} {summary.rate:9,.0f}/s  p50 "
            f"{summary.p50_ms:5.1f} ms  p99 {summary.p99_ms:5.1f} ms  lost "
            f"{summary.lost}  server CPU {per_reg:4.0f} µs per REG (whole run)"
            f"{again}",
            flush=True,
        )
    medians = {label: statistics.median(values) for label, values in rates.items()}
    for label in servers:
        print(
            f"  {label:6s} median {medians[label]:,.0f}/s, best "
            f"{max(rates[label]):,.0f}/s, server CPU "
            f"{statistics.median(cpus[label]):.0f} µs per REG"
        )
    if medians.get("before"):
        print(
            f"  ratio of medians after/before: "
            f"{medians['after'] / medians['before']:.2f}x"
        )


_BENCH_PREFIX = "breg-"


def bench_reg(port: int, pid: int, engine: str, args: argparse.Namespace) -> None:
    """REGs of UEs registering again and again through ``msgin5g bench reg``
    (its generator processes fork from this thread, outside the event loop);
    prints one line."""
    window = max(1, args.window[-1] // args.sockets)
    cpu = cpu_seconds(pid)
    summary = bench(
        port,
        "reg",
        args.reg_ues,
        args.bench_seconds,
        prefix=_BENCH_PREFIX,
        sockets=args.sockets,
        window=window,
        engine=engine,
    )
    cpu = cpu_seconds(pid) - cpu
    print(
        f"single REG via msgin5g bench reg ({engine} engine, {args.sockets} sockets "
        f"x {window} in flight, {args.reg_ues:,} UEs re-registering): "
        f"{summary.rate:,.0f}/s, p50 {summary.p50_ms:.1f} ms, p99 "
        f"{summary.p99_ms:.1f} ms, {summary.lost} lost; generator "
        f"{summary.generator_us_per_unit:,.0f} µs CPU per REG; server CPU "
        f"{cpu * 1e6 / max(1, summary.received):,.0f} µs per REG (whole run)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ues", type=int, default=1_000_000, help="UEs for the RSS curve"
    )
    parser.add_argument("--reg-ues", type=int, default=20_000, help="UEs per REG round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sockets", type=int, default=64)
    parser.add_argument(
        "--window",
        type=int,
        nargs="+",
        default=[1024],
        help="REGs in flight over all sockets; several values: rounds for each",
    )
    parser.add_argument("--src", default=str(ROOT / "src"), help="server source tree")
    parser.add_argument(
        "--before",
        help="another tree's src: a second server, REG rounds alternating, ratio",
    )
    parser.add_argument(
        "--reg-seconds", type=float, default=3.0, help="window of each REG round"
    )
    parser.add_argument(
        "--bench-seconds",
        type=float,
        default=5.0,
        help="window of the msgin5g bench reg row (0: skip it)",
    )
    add_engine_option(parser, "the REG rounds")
    args = parser.parse_args()
    args.src = Path(args.src).resolve()
    args.before = Path(args.before).resolve() if args.before else None
    use_uvloop()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
