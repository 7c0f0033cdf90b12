"""``msgin5g serve``, ``msgin5g ue add|list|remove`` and ``msgin5g as add``.

The commands that open the server's storage or run the server. Imported by
:mod:`msgin5g.cli.main` only when one of them runs: it pulls in
:mod:`msgin5g.server` and so the server stack (``pip install 'msgin5g[server]'``).
"""

import argparse
import asyncio
import gc
import logging
import sys
from typing import Any

from msgin5g import logsafe
from msgin5g.cli.common import print_provisioned, server_config, stop_on_signals
from msgin5g.config import ServerConfig
from msgin5g.server import (
    Server,
    forget_dtls_key,
    list_ues,
    provision_ue,
    remove_ue,
    store_dtls_key,
)
from msgin5g.server.applications import provision_as_client

__all__ = ["run_as", "run_serve", "run_ue_admin"]


def run_serve(args: argparse.Namespace) -> int:
    """``msgin5g serve``: run until SIGINT/SIGTERM (call inside no event loop)."""
    config = server_config(args)
    logsafe.install(
        config.log.level,
        logsafe.DEFAULT_FORMAT,
        json_lines=getattr(args, "log_format", "text") == "json",
    )
    asyncio.run(_serve(config))
    return 0


async def _serve(config: ServerConfig) -> None:
    stop = stop_on_signals()
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
        if server.mqtt is not None:
            print(
                f"msgin5g: serving MSGin5G-1 over MQTT through {server.mqtt.config.url}"
                f" (topics {server.mqtt.prefix}/…)"
            )
        plain, secure = server.coap_addresses
        if secure is not None:
            print(
                f"msgin5g: serving MSGin5G-1 on coaps://{secure[0]}:{secure[1]}/msgin5g"
            )
        if plain is not None:
            print(f"msgin5g: serving MSGin5G-1 on coap://{plain[0]}:{plain[1]}/msgin5g")
        sys.stdout.flush()
        await stop.wait()
        logging.getLogger("msgin5g").info("shutting down")


async def run_ue_admin(args: argparse.Namespace) -> int:
    """``msgin5g ue add|list|remove`` on the server's storage."""
    config = server_config(args)
    url = config.storage.url
    if args.ue_command == "add":
        secret = await provision_ue(
            url,
            args.ue_service_id,
            args.secret,
            synchronous=config.storage.synchronous,
            force=args.force,
        )
        if getattr(args, "dtls", False):
            store_dtls_key(config.coap, args.ue_service_id, secret)
        print_provisioned(args.ue_service_id, secret, given=bool(args.secret))
        return 0
    if args.ue_command == "remove":
        if await remove_ue(url, args.ue_service_id):
            forget_dtls_key(config.coap, args.ue_service_id)
            print(f"removed {args.ue_service_id}")
            return 0
        print(f"msgin5g: {args.ue_service_id} is not provisioned", file=sys.stderr)
        return 1
    for ue, registered in await list_ues(url):
        print(f"{ue}\t{'registered' if registered else 'not registered'}")
    return 0


async def run_as(args: argparse.Namespace) -> int:
    """``msgin5g as …``; ``as add`` provisions in the server's storage."""
    from msgin5g.cli.as_client import run

    async def provision(as_service_id: str, secret: str | None, **role: Any) -> str:
        config = server_config(args)
        return await provision_as_client(
            config.storage.url,
            as_service_id,
            secret,
            synchronous=config.storage.synchronous,
            **role,
        )

    return await run(args, provision)
