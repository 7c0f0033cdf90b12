"""Benchmark: Application-to-Point through the REST API into CoAP delivery.

Three processes besides this coordinator, loopback only, bounded by --seconds:

1. the **server**: ``msgin5g serve`` (fresh SQLite file, durable group commit,
   HTTP on a private port), optionally under cProfile (``--profile FILE``);
2. the **UE simulator**: registers ``--ues`` UEs with our device library (one
   UDP socket each) and acknowledges the server's CON POSTs; a message counts
   when a UE *received* it; its latency is receive time minus the generator's
   send time, carried in the payload (``time.perf_counter`` is CLOCK_MONOTONIC,
   one clock for all processes on Linux);
3. the **HTTP generator**, its own process (so it does not share the server's
   event loop): ``--concurrency`` requests in flight in a closed loop, each a
   ``deliver-as-message`` with a fresh ``msgId`` round-robin over the UEs,
   HTTP/1.1 keep-alive on ``--concurrency`` connections (raw sockets, pre-encoded
   requests) and then h2c (prior knowledge, one connection, that many streams,
   the ``h2`` library). It reports its own CPU time: a generator near 100 % of a
   core would be the limit.

``h2load`` (Debian ``nghttp2-client``, ``apt-get install nghttp2-client``) cannot
vary the body, so every request after the first is a duplicate ``msgId``
answered from the duplicate cache: with ``--h2load`` its figure is printed as the
ceiling of the HTTP stack + validation + duplicate check (no storage, no
delivery), a check that the Python generator is not the limit.

Reported per mode: messages delivered to UEs per second, end-to-end p50/p99, the
HTTP answer p99, refusals (429/503 with Retry-After under overload), generator
CPU. Run: ``.venv/bin/python benchmarks/a2p.py [--store]``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing as mp
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import ROOT, free_port, provision

SECRET = "bench-secret"
PATH = "/msgs-msgdelivery/v1/deliver-as-message"


# ------------------------------------------------------------------ UE simulator


def ue_process(coap_port: int, ids: list[str], conn: Any) -> None:
    """Register ``ids``, then record every received message until told to stop."""
    import uvloop

    uvloop.run(_ue_main(coap_port, ids, conn))


async def _ue_main(coap_port: int, ids: list[str], conn: Any) -> None:
    from msgin5g.client import Client

    clients = []
    for ue in ids:
        client = Client(
            ue, SECRET, server=f"coap://127.0.0.1:{coap_port}", bind=("127.0.0.1", 0)
        )
        await client.start()
        await client.register()
        clients.append(client)
    got: dict[str, list[tuple[float, float]]] = {}

    async def receiver(client: Any) -> None:
        while True:
            item = (await client.receive()).item
            payload = getattr(item, "payload", None)
            if not payload:
                continue
            now = time.perf_counter()
            mode, _, sent = payload.decode().partition("|")
            got.setdefault(mode, []).append((now, now - float(sent)))

    tasks = [asyncio.create_task(receiver(c)) for c in clients]
    conn.send("ready")
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command == "cpu":
            conn.send(time.process_time())
        else:
            break
    for task in tasks:
        task.cancel()
    conn.send(got)
    for client in clients:
        await client.aclose()


# ----------------------------------------------------------------- HTTP generator


def _body(mode: str, ue: str, msg_id: str, store: bool) -> bytes:
    payload = f"{mode}|{time.perf_counter()!r}".encode()
    return json.dumps(
        {
            "oriAddr": {"addrType": "AS", "addr": "bench-as"},
            "destAddr": {"addrType": "UE", "addr": ue},
            "msgId": msg_id,
            "payload": base64.b64encode(payload).decode(),
            "stoAndFwInd": store,
        },
        separators=(",", ":"),
    ).encode()


def gen_process(port: int, mode: str, ids: list[str], args: Any, conn: Any) -> None:
    """Run one mode's closed loop and send back its figures."""
    import uvloop

    cpu0 = time.process_time()
    figures = uvloop.run(_gen_main(port, mode, ids, args))
    figures["cpu_s"] = time.process_time() - cpu0
    conn.send(figures)


