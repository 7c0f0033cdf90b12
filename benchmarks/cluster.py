"""Cluster benchmark: SQLite vs JetStream vs ``--workers 2`` on JetStream, same run.

What it measures (loopback only; a private ``nats-server -js`` started here from
the installed binary on a free port with a tmp store; every phase bounded by
``--seconds`` and counts):

1. **JetStream's own ceiling**: acknowledged ``js.publish`` of ~200 octets, 1 and
   100 in flight, in a SEPARATE process (``benchmarks/storage_ops.py``'s probe);
2. **end to end UE -> server -> UE** with ``benchmarks/p2p.py``'s closed-loop
   generator (its own process; one UDP socket per UE, so with ``--workers`` the
   kernel spreads the UEs over the workers) against
   (a) one process on SQLite, (b) one process on JetStream, (c) ``--workers 2``
   on JetStream: msgs/s, p50/p99, and **CPU seconds per message** of the
   msgin5g processes (supervisor and workers: utime+stime from
   ``/proc/<pid>/stat``, sampled every 0.1 s and cut to the generator's
   measurement window) and, apart, of the nats-server process;
3. **drain after a move**: 10,000 messages stored for a UE registered at node
   A (its socket closed, so A parks them), ``kill -9`` of node A, the UE
   registers at node B: the time until it has received all of them.

On a 2-core machine the generator needs a core of its own, so throughput cannot
show scaling; CPU per message can: the projection to N nodes is N cores /
(CPU s per message) messages per second, as long as JetStream keeps up (its own
CPU per message is printed next to it).

Run: ``.venv/bin/python benchmarks/cluster.py [--seconds 8] [--ues 100]
[--drain 10000] [--store] [--rounds 3] [--skip-workers]``. ``--store``: every
message asks for storage (``storeAndForwardFlag``), so the server stores it
durably before it answers (``bench p2p --store``); ``--rounds``: (a), (b), (c)
alternate that many times and the medians are compared (the machine is noisy).
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from common import (
    ROOT,
    bench,
    cpu_seconds,
    figures,
    free_port,
    provision,
    reg_body,
    serve,
)
from p2p import SECRET
from storage_ops import ceiling

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.storage.nats_server import NatsServer


class _Item(msgspec.Struct):
    payload: bytes


class _Lat(msgspec.Struct, rename="camel"):
    """A delivered MSG, or an AGGMSG bundling several (downlink aggregation)."""

    payload: bytes | None = None
    aggregated_messages: list[_Item] | None = None


class CpuSampler:
    """Samples the summed CPU seconds of some processes every 0.1 s (a thread)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(
                (time.perf_counter(), sum(cpu_seconds(p) for p in self.pids))
            )
            self._stop.wait(0.1)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def between(self, start: float, end: float) -> float:
        """CPU seconds spent in [start, end] (nearest samples inside it)."""
        inside = [c for t, c in self.samples if start <= t <= end]
        return inside[-1] - inside[0] if len(inside) >= 2 else float("nan")


