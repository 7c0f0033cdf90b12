"""The UDP floor of the engine: binding a socket, receiving datagrams, resolving peers.

What: the few socket-level helpers :class:`~msgin5g.coap.endpoint.Endpoint`
needs, kept apart so the endpoint reads as protocol glue: :func:`bind_socket`
(with enlarged buffers), :class:`DatagramProtocol` (hands each datagram to one
callback), :func:`resolve_peer` (host names to the numeric form the socket
reports, :func:`~msgin5g.coap.address.numeric_peer`) and :func:`use_uvloop`.

Design choices (``../shared/PERFORMANCE.md``):
    * Socket buffers are enlarged (4 MiB by default): with the kernel default
      of ~208 KiB bursts of a few hundred datagrams are lost.
    * uvloop is ~3.8x faster than the default loop for datagram work; the
      application installs it (:func:`use_uvloop`), the engine only uses the
      running loop.
    * The protocol does nothing but call the endpoint: no logging or parsing
      per datagram here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from msgin5g.coap.address import Peer, numeric_peer
from msgin5g.errors import ConnectError

__all__ = [
    "DatagramProtocol",
    "bind_socket",
    "not_open",
    "resolve_peer",
    "use_uvloop",
]

log = logging.getLogger(__name__)


class DatagramProtocol(asyncio.DatagramProtocol):
    """Thin adapter: forwards every datagram to ``on_datagram``."""

    def __init__(self, on_datagram: Callable[[bytes, Any], None]) -> None:
        self._on_datagram = on_datagram
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("socket error: %s", exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def use_uvloop() -> bool:
    """Install uvloop's event loop policy if uvloop is importable.

    Returns:
        True when uvloop is now the policy.
    """
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


async def resolve_peer(
    loop: asyncio.AbstractEventLoop, peer: Peer, family: int
) -> Peer:
    """Resolve ``peer``'s host name to the form a socket of ``family`` reports.

    Raises:
        ValueError: ``peer`` is not a (host, port) tuple.
        ConnectError: the name cannot be resolved.
    """
    if not isinstance(peer, tuple) or len(peer) < 2:
        raise ValueError(f"peer must be a (host, port) tuple, got {peer!r}")
    flags = socket.AI_V4MAPPED if family == socket.AF_INET6 else 0
    try:
        infos = await loop.getaddrinfo(
            peer[0], peer[1], family=family, type=socket.SOCK_DGRAM, flags=flags
        )
    except OSError as exc:
        raise ConnectError(f"cannot resolve {peer[0]!r}: {exc}") from exc
    resolved = numeric_peer(tuple(infos[0][4]), family)
    if resolved is None:
        raise ConnectError(f"cannot resolve {peer[0]!r}")
    return resolved


def not_open(data: bytes, peer: Any) -> None:
    """The send function of an endpoint that is not (or no longer) open."""
    raise ConnectError("endpoint not open")


async def bind_socket(
    loop: asyncio.AbstractEventLoop,
    bind: tuple[str, int],
    recv_buffer: int,
    send_buffer: int,
) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind`` with the given buffer sizes.

    Raises:
        ConnectError: the address cannot be resolved or bound.
    """
    host, port = bind[0], bind[1]
    try:
        infos = await loop.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )
    except OSError as exc:
        raise ConnectError(f"cannot resolve bind address {host!r}: {exc}") from exc
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        for option, size in (
            (socket.SO_RCVBUF, recv_buffer),
            (socket.SO_SNDBUF, send_buffer),
        ):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, size)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConnectError(f"cannot bind UDP {bind!r}: {exc}") from exc
    return sock
