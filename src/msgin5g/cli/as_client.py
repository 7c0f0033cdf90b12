"""The HTTP side of ``msgin5g as …`` (parser: :mod:`msgin5g.cli.asapp`).

Talks to the TS 29.538 APIs with httpx and the pydantic models of
:mod:`msgin5g.codec.openapi_json`, and runs the AS simulator of ``as listen``
on the embedded ASGI server: it needs ``pip install 'msgin5g[server]'``.
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

from msgin5g.cli.common import print_provisioned
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
from msgin5g.errors import ConfigError, ServerUnreachable

__all__ = ["run"]


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
        try:
            payload = await asyncio.to_thread(Path(args.file).read_bytes)
        except OSError as exc:
            raise ConfigError(f"--file {args.file}: {exc.strerror or exc}") from None
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
    """Run an ``as`` action; ``provision`` is ``provision_as_client`` bound to storage.

    Raises:
        ServerUnreachable: the server's REST port cannot be reached.
        ConfigError: invalid options or an unreadable ``--file``.
    """
    try:
        return await _run(args, provision)
    except httpx.TransportError as exc:
        server = getattr(args, "server", "")
        raise ServerUnreachable(
            f"cannot reach {server}: {exc or type(exc).__name__}"
        ) from None


async def _run(args: argparse.Namespace, provision: Any) -> int:
    if args.as_command == "add":
        if args.ues and args.role != "gateway":
            raise ConfigError("--ues is for --role gateway only")
        if args.role == "gateway" and not args.ues:
            raise ConfigError("--role gateway needs --ues (the UEs it serves)")
        secret = await provision(
            args.as_service_id, args.secret, role=args.role, ues=args.ues
        )
        what = f"{args.role} client {args.as_service_id}"
        print_provisioned(what, secret, given=bool(args.secret))
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
