"""``msgin5g as …``: act as an Application Server towards the TS 29.538 APIs.

* ``as add CLIENT_ID [--role as|gateway|operator] [--ues UE…]`` — provision an
  OAuth2 client in the server's storage (roles and scopes:
  docs/security-rest.md);
* ``as register AS_ID --target-uri URI`` — MSGS_ASRegistration ``POST``;
* ``as deregister REGISTRATION_ID`` — MSGS_ASRegistration ``DELETE``;
* ``as send AS_ID --to UE`` — ``deliver-as-message`` (Application-to-Point);
* ``as listen`` — an AS simulator: serves a ``targetUri`` (``/deliver-message``,
  ``/deliver-report``, digest §3.11), prints every body it receives as one JSON
  line (``{"resource": …, "body": …}``), and with ``--as`` registers itself, answers
  report requests with ``REPT_DELY_SUCCESS`` and de-registers on exit.

The parser lives here (light: built on every start); the HTTP work in
:mod:`msgin5g.cli.as_client`, imported only when an action runs. Responses of
the server are printed as JSON lines on stdout (``status`` and the
body, plus ``location`` for a registration). With ``--secret`` (or
``MSGIN5G_AS_SECRET``) the command first obtains an OAuth2 token (client
credentials, client id = AS Service ID).
"""

import argparse
import os
from typing import Any

from msgin5g.cli.common import add_storage

__all__ = ["add_parser"]

_DEFAULT_SERVER = "http://127.0.0.1:8080"


def _add_client(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("MSGIN5G_HTTP_SERVER", _DEFAULT_SERVER),
        help=f"apiRoot of the server (default {_DEFAULT_SERVER})",
    )
    parser.add_argument("--secret", help="OAuth2 client secret (or MSGIN5G_AS_SECRET)")


def add_parser(commands: Any) -> None:
    """Add the ``as`` command and its actions to the top-level sub-parsers."""
    parser = commands.add_parser(
        "as", help="provision Application Servers, or act as one (TS 29.538)"
    )
    sub = parser.add_subparsers(dest="as_command", required=True, metavar="ACTION")

    add = sub.add_parser(
        "add",
        help="provision an OAuth2 API client (prints a generated secret once)",
        description=(
            "Provision an OAuth2 client of the REST APIs. Roles: 'as' (default) "
            "acts only for the AS Service ID equal to CLIENT_ID; 'gateway' (a "
            "Message Gateway) sends messages and delivery reports for the UEs "
            "given with --ues (exact UE Service IDs, or prefixes ending in '*'; "
            "'*' alone: every UE); 'operator' manages every registration and "
            "group document. Adding an existing CLIENT_ID replaces it."
        ),
    )
    add.add_argument("as_service_id", metavar="CLIENT_ID")
    add.add_argument("--secret", help="use this secret instead of generating one")
    add.add_argument(
        "--role",
        choices=["as", "gateway", "operator", "peer"],
        default="as",
        help=(
            "what the client may do (default as); peer: another MSGin5G Server "
            "(MSGin5G-8), the client id is its domain (docs/federation.md)"
        ),
    )
    add.add_argument(
        "--ues",
        nargs="+",
        default=[],
        metavar="UE",
        help="gateway only: UE Service IDs it serves (ID, or PREFIX*)",
    )
    add_storage(add)

    reg = sub.add_parser("register", help="register an AS (prints the ack)")
    reg.add_argument("as_service_id", metavar="AS_ID")
    reg.add_argument("--target-uri", help="where the server delivers to this AS")
    reg.add_argument("--app", metavar="APPLICATION_ID", help="appId")
    _add_client(reg)

    dereg = sub.add_parser("deregister", help="de-register (by registration id)")
    dereg.add_argument("registration_id", metavar="REGISTRATION_ID")
    dereg.add_argument("--as", dest="as_service_id", metavar="AS_ID", default="")
    _add_client(dereg)

    send = sub.add_parser("send", help="send a message to a UE (A2P)")
    send.add_argument("as_service_id", metavar="AS_ID")
    send.add_argument("--to", required=True, metavar="UE", help="recipient UE")
    body = send.add_mutually_exclusive_group(required=True)
    body.add_argument("--text", help="payload text (UTF-8)")
    body.add_argument("--file", help="payload file (binary)")
    send.add_argument("--report", action="store_true", help="ask for a report")
    send.add_argument("--no-store", action="store_true", help="stoAndFwInd false")
    send.add_argument("--store-until", metavar="TIME", help="RFC 3339 exprTime")
    send.add_argument("--priority", choices=["HIGH", "MIDDLE", "LOW"])
    send.add_argument("--app", metavar="APPLICATION_ID", help="appId")
    send.add_argument("--msg-id", help="message ID (default a UUID)")
    _add_client(send)

    listen = sub.add_parser(
        "listen",
        help="AS simulator: serve a targetUri, print what arrives as JSON lines",
    )
    listen.add_argument(
        "--bind", default="127.0.0.1:9090", metavar="HOST:PORT", help="HTTP address"
    )
    listen.add_argument(
        "--as",
        dest="as_service_id",
        metavar="AS_ID",
        help="register as AS_ID (targetUri = this listener), report, de-register",
    )
    listen.add_argument("--count", type=int, default=0, help="exit after N items")
    listen.add_argument(
        "--timeout", type=float, default=0.0, help="exit after SECONDS without traffic"
    )
    listen.add_argument("--decode", action="store_true", help="add payloadText")
    _add_client(listen)
