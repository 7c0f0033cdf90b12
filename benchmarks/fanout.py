"""Benchmark: one message to many UEs (group fan-out, topic Observe notifications).

What it does (loopback only, bounded by counts and timeouts):

1. starts ``msgin5g serve`` as a subprocess on a private port with a fresh SQLite
   file (durable, ``synchronous=FULL``), provisions ``max(--sizes)`` member UEs and
   a sender, and creates one group per size (``g<size>``: the sender plus the
   first ``size`` members);
2. member UEs are simulated in ``--workers`` processes, **one UDP socket per UE**
   (as real devices are distinct CoAP peers; the server keeps NSTART = 1 per
   peer), each a minimal raw CoAP peer that registers and answers every server
   POST with a piggybacked 2.04;
3. **group fan-out**: the sender sends one ``MSG`` to ``g<size>``; the figure is
   the time from sending it until the last member has received and acknowledged
   its copy (``CLOCK_MONOTONIC`` is shared by the processes), plus copies/s, the
   server's RSS growth and the SQLite file growth;
4. **baseline in the same run**: the same ``size`` copies as point-to-point
   ``MSG``s, one per member, sent by 64 sender UEs in parallel — what an
   application does without group messaging; the ratio is printed;
5. **topic Observe** (``--observers N``, 0 to skip): ``N`` members register and
   observe ``/msgin5g/topics/bench`` (RFC 7641, GET with Observe = 0); the sender
   publishes one ``MSG`` with ``messagingTopic``; time until every observer got
   its 2.05 notification (and acknowledged it when it was CON).

Run: ``.venv/bin/python benchmarks/fanout.py [--sizes 1000,10000] [--observers
10000]``. Not a test: nothing here is collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec
from common import ROOT, SECRET, free_port, provision, reg_body, rss_kib, start_server

from msgin5g.bench.peer import MSGIN5G_OPTIONS, RawUe, open_ue

SENDERS = 64
POST, GET, CONTENT = 2, 1, 69
OBSERVE = 6


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def msg_body(sender: str, mid: str, **target: str) -> bytes:
    body = {
        "messageType": "MSG",
        "messageId": mid,
        "originatingUeServiceId": sender,
        "payload": "YmVuY2htYXJrIHBheWxvYWQ=",
        **target,
    }
    return msgspec.json.encode(body)


class _Item(msgspec.Struct, rename="camel"):
    message_id: str = ""


class _Down(msgspec.Struct, rename="camel"):
    """A delivered MSG (or AGGMSG bundling several), or a notification's MSG."""

    message_id: str = ""
    aggregated_messages: list[_Item] | None = None


_DECODE = msgspec.json.Decoder(_Down)


# ---------------------------------------------------------------- raw CoAP UE


def recorder(seen: dict[str, list[float]]) -> Any:
    """What a UE does with a delivered MSG/AGGMSG or notification: note its arrival
    time under its messageId ("<tag>.<member>" counts for <tag>)."""

    def on_payload(body: bytes) -> None:
        now = time.monotonic()
        try:
            down = _DECODE.decode(body)
        except msgspec.DecodeError:
            return
        ids = [i.message_id for i in down.aggregated_messages or []] or [
            down.message_id
        ]
        for mid in ids:
            seen.setdefault(mid.partition(".")[0], []).append(now)

    return on_payload


async def open_ues(
    ids: list[str], seen: dict[str, list[float]], server: tuple[str, int]
) -> list[RawUe]:
    """One connected UDP socket per UE (msgin5g.bench's simulated UE)."""
    return [await open_ue(ue, server, recorder(seen)) for ue in ids]


async def call(
    ue: RawUe,
    payload: bytes = b"",
    *,
    code: int = POST,
    options: list[Any] | None = None,
) -> Any:
    """One request, sent again as a new one after 3 s without an answer (5 tries)."""
    for _ in range(5):
        try:
            answer = await asyncio.wait_for(
                ue.call(payload, code=code, options=options or MSGIN5G_OPTIONS), 3.0
            )
        except TimeoutError:
            continue
        if answer is not None:
            return answer
    raise TimeoutError(f"{ue.name}: no answer")


async def register_all(ues: list[RawUe]) -> None:
    sem = asyncio.Semaphore(256)

    async def one(ue: RawUe) -> None:
        async with sem:
            resp = await call(ue, reg_body(ue.name, SECRET))
            assert b"SUCCESS" in resp.payload, resp.payload

    await asyncio.gather(*(one(ue) for ue in ues))


# ---------------------------------------------------------------- member workers


