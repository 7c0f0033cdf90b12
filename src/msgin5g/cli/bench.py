"""``msgin5g bench p2p|reg|a2p|fanout|provision``: load a running deployment.

The parser half (:func:`add_bench_parser`) imports only the standard library;
:func:`run_bench` imports :mod:`msgin5g.bench` (device side: msgspec, uvloop)
and ``bench provision`` the import path of ``msgin5g ue import``
(:mod:`msgin5g.cli.ue_bulk`, the server's storage), each when it runs.
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from msgin5g.cli.common import add_storage

__all__ = ["add_bench_parser", "run_bench", "run_provision"]

_DESCRIPTION = """\
Measure a running MSGin5G server from outside, the way nats bench or
redis-benchmark do: simulated UEs (one UDP socket each, raw CoAP) in --workers
generator processes on uvloop.

  p2p     UE -> server -> UE messages; each UE sends MSG to the next one. A
          message counts when the recipient UE received it.
  reg     single REGs (PSK_TOKEN check, durable) per second.
  a2p     MSGS_MSGDelivery deliver-as-message POSTs (HTTP/1.1 keep-alive or
          --h2c) delivered to the UEs; the AS is registered through the REST API.
  fanout  one MSG to a group of all --ues UEs per round (the group is created or
          replaced through the REST API, SS_GroupManagement).

The UEs must be provisioned first with one secret:
  msgin5g bench provision --storage URL --ues N --secret S
They are named <prefix>00001 ... (--prefix, default bench-).

--engine c (p2p and reg) sends the measured load from a small C program
(coapgen, built once with cc or gcc into ~/.cache/msgin5g) on the sockets the
Python workers opened and registered: about 10x less generator CPU per message,
so the server, not the generator, is the limit on a shared machine. It speaks
plain CoAP only (no DTLS, no block-wise, no Observe). Default: --engine python.

