"""The UDP floor of the engine: binding a socket, receiving datagrams, resolving peers.

What: the few socket-level helpers :class:`~msgin5g.coap.endpoint.Endpoint`
needs, kept apart so the endpoint reads as protocol glue: :func:`bind_socket`
(with enlarged buffers), :func:`open_socket` (the bound socket served: datagrams
and ICMP refusals to two callbacks, a ``send`` function, optionally the send
thread), :class:`DatagramProtocol` (the loop-transport adapter),
:func:`resolve_peer` (host names to the numeric form the socket reports,
:func:`~msgin5g.coap.address.numeric_peer`) and :func:`use_uvloop`.

Design choices (``../shared/PERFORMANCE.md``):
    * Socket buffers are enlarged (4 MiB by default): with the kernel default
      of ~208 KiB bursts of a few hundred datagrams are lost.
    * uvloop is ~3.8x faster than the default loop for datagram work; the
      application installs it (:func:`use_uvloop`), the engine only uses the
      running loop.
    * The protocol does nothing but call the endpoint: no logging or parsing
      per datagram here.
    * ICMP port unreachable fails fast (Linux): :func:`enable_icmp_errors` sets
      ``IP_RECVERR`` on the socket, so the kernel reports the ICMP error of an
      unconnected socket in the socket's error queue, which names the
      destination that refused; the refusing peer goes to ``on_refused`` and
      the endpoint fails the exchanges to it at once instead of retransmitting
      for ~93 s into a closed port; real loss (no ICMP) still gets the RFC 7252
      retransmissions.
    * Compiled installs read and write the socket in C (:func:`open_socket`,
      :mod:`msgin5g.coap._udpio`): ``recvmmsg`` batches, and the error queue
      drained where libuv never sees it. uvloop 0.23's libuv reads an error
      queue itself on EPOLLERR and crashes the process (libuv issue #5242); the
      event loop here watches an epoll descriptor of the module's own, never
      the socket. Pure-Python installs run the loop's transport with
      :class:`DatagramProtocol`, which drains the queue in ``error_received``
      (a narrow window for that crash remains there).
    * ``reuse_port`` (``SO_REUSEPORT``, Linux) lets the worker processes of
      ``msgin5g serve --workers N`` bind one port: the kernel hashes each
      datagram's 4-tuple to one socket of the group, so one UE (one source
      address and port) keeps reaching the same worker (docs/cluster.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import Any, Protocol

from msgin5g.coap.address import Peer, numeric_peer
from msgin5g.errors import ConnectError

__all__ = [
    "DatagramFloor",
    "DatagramProtocol",
    "Sender",
    "UdpSocket",
    "bind_socket",
    "bound_address",
    "bound_name",
    "enable_icmp_errors",
    "not_open",
    "open_endpoint",
    "open_sender",
    "open_socket",
    "resolve_peer",
    "use_uvloop",
]

log = logging.getLogger(__name__)


_IP_RECVERR = 11  # <linux/in.h>; the socket module does not export it
_IPV6_RECVERR = 25  # <linux/in6.h>
# errors read per error_received call at most: the queue is emptied. uvloop 0.23's
# libuv reads an error queue left non-empty itself (on EPOLLERR) and hands the
# errno to uvloop as a huge unsigned length, which crashes the process (libuv
# issue #5242's signed-error fix); the kernel bounds the queue by the receive buffer
_ERRQUEUE_DRAIN = 1 << 20


def enable_icmp_errors(sock: socket.socket) -> bool:
    """Ask the kernel to report ICMP errors on unconnected ``sock`` (Linux).

    Returns:
        True when enabled; False elsewhere (the errors are then ignored and
        the exchanges time out as before).
    """
    if not sys.platform.startswith("linux"):
        return False
    options = [(socket.IPPROTO_IP, _IP_RECVERR)]
    if sock.family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, _IPV6_RECVERR))
    done = False
    for level, option in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, 1)
            done = True
    return done


class DatagramProtocol(asyncio.DatagramProtocol):
    """Thin adapter: forwards every datagram to ``on_datagram``.

    With ``sock`` and ``on_refused``, an ICMP port unreachable (reported on
    sockets prepared by :func:`enable_icmp_errors`) calls ``on_refused(peer)``
    with the destination that refused.
    """

    def __init__(
        self,
        on_datagram: Callable[[bytes, Any], None],
        *,
        sock: socket.socket | None = None,
        on_refused: Callable[[Any], None] | None = None,
    ) -> None:
        self._on_datagram = on_datagram
        self._sock = sock
        self._on_refused = on_refused
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("socket error: %s", exc)
        if self._sock is not None:
            self._drain_errors(self._sock)

    def _drain_errors(self, sock: socket.socket) -> None:
        """Read the socket's error queue; report each refusing destination.

        Draining also keeps a level-triggered loop from spinning on a
        non-empty error queue.
        """
        for _ in range(_ERRQUEUE_DRAIN):
            try:
                _, ancdata, _, addr = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)
            except OSError:  # empty (EAGAIN), closed, or not supported
                return
            refused = any(
                len(data) >= 4
                and int.from_bytes(data[:4], sys.byteorder) == errno.ECONNREFUSED
                for _, _, data in ancdata
            )
            if refused and addr and self._on_refused is not None:
                self._on_refused(addr)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class DatagramFloor(Protocol):
    """What an endpoint runs on instead of its own UDP socket (a DTLS layer).

    Peers above such a floor are opaque tuples chosen by the floor (for DTLS:
    the session's identity, :func:`msgin5g.coap.dtls.identity_peer`); the
    endpoint neither resolves nor normalises them.
    """

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port) of the socket below."""
        ...

    def start(
        self,
        on_datagram: Callable[[bytes, Any], None],
        on_refused: Callable[[Any], None],
    ) -> None:
        """Begin handing datagrams (and unreachable peers) up."""

    def sendto(self, data: bytes, peer: Any) -> None:
        """Send one datagram to ``peer``."""

    async def aclose(self) -> None:
        """Close the floor and its socket."""


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
    *,
    reuse_port: bool = False,
) -> socket.socket:
    """A non-blocking UDP socket bound to ``bind`` with the given buffer sizes.

    With ``reuse_port`` the socket joins the ``SO_REUSEPORT`` group of the
    port (sockets of the same user bound the same way share it).

    Raises:
        ConnectError: the address cannot be resolved or bound, or
            ``reuse_port`` is asked where ``SO_REUSEPORT`` does not exist.
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
        if reuse_port:
            _set_reuse_port(sock)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConnectError(f"cannot bind UDP {bind!r}: {exc}") from exc
    return sock


async def open_endpoint(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    protocol: DatagramProtocol,
    bind: tuple[str, int],
    *,
    what: str = "endpoint",
) -> asyncio.DatagramTransport:
    """Run ``protocol`` on the bound ``sock`` (from :func:`bind_socket`).

    Raises:
        ConnectError: the loop refused the socket (which is then closed);
            the message names ``what`` was opened on ``bind``.
    """
    try:
        transport, _ = await loop.create_datagram_endpoint(lambda: protocol, sock=sock)
    except OSError as exc:
        sock.close()
        raise ConnectError(f"cannot open UDP {what} on {bind!r}: {exc}") from exc
    return transport


class Sender(Protocol):
    """A send thread (:mod:`msgin5g.coap._udpsend`, C): what the endpoint uses."""

    def send(self, data: bytes, addr: Any) -> None:
        """Queue one datagram (or send it at once when the queue is full)."""

    def close(self) -> None:
        """Send what is queued and stop the thread."""

    def stats(self) -> dict[str, int]:
        """direct, sent, failed, fallbacks, wakeups, queued, depth_max, sleeping."""
        ...


def open_sender(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    fallback: Callable[[bytes, Any], None],
    on_error: Callable[[int], None],
) -> Sender | None:
    """A thread that sends ``sock``'s datagrams, or None where it is not built.

    The thread (C, :mod:`msgin5g.coap._udpsend`) calls ``sendmmsg`` without
    the GIL: the kernel's work for a datagram (on loopback, the receiver's
    side too) leaves the event loop's thread. It calls ``fallback(data,
    addr)`` in the caller's thread when its queue is full or an address is
    not numeric, and ``on_error(errno)`` in its own thread, holding the GIL,
    for a datagram it could not send (0: a batch went out in part). Only with
    the native socket (:func:`open_socket`): with the loop's transport a send
    by the thread can consume an ICMP error and leave the error queue to
    libuv, which uvloop 0.23 crashes on.
    """
    try:
        from msgin5g.coap._udpsend import Sender as NativeSender
    except ImportError:  # pure Python install: the socket sends itself
        return None

    def schedule() -> None:  # wake the thread once per turn of the loop
        loop.call_soon(native.flush)

    native = NativeSender(sock.fileno(), sock.family, fallback, on_error, schedule)
    sender: Sender = native
    return sender


class UdpSocket(Protocol):
    """The endpoint's socket as it sends, reports and closes (:func:`open_socket`)."""

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        ...

    @property
    def send(self) -> Callable[[bytes, Any], None]:
        """``send(data, addr)``: the fastest way out (a C method, usually)."""
        ...

    def stats(self) -> dict[str, int]:
        """Counters of the native socket and the send thread, where they run."""
        ...

    async def aclose(self) -> None:
        """Send what is queued, stop reading, close the socket."""


