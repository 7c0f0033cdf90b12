"""``msgin5g ue register|deregister|send|listen``: act as a UE (device side).

Imported by :mod:`msgin5g.cli.main` only when such a command runs. It needs the
device library alone (:class:`msgin5g.client.Client`, msgspec): never the server
stack, so it works with a plain ``pip install msgin5g``.
"""

import argparse
import asyncio
import base64
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from msgin5g.client import Client
from msgin5g.config import parse_hostport
from msgin5g.errors import ConfigError
from msgin5g.model.messages import UeLocation

__all__ = ["run_device"]

_ACCEPTED = ("DELY_ACCEPTED", "DELY_STORED")


def _location(args: argparse.Namespace) -> UeLocation | None:
    cell = getattr(args, "cell", None)
    area = getattr(args, "tracking_area", None)
    if cell is None and area is None:
        return None
    return UeLocation(cell_id=cell, tracking_area_id=area)


def _print(obj: msgspec.Struct, *, decode: bool = False) -> None:
    data: dict[str, Any] = json.loads(msgspec.json.encode(obj))
    if decode and isinstance(data.get("payload"), str):
        raw = base64.b64decode(data["payload"])
        data["payloadText"] = raw.decode("utf-8", "replace")
    print(json.dumps(data, separators=(",", ":")), flush=True)


def _client(args: argparse.Namespace) -> Client:
    secret = args.secret or os.environ.get("MSGIN5G_SECRET")
    return Client(
        args.ue_service_id,
        secret,
        server=args.server,
        bind=parse_hostport(args.bind, default_port=0),
        segment_size=getattr(args, "segment_size", 2048),
    )


async def run_device(args: argparse.Namespace) -> int:
    """Run a device ``ue`` action; returns the exit status."""
    if getattr(args, "via_gateway", None):
        from msgin5g.cli.gateway_run import run_via_gateway

        return await run_via_gateway(args)
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


def _expiry(args: argparse.Namespace) -> datetime | None:
    """``--store-until`` as given, or ``--store-for`` from now (after start-up)."""
    if args.store_for is not None:
        return datetime.now(UTC) + timedelta(seconds=args.store_for)
    if not args.store_until:
        return None
    try:
        return datetime.fromisoformat(args.store_until.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--store-until: not an RFC 3339 time: {args.store_until}"
        ) from None


async def _send(client: Client, args: argparse.Namespace) -> int:
    payload = args.file.read_bytes() if args.file else args.text.encode()
    expires = _expiry(args)
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
