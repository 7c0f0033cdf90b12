"""Benchmark: A2P to Legacy 3GPP UEs, through the L3G, into an SMSC (SMPP 3.4).

Four processes besides this coordinator, loopback only, bounded by --seconds:

1. the **server**: ``msgin5g serve`` (fresh SQLite file, HTTP on a private port);
2. the **SMSC**: ``tests/interop/node-smpp/smsc.js``, the npm ``smpp`` server
   (needs ``scripts/install``), printing a JSON line per submit_sm it accepts;
3. the **L3G**: ``msgin5g l3g`` with ``--ues`` Legacy UEs and ``--window``
   submit_sm awaiting their response at once (durable outbox on disk);
4. the **HTTP generator**, its own process: ``--concurrency`` closed-loop
   workers POSTing ``deliver-as-message`` (a fresh ``msgId`` each, round-robin
   over the Legacy UEs, 40-character GSM text, no report) for ``--seconds``.

An SMS counts when the SMSC printed its submit_sm. Reported: messages
accepted by the server per second, SMS into the SMSC per second while the
generator ran and until the last one arrived (the drain is bounded by
``--drain`` seconds), and the backlog left.

Then the **windowed submit_sm drain** alone: the SMSC is stopped,
``--backlog`` messages are POSTed straight to the L3G's ``deliver-message``
(stored in its outbox), the SMSC is started again on the same port and the
time until its last submit_sm is measured: SMPP throughput of the gateway with
``--window`` submit_sm outstanding, without the server in the path. Run:
``.venv/bin/python benchmarks/sms.py [--window 10] [--seconds 10]``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from common import ROOT, free_port

SMSC_JS = ROOT / "tests" / "interop" / "node-smpp" / "smsc.js"


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "msgin5g", "--log-level", "WARNING", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _wait_line(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if needle in line:
            return
    raise SystemExit(f"process did not print {needle!r}")


class Counter:
    """Counts the SMSC's submit_sm lines from a reader thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.count = 0
        self.last = 0.0
        self._proc = proc
        self._ready: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if '"submit_sm"' in line:
                self.count += 1
                self.last = time.perf_counter()
            elif '"listening"' in line or '"bind"' in line:
                self._ready.put(line)

    def wait(self, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if what in self._ready.get(timeout=1):
                    return
            except queue.Empty:
                continue
        raise SystemExit(f"SMSC: no {what}")


def gen_process(http: str, ues: list[str], args: Any, conn: Any) -> None:
    """The generator: closed loop for --seconds; sends back its figures."""
    cpu0 = time.process_time()
    figures = asyncio.run(_gen_main(http, ues, args))
    figures["cpu_s"] = time.process_time() - cpu0
    conn.send(figures)


async def _gen_main(http: str, ues: list[str], args: Any) -> dict[str, Any]:
    stop = time.perf_counter() + args.seconds
    state: dict[str, Any] = {"sent": 0, "status": {}}
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=http, limits=limits, timeout=30) as client:

        async def worker(index: int) -> None:
            n = 0
            while time.perf_counter() < stop:
                ue = ues[(index + n * args.concurrency) % len(ues)]
                body = {
                    "oriAddr": {"addrType": "AS", "addr": "bench-as"},
                    "destAddr": {"addrType": "UE", "addr": ue},
                    "msgId": f"sms-{index}-{n}",
                    "payload": "U01TIGJlbmNobWFyayBtZXNzYWdlIC0gNDAgY2hhcnMhIQ==",
                    "stoAndFwInd": True,
                }
                n += 1
                resp = await client.post(
                    "/msgs-msgdelivery/v1/deliver-as-message", json=body
                )
                state["status"][resp.status_code] = (
                    state["status"].get(resp.status_code, 0) + 1
                )
                if resp.status_code == 200 and "status" not in resp.json():
                    state["sent"] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(args.concurrency)))
        state["elapsed"] = time.perf_counter() - start
    return state


