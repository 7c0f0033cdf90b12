"""``msgin5g serve``, ``msgin5g ue add|list|remove`` and ``msgin5g as add``.

The commands that open the server's storage or run the server. Imported by
:mod:`msgin5g.cli.main` only when one of them runs: it pulls in
:mod:`msgin5g.server` and so the server stack (``pip install 'msgin5g[server]'``).

``serve`` runs in one of three roles: the single server (``cluster.workers =
1``, the default), the supervisor of ``--workers N`` (:mod:`msgin5g.server.workers`)
or one of its workers (started by the supervisor with the hidden
``--worker-fds``: it reports "ready" or its start-up error through a pipe
instead of printing, and stops when the supervisor is gone).
"""

import argparse
import asyncio
import gc
import logging
import sys
from functools import partial
from typing import Any

from msgin5g import logsafe
from msgin5g.cli.common import print_provisioned, server_config, stop_on_signals
from msgin5g.config import ServerConfig
from msgin5g.errors import ConfigError, MSGin5GError
from msgin5g.server import (
    Server,
    forget_dtls_key,
    list_ues,
    provision_ue,
    remove_ue,
    store_dtls_key,
)
from msgin5g.server.applications import provision_as_client
from msgin5g.server.workers import Supervisor, WorkerLink, WorkersReady, plan_workers

__all__ = ["run_as", "run_serve", "run_ue_admin"]


def run_serve(args: argparse.Namespace) -> int:
    """``msgin5g serve``: run until SIGINT/SIGTERM (call inside no event loop)."""
    config = server_config(args)
    fds = getattr(args, "worker_fds", None)
    link = WorkerLink.parse(fds) if fds else None
    fmt = logsafe.DEFAULT_FORMAT
    if link is not None:  # say which worker wrote a line
        fmt = (
            f"%(asctime)s {config.cluster.node_id} %(levelname)s %(name)s: %(message)s"
        )
    logsafe.install(
        config.log.level,
        fmt,
        json_lines=getattr(args, "log_format", "text") == "json",
    )
    if link is None and config.cluster.workers != 1:
        return _supervise(args, config)
    if link is None:
        asyncio.run(_serve(config))
        return 0
    try:
        asyncio.run(_serve(config, link))
    except MSGin5GError as exc:  # a start-up error: the supervisor prints it
        if not link.fail(str(exc), exc.hint()):
            raise
        return 1
    except OSError as exc:
        if not link.fail(str(exc), "check the path, address or permission named above"):
            raise
        return 1
    return 0


def _worker_arguments(args: argparse.Namespace) -> list[str]:
    """The options of this ``serve`` that its workers repeat (as typed)."""
    out = ["--log-format", getattr(args, "log_format", "text")]
    if getattr(args, "log_level", None):
        out += ["--log-level", args.log_level]
    out.append("serve")
    if getattr(args, "config", None):
        out += ["--config", args.config]
    if getattr(args, "storage", None):
        out += ["--storage", args.storage]
    for option in ("mqtt", "tls_cert", "tls_key"):
        value = getattr(args, option, None)
        if value:
            out += ["--" + option.replace("_", "-"), value]
    for item in getattr(args, "set", None) or []:
        out += ["--set", item]
    return out


def _supervise(args: argparse.Namespace, config: ServerConfig) -> int:
    """``serve --workers N``: start the workers and keep them running.

    Raises:
        ConfigError: ``coaps://`` is on: a DTLS session lives in the process
            that made it, and the workers share one port by source hash.
    """
    if config.coap.secure_address is not None:
        raise ConfigError(
            "coap.secure_bind: serve --workers does not serve coaps:// (a DTLS "
            "session lives in the worker that made it); run coaps:// with "
            "--workers 1, or several nodes (docs/cluster.md)"
        )
    plan = plan_workers(config, _worker_arguments(args))
    announce = partial(_announce_workers, config)
    return asyncio.run(Supervisor(plan, announce=announce).run())


def _url(scheme: str, address: tuple[str, int], path: str = "") -> str:
    """``scheme://host:port/path`` with an IPv6 host in brackets."""
    host, port = address[0], address[1]
    host = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host}:{port}{path}"


def _http_lines(config: ServerConfig, http: tuple[str, int] | None) -> list[str]:
    """The banner lines of the HTTP port: the TS 29.538 APIs and the console."""
    if http is None:
        return []
    scheme = "https" if config.rest.tls_cert else "http"
    return [
        f"msgin5g: serving TS 29.538 APIs on {_url(scheme, http)}",
        f"msgin5g: operator console on {_url(scheme, http, '/console')}",
    ]


def _announce_workers(config: ServerConfig, ready: WorkersReady) -> None:
    """The banner of ``serve --workers N`` (the supervisor prints it)."""
    lines = _http_lines(config, ready.http)
    lines.append(
        f"msgin5g: serving MSGin5G-1 on {_url('coap', ready.coap, '/msgin5g')} "
        f"with {len(ready.node_ids)} workers ({', '.join(ready.node_ids)}; "
        f"pids {', '.join(map(str, ready.pids))})"
    )
    print("\n".join(lines), flush=True)


async def _serve(config: ServerConfig, link: WorkerLink | None = None) -> None:
    stop = stop_on_signals()
    if link is not None:
        link.watch_parent(stop)
    async with Server(config) as server:
        # start-up objects (registrations, tables) never die: keep them out of
        # every later collection (PERFORMANCE.md: full collections grow with them)
        gc.freeze()
        # a fan-out to 10,000 UEs allocates ~10 objects per copy; young
        # collections every 700 allocations cost ~20% of it (benchmarks/fanout.py)
        gc.set_threshold(20_000, 20, 20)
        if link is not None:
            link.ready(server.coap_address, server.http_address)
        else:
            _announce(server)
        await stop.wait()
        logging.getLogger("msgin5g").info("shutting down")


def _announce(server: Server) -> None:
    """The banner of a single server: one line per address it serves."""
    lines = _http_lines(server.config, server.http_address)
    if server.mqtt is not None:
        lines.append(
            f"msgin5g: serving MSGin5G-1 over MQTT through {server.mqtt.config.url}"
            f" (topics {server.mqtt.prefix}/…)"
        )
    plain, secure = server.coap_addresses
    if secure is not None:
        lines.append(
            f"msgin5g: serving MSGin5G-1 on {_url('coaps', secure, '/msgin5g')}"
        )
    if plain is not None:
        lines.append(f"msgin5g: serving MSGin5G-1 on {_url('coap', plain, '/msgin5g')}")
    print("\n".join(lines), flush=True)


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
