"""Argument parsing and sub-commands of ``msgin5g``.

``asyncio.run`` appears only here. Errors from the error tree are printed as one
line plus their ``hint()``; the exit status is 1 for such errors and 2 for usage.
"""

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from msgin5g import logsafe
from msgin5g.cli import asapp
from msgin5g.cli import gateway as gateway_cli
from msgin5g.cli.area import add_area_parser, run_area
from msgin5g.cli.group import add_group_parser, run_group
from msgin5g.cli.topic import add_topic_parser, run_topic
from msgin5g.client import Client
from msgin5g.coap.endpoint import use_uvloop
from msgin5g.config import ServerConfig, load_config
from msgin5g.errors import ConfigError, MSGin5GError
from msgin5g.model.messages import UeLocation
from msgin5g.server import Server, list_ues, provision_ue, remove_ue

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
msgin5g: 3GPP MSGin5G Service (TS 23.554 / TS 24.538) server and device client.

Server side:   msgin5g serve                     run the MSGin5G Server (CoAP, SQLite)
               msgin5g ue add|list|remove        provision UEs in the server's storage
               msgin5g group|area ...            groups; Broadcast Areas
               msgin5g topic allow|deny ...      who may publish/subscribe a topic
Device side:   msgin5g ue register|deregister    register a UE with a server
               msgin5g ue send                   send a point-to-point message
               msgin5g ue listen                 stay registered, print what arrives
AS side:       msgin5g as add                    provision an AS's OAuth2 client
               msgin5g as register|deregister    AS registration (TS 29.538 REST)
               msgin5g as send|listen            A2P message; AS simulator (P2A)

Configuration: --config FILE (TOML), MSGIN5G_* environment variables, options.
"""


def _add_storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL (default sqlite:///./msgin5g.db; or memory:)",
    )


def _add_device(parser: argparse.ArgumentParser, *, location: bool = False) -> None:
    parser.add_argument("ue_service_id", metavar="ID", help="this UE's Service ID")
    parser.add_argument(
        "--secret", help="the UE's provisioned secret (or MSGIN5G_SECRET)"
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("MSGIN5G_SERVER", "coap://127.0.0.1:5683"),
        help="server URI (default coap://127.0.0.1:5683 or MSGIN5G_SERVER)",
    )
    parser.add_argument(
        "--bind",
        default="0.0.0.0:0",
        metavar="HOST:PORT",
        help="local UDP address of the UE (default any address, free port)",
    )
    if location:
        _add_location(parser)


def _add_location(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cell",
        metavar="CELL",
        help="report this serving cell in the REG (ueLocation.cellId): the UE "
        "is then in every Broadcast Area listing the cell",
    )
    parser.add_argument(
        "--tracking-area",
        metavar="TA",
        help="report this tracking area in the REG (ueLocation.trackingAreaId)",
    )


def _location(args: argparse.Namespace) -> UeLocation | None:
    cell = getattr(args, "cell", None)
    area = getattr(args, "tracking_area", None)
    if cell is None and area is None:
        return None
    return UeLocation(cell_id=cell, tracking_area_id=area)


def _add_send(ue_commands: Any) -> None:
    """``msgin5g ue send``: its targets, payload and delivery options."""
    send = ue_commands.add_parser(
        "send",
        help="register, send one message, print MSGRESP (and the IMDN with --report)",
    )
    _add_device(send, location=True)
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="OTHER", help="recipient UE Service ID")
    target.add_argument(
        "--topic", metavar="TOPIC", help="publish to a Messaging Topic instead"
    )
    target.add_argument(
        "--group", metavar="GROUP", help="send to every member of a group instead"
    )
    target.add_argument(
        "--area",
        metavar="AREA",
        help="broadcast to every UE in a Broadcast Area instead (the area must "
        "allow UEs to send: msgin5g area create … --ue-may-send)",
    )
    target.add_argument(
        "--as",
        dest="to_as",
        metavar="AS",
        help="send to an Application Server instead (Point-to-Application)",
    )
    body = send.add_mutually_exclusive_group(required=True)
    body.add_argument("--text", help="payload text (UTF-8)")
    body.add_argument("--file", type=Path, help="payload file (binary)")
    send.add_argument("--report", action="store_true", help="ask for a delivery report")
    send.add_argument(
        "--store-until",
        metavar="TIME",
        help="RFC 3339 expiry of the stored message, e.g. 2030-01-01T00:00:00Z",
    )
    send.add_argument(
        "--no-store",
        action="store_true",
        help="do not store if the recipient is offline",
    )
    send.add_argument("--priority", choices=["HIGH", "MIDDLE", "LOW"])
    send.add_argument(
        "--segment-size",
        type=int,
        default=2048,
        metavar="OCTETS",
        help="larger payloads are sent as MSGin5G segments (default 2048)",
    )
    send.add_argument("--app", metavar="APPLICATION_ID", help="applicationId")
    send.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="with --report: how long to wait for the report (default 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to document the CLI)."""
    parser = argparse.ArgumentParser(
        prog="msgin5g",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the MSGin5G Server",
        description="Run the MSGin5G Server: MSGin5G-1 over CoAP/UDP, durable "
        "store-and-forward in SQLite. Stops cleanly on SIGINT/SIGTERM.",
    )
    _add_storage(serve)
    serve.add_argument(
        "--coap", metavar="HOST:PORT", help="CoAP bind (default 0.0.0.0:5683)"
    )
    serve.add_argument(
        "--http", metavar="HOST:PORT", help="HTTP bind (default 127.0.0.1:8080)"
    )
    serve.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any configuration value, e.g. --set delivery.default_ttl=3600",
    )

    gateway_cli.add_gateway_parser(commands)
    asapp.add_parser(commands, _add_storage)
    add_group_parser(commands)
    add_area_parser(commands)
    add_topic_parser(commands)
    ue = commands.add_parser("ue", help="provision UEs, or act as a UE")
    ue_commands = ue.add_subparsers(dest="ue_command", required=True, metavar="ACTION")

    add = ue_commands.add_parser(
        "add",
        help="provision a UE (prints a generated secret once)",
        description="Store a UE Service ID and the digest of its PSK_TOKEN "
        "credential. Without --secret a random secret is generated and printed "
        "once: keep it, the server stores only a digest.",
    )
    add.add_argument("ue_service_id", metavar="ID")
    add.add_argument("--secret", help="use this secret instead of generating one")
    _add_storage(add)
    _add_storage(ue_commands.add_parser("list", help="list provisioned UEs"))
    rm = ue_commands.add_parser("remove", help="remove a provisioned UE")
    rm.add_argument("ue_service_id", metavar="ID")
    _add_storage(rm)

    reg = ue_commands.add_parser("register", help="register a UE and print REGRESP")
    _add_device(reg, location=True)
    dereg = ue_commands.add_parser("deregister", help="de-register a UE")
    _add_device(dereg)
    for parser_ in (reg, dereg):
        gateway_cli.add_ue_options(parser_)

    _add_send(ue_commands)
    listen = ue_commands.add_parser(
        "listen",
        help="register and print each received message/report as a JSON line",
        description="Register, then print every MSG and IMDN the server delivers as "
        "one JSON line (the wire JSON; with --decode also 'payloadText'). Reports "
        "are sent automatically when a message asks for one.",
    )
    _add_device(listen, location=True)
    listen.add_argument("--count", type=int, default=0, help="exit after N items")
    listen.add_argument(
        "--timeout", type=float, default=0.0, help="exit after SECONDS without traffic"
    )
    listen.add_argument("--decode", action="store_true", help="add payloadText (UTF-8)")
    listen.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="subscribe to a Messaging Topic first (repeatable; prints TOPICSUBRESP)",
    )
    return parser


