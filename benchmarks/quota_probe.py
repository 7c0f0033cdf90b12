"""Probe: one UE floods an offline UE with stored messages (issue 10 item 10).

Reproduces the attack that stored 260k messages (1.17 GB) for one UE in 53 s,
against a ``msgin5g serve`` process with the default ``[limits]`` (or the
``--set`` overrides given), loopback only and bounded in time:

1. the server runs in its own process with a fresh SQLite file;
2. a generator process registers ``flood-a`` and sends ``MSG`` with the
   store-and-forward flag to the offline ``flood-b`` as fast as it can
   (``--window`` confirmable POSTs outstanding) for ``--seconds``; it counts the
   answers by ``deliveryStatus`` / ``failureCause``;
3. meanwhile this process checks every second that another UE is still served:
   ``ue-c`` stores a message for the offline ``ue-d`` and must get
   ``DELY_STORED`` (latency printed);
4. at the end it prints what is stored for ``flood-b`` (rows, octets), the size
   of the database file (with its WAL) and the server's RSS.

Run: ``python benchmarks/quota_probe.py`` (defaults), or e.g.
``python benchmarks/quota_probe.py --set limits.submit_rate=0`` to see the
storage quota alone. Not a test.

Above ~265 requests/s from one socket the 16-bit CoAP Message ID wraps within
EXCHANGE_LIFETIME (247 s) and the server's CoAP duplicate cache answers a new
request with an old response (RFC 7252 §4.5): such requests end as timeouts
here, which caps what one UE can push over CoAP whatever the limits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import multiprocessing as mp
import sqlite3
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import msgspec
from common import free_port, provision, reg_body, rss_kib, start_server

SECRET = "probe-secret"


class _Resp(msgspec.Struct, rename="camel"):
    delivery_status: str | None = None
    failure_cause: str | None = None


def _body(frm: str, to: str, payload: str) -> bytes:
    return msgspec.json.encode(
        {
            "messageType": "MSG",
            "originatingUeServiceId": frm,
            "recipientUeServiceId": to,
            "messageId": str(uuid.uuid4()),
            "payload": payload,
            "storeAndForwardFlag": True,
        }
    )


async def _flood(port: int, seconds: float, window: int, size: int) -> dict[str, Any]:
    from msgin5g.coap import CoapMessage, Code, Endpoint, Type
    from msgin5g.coap.message import encode_uint, uri_path_options

    options = [*uri_path_options(("msgin5g",)), (12, encode_uint(50))]
    server = ("127.0.0.1", port)
    ep = await Endpoint.create(("127.0.0.1", 0))
    resp = await ep.request(
        CoapMessage(
            Type.CON, Code.POST, options=options, payload=reg_body("flood-a", SECRET)
        ),
        server,
    )
    assert b"SUCCESS" in resp.payload, resp.payload
    decoder = msgspec.json.Decoder(_Resp)
    payload = base64.b64encode(b"x" * size).decode()
    outcomes: Counter[str] = Counter()
    end = time.perf_counter() + seconds

    async def lane() -> None:
        while time.perf_counter() < end:
            body = _body("flood-a", "flood-b", payload)
            try:
                answer = await ep.request(
                    CoapMessage(Type.CON, Code.POST, options=options, payload=body),
                    server,
                    timeout=10.0,
                )
            except Exception as exc:  # a timeout is an outcome too
                outcomes[type(exc).__name__] += 1
                continue
            if answer.code != Code.CHANGED:
                outcomes[f"CoAP {answer.code >> 5}.{answer.code & 31:02d}"] += 1
                continue
            r = decoder.decode(answer.payload)
            outcomes[f"{r.delivery_status} {r.failure_cause or ''}".strip()] += 1

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(window)))
    elapsed = time.perf_counter() - start
    await ep.aclose()
    return {"outcomes": dict(outcomes), "elapsed": elapsed}


def _flood_main(args: tuple[Any, ...], out: Any) -> None:
    from msgin5g.coap import use_uvloop

    use_uvloop()
    out.put(asyncio.run(_flood(*args)))


async def _bystander(port: int, seconds: float) -> list[tuple[str, float]]:
    """``ue-c`` stores one message for ``ue-d`` every second."""
    from msgin5g.coap import CoapMessage, Code, Endpoint, Type
    from msgin5g.coap.message import encode_uint, uri_path_options

    options = [*uri_path_options(("msgin5g",)), (12, encode_uint(50))]
    server = ("127.0.0.1", port)
    ep = await Endpoint.create(("127.0.0.1", 0))
    await ep.request(
        CoapMessage(
            Type.CON, Code.POST, options=options, payload=reg_body("ue-c", SECRET)
        ),
        server,
    )
    results = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        await asyncio.sleep(1.0)
        t0 = time.perf_counter()
        try:
            answer = await ep.request(
                CoapMessage(
                    Type.CON,
                    Code.POST,
                    options=options,
                    payload=_body("ue-c", "ue-d", "aGk="),
                ),
                server,
            )
            status = msgspec.json.decode(answer.payload, type=_Resp).delivery_status
        except Exception as exc:
            status = type(exc).__name__
        results.append((str(status), time.perf_counter() - t0))
    await ep.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="flood length")
    parser.add_argument("--window", type=int, default=200, help="outstanding CONs")
    parser.add_argument("--size", type=int, default=2000, help="payload octets")
    parser.add_argument(
        "--set", action="append", default=[], help="server setting section.key=value"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-quota-"))
    db = tmp / "probe.db"
    asyncio.run(
        provision(f"sqlite:///{db}", ["flood-a", "flood-b", "ue-c", "ue-d"], SECRET)
    )
    port = free_port()
    extra = [x for s in args.set for x in ("--set", s)]
    server = start_server(port, db, *extra)
    print(f"quota probe: server pid {server.pid}, settings {args.set or 'defaults'}")
    try:
        out: Any = mp.get_context("fork").Queue()
        flood = mp.get_context("fork").Process(
            target=_flood_main, args=((port, args.seconds, args.window, args.size), out)
        )
        flood.start()
        checks = asyncio.run(_bystander(port, args.seconds))
        result = out.get(timeout=args.seconds + 120)
        flood.join(10)
        rss = rss_kib(server.pid)
    finally:
        server.terminate()
        server.wait(20)
    total = sum(result["outcomes"].values())
    print(
        f"flood: {total:,} MSG in {result['elapsed']:.1f} s "
        f"({total / result['elapsed']:,.0f}/s, {args.size} B payload, window {args.window})"
    )
    for outcome, count in sorted(result["outcomes"].items(), key=lambda kv: -kv[1]):
        print(f"  {count:>9,}  {outcome}")
    conn = sqlite3.connect(db)
    rows, octets = conn.execute(
        "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM queue WHERE recipient = 'flood-b'"
    ).fetchone()
    others = conn.execute(
        "SELECT COUNT(*) FROM queue WHERE recipient = 'ue-d'"
    ).fetchone()[0]
    conn.close()
    files = sum(p.stat().st_size for p in tmp.glob("probe.db*"))
    print(f"stored for flood-b: {rows:,} messages, {octets / 2**20:,.1f} MiB counted")
    print(
        f"database file + WAL: {files / 2**20:,.1f} MiB; server RSS {rss / 1024:.1f} MiB"
    )
    served = sum(1 for status, _ in checks if status == "DELY_STORED")
    worst = max((lat for _, lat in checks), default=float("nan"))
    print(
        f"other UEs served during the flood: {served}/{len(checks)} ue-c -> ue-d stored "
        f"(worst answer {worst * 1000:.0f} ms), {others} stored for ue-d"
    )


if __name__ == "__main__":
    main()
