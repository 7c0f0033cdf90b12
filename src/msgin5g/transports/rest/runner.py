"""Runs the ASGI app inside the server's own asyncio loop (HTTP/1.1 and h2c).

Both supported ASGI servers run in the event loop that already serves CoAP, so
the API handlers call the service directly (no thread hop, no second process):

* **Granian** (default), embedded mode (``granian.server.embed``): its Rust
  runtime thread does the HTTP parsing and I/O and schedules the ASGI callables
  on *our* loop. Measured 2.3-3.1x Hypercorn's request rate (docs/rest.md).
* **Hypercorn** (``rest.server = "hypercorn"``): pure Python on asyncio
  (``hypercorn.asyncio.serve`` with a shutdown trigger).

Both serve HTTP/1.1 and HTTP/2 over cleartext (prior knowledge) on one port,
or, with ``tls_cert``/``tls_key`` (``rest.tls_cert``/``rest.tls_key``), over TLS
with HTTP/2 chosen by ALPN (``h2``, else ``http/1.1``); TLS 1.2 is the minimum
(Granian ``ssl_protocol_min``; Hypercorn's default context already refuses
older versions). Port 0 picks a free port before binding (used by tests).

Slow clients (slowloris, docs/security-rest.md): a connection must deliver a
complete request head within ``header_timeout`` seconds or it is closed
(Granian ``http1_settings.header_read_timeout``, which also bounds the wait
for the next request on a kept-alive connection; Hypercorn ``read_timeout``
per read, and ``keep_alive_timeout``), and the server handles up to
``max_connections`` at once (Granian ``backpressure``; the accept backlog is
the same size). Neither server can cap connections per source IP: that limit
belongs to the host firewall (an nftables ``ct count`` rule, see the docs).

One port for several processes (``rest.reuse_port``, set for the workers of
``msgin5g serve --workers N``, Linux only): the kernel spreads new connections
over the listening sockets of a ``SO_REUSEPORT`` group. Granian's listener
always carries ``SO_REUSEPORT`` on Linux, so each worker's embedded Granian
joins the group as it is; for Hypercorn this module binds the socket itself
with ``SO_REUSEPORT`` and hands it over as ``fd://N``. The check before binding
sets the option only when asked, so a lone server still refuses a port that
another process listens on.
"""

import asyncio
import contextlib
import logging
import socket
import sys
from pathlib import Path
from typing import Any

from msgin5g.errors import ConnectError

__all__ = ["AsgiServer"]

log = logging.getLogger(__name__)


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not listening yet).

    Raises:
        ConnectError: the address cannot be bound, or ``reuse_port`` is asked
            off Linux (elsewhere ``SO_REUSEPORT`` does not spread connections).
    """
    if reuse_port and not sys.platform.startswith("linux"):
        raise ConnectError(
            "rest.reuse_port: sharing the HTTP port between processes needs Linux"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConnectError(f"HTTP bind {host}:{port}: {exc.strerror}") from exc
    return sock


def _check_bindable(host: str, port: int, *, reuse_port: bool = False) -> None:
    _listener(host, port, reuse_port=reuse_port).close()


def _check_tls_files(cert: str, key: str) -> None:
    """Both files readable (a clear error instead of the server's own)."""
    for name, path in (("rest.tls_cert", cert), ("rest.tls_key", key)):
        if not path:
            continue
        try:
            with Path(path).open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise ConnectError(f"{name}: cannot read {path}: {exc.strerror}") from exc


class AsgiServer:
    """One ASGI server task in the running loop."""

    def __init__(
        self,
        app: Any,
        host: str,
        port: int,
        kind: str = "granian",
        *,
        header_timeout: float = 10.0,
        max_connections: int = 8192,
        tls_cert: str = "",
        tls_key: str = "",
        reuse_port: bool = False,
    ) -> None:
        self.app = app
        self.host = host
        self.port = port if port else _free_port(host)
        self.kind = kind
        self.header_timeout = header_timeout
        self.max_connections = max_connections
        self.tls_cert = tls_cert
        self.tls_key = tls_key
        self.reuse_port = reuse_port
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._granian: Any = None

    async def start(self) -> None:
        """Bind and serve; returns once the port accepts connections.

        Raises:
            ConnectError: the address cannot be bound or the server did not start.
        """
        _check_bindable(self.host, self.port, reuse_port=self.reuse_port)
        _check_tls_files(self.tls_cert, self.tls_key)
        coro = self._run_granian() if self.kind == "granian" else self._run_hypercorn()
        self._task = asyncio.create_task(coro, name=f"http-{self.kind}")
        for _ in range(200):
            if self._task.done():
                break
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection(self.host, self.port)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                log.info(
                    "%s (%s) listening on %s:%d",
                    "HTTPS" if self.tls_cert else "HTTP",
                    self.kind,
                    self.host,
                    self.port,
                )
                return
            await asyncio.sleep(0.025)
        await self.aclose()
        raise ConnectError(f"HTTP server did not start on {self.host}:{self.port}")

    async def _run_granian(self) -> None:
        from granian.constants import HTTPModes, Interfaces, SSLProtocols
        from granian.http import HTTP1Settings
        from granian.server.embed import Server

        logging.getLogger("granian").setLevel(logging.ERROR)  # "experimental" note
        tls: dict[str, Any] = {}
        if self.tls_cert:
            tls = {
                "ssl_cert": Path(self.tls_cert),
                "ssl_key": Path(self.tls_key),
                "ssl_protocol_min": SSLProtocols.tls12,
            }
        self._granian = Server(
            self.app,
            address=self.host,
            port=self.port,
            interface=Interfaces.ASGINL,
            http=HTTPModes.auto,
            websockets=False,
            backlog=min(self.max_connections, 65535),
            backpressure=self.max_connections,
            http1_settings=HTTP1Settings(
                header_read_timeout=max(1, int(self.header_timeout * 1000))
            ),
            log_enabled=False,
            **tls,
        )
        await self._granian.serve()

    async def _run_hypercorn(self) -> None:
        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        host = f"[{self.host}]" if ":" in self.host else self.host
        config.bind = [f"{host}:{self.port}"]
        if self.reuse_port:  # Hypercorn sets SO_REUSEPORT only for its own workers
            fd = _listener(self.host, self.port, reuse_port=True).detach()
            config.bind = [f"fd://{fd}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        config.backlog = min(self.max_connections, 65535)
        config.read_timeout = max(1, int(self.header_timeout))
        config.keep_alive_timeout = min(5.0, self.header_timeout)
        config.keep_alive_max_requests = 1_000_000  # default 1000 ends h2c connections
        if self.tls_cert:
            config.certfile = self.tls_cert
            config.keyfile = self.tls_key
            config.alpn_protocols = ["h2", "http/1.1"]
        await serve(self.app, config, shutdown_trigger=self._stop.wait, mode="asgi")

    async def aclose(self) -> None:
        """Stop accepting and wait for the server task."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        if self._granian is not None:
            self._granian.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout=5)
        except (TimeoutError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
