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

from msgin5g.cli.common import stop_on_signals
from msgin5g.client import Client
from msgin5g.config import parse_hostport
from msgin5g.errors import ConfigError, TransportError
from msgin5g.model.messages import ServiceId, UeLocation

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
        oscore=bool(getattr(args, "oscore", False)),
        oscore_state=_oscore_state(args),
    )


def _oscore_state(args: argparse.Namespace) -> str | None:
    """The OSCORE state file of ``--oscore`` (a default one per UE)."""
    if not getattr(args, "oscore", False):
        return None
    given = getattr(args, "oscore_state", None)
    if given:
        return str(given)
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "msgin5g", "oscore", f"{args.ue_service_id}.json")


async def run_device(args: argparse.Namespace) -> int:
    """Run a device ``ue`` action; returns the exit status.

    Everything that can be checked locally (payload file, IDs, times, option
    combinations) is checked before the first datagram is sent.

    Raises:
        ConfigError: a local check failed.
    """
    if getattr(args, "via_gateway", None):
        from msgin5g.cli.gateway_run import run_via_gateway

        return await run_via_gateway(args)
    payload = _check_send(args) if args.ue_command == "send" else b""
    # before the first datagram: a SIGINT that lands while uvloop installs its
    # handlers can be lost (the process then listens on), so ``listen`` installs
    # them before registering; one that comes during REG still stops it after
    stop = stop_on_signals() if args.ue_command == "listen" else None
    async with _client(args) as client:
        if args.ue_command == "deregister":
            _print(await client.deregister())
            return 0
        _print(await client.register(location=_location(args)))
        if args.ue_command == "register":
            return 0
        if args.ue_command == "send":
            return await _send(client, args, payload)
        try:
            return await _listen(client, args, stop or stop_on_signals())
        finally:
            if not args.stay_registered:
                await _leave(client)


def _check_id(option: str, value: str) -> None:
    """``value`` is a well-formed Service ID / group / area / topic.

    Raises:
        ConfigError: it is not.
    """
    try:
        msgspec.convert(value, type=ServiceId)
    except msgspec.ValidationError:
        raise ConfigError(
            f"{option} {value!r}: not a valid ID (1-255 characters, no '/', '+',"
            " '#' or control characters)"
        ) from None


def _check_send(args: argparse.Namespace) -> bytes:
    """Check a ``ue send`` before registering; return its payload.

    Raises:
        ConfigError: unreadable ``--file``, malformed ID or time, or an option
            that does not apply to the target.
    """
    for option, value in (
        ("--to", args.to),
        ("--group", args.group),
        ("--area", args.area),
        ("--as", args.to_as),
        ("--topic", args.topic),
    ):
        if value is not None:
            _check_id(option, value)
    if args.topic:
        ignored = [
            option
            for option, given in (
                ("--report", args.report),
                ("--priority", args.priority),
                ("--store-until", args.store_until),
                ("--store-for", args.store_for is not None),
            )
            if given
        ]
        if ignored:
            raise ConfigError(f"{', '.join(ignored)}: does not apply to --topic")
    _expiry(args)  # a malformed --store-until fails now
    if args.file is None:
        payload: bytes = args.text.encode()
        return payload
    try:
        return bytes(args.file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"--file {args.file}: {exc.strerror or exc}") from None


async def _leave(client: Client) -> None:
    """De-register on exit so the server stores what arrives next."""
    try:
        async with asyncio.timeout(5):
            resp = await client.deregister()
    except (TransportError, TimeoutError) as exc:
        print(
            f"msgin5g: could not de-register ({exc}); the server keeps the UE "
            "registered until a delivery to it fails",
            file=sys.stderr,
        )
        return
    if resp.deregistration_result == "SUCCESS":
        print(
            f"msgin5g: de-registered {client.ue_service_id}; "
            "the server now stores its messages",
            file=sys.stderr,
        )


def _expiry(args: argparse.Namespace) -> datetime | None:
    """``--store-until`` as given, or ``--store-for`` from now (after start-up)."""
    if args.store_for is not None:
        return datetime.now(UTC) + timedelta(seconds=args.store_for)
    if not args.store_until:
        return None
    try:
        when = datetime.fromisoformat(args.store_until.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"--store-until: not an RFC 3339 time: {args.store_until}"
        ) from None
    if when.tzinfo is None:
        raise ConfigError(
            f"--store-until: {args.store_until} has no time zone (add Z or +HH:MM)"
        )
    return when


async def _send(client: Client, args: argparse.Namespace, payload: bytes) -> int:
    expires = _expiry(args)
    others = (
        (args.group, client.send_to_group, False),
        (args.area, client.send_to_area, False),
        (args.to_as, client.send_to_as, True),
    )
    for target, method, single in others:
        if target:
            answer = await method(
                target,
                payload,
                application_id=args.app,
                report=args.report,
                store_and_forward=not args.no_store,
                priority=args.priority,
                expires=expires,
            )
            _print(answer)
            if answer.delivery_status not in _ACCEPTED:
                return 1
            if args.report:
                return await _reports(client, args, answer.message_id, single)
            return 0
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
        return await _reports(client, args, resp.message_id, True)
    return 0


async def _reports(
    client: Client, args: argparse.Namespace, message_id: str, single: bool
) -> int:
    """Print what arrives until the report(s) on ``message_id``.

    ``single``: one recipient, stop at its report. Otherwise (a group or an
    area: one report per member) collect reports for ``--wait`` seconds.

    Returns:
        0 when at least one report arrived, else 3.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.wait
    reports = 0
    while (left := deadline - loop.time()) > 0:
        try:
            received = await client.receive(timeout=left)
        except TimeoutError:
            break
        _print(received.item)
        if received.is_report and received.item.message_id == message_id:
            reports += 1
            if single:
                break
    if reports:
        return 0
    print(f"msgin5g: no report within {args.wait:g} s", file=sys.stderr)
    return 3


def _progress(sent: int, total: int) -> None:
    """Progress bar on stderr for a segmented message (stdout stays JSON)."""
    if total < 2:
        return
    width = 30
    filled = width * sent // total
    bar = "#" * filled + "-" * (width - filled)
    end = "\n" if sent == total else ""
    print(f"\rsegments [{bar}] {sent}/{total}", end=end, file=sys.stderr, flush=True)


async def _listen(client: Client, args: argparse.Namespace, stop: asyncio.Event) -> int:
    """Print what arrives until --count, --timeout, SIGINT or SIGTERM (``stop``)."""
    receiving = asyncio.ensure_future(_receive(client, args))
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((receiving, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (receiving, stopping):
            task.cancel()
        await asyncio.gather(receiving, stopping, return_exceptions=True)
    if receiving.done() and not receiving.cancelled():
        return receiving.result()
    return 130 if stop.is_set() else 0


async def _receive(client: Client, args: argparse.Namespace) -> int:
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
