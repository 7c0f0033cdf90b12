"""What several ``msgin5g`` commands share: storage options, configuration, output.

Light on purpose: every command's parser is built from here on each start, so
this module imports only the standard library and ``msgin5g.config`` at call
time (``msgin5g ue send --help`` must not pay for the server stack).
"""

import argparse
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from msgin5g.config import ServerConfig

__all__ = [
    "SERVER_EXTRA",
    "add_storage",
    "missing_extra",
    "print_provisioned",
    "server_config",
    "stop_on_signals",
]

SERVER_EXTRA = frozenset(
    {
        "fastapi",
        "starlette",
        "pydantic",
        "pydantic_core",
        "granian",
        "hypercorn",
        "httpx",
        "prometheus_client",
        "mbedtls",
    }
)
"""Top-level packages that only ``pip install 'msgin5g[server]'`` brings."""


def add_storage(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--storage URL`` of the commands that use storage."""
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL (default sqlite:///./msgin5g.db; or memory:)",
    )


def server_config(args: argparse.Namespace) -> "ServerConfig":
    """The server configuration: ``--config``, ``MSGIN5G_*``, then the options.

    Options read when the command has them: ``--set SECTION.KEY=VALUE``
    (repeatable), ``--coap``, ``--http``, ``--storage``, ``--mqtt``,
    ``--log-level``, ``--workers`` and ``--node-id``.

    Raises:
        ConfigError: unreadable file, unknown key, invalid value or ``--set``.
    """
    from msgin5g.config import load_config
    from msgin5g.errors import ConfigError

    overrides: dict[str, Any] = {}
    for item in getattr(args, "set", None) or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item}: expected SECTION.KEY=VALUE")
        overrides[key.strip()] = value
    for option, key in (
        ("coap", "coap.bind"),
        ("coaps", "coap.secure_bind"),
        ("http", "rest.bind"),
        ("tls_cert", "rest.tls_cert"),
        ("tls_key", "rest.tls_key"),
        ("storage", "storage.url"),
        ("mqtt", "mqtt.url"),
        ("log_level", "log.level"),
        ("workers", "cluster.workers"),
        ("node_id", "cluster.node_id"),
    ):
        value = getattr(args, option, None)
        if value:
            overrides[key] = value
    environ = {k: v for k, v in os.environ.items() if k.startswith("MSGIN5G_")}
    return load_config(getattr(args, "config", None), environ, overrides)


def print_provisioned(what: str, secret: str, *, given: bool) -> None:
    """Confirm a provisioning; a generated secret is shown this once."""
    if given:
        print(f"provisioned {what}")
    else:
        print(f"provisioned {what}; secret (shown once): {secret}")


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The server-extra package whose absence ``exc`` reports, or None."""
    root = (exc.name or "").partition(".")[0]
    return root if root in SERVER_EXTRA else None


def stop_on_signals() -> "asyncio.Event":
    """An event set by SIGINT or SIGTERM (call in the running loop, before start-up)."""
    import asyncio
    import contextlib
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop
