"""Argument parsing and dispatch of ``msgin5g``.

``asyncio.run`` appears only in the CLI. Every failure is one line plus a hint,
never a traceback: errors from the error tree print their ``hint()`` (a
``ConfigError`` without one points at the command's ``--help``), an ``OSError``
names the path or address, and anything else is reported as an internal error
whose traceback ``--log-level DEBUG`` shows. The exit status is 1 for such
errors, 2 for usage, 130 when interrupted.

Start-up stays light: building the parser imports only the standard library and
the parser halves of the command modules. What a command runs is imported when
it runs: :mod:`.device` (device library only) for ``ue register|deregister|
send|listen``, :mod:`.serve` (the server stack) for ``serve`` and ``ue add|
list|remove``, :mod:`.ue_bulk` for ``ue import|export``. A server command
without ``pip install 'msgin5g[server]'`` prints one line and a hint (:func:`main`).
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from msgin5g import logsafe
from msgin5g.cli import asapp
from msgin5g.cli import gateway as gateway_cli
from msgin5g.cli.area import add_area_parser
from msgin5g.cli.bench import add_bench_parser
from msgin5g.cli.cluster import add_cluster_parser
from msgin5g.cli.common import add_storage, missing_extra
from msgin5g.cli.group import add_group_parser
from msgin5g.cli.mqtt import add_mqtt_parser
from msgin5g.cli.msgg import add_msgg_parsers
from msgin5g.cli.topic import add_topic_parser
from msgin5g.cli.ue_file import IMPORT_EXPORT, add_import_export
from msgin5g.errors import ConfigError, MSGin5GError, StorageConflict

__all__ = ["build_parser", "main"]

_DESCRIPTION = """\
msgin5g: 3GPP MSGin5G Service (TS 23.554 / TS 24.538) server and device client.

Server side:   msgin5g serve                     run the MSGin5G Server (CoAP, SQLite)
               msgin5g doctor                    check ports, storage and peers first
               msgin5g ue add|list|remove        provision UEs in the server's storage
               msgin5g ue import|export          provision many UEs (CSV, JSON Lines)
               msgin5g group|area ...            groups; Broadcast Areas
               msgin5g topic allow|deny ...      who may publish/subscribe a topic
Device side:   msgin5g ue register|deregister    register a UE with a server
               msgin5g ue send                   send a point-to-point message
               msgin5g ue listen                 stay registered, print what arrives
AS side:       msgin5g as add                    provision an AS's OAuth2 client
               msgin5g as register|deregister    AS registration (TS 29.538 REST)
               msgin5g as send|listen            A2P message; AS simulator (P2A)
Gateways:      msgin5g l3g                       Legacy 3GPP Message Gateway (SMPP)
               msgin5g n3g                       Non-3GPP Message Gateway (MQTT)
Load testing:  msgin5g bench p2p|reg|a2p|fanout  measure a running server
Cluster:       msgin5g cluster status            nodes, leases, UEs, stored items
               msgin5g bench provision           provision the bench UEs

