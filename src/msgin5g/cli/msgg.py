"""The parser half of ``msgin5g l3g`` and ``msgin5g n3g`` (Message Gateways).

Standard library only; what the commands run is in :mod:`.msgg_run`
(imported when one runs). See docs/gateways.md.
"""

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["add_msgg_parsers"]

_L3G = """\
Legacy 3GPP Message Gateway (TS 23.554 5.3.4.2): reaches Legacy 3GPP UEs by SMS.

Serves MSGG_L3GDelivery (TS 29.538) to the MSGin5G Server, registers the UEs
it represents with the server, and talks SMPP 3.4 to an SMSC as an ESME
(bind_transceiver): messages for its UEs become SMS (GSM 7-bit or UCS-2,
concatenated when long), delivery receipts become delivery status reports,
and SMS from its UEs to its numbers become messages to MSGin5G UEs or ASs.
Everything acknowledged waits in the --outbox SQLite file until the next hop
(SMSC or server) took it.

example:
  msgin5g l3g --server http://127.0.0.1:8080 --listen 127.0.0.1:8091 \\
      --smsc smsc.example:2775 --system-id esme1 --password secret \\
      --ue meter-7=491701234567 --number 5000=reply --number 5001=as:billing
"""

_N3G = """\
Non-3GPP Message Gateway (TS 23.554 5.3.4.3): reaches devices over plain MQTT.

Serves MSGG_N3GDelivery (TS 29.538) to the MSGin5G Server and registers its
devices with the server. A message for device D is published (QoS 1, the raw
payload) on PREFIX/D/down; what D publishes on PREFIX/D/up becomes a message
from D (to --uplink-to); a report comes from the broker's PUBACK (--ack
puback) or from the device publishing the msgId on PREFIX/D/ack (--ack app).

example:
  msgin5g n3g --server http://127.0.0.1:8080 --listen 127.0.0.1:8092 \\
      --broker mqtt://127.0.0.1:1883 --device sensor-1 --uplink-to as:collector
"""


def _common(parser: argparse.ArgumentParser, kind: str, port: int) -> None:
    parser.add_argument(
        "--id",
        dest="gateway_id",
        default=f"{kind}-1",
        help=f"this gateway's identity at the server (default {kind}-1)",
    )
    parser.add_argument(
        "--server",
        default=os.environ.get("MSGIN5G_HTTP", "http://127.0.0.1:8080"),
        help="the MSGin5G Server's HTTP API root (default http://127.0.0.1:8080 "
        "or MSGIN5G_HTTP)",
    )
    parser.add_argument(
        "--listen",
        default=f"127.0.0.1:{port}",
        metavar="HOST:PORT",
        help=f"where this gateway serves its MSGG API (default 127.0.0.1:{port}; "
        "port 0 picks a free one)",
    )
    parser.add_argument(
        "--public-uri",
        metavar="URI",
        help="the {apiRoot} the server should call (default http://LISTEN)",
    )
    parser.add_argument(
        "--outbox",
        type=Path,
        default=Path(f"{kind}-outbox.db"),
        help=f"durable outbox SQLite file (default ./{kind}-outbox.db)",
    )
    parser.add_argument(
        "--client-id",
        metavar="ID",
        help="OAuth2 client id at the server (default: the --id); used with --secret",
    )
    parser.add_argument(
        "--secret",
        default=os.environ.get("MSGIN5G_GATEWAY_SECRET"),
        help="OAuth2 client secret (or MSGIN5G_GATEWAY_SECRET): needed when the "
        "server has rest.oauth2 = true (a 'gateway' client serving these UEs)",
    )
    parser.add_argument(
        "--validity",
        type=float,
        default=300.0,
        help="seconds the server keeps the registration; refreshed every third "
        "(default 300)",
    )


def add_msgg_parsers(commands: Any) -> None:
    """Add ``l3g`` and ``n3g`` to the ``msgin5g`` sub-commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    l3g = commands.add_parser(
        "l3g",
        help="run a Legacy 3GPP Message Gateway (SMS over SMPP 3.4)",
        description=_L3G,
        formatter_class=fmt,
    )
    _common(l3g, "l3g", 8091)
    l3g.add_argument(
        "--smsc", default="127.0.0.1:2775", metavar="HOST:PORT", help="the SMSC"
    )
    l3g.add_argument("--system-id", default="msgin5g", help="SMPP system_id")
    l3g.add_argument(
        "--password",
        default=os.environ.get("MSGIN5G_SMPP_PASSWORD", ""),
        help="SMPP password (or MSGIN5G_SMPP_PASSWORD; at most 8 characters)",
    )
    l3g.add_argument("--system-type", default="", help="SMPP system_type")
    l3g.add_argument(
        "--source",
        default="5000",
        metavar="NUMBER",
        help="source address of the SMS it sends; replies to it go back to the "
        "sender (default 5000)",
    )
    l3g.add_argument(
        "--window",
        type=int,
        default=10,
        help="submit_sm awaiting their response at once (default 10)",
    )
    l3g.add_argument(
        "--enquire-link",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="enquire_link after this much silence (default 30)",
    )
    l3g.add_argument(
        "--ue",
        action="append",
        default=[],
        metavar="ID=MSISDN",
        help="a Legacy 3GPP UE this gateway represents (repeatable)",
    )
    l3g.add_argument(
        "--ues-file",
        type=Path,
        help="file of 'UE_SERVICE_ID,MSISDN' lines (# comments)",
    )
    l3g.add_argument(
        "--number",
        action="append",
        default=[],
        metavar="NUMBER=TARGET",
        help="where an SMS to NUMBER goes: reply (the last sender), ue:ID or "
        "as:ID (repeatable)",
    )
    n3g = commands.add_parser(
        "n3g",
        help="run a Non-3GPP Message Gateway (plain MQTT devices)",
        description=_N3G,
        formatter_class=fmt,
    )
    _common(n3g, "n3g", 8092)
    n3g.add_argument(
        "--broker",
        default="mqtt://127.0.0.1:1883",
        help="MQTT broker URI: mqtt:// or mqtts:// (TLS), with USER:PASSWORD@ "
        "when it needs a login (or MSGIN5G_MQTT_PASSWORD); default "
        "mqtt://127.0.0.1:1883",
    )
    n3g.add_argument(
        "--prefix", default="n3g", help="topic prefix of the devices (default n3g)"
    )
    n3g.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID",
        help="a device (= its UE Service ID) this gateway represents (repeatable)",
    )
    n3g.add_argument(
        "--devices-file", type=Path, help="file of device ids, one per line"
    )
    n3g.add_argument(
        "--uplink-to",
        metavar="TARGET",
        help="where device uplink goes: ue:ID or as:ID (default: the last "
        "sender to that device)",
    )
    n3g.add_argument(
        "--ack",
        choices=("puback", "app"),
        default="puback",
        help="report delivery on the broker's PUBACK, or when the device "
        "publishes the msgId on PREFIX/ID/ack (default puback)",
    )
    n3g.add_argument(
        "--ack-timeout",
        type=float,
        default=300.0,
        help="with --ack app: report a failure after this many seconds (300)",
    )
