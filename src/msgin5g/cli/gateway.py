"""``msgin5g gateway``: run a Gateway UE, or show a running one's status.

``msgin5g gateway --id GW --secret S --server coap://… --listen HOST:PORT``
runs the gateway until SIGINT/SIGTERM; ``msgin5g gateway status --listen
HOST:PORT`` asks the running gateway (``GET /msgin5g/gateway``, loopback only)
and prints its cached requests and queues as JSON. ``add_ue_options`` adds the
``--via-gateway`` options of ``msgin5g ue register|deregister``, and
:func:`run_via_gateway` runs them with a simulated constrained UE.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
from typing import Any

import msgspec

from msgin5g.coap.endpoint import Endpoint
from msgin5g.coap.message import CoapMessage, uri_path_options
from msgin5g.coap.numbers import Code, Type
from msgin5g.config import parse_hostport
from msgin5g.errors import ConfigError, RemoteError
from msgin5g.gateway import ConstrainedUE, Gateway, GatewayConfig
from msgin5g.spec.coap import GATEWAY_STATUS_PATH

__all__ = ["add_gateway_parser", "add_ue_options", "run_gateway", "run_via_gateway"]


def add_gateway_parser(commands: "argparse._SubParsersAction[Any]") -> None:
    """Add the ``gateway`` sub-command to the top-level sub-parsers."""
    gateway = commands.add_parser(
        "gateway",
        help="run an MSGin5G Gateway UE (or: gateway status)",
        description="Run an MSGin5G Gateway UE: an MSGin5G Client towards the "
        "server, a CoAP endpoint for constrained UEs (bulk registration, relay, "
        "application registration, configuration). 'gateway status' prints the "
        "cached requests and queues of a running gateway.",
    )
    gateway.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    gateway.add_argument(
        "--id",
        dest="gateway_id",
        default=os.environ.get("MSGIN5G_GATEWAY_ID", "gateway"),
        help="the gateway's UE Service ID (or MSGIN5G_GATEWAY_ID)",
    )
    gateway.add_argument("--secret", help="its secret (or MSGIN5G_SECRET)")
    gateway.add_argument(
        "--server",
        default=os.environ.get("MSGIN5G_SERVER", "coap://127.0.0.1:5683"),
        help="server URI (default coap://127.0.0.1:5683 or MSGIN5G_SERVER)",
    )
    gateway.add_argument(
        "--listen",
        default="0.0.0.0:5693",
        metavar="HOST:PORT",
        help="CoAP address for constrained UEs (default 0.0.0.0:5693)",
    )
    gateway.add_argument(
        "--storage",
        default="sqlite:///./msgin5g-gateway.db",
        metavar="URL",
        help="durable cache and queues (default sqlite:///./msgin5g-gateway.db)",
    )
    gateway.add_argument("--batch-size", type=int, default=50, help="BULK_MAX_SIZE")
    gateway.add_argument(
        "--max-wait", type=float, default=30.0, help="BULK_MAX_WAIT in seconds"
    )
    gateway.add_argument(
        "--max-bulk-octets",
        type=int,
        default=4096,
        help="largest bulk payload (the server's coap.max_payload)",
    )
    gateway.add_argument(
        "--retry-interval",
        type=float,
        default=5.0,
        help="seconds between attempts towards an unreachable server or UE",
    )


def add_ue_options(parser: argparse.ArgumentParser) -> None:
    """``--via-gateway`` and friends for ``msgin5g ue register|deregister``."""
    parser.add_argument(
        "--via-gateway",
        metavar="URI",
        help="act as a constrained UE behind this gateway (coap://host:port)",
    )
    parser.add_argument(
        "--urgent", action="store_true", help="with --via-gateway: URGENT"
    )
    parser.add_argument(
        "--wait-time", type=int, help="with --via-gateway: waitTime in seconds"
    )


async def _serve(config: GatewayConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
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
        args.ue_service_id, secret, gateway=args.via_gateway, bind=bind
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