Configuration: --config FILE (TOML), MSGIN5G_* environment variables, options.
"""


def _add_device(parser: argparse.ArgumentParser, *, location: bool = False) -> None:
    parser.add_argument("ue_service_id", metavar="ID", help="this UE's Service ID")
    parser.add_argument(
        "--secret", help="the UE's provisioned secret (or MSGIN5G_SECRET)"
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("MSGIN5G_SERVER", "coap://127.0.0.1:5683"),
        help="server URI (default coap://127.0.0.1:5683 or MSGIN5G_SERVER); "
        "mqtt://BROKER[:PORT] or mqtts://… uses the MQTT binding (docs/mqtt.md); "
        "coaps://HOST[:5684] uses DTLS with the token as pre-shared key",
    )
    parser.add_argument(
        "--bind",
        default="0.0.0.0:0",
        metavar="HOST:PORT",
        help="local UDP address of the UE (default any address, free port)",
    )
    parser.add_argument(
        "--oscore",
        action="store_true",
        help="protect every exchange end to end with OSCORE (RFC 8613); the "
        "context is derived from the secret (docs/security-oscore.md)",
    )
    parser.add_argument(
        "--oscore-state",
        metavar="FILE",
        help="where the OSCORE sequence numbers are reserved across runs "
        "(default $XDG_STATE_HOME/msgin5g/oscore/ID.json); never delete it",
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
    expiry = send.add_mutually_exclusive_group()
    expiry.add_argument(
        "--store-until",
        metavar="TIME",
        help="RFC 3339 expiry of the stored message, e.g. 2030-01-01T00:00:00Z",
    )
    expiry.add_argument(
        "--store-for",
        type=float,
        metavar="SECONDS",
        help="expiry of the stored message SECONDS after it is sent",
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


def _workers(text: str) -> str:
    """``--workers N|auto`` as the value of ``cluster.workers`` (``auto`` = 0).

    Raises:
        argparse.ArgumentTypeError: neither a positive number nor ``auto``.
    """
    if text.strip().lower() == "auto":
        return "0"
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a number of processes or 'auto'"
        ) from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: at least 1 (or 'auto')")
    return str(count)


def _add_serve_parser(commands: Any) -> None:
    """``msgin5g serve`` and its options."""
    serve = commands.add_parser(
        "serve",
        help="run the MSGin5G Server",
        description="Run the MSGin5G Server: MSGin5G-1 over CoAP/UDP, durable "
        "store-and-forward in SQLite. Stops cleanly on SIGINT/SIGTERM.",
    )
    add_storage(serve)
    serve.add_argument(
        "--coap", metavar="HOST:PORT", help="CoAP bind (default 0.0.0.0:5683)"
    )
    serve.add_argument(
        "--coaps",
        metavar="HOST:PORT",
        help="serve coaps:// (DTLS 1.2 PSK, usually 0.0.0.0:5684); plain CoAP is "
        "then off unless --set coap.allow_insecure=true (docs/security-dtls.md)",
    )
    serve.add_argument(
        "--http", metavar="HOST:PORT", help="HTTP bind (default 127.0.0.1:8080)"
    )
    serve.add_argument(
        "--mqtt",
        metavar="URL",
        help="also serve MSGin5G-1 over MQTT through this broker "
        "(mqtt://HOST:PORT or mqtts://…; [mqtt] in the config; docs/mqtt.md)",
    )
    serve.add_argument(
        "--tls-cert",
        metavar="FILE",
        help="serve the REST APIs over TLS (h2 by ALPN) with this PEM certificate "
        "chain (rest.tls_cert; needs --tls-key)",
    )
    serve.add_argument(
        "--tls-key", metavar="FILE", help="PEM private key of --tls-cert (rest.tls_key)"
    )
    serve.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="any configuration value, e.g. --set delivery.default_ttl=3600",
    )
    serve.add_argument(
        "--workers",
        type=_workers,
        metavar="N|auto",
        help="run N server processes sharing the CoAP and HTTP ports "
        "(SO_REUSEPORT, Linux), 'auto' = one per core; needs --storage nats://... "
        "(default 1: this process serves; not with --coaps; docs/cluster.md)",
    )
    serve.add_argument(
        "--node-id",
        metavar="ID",
        help="this node's name in a cluster (letters, digits, - and _; needs "
        "--storage nats://...); with --workers, worker i is ID-w<i> "
        "(default: the host name)",
    )
    serve.add_argument("--worker-fds", help=argparse.SUPPRESS)  # supervisor -> worker


def _add_doctor_parser(commands: Any) -> None:
    """``msgin5g doctor`` and its options (those of ``serve`` it checks)."""
    doctor = commands.add_parser(
        "doctor",
        help="check a server configuration end to end (ports, storage, peers)",
        description="Check what 'msgin5g serve' with the same options would need: "
        "the configuration loads, storage opens and answers, the CoAP, coaps:// "
        "and HTTP ports are free (or a msgin5g server answers there, over TLS "
        "with rest.tls_cert), the TLS files load, the MQTT broker accepts a "
        "CONNECT with the configured credentials, peers answer. One line per "
        "check; exit status 1 if one failed.",
    )
    add_storage(doctor)
    doctor.add_argument("--coap", metavar="HOST:PORT", help="CoAP bind to check")
    doctor.add_argument(
        "--coaps", metavar="HOST:PORT", help="coaps:// (DTLS) bind to check"
    )
    doctor.add_argument("--http", metavar="HOST:PORT", help="HTTP bind to check")
    doctor.add_argument("--mqtt", metavar="URL", help="MQTT broker to check (mqtt.url)")
    doctor.add_argument("--tls-cert", metavar="FILE", help="rest.tls_cert to check")
    doctor.add_argument("--tls-key", metavar="FILE", help="rest.tls_key to check")
    doctor.add_argument(
        "--set", action="append", default=[], metavar="SECTION.KEY=VALUE"
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to document the CLI)."""
    parser = argparse.ArgumentParser(
        prog="msgin5g",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR"
    )
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text lines (default) or one JSON object per line (event, "
        "ue_service_id, message_id, cause ...)",
    )
    parser.add_argument(
        "--version", action=_Version, help="print the version of msgin5g and exit"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_serve_parser(commands)

    _add_doctor_parser(commands)

    gateway_cli.add_gateway_parser(commands)
    asapp.add_parser(commands)
    add_msgg_parsers(commands)
    add_group_parser(commands)
    add_area_parser(commands)
    add_topic_parser(commands)
    add_cluster_parser(commands)
    add_mqtt_parser(commands)
    add_bench_parser(commands)
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
    add.add_argument(
        "--force",
        action="store_true",
        help="replace the secret of an ID that is already provisioned",
    )
    add.add_argument(
        "--dtls",
        action="store_true",
        help="also keep the UE's PSK_TOKEN, sealed, in coap.psk_store so it can "
        "use coaps:// (DTLS PSK identity = ID, key = the token)",
    )
    add_storage(add)
    add_storage(ue_commands.add_parser("list", help="list provisioned UEs"))
    rm = ue_commands.add_parser("remove", help="remove a provisioned UE")
    rm.add_argument("ue_service_id", metavar="ID")
    add_storage(rm)
    add_import_export(ue_commands)

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
        "--stay-registered",
        action="store_true",
        help="do not de-register on exit (default: de-register, so the server "
        "stores what arrives next)",
    )
    listen.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="TOPIC",
        help="subscribe to a Messaging Topic first (repeatable; prints TOPICSUBRESP)",
    )
    return parser