async def _gen_main(port: int, mode: str, ids: list[str], args: Any) -> dict[str, Any]:
    stop = time.perf_counter() + args.seconds
    state: dict[str, Any] = {"sent": 0, "status": {}, "ack": [], "retry": 0.0}
    run = _h1_worker if mode == "http/1.1" else None
    start = time.perf_counter()
    if run is not None:
        await asyncio.gather(
            *(
                _h1_worker(port, mode, ids, i, stop, state, args.store)
                for i in range(args.concurrency)
            )
        )
    else:
        await _h2_run(port, mode, ids, stop, state, args)
    state["elapsed"] = time.perf_counter() - start
    state["start"] = start
    return state


def _count(state: dict[str, Any], status: int, sent: float) -> None:
    state["status"][status] = state["status"].get(status, 0) + 1
    state["ack"].append(time.perf_counter() - sent)


async def _h1_worker(
    port: int,
    mode: str,
    ids: list[str],
    index: int,
    stop: float,
    state: dict[str, Any],
    store: bool,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    n = 0
    while time.perf_counter() < stop:
        ue = ids[(index + n * 7) % len(ids)]
        n += 1
        body = _body(mode, ue, f"h1-{index}-{n}", store)
        sent = time.perf_counter()
        writer.write(
            b"POST %s HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json"
            b"\r\ncontent-length: %d\r\n\r\n%s" % (PATH.encode(), len(body), body)
        )
        state["sent"] += 1
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        retry = 0.0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"retry-after":
                retry = float(value)
        if length:
            await reader.readexactly(length)
        _count(state, status, sent)
        if retry:  # honour Retry-After (a well-behaved AS backs off)
            state["retry"] += retry
            await asyncio.sleep(min(retry, 0.05))
    writer.close()


async def _h2_run(
    port: int,
    mode: str,
    ids: list[str],
    stop: float,
    state: dict[str, Any],
    args: Any,
) -> None:
    import h2.config
    import h2.connection
    import h2.events

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    conn.increment_flow_control_window(2**30)
    writer.write(conn.data_to_send())
    streams: dict[int, list[Any]] = {}  # id -> [sent, status, retry]
    n = 0

    def send_one() -> None:
        nonlocal n
        ue = ids[n * 7 % len(ids)]
        n += 1
        body = _body(mode, ue, f"h2-{n}", args.store)
        sid = conn.get_next_available_stream_id()
        conn.send_headers(
            sid,
            [
                (":method", "POST"),
                (":path", PATH),
                (":scheme", "http"),
                (":authority", "127.0.0.1"),
                ("content-type", "application/json"),
                ("content-length", str(len(body))),
            ],
        )
        conn.send_data(sid, body, end_stream=True)
        streams[sid] = [time.perf_counter(), 0, 0.0]
        state["sent"] += 1

    for _ in range(args.concurrency):
        send_one()
    writer.write(conn.data_to_send())
    while streams:
        data = await reader.read(65536)
        if not data:
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                headers = dict(event.headers)
                streams[event.stream_id][1] = int(headers[":status"])
                streams[event.stream_id][2] = float(headers.get("retry-after", 0))
            elif isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
            elif isinstance(event, h2.events.StreamEnded):
                sent, status, retry = streams.pop(event.stream_id)
                _count(state, status, sent)
                if retry:
                    state["retry"] += retry
                if time.perf_counter() < stop:
                    send_one()
        writer.write(conn.data_to_send())
    writer.close()


# ----------------------------------------------------------------- coordinator


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return 1000 * values[min(len(values) - 1, int(q * len(values)))]


async def wait_http(url: str) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(400):
            try:
                await client.get(url + "/")
                return
            except httpx.HTTPError:
                await asyncio.sleep(0.05)
    raise SystemExit("server did not start")


def h2load(port: int, args: argparse.Namespace, tmp: Path) -> str:
    """h2load's figure for one duplicate body (HTTP stack ceiling)."""
    body = tmp / "body.json"
    body.write_bytes(_body("dup", "ue-0", "dup-1", args.store))
    out = []
    for flag, label in (("--h1", "http/1.1"), ("", "h2c")):
        cmd = [
            "h2load",
            *([flag] if flag else []),
            "-D",
            str(int(args.seconds)),
            "-c",
            str(args.concurrency if flag else 1),
            "-m",
            "1" if flag else str(args.concurrency),
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


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-a2p-"))
    url = f"sqlite:///{tmp / 'bench.db'}"
    ids = [f"ue-{i}" for i in range(args.ues)]
    await provision(url, ids, SECRET)
    http_port, coap_port = free_port(socket.SOCK_STREAM), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    env["PYTHONPATH"] = args.src or str(ROOT / "src")
    prof = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    extra = [x for s in args.set for x in ("--set", s)]
    server = subprocess.Popen(  # noqa: ASYNC220 - started once, before the load
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
            f"127.0.0.1:{coap_port}",
            "--http",
            f"127.0.0.1:{http_port}",
            "--set",
            f"rest.server={args.server}",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        env=env,
        cwd=ROOT,
    )
    ctx = mp.get_context("spawn")
    ue_conn, ue_child = ctx.Pipe()
    ue_proc = None
    try:
        await wait_http(f"http://127.0.0.1:{http_port}")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as c:
            resp = await c.post(
                "/msgs-asregistration/v1/registrations", json={"asSvcId": "bench-as"}
            )
            assert resp.status_code == 201, resp.text
        ue_proc = ctx.Process(target=ue_process, args=(coap_port, ids, ue_child))
        ue_proc.start()
        assert ue_conn.recv() == "ready"
        print(
            f"A2P through REST into CoAP ({args.server}, {args.ues} UEs, "
            f"{args.concurrency} requests in flight, stoAndFwInd={args.store}, "
            f"durable SQLite; generator and UEs in their own processes)",
            flush=True,
        )
        results = {}
        for mode in args.modes:
            gen_conn, gen_child = ctx.Pipe()
            gen = ctx.Process(
                target=gen_process, args=(http_port, mode, ids, args, gen_child)
            )
            ue_conn.send("cpu")
            ue_cpu, server_cpu = ue_conn.recv(), cpu_seconds(server.pid)
            gen.start()
            results[mode] = gen_conn.recv()
            gen.join()
            await asyncio.sleep(1.0)  # let the last deliveries land
            ue_conn.send("cpu")
            results[mode]["ue_cpu"] = ue_conn.recv() - ue_cpu
            results[mode]["server_cpu"] = cpu_seconds(server.pid) - server_cpu
        if args.h2load and shutil.which("h2load"):
            print(h2load(http_port, args, tmp), flush=True)
        ue_conn.send("stop")
        got = ue_conn.recv()
        for mode, fig in results.items():
            recv = got.get(mode, [])
            lat = [x[1] for x in recv]
            last = max((x[0] for x in recv), default=fig["start"])
            elapsed = max(last - fig["start"], 1e-9)
            refused = {k: v for k, v in fig["status"].items() if k != 200}
            print(
                f"  {mode:8}  {len(recv) / elapsed:7.0f} msgs/s delivered  "
                f"e2e p50 {_pct(lat, 0.5):6.1f} ms p99 {_pct(lat, 0.99):6.1f} ms  "
                f"HTTP ack p99 {_pct(fig['ack'], 0.99):6.1f} ms  "
                f"({len(recv)} delivered, {fig['sent']} sent, refused {refused}, "
                f"generator CPU {100 * fig['cpu_s'] / fig['elapsed']:.0f} %)",
                flush=True,
            )
            if recv:
                print(
                    f"            CPU per delivered message: server "
                    f"{1e6 * fig['server_cpu'] / len(recv):.0f} us, UE simulator "
                    f"{1e6 * fig['ue_cpu'] / len(recv):.0f} us, generator "
                    f"{1e6 * fig['cpu_s'] / len(recv):.0f} us",
                    flush=True,
                )
    finally:
        if ue_proc is not None and ue_proc.is_alive():
            ue_proc.terminate()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ues", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--server", default="granian", choices=["granian", "hypercorn"])
    parser.add_argument("--store", action="store_true", help="stoAndFwInd true")
    parser.add_argument("--modes", nargs="+", default=["http/1.1", "h2c"])
    parser.add_argument("--h2load", action="store_true", help="also run h2load")
    parser.add_argument("--profile", help="run the server under cProfile to FILE")
    parser.add_argument("--set", action="append", default=[], help="server --set")
    parser.add_argument("--src", help="source tree the server runs (before/after)")
    asyncio.run(main(parser.parse_args()))
