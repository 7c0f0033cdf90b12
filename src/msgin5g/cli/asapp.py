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

Responses of the server are printed as JSON lines on stdout (``status`` and the
body, plus ``location`` for a registration). With ``--secret`` (or
``MSGIN5G_AS_SECRET``) the command first obtains an OAuth2 token (client
credentials, client id = AS Service ID).
"""

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from msgin5g.codec.openapi_json import (
    Address,
    AddressType,
    ASMessageDelivery,
    ASRegistration,
    DeliveryStatusReport,
    StoreAndForwardParameters,
    parse_time,
    present,
)
from msgin5g.config import parse_hostport
from msgin5g.errors import ConfigError

__all__ = ["add_parser", "run"]

_DEFAULT_SERVER = "http://127.0.0.1:8080"


def _add_client(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--server",
        default=os.environ.get("MSGIN5G_HTTP_SERVER", _DEFAULT_SERVER),
        help=f"apiRoot of the server (default {_DEFAULT_SERVER})",
    )
    parser.add_argument("--secret", help="OAuth2 client secret (or MSGIN5G_AS_SECRET)")


def add_parser(commands: Any, add_storage: Any) -> None:
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
        choices=["as", "gateway", "operator"],
        default="as",
        help="what the client may do (default as)",
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


def _print(data: dict[str, Any]) -> None:
    print(json.dumps(data, separators=(",", ":")), flush=True)


def _response(response: httpx.Response) -> dict[str, Any]:
    out: dict[str, Any] = {"status": response.status_code}
    if response.content:
        try:
            out["body"] = response.json()
        except ValueError:
            out["body"] = response.text
    location = response.headers.get("location")
    if location:
        out["location"] = location
        out["registrationId"] = location.rstrip("/").rsplit("/", 1)[-1]
    return out


@contextlib.asynccontextmanager
async def _session(
    args: argparse.Namespace, as_service_id: str
) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the server, with a bearer token when a secret is given."""
    async with httpx.AsyncClient(
        base_url=args.server.rstrip("/"), timeout=30
    ) as client:
        secret = args.secret or os.environ.get("MSGIN5G_AS_SECRET")
        if secret:
            reply = await client.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(as_service_id, secret),
            )
            if reply.status_code != 200:
                raise ConfigError(
                    f"token request refused: {reply.status_code} {reply.text}"
                )
            client.headers["Authorization"] = f"Bearer {reply.json()['access_token']}"
        yield client


def _json(model: Any) -> dict[str, Any]:
    return {
        "content": model.model_dump_json(by_alias=True, exclude_none=True),
        "headers": {"Content-Type": "application/json"},
    }


async def _register(args: argparse.Namespace, target_uri: str | None) -> dict[str, Any]:
    body = ASRegistration(
        **present(
            as_svc_id=args.as_service_id,
            app_id=getattr(args, "app", None),
            target_uri=target_uri,
        )
    )
    async with _session(args, args.as_service_id) as client:
        reply = await client.post(
            "/msgs-asregistration/v1/registrations", **_json(body)
        )
    return _response(reply)


async def _deregister(args: argparse.Namespace, registration_id: str) -> dict[str, Any]:
    async with _session(args, args.as_service_id) as client:
        reply = await client.delete(
            f"/msgs-asregistration/v1/registrations/{registration_id}"
        )
    return _response(reply)


async def _send(args: argparse.Namespace) -> int:
    if args.file:
        payload = await asyncio.to_thread(Path(args.file).read_bytes)
    else:
        payload = args.text.encode()
    params = None
    if args.store_until:
        try:
            params = StoreAndForwardParameters(expr_time=parse_time(args.store_until))
        except ValueError:
            raise ConfigError(
                f"--store-until: not RFC 3339: {args.store_until}"
            ) from None
    body = ASMessageDelivery(
        **present(
            ori_addr=Address(addr_type=AddressType.AS, addr=args.as_service_id),
            dest_addr=Address(addr_type=AddressType.UE, addr=args.to),
            app_id=args.app,
            msg_id=args.msg_id or str(uuid.uuid4()),
            deliv_st_req_ind=True if args.report else None,
            payload=base64.b64encode(payload).decode(),
            priority=args.priority,
            sto_and_fw_ind=not args.no_store,
            sto_and_fw_params=params,
        )
    )
    async with _session(args, args.as_service_id) as client:
        reply = await client.post(
            "/msgs-msgdelivery/v1/deliver-as-message", **_json(body)
        )
    out = _response(reply)
    _print(out)
    if reply.status_code != 200 or out.get("body", {}).get("status") == "DELY_FAILED":
        return 1
    return 0