class _NativeSocket:
    """``sock`` read and written by :mod:`msgin5g.coap._udpio` (never by libuv)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        native: Any,
        sender: Sender | None,
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._native = native
        self._sender = sender
        self._address = bound_name(sock)
        self._send: Callable[[bytes, Any], None] = (
            sender.send if sender is not None else native.sendto
        )
        self._closed = False

    @property
    def local_address(self) -> tuple[str, int]:
        return self._address

    @property
    def send(self) -> Callable[[bytes, Any], None]:
        return self._send

    def stats(self) -> dict[str, int]:
        counters = {f"socket_{k}": v for k, v in self._native.stats().items()}
        if self._sender is not None:
            counters.update(_thread_stats(self._sender))
        return counters

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sender is not None:
            self._sender.close()  # sends what is queued first (its fallback: native)
        with contextlib.suppress(ValueError, OSError):  # the loop is closing
            self._loop.remove_reader(self._native.poll_fileno())
        self._native.close()
        self._sock.close()


class _LoopSocket:
    """``sock`` run by the event loop's datagram transport (pure-Python installs).

    No send thread here (it is C, built with :mod:`msgin5g.coap._udpio`).
    """

    def __init__(
        self, transport: asyncio.DatagramTransport, protocol: DatagramProtocol
    ) -> None:
        self._transport = transport
        self._protocol = protocol
        self._send: Callable[[bytes, Any], None] = transport.sendto

    @property
    def local_address(self) -> tuple[str, int]:
        return bound_address(self._transport)

    @property
    def send(self) -> Callable[[bytes, Any], None]:
        return self._send

    def stats(self) -> dict[str, int]:
        return {}

    async def aclose(self) -> None:
        self._transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._protocol.closed


def _thread_stats(sender: Sender) -> dict[str, int]:
    counters = sender.stats()
    return {
        "send_thread_queued": counters["queued"],
        "send_thread_fallbacks": counters["fallbacks"],
        "send_thread_failed": counters["failed"],
    }


async def open_socket(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    bind: tuple[str, int],
    on_datagram: Callable[[bytes, Any], None],
    on_refused: Callable[[Any], None],
    *,
    send_thread: bool = False,
    native: bool = True,
) -> UdpSocket:
    """Serve the bound ``sock``: datagrams to ``on_datagram``, ICMP refusals to ``on_refused``.

    Compiled installs read and write the socket in C (:mod:`msgin5g.coap._udpio`,
    ``recvmmsg``, the error queue drained before libuv could see it, which
    uvloop 0.23 crashes on), with the send thread where ``send_thread`` asks
    for it. Pure-Python installs, and ``native=False``, use the loop's
    transport (and no thread).

    Raises:
        ConnectError: the loop refused the socket (which is then closed).
    """
    try:
        from msgin5g.coap._udpio import Socket as NativeSocket
    except ImportError:  # pure Python install: the loop's transport
        native = False
    if not native:
        return await _open_loop_socket(loop, sock, bind, on_datagram, on_refused)
    enable_icmp_errors(sock)

    def fallback(data: bytes, addr: Any) -> None:  # names, scoped IPv6 addresses
        try:
            sock.sendto(data, addr)
        except OSError as exc:
            log.debug("cannot send to %r: %s", addr, exc)

    def on_error(err: int) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("socket error: %s", os.strerror(err) if err else "partial batch")

    try:
        io = NativeSocket(
            sock.fileno(), sock.family, on_datagram, on_refused, on_error, fallback
        )
        loop.add_reader(io.poll_fileno(), io.read)
    except (OSError, ValueError) as exc:
        sock.close()
        raise ConnectError(f"cannot open UDP endpoint on {bind!r}: {exc}") from exc
    sender = open_sender(loop, sock, io.sendto, on_error) if send_thread else None
    return _NativeSocket(loop, sock, io, sender)


async def _open_loop_socket(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    bind: tuple[str, int],
    on_datagram: Callable[[bytes, Any], None],
    on_refused: Callable[[Any], None],
) -> UdpSocket:
    icmp = enable_icmp_errors(sock)
    protocol = DatagramProtocol(
        on_datagram, sock=sock if icmp else None, on_refused=on_refused
    )
    transport = await open_endpoint(loop, sock, protocol, bind)
    return _LoopSocket(transport, protocol)


def bound_name(sock: socket.socket) -> tuple[str, int]:
    """The (host, port) ``sock`` is bound to."""
    name = sock.getsockname()
    return (name[0], name[1])


def bound_address(transport: asyncio.BaseTransport | None) -> tuple[str, int]:
    """The (host, port) a datagram transport is bound to.

    Raises:
        ConnectError: there is no transport (not open, or closed).
    """
    if transport is None:
        raise ConnectError("endpoint not open")
    name = transport.get_extra_info("sockname")
    return (name[0], name[1])


def _set_reuse_port(sock: socket.socket) -> None:
    """Set ``SO_REUSEPORT`` on ``sock``.

    Raises:
        OSError: the platform has no ``SO_REUSEPORT`` (or refuses it).
    """
    option = getattr(socket, "SO_REUSEPORT", None)
    if option is None:
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not available here")
    sock.setsockopt(socket.SOL_SOCKET, option, 1)
