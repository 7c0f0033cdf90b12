"""Running ``msgin5g gateway`` and ``msgin5g ue … --via-gateway`` (device side).

:func:`run_gateway` runs a Gateway UE until SIGINT/SIGTERM or asks a running
one for its status; :func:`run_via_gateway` runs ``ue register|deregister``
as a simulated constrained UE. Needs the device library only.
"""

import argparse
import asyncio
import json
import logging
import os
from typing import Any

import msgspec

from msgin5g.cli.common import stop_on_signals
from msgin5g.coap.endpoint import Endpoint
from msgin5g.coap.message import CoapMessage, uri_path_options
from msgin5g.coap.numbers import Code, Type
from msgin5g.config import parse_hostport
from msgin5g.errors import ConfigError, RemoteError
from msgin5g.gateway import ConstrainedUE, Gateway, GatewayConfig
from msgin5g.spec.coap import GATEWAY_STATUS_PATH

__all__ = ["run_gateway", "run_via_gateway"]


async def _serve(config: GatewayConfig) -> None:
    stop = stop_on_signals()
    async with Gateway(config) as gateway:
        print(f"msgin5g: gateway serving constrained UEs on {gateway.uri}", flush=True)
        await stop.wait()
        logging.getLogger("msgin5g").info("gateway shutting down")


async def _status(listen: str) -> int:
    host, port = parse_hostport(listen)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    async with await Endpoint.create(("127.0.0.1", 0)) as endpoint:
        request = CoapMessage(
            Type.CON,
            Code.GET,
            options=uri_path_options(GATEWAY_STATUS_PATH),
        )
        response = await endpoint.request(request, (host, port), timeout=10.0)
    if response.code != Code.CONTENT:
        raise RemoteError(response.code, response.payload)
    print(json.dumps(msgspec.json.decode(response.payload), indent=2), flush=True)
    return 0


def run_gateway(args: argparse.Namespace) -> int:
    """Run ``msgin5g gateway [run|status]`` (call inside no event loop)."""
    if args.action == "status":
        return asyncio.run(_status(args.listen))
    config = GatewayConfig(
        ue_service_id=args.gateway_id,
        secret=args.secret or os.environ.get("MSGIN5G_SECRET"),
        server=args.server,
        service_id=args.service_id,
        listen=args.listen,
        storage=args.storage,
        batch_size=args.batch_size,
        max_wait=args.max_wait,
        max_bulk_octets=args.max_bulk_octets,
        retry_interval=args.retry_interval,
    )
    asyncio.run(_serve(config))
    return 0


async def run_via_gateway(args: argparse.Namespace) -> int:
    """``msgin5g ue register|deregister --via-gateway URI``: print the answer.

    Prints the ``REGRESP``/``DEREGRESP`` as one JSON line with the CoAP Message
    IDs and Tokens of the request and of the gateway's matched POST.
    """
    if args.ue_command not in ("register", "deregister"):
        raise ConfigError("--via-gateway applies to 'ue register' and 'ue deregister'")
    secret = args.secret or os.environ.get("MSGIN5G_SECRET")
    bind = parse_hostport(args.bind, default_port=0)
    async with ConstrainedUE(
        args.ue_service_id,
        secret,
        gateway=args.via_gateway,
        bind=bind,
        service_id=args.service_id,
    ) as ue:
        call = ue.register if args.ue_command == "register" else ue.deregister
        outcome = await call(urgent=args.urgent, wait_time=args.wait_time)
    line: dict[str, Any] = json.loads(msgspec.json.encode(outcome.response))
    line["coap"] = {
        "requestMid": outcome.request_mid,
        "requestToken": outcome.request_token.hex(),
        "responseMid": outcome.response_mid,
        "responseToken": outcome.response_token.hex(),
        "piggybacked": outcome.piggybacked,
    }
    print(json.dumps(line, separators=(",", ":")), flush=True)
    return 0 if outcome.succeeded else 1