def _server_config(args: argparse.Namespace) -> ServerConfig:
    overrides: dict[str, Any] = {}
    for item in getattr(args, "set", []) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected SECTION.KEY=VALUE")
        overrides[key.strip()] = value
    if getattr(args, "coap", None):
        overrides["coap.bind"] = args.coap
    if getattr(args, "http", None):
        overrides["rest.bind"] = args.http
    if getattr(args, "storage", None):
        overrides["storage.url"] = args.storage
    if args.log_level:
        overrides["log.level"] = args.log_level
    environ = {k: v for k, v in os.environ.items() if k.startswith("MSGIN5G_")}
    return load_config(args.config, environ, overrides)


async def _serve(config: ServerConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Server(config) as server:
        # start-up objects (registrations, tables) never die: keep them out of
        # every later collection (PERFORMANCE.md: full collections grow with them)
        gc.freeze()
        # a fan-out to 10,000 UEs allocates ~10 objects per copy; young
        # collections every 700 allocations cost ~20% of it (benchmarks/fanout.py)
        gc.set_threshold(20_000, 20, 20)
        if server.http_address is not None:
            web, web_port = server.http_address
            print(f"msgin5g: serving TS 29.538 APIs on http://{web}:{web_port}")
        host, port = server.coap_address
        print(f"msgin5g: serving MSGin5G-1 on coap://{host}:{port}/msgin5g", flush=True)
        await stop.wait()
        logging.getLogger("msgin5g").info("shutting down")


def _print(obj: msgspec.Struct, *, decode: bool = False) -> None:
    data: dict[str, Any] = json.loads(msgspec.json.encode(obj))
    if decode and isinstance(data.get("payload"), str):
        raw = base64.b64decode(data["payload"])
        data["payloadText"] = raw.decode("utf-8", "replace")
    print(json.dumps(data, separators=(",", ":")), flush=True)


def _bind(text: str) -> tuple[str, int]:
    from msgin5g.config import parse_hostport

    return parse_hostport(text, default_port=0)


def _client(args: argparse.Namespace) -> Client:
    secret = args.secret or os.environ.get("MSGIN5G_SECRET")
    return Client(
        args.ue_service_id,
        secret,
        server=args.server,
        bind=_bind(args.bind),
        segment_size=getattr(args, "segment_size", 2048),
    )


async def _ue_device(args: argparse.Namespace) -> int:
    if getattr(args, "via_gateway", None):
        return await gateway_cli.run_via_gateway(args)
    async with _client(args) as client:
        if args.ue_command == "deregister":
            _print(await client.deregister())
            return 0
        _print(await client.register(location=_location(args)))
        if args.ue_command == "register":
            return 0
        if args.ue_command == "send":
            return await _send(client, args)
        return await _listen(client, args)


_ACCEPTED = ("DELY_ACCEPTED", "DELY_STORED")


async def _send(client: Client, args: argparse.Namespace) -> int:
    payload = args.file.read_bytes() if args.file else args.text.encode()
    expires = None
    if args.store_until:
        try:
            expires = datetime.fromisoformat(args.store_until.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(
                f"--store-until: not an RFC 3339 time: {args.store_until}"
            ) from None
    others = (
        (args.group, client.send_to_group),
        (args.area, client.send_to_area),
        (args.to_as, client.send_to_as),
    )
    for target, method in others:
        if target:
            answer = await method(
                target,
                payload,
                application_id=args.app,
                report=args.report,
                store_and_forward=not args.no_store,
            )
            _print(answer)
            return 0 if answer.delivery_status in _ACCEPTED else 1
    if args.topic:
        published = await client.publish(
            args.topic,
            payload,
            application_id=args.app,
            store_and_forward=not args.no_store,
        )
        _print(published)
        return 0 if published.delivery_status == "DELY_ACCEPTED" else 1
    resp = await client.send(
        args.to,
        payload,
        report=args.report,
        store_and_forward=not args.no_store,
        expires=expires,
        priority=args.priority,
        application_id=args.app,
        progress=_progress,
    )
    _print(resp)
    if resp.delivery_status in ("DELY_FAILED", "DELY_REJECTED"):
        return 1
    if args.report:
        try:
            while True:
                received = await client.receive(timeout=args.wait)
                _print(received.item)
                if received.is_report and received.item.message_id == resp.message_id:
                    break
        except TimeoutError:
            print(f"msgin5g: no report within {args.wait:g} s", file=sys.stderr)
            return 3
    return 0


def _progress(sent: int, total: int) -> None:
    """Progress bar on stderr for a segmented message (stdout stays JSON)."""
    if total < 2:
        return
    width = 30
    filled = width * sent // total
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if sent == total else ""
    print(f"\rsegments [{bar}] {sent}/{total}", end=end, file=sys.stderr, flush=True)


async def _listen(client: Client, args: argparse.Namespace) -> int:
    if args.topic:
        _print(await client.subscribe(args.topic))
    seen = 0
    while args.count <= 0 or seen < args.count:
        try:
            received = await client.receive(timeout=args.timeout or None)
        except TimeoutError:
            return 0
        _print(received.item, decode=args.decode)
        seen += 1
    await asyncio.sleep(0.2)  # let automatic reports go out
    return 0


async def _ue_admin(args: argparse.Namespace) -> int:
    config = _server_config(args)
    url = config.storage.url
    if args.ue_command == "add":
        secret = await provision_ue(
            url, args.ue_service_id, args.secret, synchronous=config.storage.synchronous
        )
        if args.secret:
            print(f"provisioned {args.ue_service_id}")
        else:
            print(f"provisioned {args.ue_service_id}; secret (shown once): {secret}")
        return 0
    if args.ue_command == "remove":
        if await remove_ue(url, args.ue_service_id):
            print(f"removed {args.ue_service_id}")
            return 0
        print(f"msgin5g: {args.ue_service_id} is not provisioned", file=sys.stderr)
        return 1
    for ue, registered in await list_ues(url):
        print(f"{ue}\t{'registered' if registered else 'not registered'}")
    return 0


async def _as_command(args: argparse.Namespace) -> int:
    from msgin5g.server.applications import provision_as_client

    async def provision(as_service_id: str, secret: str | None, **role: Any) -> str:
        config = _server_config(args)
        return await provision_as_client(
            config.storage.url,
            as_service_id,
            secret,
            synchronous=config.storage.synchronous,
            **role,
        )

    return await asapp.run(args, provision)


def _run(args: argparse.Namespace) -> int:
    use_uvloop()
    if args.command == "serve":
        config = _server_config(args)
        logsafe.install(config.log.level, logsafe.DEFAULT_FORMAT)
        asyncio.run(_serve(config))
        return 0
    logsafe.install(args.log_level or "WARNING")
    if args.command == "gateway":
        return gateway_cli.run_gateway(args)
    if args.command == "as":
        return asyncio.run(_as_command(args))
    if args.command == "group":
        return asyncio.run(run_group(args))
    if args.command == "area":
        return asyncio.run(run_area(args))
    if args.command == "topic":
        return asyncio.run(run_topic(args))
    if args.ue_command in {"add", "list", "remove"}:
        return asyncio.run(_ue_admin(args))
    return asyncio.run(_ue_device(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``msgin5g`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except MSGin5GError as exc:
        print(f"msgin5g: {exc}", file=sys.stderr)
        hint = exc.hint()
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