def _start_smsc(node: str, port: int, procs: list[subprocess.Popen[str]]) -> Counter:
    """The npm SMSC on ``port`` (added to ``procs``), once it listens."""
    proc = subprocess.Popen(
        [node, str(SMSC_JS), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    procs.append(proc)
    counter = Counter(proc)
    counter.wait('"listening"')
    return counter


def l3g_uri(http: str) -> str:
    """The gateway's MSGG_L3GDelivery root, as registered with the server."""
    url = f"{http}/msgs-gwregistration/v1/registrations/l3g-1"
    return str(httpx.get(url, timeout=5).json()["gwUri"]) + "/msgg-l3gdelivery/v1"


def _drain_phase(
    node: str,
    port: int,
    procs: list[subprocess.Popen[str]],
    smsc: subprocess.Popen[str],
    api: str,
    args: Any,
) -> dict[str, Any]:
    smsc.terminate()
    smsc.wait(timeout=10)
    with httpx.Client(timeout=30) as client:
        for n in range(args.backlog):
            body = {
                "oriAddr": {"addrType": "AS", "addr": "bench-as"},
                "destAddr": {"addrType": "UE", "addr": f"legacy-{n % args.ues:05d}"},
                "msgId": f"drain-{n}",
                "payload": "U01TIGJlbmNobWFyayBtZXNzYWdlIC0gNDAgY2hhcnMhIQ==",
            }
            resp = client.post(f"{api}/deliver-message", json=body)
            assert resp.status_code == 204, resp.text
    counter = _start_smsc(node, port, procs)
    counter.wait('"bind"', timeout=60)
    start = time.perf_counter()
    deadline = start + args.drain
    while counter.count < args.backlog and time.perf_counter() < deadline:
        time.sleep(0.02)
    span = (counter.last or time.perf_counter()) - start
    return {
        "drain_backlog": args.backlog,
        "drain_sms": counter.count,
        "drain_sms_per_s": round(counter.count / span, 1) if span > 0 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--drain", type=float, default=60.0)
    parser.add_argument("--ues", type=int, default=100)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backlog", type=int, default=2000)
    args = parser.parse_args()
    node = shutil.which("node")
    if node is None or not (SMSC_JS.parent / "node_modules" / "smpp").is_dir():
        raise SystemExit("needs node and tests/interop/node-smpp (scripts/install)")
    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-sms-bench-"))
    http_port = free_port(socket.SOCK_STREAM)
    smsc_port = free_port(socket.SOCK_STREAM)
    procs: list[subprocess.Popen[str]] = []
    try:
        server = _spawn(
            "serve", "--coap", f"127.0.0.1:{free_port()}",
            "--storage", f"sqlite:///{tmp / 'msgin5g.db'}",
            "--http", f"127.0.0.1:{http_port}",
        )  # fmt: skip
        procs.append(server)
        _wait_line(server, "serving MSGin5G-1")
        http = f"http://127.0.0.1:{http_port}"
        reg = httpx.post(
            f"{http}/msgs-asregistration/v1/registrations",
            json={"asSvcId": "bench-as"},
            timeout=10,
        )
        assert reg.status_code == 201, reg.text
        counter = _start_smsc(node, smsc_port, procs)
        smsc = procs[-1]
        ues = [f"legacy-{i:05d}" for i in range(args.ues)]
        ues_file = tmp / "ues.csv"
        ues_file.write_text(
            "".join(f"{ue},4917{i:08d}\n" for i, ue in enumerate(ues)),
            encoding="utf-8",
        )
        l3g = _spawn(
            "l3g", "--server", http, "--listen", "127.0.0.1:0",
            "--outbox", str(tmp / "l3g.db"), "--smsc", f"127.0.0.1:{smsc_port}",
            "--ues-file", str(ues_file), "--window", str(args.window),
        )  # fmt: skip
        procs.append(l3g)
        _wait_line(l3g, '"ready"')
        counter.wait('"bind"')
        url = f"{http}/msgs-gwregistration/v1/registrations/l3g-1"
        while httpx.get(url, timeout=5).status_code != 200:
            time.sleep(0.1)
        here, there = mp.Pipe()
        gen = mp.Process(target=gen_process, args=(http, ues, args, there))
        start = time.perf_counter()
        gen.start()
        figures = here.recv()
        gen.join()
        during = counter.count
        accepted = figures["sent"]
        deadline = time.perf_counter() + args.drain
        while counter.count < accepted and time.perf_counter() < deadline:
            time.sleep(0.1)
        total = counter.count
        span = (counter.last or time.perf_counter()) - start
        drain = _drain_phase(node, smsc_port, procs, smsc, l3g_uri(http), args)
        print(
            json.dumps(
                {
                    "window": args.window,
                    "ues": args.ues,
                    "concurrency": args.concurrency,
                    "accepted": accepted,
                    "accepted_per_s": round(accepted / figures["elapsed"], 1),
                    "http_status": figures["status"],
                    "sms_during_load": during,
                    "sms_total": total,
                    "sms_per_s": round(total / span, 1) if span > 0 else None,
                    "backlog_left": accepted - total,
                    "generator_cpu_s": round(figures["cpu_s"], 2),
                    **drain,
                },
                indent=1,
            )
        )
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
