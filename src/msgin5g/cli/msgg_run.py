"""What ``msgin5g l3g`` / ``msgin5g n3g`` run (parser: :mod:`.msgg`).

Builds the gateway from the options, starts it, prints one JSON line
``{"event": "ready", ...}`` on stdout and runs until SIGINT / SIGTERM.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Protocol

from msgin5g.errors import ConfigError
from msgin5g.msgg.base import GatewayConfig

__all__ = ["run_msgg"]

log = logging.getLogger(__name__)

_STOP_TIMEOUT = 6.0
"""Seconds a gateway may take to stop after SIGINT/SIGTERM before it exits anyway."""


class _Gateway(Protocol):
    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def _gateway_config(args: argparse.Namespace, kind: str, api: str) -> GatewayConfig:
    if not args.server.startswith(("http://", "https://")):
        raise ConfigError(f"--server {args.server!r}: expected http(s)://HOST:PORT")
    if args.validity <= 3:
        raise ConfigError("--validity must be more than 3 seconds")
    return GatewayConfig(
        gateway_id=args.gateway_id,
        kind=kind,
        api_name=api,
        server=args.server,
        listen=args.listen,
        public_uri=args.public_uri,
        outbox=args.outbox,
        validity=args.validity,
        client_id=args.client_id,
        secret=args.secret or None,
    )


def _build_l3g(args: argparse.Namespace) -> tuple[_Gateway, dict[str, object]]:
    from msgin5g.msgg.l3g.directory import Directory
    from msgin5g.msgg.l3g.gateway import L3GConfig, LegacyGateway

    directory = Directory()
    if args.ues_file is not None:
        directory.load(args.ues_file)
    for spec in args.ue:
        ue, sep, msisdn = spec.partition("=")
        if not sep:
            raise ConfigError(f"--ue {spec!r}: expected ID=MSISDN")
        directory.add(ue, msisdn)
    for spec in args.number:
        directory.add_number(spec)
    if not len(directory):
        raise ConfigError("no UEs: give --ue ID=MSISDN or --ues-file")
    if len(args.password) > 8 or len(args.system_id) > 15:
        raise ConfigError("--password is at most 8, --system-id 15 characters (SMPP)")
    if args.window < 1:
        raise ConfigError("--window must be at least 1")
    config = L3GConfig(
        gateway=_gateway_config(args, "L3G", "msgg-l3gdelivery"),
        smsc=args.smsc,
        system_id=args.system_id,
        password=args.password,
        system_type=args.system_type,
        source=args.source.removeprefix("+"),
        window=args.window,
        enquire_link=args.enquire_link,
        directory=directory,
    )
    gateway = LegacyGateway(config)
    return gateway, {"smsc": args.smsc, "ues": len(directory)}


def _build_n3g(args: argparse.Namespace) -> tuple[_Gateway, dict[str, object]]:
    from msgin5g.msgg.n3g.gateway import N3GConfig, NonGateway, parse_target

    devices = list(args.device)
    if args.devices_file is not None:
        devices += _lines(args.devices_file)
    if not devices:
        raise ConfigError("no devices: give --device ID or --devices-file")
    config = N3GConfig(
        gateway=_gateway_config(args, "N3G", "msgg-n3gdelivery"),
        broker=args.broker,
        prefix=args.prefix.strip("/"),
        devices=devices,
        uplink_to=None if args.uplink_to is None else parse_target(args.uplink_to),
        ack=args.ack,
        ack_timeout=args.ack_timeout,
    )
    gateway = NonGateway(config)
    return gateway, {"broker": gateway.broker, "devices": len(devices)}


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--devices-file {path}: {exc.strerror}") from None
    return [
        line.split("#", 1)[0].strip()
        for line in text.splitlines()
        if line.split("#", 1)[0].strip()
    ]


async def _serve(gateway: _Gateway, info: dict[str, object]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    try:
        runtime = getattr(gateway, "runtime", None)
        uri = runtime.uri if runtime is not None else None
        print(json.dumps({"event": "ready", "uri": uri, **info}), flush=True)
        await stop.wait()
    finally:
        # bounded: a broker or HTTP peer that went away must not keep a stopped
        # gateway alive (what is queued is already committed to the outbox)
        closing = asyncio.ensure_future(gateway.aclose())
        done, _ = await asyncio.wait([closing], timeout=_STOP_TIMEOUT)
        if not done:
            log.warning(
                "shutdown did not finish within %.0f s; exiting (the outbox keeps "
                "what is queued)",
                _STOP_TIMEOUT,
            )
            logging.shutdown()
            os._exit(0)
        closing.result()


def run_msgg(args: argparse.Namespace) -> int:
    """Run ``msgin5g l3g`` or ``msgin5g n3g`` until interrupted."""
    build = _build_l3g if args.command == "l3g" else _build_n3g
    gateway, info = build(args)
    asyncio.run(_serve(gateway, info))
    return 0