def _median(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Per figure, the median over rounds (CPU per message, rates)."""
    keys = ("cpu_per_msg", "nats_cpu_per_msg", "msgs_per_s")
    return {k: statistics.median(r[k] for r in runs) for k in keys}


def start_msgin5g(port: int, storage: str, *extra: str) -> tuple[Any, list[int]]:
    """``msgin5g serve`` (REST off); its process and the pids of every server process."""
    proc, line = serve(port, storage, *extra, ready="serving MSGin5G-1")
    found = re.search(r"pids ([\d, ]+)\)", line)
    workers = [int(p) for p in found[1].split(",")] if found else []
    return proc, [proc.pid, *workers]


def stop(proc: Any) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def e2e(
    name: str,
    storage: str,
    extra: tuple[str, ...],
    ues: list[str],
    seconds: float,
    nats_pid: int | None,
    *,
    store: bool = False,
) -> dict[str, Any]:
    asyncio.run(provision(storage, ues, SECRET))
    port = free_port()
    proc, pids = start_msgin5g(port, storage, *extra)
    ours = CpuSampler(pids)
    theirs = CpuSampler([nats_pid]) if nats_pid else None
    try:
        time.sleep(0.5)
        start = time.perf_counter()
        result = figures(
            bench(port, "p2p", len(ues), seconds, prefix="ue-", store=store)
        )
        end = time.perf_counter()  # includes the bench's warm-up and drain
    finally:
        ours.stop()
        if theirs is not None:
            theirs.stop()
        stop(proc)
    delivered = max(1, result["received"])
    result["cpu_per_msg"] = ours.between(start, end) / delivered
    result["nats_cpu_per_msg"] = (
        theirs.between(start, end) / delivered if theirs else 0.0
    )
    result["processes"] = len(pids)
    print(
        f"  ({name}) {result['msgs_per_s']:,.0f} msgs/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, msgin5g CPU {result['cpu_per_msg'] * 1e6:,.0f} "
        f"us/msg ({len(pids)} process(es)), nats-server CPU "
        f"{result['nats_cpu_per_msg'] * 1e6:,.0f} us/msg; {result['received']} delivered "
        f"in {seconds:.0f} s, {result['accepted']} accepted",
        flush=True,
    )
    return result


# ------------------------------------------------------------- drain after a move


async def _fill(port: int, mover: str, senders: list[str], count: int) -> int:
    """Register ``mover`` at node A, close its socket, store ``count`` messages for it."""
    from msgin5g.coap import CoapMessage, Code, Endpoint, Type
    from msgin5g.coap.message import encode_uint, uri_path_options

    options = [*uri_path_options(("msgin5g",)), (12, encode_uint(50))]
    node = ("127.0.0.1", port)

    async def register(ep: Any, ue: str) -> None:
        resp = await ep.request(
            CoapMessage(
                Type.CON, Code.POST, options=options, payload=reg_body(ue, SECRET)
            ),
            node,
        )
        assert b"SUCCESS" in resp.payload, resp.payload

    gone = await Endpoint.create(("127.0.0.1", 0))
    await register(gone, mover)
    await gone.aclose()  # registered at A, but its socket is closed: A parks
    stored = 0
    queue = list(range(count))

    async def lane(ue: str) -> None:
        nonlocal stored
        ep = await Endpoint.create(("127.0.0.1", 0))
        await register(ep, ue)
        while queue:
            n = queue.pop()
            body = (
                f'{{"messageType":"MSG","originatingUeServiceId":"{ue}",'
                f'"recipientUeServiceId":"{mover}","messageId":"drain-{n}",'
                f'"storeAndForwardFlag":true,"payload":"ZHJhaW4="}}'
            ).encode()
            resp = await ep.request(
                CoapMessage(Type.CON, Code.POST, options=options, payload=body), node
            )
            if b"DELY_STORED" in resp.payload or b"DELY_ACCEPTED" in resp.payload:
                stored += 1
        await ep.aclose()

    await asyncio.gather(*(lane(ue) for ue in senders))
    return stored


async def _drain(port: int, mover: str, count: int, limit: float) -> tuple[float, int]:
    """Register ``mover`` at node B; seconds until ``count`` messages arrived."""
    import msgspec

    from msgin5g.coap import CoapMessage, Code, Endpoint, Site, Type, make_response
    from msgin5g.coap.message import encode_uint, uri_path_options

    decoder = msgspec.json.Decoder(_Lat)
    got = 0
    done = asyncio.Event()

    async def on_msg(req: Any) -> Any:
        nonlocal got
        body = decoder.decode(req.message.payload)
        got += len(body.aggregated_messages) if body.aggregated_messages else 1
        if got >= count:
            done.set()
        return make_response(req.message, Code.CHANGED)

    site = Site()
    site.add(("msgin5g",), on_msg)
    ep = await Endpoint.create(("127.0.0.1", 0), site=site)
    options = [*uri_path_options(("msgin5g",)), (12, encode_uint(50))]
    start = time.perf_counter()
    resp = await ep.request(
        CoapMessage(
            Type.CON, Code.POST, options=options, payload=reg_body(mover, SECRET)
        ),
        ("127.0.0.1", port),
    )
    assert b"SUCCESS" in resp.payload, resp.payload
    try:
        await asyncio.wait_for(done.wait(), limit)
    except TimeoutError:
        pass
    elapsed = time.perf_counter() - start
    await ep.aclose()
    return elapsed, got


def drain_after_move(js_url: str, count: int, limit: float) -> None:
    storage = f"{js_url}?prefix=drain"
    mover, senders = "mover", [f"sender-{i}" for i in range(20)]
    asyncio.run(provision(storage, [mover, *senders], SECRET))
    port_a, port_b = free_port(), free_port()
    node_a, _ = start_msgin5g(port_a, storage, "--node-id", "A")
    node_b, _ = start_msgin5g(port_b, storage, "--node-id", "B")
    try:
        t0 = time.perf_counter()
        stored = asyncio.run(_fill(port_a, mover, senders, count))
        fill = time.perf_counter() - t0
        node_a.send_signal(signal.SIGKILL)
        node_a.wait(30)
        elapsed, got = asyncio.run(_drain(port_b, mover, stored, limit))
    finally:
        if node_a.poll() is None:
            stop(node_a)
        stop(node_b)
    print(
        f"  drain after a move: {stored:,} messages stored at node A in {fill:.1f} s; "
        f"A killed (-9); the UE registered at node B and received {got:,} in "
        f"{elapsed:.1f} s ({got / elapsed:,.0f} msgs/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--ues", type=int, default=100)
    parser.add_argument("--drain", type=int, default=10_000, help="0: skip the phase")
    parser.add_argument("--drain-limit", type=float, default=300.0)
    parser.add_argument(
        "--store",
        action="store_true",
        help="stored messages: every MSG asks for storage (bench p2p --store)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of (a), (b), (c) alternating; medians are compared",
    )
    parser.add_argument("--skip-workers", action="store_true", help="no (c)")
    args = parser.parse_args()

    binary = shutil.which("nats-server")
    if binary is None:
        sys.exit("nats-server is not installed (scripts/install installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-cluster-bench-"))
    js = NatsServer(binary, tmp / "js", free_port())
    js.start()
    try:
        assert js.proc is not None
        print(
            f"msgin5g cluster benchmark: {os.cpu_count()} cores, loopback, "
            f"nats-server {js.url} (R1, file) in {tmp}"
        )
        for inflight in (1, 100):
            rate = ceiling(js.url, args.seconds / 2, inflight)
            print(
                f"  JetStream acked publish, {inflight:3d} in flight (separate "
                f"process): {rate:,.0f}/s"
            )
        ues = [f"ue-{i:05d}" for i in range(1, args.ues + 1)]  # bench's names
        kind = "stored messages (--store)" if args.store else "messages"
        print(
            f"end to end, {args.ues} UEs, closed loop, {kind}, generator in its own "
            f"process, {args.rounds} round(s) of (a), (b), (c) alternating:"
        )
        runs: dict[str, list[dict[str, Any]]] = {"a": [], "b": [], "c": []}
        for rnd in range(args.rounds):
            runs["a"].append(
                e2e(
                    "a: 1 process, SQLite",
                    f"sqlite:///{tmp / f'a{rnd}.db'}",
                    (),
                    ues,
                    args.seconds,
                    None,
                    store=args.store,
                )
            )
            runs["b"].append(
                e2e(
                    "b: 1 process, JetStream",
                    f"{js.url}?prefix=b{rnd}",
                    (),
                    ues,
                    args.seconds,
                    js.proc.pid,
                    store=args.store,
                )
            )
            if not args.skip_workers:
                runs["c"].append(
                    e2e(
                        "c: --workers 2, JetStream",
                        f"{js.url}?prefix=c{rnd}",
                        ("--workers", "2"),
                        ues,
                        args.seconds,
                        js.proc.pid,
                        store=args.store,
                    )
                )
        a, b = _median(runs["a"]), _median(runs["b"])
        total_b = b["cpu_per_msg"] + b["nats_cpu_per_msg"]
        print(
            f"  CPU per message (medians over {args.rounds} round(s)): (a) "
            f"{a['cpu_per_msg'] * 1e6:,.0f} us; (b) msgin5g {b['cpu_per_msg'] * 1e6:,.0f}"
            f" us + nats-server {b['nats_cpu_per_msg'] * 1e6:,.0f} us; (b)/(a) = "
            f"{b['cpu_per_msg'] / a['cpu_per_msg']:.2f} msgin5g only, "
            f"{total_b / a['cpu_per_msg']:.2f} with nats-server's"
        )
        if runs["c"]:
            c = _median(runs["c"])
            total_c = c["cpu_per_msg"] + c["nats_cpu_per_msg"]
            print(
                f"  (c)/(b) = {c['cpu_per_msg'] / b['cpu_per_msg']:.2f} msgin5g only,"
                f" {total_c / total_b:.2f} with nats-server's"
            )
            print(
                f"  projection: one core of msgin5g on JetStream carries "
                f"{1 / c['cpu_per_msg']:,.0f} msgs/s (c); N such cores ~ N x that "
                f"while JetStream keeps up (it spends "
                f"{c['nats_cpu_per_msg'] * 1e6:,.0f} us/msg)"
            )
        if args.drain:
            drain_after_move(js.url, args.drain, args.drain_limit)
    finally:
        js.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