class _Version(argparse.Action):
    """``--version``: the installed distribution's version (read only when asked)
    and whether the hot path runs compiled (:mod:`msgin5g._native`)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from msgin5g import __version__, _native

        print(f"msgin5g {__version__}")
        print(f"hot path: {_native.status}")
        parser.exit()


def use_uvloop() -> bool:
    """Run the commands on uvloop when it is installed (imported here, lazily)."""
    from msgin5g.coap.endpoint import use_uvloop as install

    return install()


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _check_log_level(args: argparse.Namespace) -> None:
    """``--log-level`` is one of :data:`_LOG_LEVELS` (any case).

    Raises:
        ConfigError: it is not.
    """
    level = args.log_level
    if level is not None and level.upper() not in _LOG_LEVELS:
        raise ConfigError(
            f"--log-level {level!r}: expected one of {', '.join(_LOG_LEVELS)}"
        )


def _command(args: argparse.Namespace) -> str:
    """The command as typed, e.g. ``ue send`` (for hints)."""
    sub = getattr(args, f"{args.command}_command", None)
    return f"{args.command} {sub}" if isinstance(sub, str) else str(args.command)


def _fail(message: str, hint: str | None) -> int:
    """Print a failure as one line (plus a hint line); return exit status 1."""
    print(f"msgin5g: {logsafe.escape_controls(message)}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return 1


_ASYNC_COMMANDS = {
    "doctor": ("msgin5g.cli.doctor", "run_doctor"),
    "as": ("msgin5g.cli.serve", "run_as"),
    "cluster": ("msgin5g.cli.cluster", "run_cluster"),
    "mqtt": ("msgin5g.cli.mqtt", "run_mqtt"),
    "group": ("msgin5g.cli.group", "run_group"),
    "area": ("msgin5g.cli.area", "run_area"),
    "topic": ("msgin5g.cli.topic", "run_topic"),
}
"""Commands that run one coroutine: (module, function), imported on use."""


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import importlib

    _check_log_level(args)
    use_uvloop()
    if args.command == "serve":
        from msgin5g.cli.serve import run_serve

        return run_serve(args)
    logsafe.install(args.log_level or "WARNING", json_lines=args.log_format == "json")
    if args.command == "gateway":
        return gateway_cli.run_gateway(args)
    if args.command in {"l3g", "n3g"}:
        from msgin5g.cli.msgg_run import run_msgg

        return run_msgg(args)
    if args.command == "bench":
        from msgin5g.cli.bench import run_bench, run_provision

        if args.bench_command == "provision":
            return asyncio.run(run_provision(args))
        return run_bench(args)
    runner = _ASYNC_COMMANDS.get(args.command)
    if runner is not None:  # imported only when it runs (startup time, extras)
        module, name = runner
        run = getattr(importlib.import_module(module), name)
        return int(asyncio.run(run(args)))
    if args.ue_command in IMPORT_EXPORT:
        from msgin5g.cli.ue_bulk import run_export, run_import

        run_bulk = run_import if args.ue_command == "import" else run_export
        return asyncio.run(run_bulk(args))
    if args.ue_command in {"add", "list", "remove"}:
        from msgin5g.cli.serve import run_ue_admin

        return asyncio.run(run_ue_admin(args))
    from msgin5g.cli.device import run_device

    return asyncio.run(run_device(args))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``msgin5g`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except MSGin5GError as exc:
        hint = exc.hint()
        if hint is None and isinstance(exc, ConfigError):
            hint = f"see: msgin5g {_command(args)} --help"
        if isinstance(exc, StorageConflict) and _command(args) == "ue add":
            hint = (
                "add --force to replace its secret (the UE must then use the new one)"
            )
        return _fail(str(exc), hint)
    except ModuleNotFoundError as exc:
        package = missing_extra(exc)
        if package is None:
            return _unexpected(exc, args)
        return _fail(
            f"'{_command(args)}' needs the server stack ({package} is not installed)",
            "pip install 'msgin5g[server]'",
        )
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return _fail(str(exc), "check the path, address or permission named above")
    except Exception as exc:
        return _unexpected(exc, args)


def _unexpected(exc: Exception, args: argparse.Namespace) -> int:
    """A bug: one line, the traceback only with ``--log-level DEBUG``."""
    if (args.log_level or "").upper() == "DEBUG":
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    return _fail(
        f"internal error: {type(exc).__name__}: {exc}",
        "run again with --log-level DEBUG for the traceback, and please report it",
    )