async def observe(ue: RawUe, topic: str, sem: asyncio.Semaphore) -> None:
    """GET /msgin5g/topics/<topic> with Observe = 0 (RFC 7641 registration)."""
    from msgin5g.coap import encode_uint, uri_path_options

    async with sem:
        options = [
            *uri_path_options(("msgin5g", "topics", topic)),
            (OBSERVE, encode_uint(0)),
        ]
        resp = await call(ue, code=GET, options=options)
        assert resp.code == CONTENT, (resp.code, resp.payload)


async def _worker(port: int, ids: list[str], commands: Any, results: Any) -> None:

    server = ("127.0.0.1", port)
    seen: dict[str, list[float]] = {}
    ues = await open_ues(ids, seen, server)
    await register_all(ues)
    results.put(("ready", len(ues)))
    loop = asyncio.get_running_loop()
    sem = asyncio.Semaphore(256)
    while True:
        command = await loop.run_in_executor(None, commands.get)
        if command[0] == "stop":
            break
        if command[0] == "observe":
            topic, count = command[1], command[2]
            await asyncio.gather(*(observe(ue, topic, sem) for ue in ues[:count]))
            results.put(("observing", count))
            continue
        _, mid, expected, timeout = command
        deadline = time.monotonic() + timeout
        # the protocols only append to ``seen``: poll it, bounded by the deadline
        while len(seen.get(mid, ())) < expected and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        results.put(("done", mid, seen.get(mid, [])))
    for ue in ues:
        if ue.transport is not None:
            ue.transport.close()


def _worker_main(port: int, ids: list[str], commands: Any, results: Any) -> None:
    from msgin5g.coap import use_uvloop

    use_uvloop()
    asyncio.run(_worker(port, ids, commands, results))


class Members:
    """The member UEs, split over worker processes."""

    def __init__(self, port: int, ids: list[str], workers: int) -> None:
        ctx = mp.get_context("fork")
        self.results: Any = ctx.Queue()
        self.slices = [ids[w::workers] for w in range(workers)]
        self.commands: list[Any] = [ctx.Queue() for _ in range(workers)]
        self.procs = [
            ctx.Process(
                target=_worker_main, args=(port, part, q, self.results), daemon=True
            )
            for part, q in zip(self.slices, self.commands, strict=True)
        ]
        for proc in self.procs:
            proc.start()
        for _ in self.procs:
            assert self.results.get(timeout=300)[0] == "ready"

    def expect(self, mid: str, members: set[str], timeout: float = 60.0) -> None:
        for part, q in zip(self.slices, self.commands, strict=True):
            q.put(("expect", mid, sum(1 for ue in part if ue in members), timeout))

    def collect(self) -> list[float]:
        """Arrival times (monotonic) of the expected message at every member."""
        times: list[float] = []
        for _ in self.procs:
            times.extend(self.results.get(timeout=120)[2])
        return sorted(times)

    def observe(self, topic: str, per_worker: int) -> None:
        for q in self.commands:
            q.put(("observe", topic, per_worker))
        for _ in self.procs:
            assert self.results.get(timeout=300)[0] == "observing"

    def stop(self) -> None:
        for q in self.commands:
            q.put(("stop",))
        for proc in self.procs:
            proc.join(10)


# ---------------------------------------------------------------- coordinator


async def provision_all(url: str, ids: list[str], groups: dict[str, list[str]]) -> None:
    from msgin5g.server.admin import put_group

    await provision(url, ids, SECRET)
    for group_id, members in groups.items():
        await put_group(url, group_id, members, add=False)


async def fan_out(
    sender: RawUe, server: tuple[str, int], members: Members, size: int, ids: list[str]
) -> list[float]:
    mid = f"grp-{size}-{time.monotonic_ns()}"
    members.expect(mid, set(ids[:size]))
    await asyncio.sleep(0.2)  # workers are waiting
    t0 = time.monotonic()
    resp = await call(
        sender, msg_body(sender.name, mid, recipientGroupServiceId=f"g{size}")
    )
    acked = time.monotonic() - t0
    assert b"DELY_ACCEPTED" in resp.payload, resp.payload
    print(f"    sender acknowledged after {acked * 1000:.1f} ms")
    return [t - t0 for t in members.collect()]


async def unicast(
    senders: list[RawUe], server: tuple[str, int], members: Members, ids: list[str]
) -> list[float]:
    tag = f"uni-{time.monotonic_ns()}"
    members.expect(tag, set(ids))
    await asyncio.sleep(0.2)
    queue = list(reversed(ids))

    async def lane(sender: RawUe) -> None:
        while queue:
            target = queue.pop()
            body = msg_body(sender.name, f"{tag}.{target}", recipientUeServiceId=target)
            resp = await call(sender, body)
            assert b"DELY_ACCEPTED" in resp.payload, resp.payload

    t0 = time.monotonic()
    await asyncio.gather(*(lane(s) for s in senders))
    return [t - t0 for t in members.collect()]


