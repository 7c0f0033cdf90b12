"""Benchmark: provisioning N UEs, memory per registered idle UE, registrations/s.

Loopback only, bounded by ``--ues`` (default 1,000,000) and ``--reg-ues``.
What one run does:

1. **provisioning**: writes ``--ues`` UEs (plus a gateway) as a CSV
   ``ueServiceId,secret`` and imports it with ``msgin5g ue import`` into a fresh
   SQLite file (a real CLI process): wall time;
2. starts ``msgin5g serve`` in its own process (``coap.max_payload`` 60,000 so
   a ``BULKREG`` of ~500 entries fits one datagram; durable, ``synchronous``
   FULL, group commit) on ``--src`` (default: this tree's ``src``; pass another
   tree's ``src`` for a before/after comparison in the same run);
3. **registrations/s**: ``--reg-ues`` UEs register with a single ``REG`` each
   (PSK_TOKEN checked, registration written durably) from this process (the
   generator), over ``--sockets`` sockets with ``--window`` outstanding CONs;
   ``--rounds`` rounds, each round a fresh set of UEs, the best and median
   printed; then ``--bench-seconds`` of the same load through ``msgin5g bench
   reg`` (``--reg-ues`` bench UEs registering again and again over
   ``--sockets`` sockets, ``--window / --sockets`` REGs in flight each) with
   the C engine when it builds here (``--engine``), whose generator costs a
   fraction of the server's CPU per REG;
4. **memory**: a Gateway UE registers every UE with ``BULKREG`` (a UDP source
   address is one UE; 1 M UEs cannot each have a socket here, so they register
   through one gateway, as constrained UEs would); the server's RSS is sampled
   at 100k, 250k, 500k and 1M registered UEs (those up to ``--ues``), after a
   2 s idle pause, and printed as bytes per UE registered by the gateway above
   the baseline RSS (read after the REG rounds, before the first ``BULKREG``).

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
    bench,
    choose_engine,
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def single_regs(port: int, ues: list[str], sockets: int, window: int) -> float:
    """Registrations/s of single REGs (``window`` outstanding over ``sockets``).

    The first ``sockets`` UEs register first, one per socket, untimed: a source
    with no registered UE may send only ``coap.source_burst`` (8) datagrams at
    once (flood control), so a fresh socket with 16 requests in flight would
    wait seconds for retransmissions. Every socket is a registered UE's source
    when the timed part starts, as a device's is after its first REG.
    """
    peer = ("127.0.0.1", port)
    bodies = [encode(Reg(ue_service_id=ue, ue_credential_info=info(ue))) for ue in ues]
    endpoints = [await Endpoint.create(("127.0.0.1", 0)) for _ in range(sockets)]
    warm, bodies = bodies[:sockets], bodies[sockets:]
    await asyncio.gather(
        *(
            endpoint.request(
                CoapMessage(Type.CON, Code.POST, options=OPTIONS, payload=body), peer
            )
            for endpoint, body in zip(endpoints, warm, strict=True)
        )
    )
    pending = list(reversed(bodies))
    failures = 0

    async def lane(endpoint: Endpoint) -> None:
        nonlocal failures
        while pending:
            body = pending.pop()
            message = CoapMessage(Type.CON, Code.POST, options=OPTIONS, payload=body)
            response = await endpoint.request(message, peer)
            if response.code not in (Code.CREATED, Code.CHANGED):
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(lane(endpoints[i % sockets]) for i in range(window)))
    elapsed = time.perf_counter() - start
    for endpoint in endpoints:
        await endpoint.aclose()
    assert failures == 0, f"{failures} registrations failed"
    return len(bodies) / elapsed


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
    src = args.src
    ues = [f"u{i:07d}" for i in range(args.ues)]
    reg_sets = [
        [f"r{round_}-{i:06d}" for i in range(args.reg_ues)]
        for round_ in range(args.rounds)
    ]
    with tempfile.TemporaryDirectory(prefix="msgin5g-reg-") as name:
        tmp = Path(name)
        db = tmp / "bench.db"
        everyone = ["gw", *ues, *(ue for regs in reg_sets for ue in regs)]
        if src == (ROOT / "src").resolve():
            elapsed = provision(db, everyone, tmp, ROOT / "src")
            print(
                f"provisioning: {len(everyone):,} UEs with msgin5g ue import in "
                f"{elapsed:.1f} s ({len(everyone) / elapsed:,.0f}/s)"
            )
        else:  # another tree: its own code writes its file (schema version)
            provision_with_tree(
                src, f"sqlite:///{db}", [(ue, secret(ue)) for ue in everyone]
            )
        if args.bench_seconds:
            if src == (ROOT / "src").resolve():
                provision_bench(f"sqlite:///{db}", args.reg_ues, _BENCH_PREFIX)
            else:
                pairs = [
                    (f"{_BENCH_PREFIX}{i:05d}", SECRET)
                    for i in range(1, args.reg_ues + 1)
                ]
                provision_with_tree(src, f"sqlite:///{db}", pairs)
        port = free_port()
        server = start_server(port, db, src)
        try:
            rates = []
            cpu = cpu_seconds(server.pid)
            for regs in reg_sets:
                rates.append(await single_regs(port, regs, args.sockets, args.window))
            cpu = cpu_seconds(server.pid) - cpu
            print(
                f"single REG (PSK check, durable): {args.rounds} x {args.reg_ues:,} UEs, "
                f"{args.sockets} sockets, window {args.window}: best "
                f"{max(rates):,.0f}/s, median {statistics.median(rates):,.0f}/s "
                f"({', '.join(f'{r:,.0f}' for r in rates)}); server CPU "
                f"{cpu * 1e6 / (args.rounds * args.reg_ues):,.0f} µs per REG"
            )
            if args.bench_seconds:
                await asyncio.to_thread(bench_reg, port, server.pid, args)
            if args.ues:
                marks = [
                    m for m in (100_000, 250_000, 500_000, 1_000_000) if m <= args.ues
                ]
                marks = marks or [args.ues]
                print(
                    f"memory per registered idle UE (BULKREG x {PER_BULK} via one gateway):"
                )
                await bulk_curve(port, server.pid, ues, marks)
        finally:
            server.terminate()
            server.wait(timeout=60)


_BENCH_PREFIX = "breg-"


def bench_reg(port: int, pid: int, args: argparse.Namespace) -> None:
    """Single REGs through ``msgin5g bench reg`` (its generator processes fork
    from this thread, outside the event loop); prints one line."""
    engine = choose_engine(args.engine, 1)
    window = max(1, args.window // args.sockets)
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
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--src", default=str(ROOT / "src"), help="server source tree")
    parser.add_argument(
        "--bench-seconds",
        type=float,
        default=5.0,
        help="window of the msgin5g bench reg row (0: skip it)",
    )
    parser.add_argument(
        "--engine",
        choices=("auto", "c", "python"),
        default="auto",
        help="engine of the msgin5g bench reg row: auto = C when it builds here",
    )
    args = parser.parse_args()
    args.src = Path(args.src).resolve()
    use_uvloop()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