async def _listen(args: argparse.Namespace) -> int:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from msgin5g.transports.rest.runner import AsgiServer

    host, port = parse_hostport(args.bind, default_port=9090)
    received: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def handle(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return Response(status_code=400)
        resource = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        await received.put((resource, body))
        return Response(status_code=204)

    app = Starlette(
        routes=[
            Route("/deliver-message", handle, methods=["POST"]),
            Route("/deliver-report", handle, methods=["POST"]),
        ]
    )
    server = AsgiServer(app, host, port, "hypercorn")
    await server.start()
    target_uri = f"http://{host}:{server.port}"
    print(f"msgin5g: AS listening on {target_uri}", file=sys.stderr, flush=True)
    registration_id = None
    try:
        if args.as_service_id:
            out = await _register(args, target_uri)
            _print(out)
            if out["status"] != 201:
                return 1
            registration_id = out["registrationId"]
        return await _print_received(args, received)
    finally:
        if registration_id is not None:
            with contextlib.suppress(httpx.HTTPError):
                _print(await _deregister(args, registration_id))
        await server.aclose()


async def _print_received(
    args: argparse.Namespace, received: "asyncio.Queue[tuple[str, dict[str, Any]]]"
) -> int:
    seen = 0
    while args.count <= 0 or seen < args.count:
        try:
            resource, body = await asyncio.wait_for(
                received.get(), timeout=args.timeout or None
            )
        except TimeoutError:
            return 0
        if args.decode and isinstance(body.get("payload"), str):
            raw = base64.b64decode(body["payload"])
            body["payloadText"] = raw.decode("utf-8", "replace")
        _print({"resource": resource, "body": body})
        seen += 1
        if resource == "deliver-message" and body.get("delivStReqInd"):
            await _report(args, body)
    return 0


async def _report(args: argparse.Namespace, message: dict[str, Any]) -> None:
    if not args.as_service_id:
        return
    report = DeliveryStatusReport(
        ori_addr=Address(addr_type=AddressType.AS, addr=args.as_service_id),
        dest_addr=Address.model_validate(message["oriAddr"]),
        msg_id=message["msgId"],
        deliv_st="REPT_DELY_SUCCESS",
    )
    async with _session(args, args.as_service_id) as client:
        reply = await client.post(
            "/msgs-msgdelivery/v1/deliver-report", **_json(report)
        )
    if reply.status_code != 200:
        print(f"msgin5g: report refused: {reply.status_code}", file=sys.stderr)


async def run(args: argparse.Namespace, provision: Any) -> int:
    """Run an ``as`` action; ``provision`` is ``provision_as_client`` bound to storage."""
    if args.as_command == "add":
        if args.ues and args.role != "gateway":
            raise ConfigError("--ues is for --role gateway only")
        if args.role == "gateway" and not args.ues:
            raise ConfigError("--role gateway needs --ues (the UEs it serves)")
        secret = await provision(
            args.as_service_id, args.secret, role=args.role, ues=args.ues
        )
        what = f"{args.role} client {args.as_service_id}"
        if args.secret:
            print(f"provisioned {what}")
        else:
            print(f"provisioned {what}; secret (shown once): {secret}")
        return 0
    if args.as_command == "register":
        out = await _register(args, args.target_uri)
        _print(out)
        return 0 if out["status"] == 201 else 1
    if args.as_command == "deregister":
        out = await _deregister(args, args.registration_id)
        _print(out)
        return 0 if out["status"] in (200, 204) else 1
    if args.as_command == "send":
        return await _send(args)
    return await _listen(args)