--rate 0 (default) is a closed loop: as fast as the server answers (saturation).
--rate R offers R messages/s over all processes, paced. Output: a progress line
on stderr (terminal only), then a summary (rate, p50/p90/p99, sent, received,
refused, lost) or, with --json, one JSON object. A warning says when the
generator itself was busy enough to be the limit. See docs/performance.md.
"""


_WINDOW = {"p2p": "MSGs per UE", "reg": "REGs per socket"}


def _add_load_options(parser: argparse.ArgumentParser, mode: str) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("MSGIN5G_SERVER", "coap://127.0.0.1:5683"),
        metavar="URI",
        help="the server's CoAP URI (default coap://127.0.0.1:5683 or MSGIN5G_SERVER)",
    )
    parser.add_argument(
        "--http",
        metavar="URL",
        required=mode in ("a2p", "fanout"),
        help="the server's REST API, http://HOST:PORT (the --http of serve)",
    )
    parser.add_argument(
        "--ues", type=int, default=100, metavar="N", help="bench UEs (default 100)"
    )
    parser.add_argument(
        "--secret",
        default=os.environ.get("MSGIN5G_SECRET"),
        help="the bench UEs' secret, as given to 'bench provision' (or MSGIN5G_SECRET)",
    )
    parser.add_argument(
        "--prefix", default="bench-", help="UE Service ID prefix (default bench-)"
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        metavar="R",
        help="offered load per second over all processes; 0 = closed loop (default)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        metavar="S",
        help="measured window in seconds (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        metavar="S",
        help="load before the window, not counted (default 1)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=5.0,
        metavar="S",
        help="after the window, wait up to S seconds for messages under way (default 5)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="W",
        help="generator processes (default 1; one core each)",
    )
    if mode in _WINDOW:
        parser.add_argument(
            "--window",
            type=int,
            default=1,
            metavar="K",
            help=f"{_WINDOW[mode]} in flight (default 1, RFC 7252 NSTART)",
        )
    if mode != "reg":
        parser.add_argument(
            "--size",
            type=int,
            default=48,
            metavar="OCTETS",
            help="payload size (default 48; the first 8 carry the send time)",
        )
    parser.add_argument(
        "--engine",
        choices=("python", "c"),
        default="python",
        help="who sends the measured load: python (default) or c, a small C "
        "program built with cc/gcc on first use (p2p and reg only; ~10x less "
        "generator CPU per message)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_bench_parser(commands: Any) -> None:
    """Add ``bench`` and its modes to the top-level sub-parsers."""
    bench = commands.add_parser(
        "bench",
        help="load generators against a running server (p2p, reg, a2p, fanout)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    modes = bench.add_subparsers(dest="bench_command", required=True, metavar="MODE")
    texts = {
        "p2p": "UE -> server -> UE messages per second, delivery latency",
        "reg": "registrations per second (single REG, PSK check, durable)",
        "a2p": "AS -> server -> UE messages through the REST API",
        "fanout": "one group message to every bench UE, per round",
    }
    for mode, text in texts.items():
        parser = modes.add_parser(mode, help=text, description=text + ".")
        _add_load_options(parser, mode)
        if mode == "reg":
            parser.add_argument(
                "--sockets",
                type=int,
                default=64,
                help="source sockets over all processes (default 64); socket k "
                "registers the UEs k, k+sockets, ...",
            )
        if mode == "p2p":
            parser.add_argument(
                "--store",
                action="store_true",
                help="storeAndForwardFlag true: each message asks for storage, so "
                "the server stores it durably before it answers (default: the "
                "message does not ask, see docs/performance.md)",
            )
        if mode == "a2p":
            parser.add_argument(
                "--connections",
                type=int,
                default=8,
                help="HTTP/1.1 connections per process (default 8); with --h2c "
                "the streams in flight on its one connection",
            )
            parser.add_argument(
                "--h2c", action="store_true", help="HTTP/2 cleartext (needs h2)"
            )
            parser.add_argument(
                "--store",
                action="store_true",
                help="stoAndFwInd true: the server stores each message durably",
            )
            parser.add_argument(
                "--as", dest="as_id", default="bench-as", help="the AS Service ID"
            )
        if mode == "fanout":
            parser.add_argument(
                "--group",
                default="bench-group",
                help="the group to create/replace and send to (default bench-group)",
            )
        if mode in ("a2p", "fanout"):
            parser.add_argument(
                "--token",
                default=os.environ.get("MSGIN5G_TOKEN"),
                help="OAuth2 bearer token for the REST API (or MSGIN5G_TOKEN)",
            )
    provision = modes.add_parser(
        "provision",
        help="provision the bench UEs in the server's storage",
        description="Provision <prefix>00001 ... <prefix>N with one secret, "
        "through the import path of 'msgin5g ue import' (a stream of "
        "transactions; a running server sees them at once). Existing bench UEs "
        "get the secret again, so re-running is harmless.",
    )
    provision.add_argument("--ues", type=int, required=True, metavar="N")
    provision.add_argument("--secret", required=True)
    provision.add_argument("--prefix", default="bench-")
    add_storage(provision)


def _options(args: argparse.Namespace) -> Any:
    from msgin5g.bench import BenchOptions

    mode = args.bench_command
    return BenchOptions(
        mode=mode,
        server=args.server,
        ues=args.ues,
        secret=args.secret or "",
        prefix=args.prefix,
        http=args.http,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        drain=args.drain,
        workers=args.workers,
        window=getattr(args, "window", 1),
        size=getattr(args, "size", 48),
        sockets=getattr(args, "sockets", 64),
        connections=getattr(args, "connections", 8),
        h2c=getattr(args, "h2c", False),
        store=getattr(args, "store", False),
        token=getattr(args, "token", None),
        as_id=getattr(args, "as_id", "bench-as"),
        group=getattr(args, "group", "bench-group"),
        engine=args.engine,
    )


def run_bench(args: argparse.Namespace) -> int:
    """``msgin5g bench MODE``: run it, print the summary (or JSON)."""
    from msgin5g.bench import format_table, run

    summary = run(_options(args))
    print(summary.to_json() if args.json else format_table(summary))
    return 0


async def run_provision(args: argparse.Namespace) -> int:
    """``msgin5g bench provision``: ``ue import`` of the generated bench UEs."""
    from msgin5g.cli.ue_bulk import run_import
    from msgin5g.errors import ConfigError

    if args.ues < 1:
        raise ConfigError("--ues must be at least 1")
    if "," in args.secret or "\n" in args.secret or '"' in args.secret:
        raise ConfigError("--secret must not contain ',', '\"' or a line break")
    with tempfile.TemporaryDirectory(prefix="msgin5g-bench-") as tmp:
        path = Path(tmp) / "ues.csv"
        with path.open("w", encoding="utf-8") as out:
            out.write("ueServiceId,secret\n")
            out.writelines(
                f"{args.prefix}{i:05d},{args.secret}\n" for i in range(1, args.ues + 1)
            )
        imported = argparse.Namespace(
            file=str(path),
            force=True,
            format="csv",
            storage=args.storage,
            config=args.config,
        )
        status = await run_import(imported)
    if status == 0:
        print(
            f"provisioned {args.prefix}00001 ... {args.prefix}{args.ues:05d}",
            file=sys.stderr,
        )
    return status