def spread(times: list[float]) -> str:
    """Arrival-time percentiles after the send (ms)."""
    if not times:
        return "nothing arrived"
    pick = [times[min(len(times) - 1, int(len(times) * q))] for q in (0.5, 0.9, 0.99)]
    return (
        "arrivals p50/p90/p99/last "
        + "/".join(f"{t * 1000:.0f}" for t in [*pick, times[-1]])
        + " ms"
    )


async def run(args: argparse.Namespace) -> None:
    sizes = sorted(int(s) for s in args.sizes.split(","))
    top = max([*sizes, args.observers])
    ids = [f"m{i:06d}" for i in range(top)]
    senders = [f"s{i:03d}" for i in range(SENDERS)]
    groups = {f"g{size}": [senders[0], *ids[:size]] for size in sizes}
    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-fanout-"))
    db = tmp / "fanout.db"
    url = f"sqlite:///{db}"
    t = time.perf_counter()
    await provision_all(url, ids + senders, groups)
    print(
        f"provisioned {len(ids)} members + {SENDERS} senders and {len(groups)} "
        f"groups in {time.perf_counter() - t:.1f} s"
    )
    port = free_port()
    proc = start_server(port, db)
    server = ("127.0.0.1", port)
    try:
        t = time.perf_counter()
        members = Members(port, ids, args.workers)
        print(
            f"registered {len(ids)} member UEs (one socket each, {args.workers} "
            f"processes) in {time.perf_counter() - t:.1f} s"
        )
        seen: dict[str, list[float]] = {}
        sender_ues = await open_ues(senders, seen, server)
        await register_all(sender_ues)
        print(
            f"server RSS with {len(ids) + SENDERS} registered UEs: "
            f"{rss_kib(proc.pid) / 1024:.1f} MiB"
        )
        for size in sizes:
            print(f"group of {size} members:")
            rss0, db0 = rss_kib(proc.pid), db.stat().st_size
            cpu0 = cpu_seconds(proc.pid)
            times = await fan_out(sender_ues[0], server, members, size, ids)
            cpu = cpu_seconds(proc.pid) - cpu0
            rss1 = rss_kib(proc.pid)
            elapsed, received = times[-1], len(times)
            print(
                f"    fan-out: {received}/{size} copies received, the last after "
                f"{elapsed * 1000:.0f} ms = {received / elapsed:,.0f} copies/s; "
                f"{spread(times)}; server RSS +{(rss1 - rss0) / 1024:.1f} MiB, "
                f"db +{(db.stat().st_size - db0) / 1024:.0f} KiB (WAL not counted); "
                f"server CPU {cpu:.2f} s = {cpu / size * 1e6:.0f} us per copy"
            )
            base_times = await unicast(sender_ues, server, members, ids[:size])
            base, got = base_times[-1], len(base_times)
            print(
                f"    baseline, {size} point-to-point MSGs from {SENDERS} senders: "
                f"{got}/{size} in {base * 1000:.0f} ms = {got / base:,.0f} msgs/s; "
                f"{spread(base_times)}"
            )
            print(
                f"    group fan-out is {base / elapsed:.1f}x faster than the baseline"
            )
        if args.observers:
            per = args.observers // args.workers
            t = time.perf_counter()
            members.observe("bench", per)
            print(
                f"{per * args.workers} observers registered on topic 'bench' in "
                f"{time.perf_counter() - t:.1f} s"
            )
            mid = f"topic-{time.monotonic_ns()}"
            observing = {ue for part in members.slices for ue in part[:per]}
            members.expect(mid, observing)
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            resp = await call(
                sender_ues[0], msg_body(senders[0], mid, messagingTopic="bench")
            )
            assert b"DELY_ACCEPTED" in resp.payload, resp.payload
            times = [t - t0 for t in members.collect()]
            elapsed = times[-1] if times else float("nan")
            print(
                f"    publication: {len(times)}/{len(observing)} observers notified, "
                f"the last after {elapsed * 1000:.0f} ms = "
                f"{len(times) / elapsed:,.0f} notifications/s; {spread(times)}"
            )
        members.stop()
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="group sizes")
    parser.add_argument(
        "--observers", type=int, default=10000, help="topic observers (0: skip)"
    )
    parser.add_argument("--workers", type=int, default=2, help="UE processes")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
