"""``msgin5g gateway``: the parser (running it: :mod:`msgin5g.cli.gateway_run`).

``msgin5g gateway --id GW --secret S --server coap://… --listen HOST:PORT``
runs the gateway until SIGINT/SIGTERM; ``msgin5g gateway status --listen
HOST:PORT`` asks the running gateway (``GET /msgin5g/gateway``, loopback only)
and prints its cached requests and queues as JSON. ``add_ue_options`` adds the
``--via-gateway`` options of ``msgin5g ue register|deregister``. Light: this
module is imported to build the parser on every start.
"""

import argparse
import os
from typing import Any

__all__ = ["add_gateway_parser", "add_ue_options", "run_gateway"]


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
    _add_service_id(gateway)
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
    _add_service_id(parser)


def _add_service_id(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service-id",
        default=os.environ.get("MSGIN5G_SERVICE_ID", "org.3gpp.msgin5g"),
        metavar="ID",
        help="msgin5gServiceId on the gateway links: the server's coap.service_id "
        "(default org.3gpp.msgin5g or MSGIN5G_SERVICE_ID)",
    )


def run_gateway(args: argparse.Namespace) -> int:
    """Run ``msgin5g gateway [run|status]`` (call inside no event loop)."""
    from msgin5g.cli.gateway_run import run_gateway as run

    return run(args)
