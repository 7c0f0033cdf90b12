"""Benchmark: registrations/s via bulk registration versus single registrations.

Loopback only, bounded (``--ues``, default 100,000). What it does, in one run:

1. starts ``msgin5g serve`` on a private port with a fresh SQLite file (durable,
   ``synchronous=FULL`` group commit) and ``coap.max_payload`` raised to
   ``--max-payload`` (default 60,000 octets) so that big bulk requests fit in one
   UDP datagram; provisions ``--ues`` constrained UEs and one gateway;
2. **single**: every UE registers directly (``REG``), from ``--sockets`` sockets
   with one outstanding CON each (NSTART = 1);
3. **bulk, batch sizes 10, 100, 1000**: one Gateway UE registers every UE with
   ``BULKREG``s built by the gateway's own packing code
   (:class:`msgin5g.gateway.bulk.Batcher`): at most B entries **and** at most
   ``--max-payload`` encoded octets per request. A 1000-entry bulk is ~110 kB,
   more than any UDP datagram, so it is split by size (the printed "requests"
   column shows the effect). Requests go one at a time (NSTART = 1 towards one
   server), as from one gateway.

Each round registers the same UEs (the first round creates the contexts, later
ones refresh them; both are one durable upsert per UE). The constrained side
(UE → gateway REG and the REGRESP fan-out) is not in these figures: it is one
CoAP exchange per UE on the gateway, not on the server.

Run: ``.venv/bin/python benchmarks/bulk.py [--ues 100000]``. Not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from msgin5g.coap.endpoint import Endpoint, use_uvloop  # noqa: E402
from msgin5g.coap.message import CoapMessage, encode_uint  # noqa: E402
from msgin5g.coap.numbers import Code, OptionNumber, Type  # noqa: E402
from msgin5g.codec.ue_payload import decode_response, encode  # noqa: E402
from msgin5g.gateway.bulk import Batcher  # noqa: E402
from msgin5g.model.credentials import credential_digest, psk_token  # noqa: E402
from msgin5g.model.messages import (  # noqa: E402
    BulkReg,
    BulkRegResp,
    Reg,
    UECredentialInfo,
)
from msgin5g.storage import open_backend  # noqa: E402

OPTIONS = [
    (OptionNumber.URI_PATH, b"msgin5g"),
    (OptionNumber.CONTENT_FORMAT, encode_uint(50)),
]


def info(ue: str) -> UECredentialInfo:
    return UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token(f"s-{ue}", ue))


async def provision(url: str, ues: list[str]) -> None:
    backend = open_backend(url, synchronous="NORMAL")
    await backend.start()
    for start in range(0, len(ues), 2000):
        chunk = ues[start : start + 2000]
        await asyncio.gather(
            *(
                backend.put_credential(ue, credential_digest(info(ue).credential))
                for ue in chunk
            )
        )
    await backend.aclose()


async def single(port: int, regs: list[bytes], sockets: int) -> float:
    peer = ("127.0.0.1", port)
    endpoints = [await Endpoint.create(("127.0.0.1", 0)) for _ in range(sockets)]
    failures = 0

    async def worker(index: int) -> None:
        nonlocal failures
        endpoint = endpoints[index]
        for body in regs[index::sockets]:
            message = CoapMessage(Type.CON, Code.POST, options=OPTIONS, payload=body)
            response = await endpoint.request(message, peer)
            if response.code not in (Code.CREATED, Code.CHANGED):
                failures += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(sockets)))
    elapsed = time.perf_counter() - start
    for endpoint in endpoints:
        await endpoint.aclose()
    assert failures == 0, f"{failures} registrations failed"
    return elapsed


async def register_gateway(endpoint: Endpoint, port: int) -> None:
    reg = Reg(ue_service_id="gw", ue_credential_info=info("gw"))
    message = CoapMessage(Type.CON, Code.POST, options=OPTIONS, payload=encode(reg))
    response = await endpoint.request(message, ("127.0.0.1", port))
    assert response.code in (Code.CREATED, Code.CHANGED)


async def bulk(
    port: int, regs: list[Reg], batch: int, max_payload: int
) -> tuple[float, int]:
    endpoint = await Endpoint.create(("127.0.0.1", 0))
    await register_gateway(endpoint, port)
    gw_info = info("gw")
    overhead = len(
        encode(
            BulkReg(
                ue_service_id="gw",
                ue_credential_info=gw_info,
                num_of_reg_requests=10_000,
                reg_requests=[],
            )
        )
    )
    batcher = Batcher(batch, max_payload, overhead + 16)
    by_key = {reg.ue_service_id: reg for reg in regs}
    start = time.perf_counter()
    for reg in regs:  # everything is "due": as if the waitTime expired
        batcher.add("REG", reg.ue_service_id, len(encode(reg)), 0.0)
    requests = 0
    ok = 0
    for planned in batcher.due(1.0):
        entries = [by_key[key] for key in planned.keys]
        body = BulkReg(
            ue_service_id="gw",
            ue_credential_info=gw_info,
            num_of_reg_requests=len(entries),
            reg_requests=entries,
        )
        message = CoapMessage(
            Type.CON, Code.POST, options=OPTIONS, payload=encode(body)
        )
        response = await endpoint.request(message, ("127.0.0.1", port))
        requests += 1
        answer = decode_response(response.payload)
        assert isinstance(answer, BulkRegResp), response.payload[:200]
        ok += sum(r.registration_result == "SUCCESS" for r in answer.reg_responses)
    elapsed = time.perf_counter() - start
    await endpoint.aclose()
    assert ok == len(regs), f"only {ok} of {len(regs)} registered"
    return elapsed, requests


async def run(args: argparse.Namespace) -> None:
    ues = [f"c{i:06d}" for i in range(args.ues)]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        t0 = time.perf_counter()
        await provision(url, [*ues, "gw"])
        print(f"provisioned {len(ues)} UEs in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        server = subprocess.Popen(  # noqa: ASYNC220 - started once, before timing
            [
                sys.executable,
                "-m",
                "msgin5g",
                "serve",
                "--coap",
                f"127.0.0.1:{port}",
                "--storage",
                url,
                "--set",
                "rest.enabled=false",
                "--set",
                f"coap.max_payload={args.max_payload}",
                "--set",
                "log.level=WARNING",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            assert "serving" in server.stdout.readline()
            regs = [Reg(ue_service_id=ue, ue_credential_info=info(ue)) for ue in ues]
            bodies = [encode(reg) for reg in regs]
            print(f"{'mode':<22}{'requests':>10}{'seconds':>10}{'registrations/s':>18}")
            elapsed = await single(port, bodies, args.sockets)
            base = len(ues) / elapsed
            print(f"{'single REG':<22}{len(ues):>10}{elapsed:>10.2f}{base:>18,.0f}")
            for batch in (10, 100, 1000):
                elapsed, requests = await bulk(port, regs, batch, args.max_payload)
                rate = len(ues) / elapsed
                print(
                    f"{f'BULKREG batch {batch}':<22}{requests:>10}{elapsed:>10.2f}"
                    f"{rate:>18,.0f}  ({rate / base:.1f}x single)"
                )
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ues", type=int, default=100_000)
    parser.add_argument("--sockets", type=int, default=64)
    parser.add_argument("--max-payload", type=int, default=60_000)
    args = parser.parse_args()
    use_uvloop()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
