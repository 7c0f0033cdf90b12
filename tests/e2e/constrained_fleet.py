"""A process of constrained UEs behind a gateway (helper of tests/e2e/test_gateway.py).

Usage: python constrained_fleet.py GATEWAY_URI ACTION UE:SECRET [UE:SECRET ...]
ACTION is ``register`` or ``deregister``. Each outcome is printed as one JSON
line; with ``--listen N`` the first UE then prints every relayed message or
report for N seconds; with ``--send TO`` it first sends ``up`` to TO (CON,
report requested).
"""

import argparse
import asyncio
import json

import msgspec

from msgin5g.gateway import ConstrainedUE


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("gateway")
    parser.add_argument("action", choices=["register", "deregister"])
    parser.add_argument("ues", nargs="+")
    parser.add_argument("--wait-time", type=int)
    parser.add_argument("--listen", type=float, default=0.0)
    parser.add_argument("--send")
    args = parser.parse_args()
    ues = [
        ConstrainedUE(spec.split(":")[0], spec.split(":")[1], gateway=args.gateway)
        for spec in args.ues
    ]
    for ue in ues:
        await ue.start()
    print(json.dumps({"ready": len(ues)}), flush=True)

    async def one(ue: ConstrainedUE) -> None:
        call = ue.register if args.action == "register" else ue.deregister
        outcome = await call(wait_time=args.wait_time, timeout=90)
        line = json.loads(msgspec.json.encode(outcome.response))
        line.update(
            requestMid=outcome.request_mid,
            requestToken=outcome.request_token.hex(),
            responseMid=outcome.response_mid,
            responseToken=outcome.response_token.hex(),
        )
        print(json.dumps(line), flush=True)

    await asyncio.gather(*(one(ue) for ue in ues))
    first = ues[0]
    if args.send:
        resp = await first.send(args.send, "up", report=True)
        print(json.dumps({"sent": msgspec.to_builtins(resp)}), flush=True)
    loop = asyncio.get_running_loop()
    end = loop.time() + args.listen
    while loop.time() < end:
        try:
            item = await first.receive(timeout=end - loop.time())
        except TimeoutError:
            break
        print(json.dumps({"received": msgspec.to_builtins(item)}), flush=True)
    for ue in ues:
        await ue.aclose()


if __name__ == "__main__":
    asyncio.run(main())
