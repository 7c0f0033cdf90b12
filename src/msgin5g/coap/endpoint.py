"""asyncio CoAP endpoint: the shell that does the engine's I/O.

What: :class:`Endpoint` owns one UDP socket (:mod:`msgin5g.coap.udp`; uvloop
when the caller installed it, see :func:`~msgin5g.coap.udp.use_uvloop`), feeds
every datagram to the sans-I/O :class:`~msgin5g.coap.exchange.MessageLayer` and
carries out the actions it returns: sending datagrams, running request
handlers (server role, routed by a :class:`~msgin5g.coap.resource.Site`) and
resolving the futures of :meth:`Endpoint.request` (client role). One endpoint
can be both. The Observe server role (RFC 7641) is in :mod:`msgin5g.coap.notify`.

RFC clauses (on top of those in :mod:`msgin5g.coap.exchange`):
    * §5.8 method handling: the :class:`~msgin5g.coap.resource.Site` answers
      4.04 / 4.05; no site: 4.04 for everything.
    * §5.9.2.9 / §5.10.9: a request body above ``max_request_payload`` -> 4.13
      Request Entity Too Large with Size1 = the limit.
    * §5.9.3.4 / §5.10.5: overload -> 5.03 Service Unavailable with Max-Age.
    * §5.2.2 separate responses: a handler calls
      :meth:`Endpoint.accept_empty` before slow work.

Design choices:
    * ``datagram_received`` is lean: decode + duplicate check in the layer, then
      a type switch over the returned actions. No logging string formatting,
      no per-message timers, no ``ipaddress`` parsing, no deep copies.
    * One timer for the whole endpoint: a ``loop.call_at`` handle armed for
      ``layer.next_deadline()``; re-armed only when the deadline moves earlier.
    * Handlers run as tasks (strong references kept in a set) so that a slow
      handler never blocks the socket; their number is capped.
    * Peers passed to :meth:`Endpoint.request` are normalised to the form the
      socket reports for incoming datagrams
      (:func:`~msgin5g.coap.address.numeric_peer`), so responses match.
    * Secure transport: :meth:`Endpoint.create_on` runs the same engine on a
      :class:`~msgin5g.coap.udp.DatagramFloor` instead of a socket (the DTLS
      layer, :mod:`msgin5g.coap.dtls`); peers are then the floor's opaque
      tuples (a session's identity), used as they are.
    * Flood control (server role, optional): a
      :class:`~msgin5g.coap.limits.SourceLimiter` is asked for every datagram
      *before* it is decoded; what it refuses is dropped silently, counted in
      ``stats()["dropped"]`` and reported through a
      :class:`~msgin5g.logsafe.LogThrottle` (a few lines per minute at most,
      never one per datagram). Client and gateway endpoints have none.

Log levels: DEBUG normal flow and malformed input, INFO retransmission
exhaustion (in the layer), WARNING misbehaving peers, ERROR handler bugs.

Size (~640 lines, over the ~500 aim): the I/O shell of both roles (server
dispatch with its limits, client requests with futures and, since issue 13,
callbacks) around one timer and one socket; the Observe server role, flood
control and the socket itself (native or the loop's, the send thread) already
live apart (:mod:`.notify`, :mod:`.limits`, :mod:`.udp`). What is left shares the
endpoint's socket, timer and closed state on every path.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, cast

from msgin5g.coap.actions import Action, Complete, Dispatch, Fail, Rejected, Send
from msgin5g.coap.address import Peer, numeric_peer
from msgin5g.coap.dedup import DEFAULT_DEDUP_BYTES
from msgin5g.coap.exchange import MessageLayer
from msgin5g.coap.limits import SourceLimiter
from msgin5g.coap.message import CoapMessage, encode_uint
from msgin5g.coap.notify import ObserveResetCallback, ObserveRole
from msgin5g.coap.numbers import Code, OptionNumber, TransmissionParameters
from msgin5g.coap.observe import ObserverTable
from msgin5g.coap.resource import Handler, Request, Site
from msgin5g.coap.udp import (
    DatagramFloor,
    UdpSocket,
    bind_socket,
    not_open,
    open_socket,
    resolve_peer,
    use_uvloop,
)
from msgin5g.errors import ConnectError, PortUnreachable, RequestTimeout
from msgin5g.logsafe import LogThrottle

__all__ = [
    "Endpoint",
    "Handler",
    "ObserveResetCallback",
    "Request",
    "Site",
    "use_uvloop",
]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)

_NOT_FOUND = int(Code.NOT_FOUND)
_TOO_LARGE = int(Code.REQUEST_ENTITY_TOO_LARGE)
_UNAVAILABLE = int(Code.SERVICE_UNAVAILABLE)
_INTERNAL = int(Code.INTERNAL_SERVER_ERROR)
_SIZE1 = int(OptionNumber.SIZE1)
_MAX_AGE = int(OptionNumber.MAX_AGE)
_NUMERICS_MAX = 65_536


ResponseCallback = Callable[[CoapMessage | None, Exception | None], None]
"""Gets the response, or the error :meth:`Endpoint.request` would raise."""


class _Callback:
    """The handle of a :meth:`Endpoint.request_callback` exchange (one each)."""

    __slots__ = ("on_done",)

    def __init__(self, on_done: ResponseCallback) -> None:
        self.on_done = on_done

    def call(self, response: CoapMessage | None, error: Exception | None) -> None:
        try:
            self.on_done(response, error)
        except Exception:
            log.exception("response callback raised")


class Endpoint(ObserveRole):
    """A CoAP-over-UDP endpoint (server and client). Build with :meth:`create`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        site: Site | None,
        params: TransmissionParameters,
        max_request_payload: int | None,
        max_concurrent_requests: int,
        overload_max_age: int,
        observe_reset: ObserveResetCallback | None = None,
        wall_clock: Callable[[], float] = time.time,
        source_limiter: SourceLimiter | None = None,
        max_dedup_bytes: int | None = DEFAULT_DEDUP_BYTES,
    ) -> None:
        """Prefer :meth:`create`, which also binds the socket."""
        self._loop = loop
        self._observers = ObserverTable(wall_clock)
        self._observe_reset = observe_reset
        self._site = site
        self._layer = MessageLayer(
            loop.time, params=params, max_dedup_bytes=max_dedup_bytes
        )
        self._limiter = source_limiter
        self._dropped = 0
        self._max_payload = max_request_payload
        self._max_concurrent = max_concurrent_requests
        self._overload_options = [(_MAX_AGE, encode_uint(overload_max_age))]
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._socket: UdpSocket | None = None
        self._sendto: Callable[[bytes, Any], None] = not_open
        self._family = socket.AF_INET
        self._floor: DatagramFloor | None = None
        self._closed = False
        self._handler_errors = 0
        # numeric_peer() parses the address (inet_pton) on every request;
        # downlink goes to the same few thousand contacts again and again
        self._numerics: dict[Peer, Peer] = {}

    @classmethod
    async def create(
        cls,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        *,
        site: Site | None = None,
        params: TransmissionParameters | None = None,
        max_request_payload: int | None = None,
        max_concurrent_requests: int = 10_000,
        recv_buffer: int = 4 * 1024 * 1024,
        send_buffer: int = 4 * 1024 * 1024,
        overload_max_age: int = 5,
        observe_reset: ObserveResetCallback | None = None,
        wall_clock: Callable[[], float] = time.time,
        source_limiter: SourceLimiter | None = None,
        max_dedup_bytes: int | None = DEFAULT_DEDUP_BYTES,
        reuse_port: bool = False,
        send_thread: bool = False,
        native_socket: bool = True,
    ) -> Endpoint:
        """Bind a UDP socket and start serving.

        Args:
            bind: local (host, port); port 0 picks a free port; IPv6 hosts work.
            site: routes for incoming requests; None answers every request 4.04.
            params: transmission parameters (RFC 7252 §4.8).
            max_request_payload: larger request bodies get 4.13 (None: no limit).
            max_concurrent_requests: handlers running at once; beyond, 5.03.
            recv_buffer: SO_RCVBUF in bytes.
            send_buffer: SO_SNDBUF in bytes.
            overload_max_age: Max-Age (s) of the 5.03 overload response.
            observe_reset: called when an RST answers a NON notification.
            wall_clock: epoch seconds, source of Observe sequence numbers.
            source_limiter: per-source rate limits applied before decoding
                (None: every datagram is processed).
            max_dedup_bytes: byte bound of the duplicate-detection cache.
            reuse_port: bind with ``SO_REUSEPORT`` (processes share the port).
            send_thread: send datagrams from a thread of their own
                (:func:`~msgin5g.coap.udp.open_sender`; ignored where the C
                modules are not built).
            native_socket: read and write the socket in C where it is built
                (:func:`~msgin5g.coap.udp.open_socket`); False: the event
                loop's transport (and no send thread).

        Returns:
            the running endpoint.

        Raises:
            ConnectError: the address cannot be resolved or bound.
        """
        loop = asyncio.get_running_loop()
        self = cls(
            loop,
            site=site,
            params=params if params is not None else TransmissionParameters(),
            max_request_payload=max_request_payload,
            max_concurrent_requests=max_concurrent_requests,
            overload_max_age=overload_max_age,
            observe_reset=observe_reset,
            wall_clock=wall_clock,
            source_limiter=source_limiter,
            max_dedup_bytes=max_dedup_bytes,
        )
        sock = await bind_socket(
            loop, bind, recv_buffer, send_buffer, reuse_port=reuse_port
        )
        self._family = sock.family
        self._socket = await open_socket(
            loop,
            sock,
            bind,
            self._on_datagram,
            self._on_refused,
            send_thread=send_thread,
            native=native_socket,
        )
        self._sendto = self._socket.send
        if log.isEnabledFor(logging.DEBUG):
            log.debug("CoAP endpoint listening on %r", self.local_address)
        return self

    @classmethod
    def create_on(
        cls,
        floor: DatagramFloor,
        *,
        site: Site | None = None,
        params: TransmissionParameters | None = None,
        max_request_payload: int | None = None,
        max_concurrent_requests: int = 10_000,
        overload_max_age: int = 5,
        observe_reset: ObserveResetCallback | None = None,
        max_dedup_bytes: int | None = DEFAULT_DEDUP_BYTES,
    ) -> Endpoint:
        """Serve on ``floor`` (an open DTLS layer) instead of a UDP socket.

        The arguments mean what they mean for :meth:`create`; there is no
        source limiter here: the floor applies it to the socket addresses
        below, before any decryption. Peers are the floor's (opaque) tuples.
        """
        self = cls(
            asyncio.get_running_loop(),
            site=site,
            params=params if params is not None else TransmissionParameters(),
            max_request_payload=max_request_payload,
            max_concurrent_requests=max_concurrent_requests,
            overload_max_age=overload_max_age,
            observe_reset=observe_reset,
            max_dedup_bytes=max_dedup_bytes,
        )
        self._floor = floor
        self._sendto = floor.sendto
        floor.start(self._on_datagram, self._on_refused)
        return self

    # ----------------------------------------------------------------- public

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        if self._floor is not None:
            return self._floor.local_address
        if self._socket is None:
            raise ConnectError("endpoint not open")
        return self._socket.local_address

    def stats(self) -> dict[str, int]:
        """Return the message-layer counters plus ``handlers_running``.

        With a source limiter also ``dropped`` (datagrams refused before
        decoding) and ``sources`` (sources tracked); with the native socket
        its counters (``socket_received``, ``socket_dropped`` ...), with the
        send thread ``send_thread_queued``, ``send_thread_fallbacks`` and
        ``send_thread_failed``.
        """
        counters = self._layer.stats()
        if self._limiter is not None:
            counters["dropped"] = self._dropped
            counters["sources"] = len(self._limiter)
        counters["handlers_running"] = len(self._tasks)
        counters["handler_errors"] = self._handler_errors
        counters["observations"] = len(self._observers)
        if self._socket is not None:
            counters.update(self._socket.stats())
        return counters

    def send_raw(self, data: bytes, peer: Peer) -> None:
        """Send a datagram as is (tests, diagnostics)."""
        self._sendto(data, peer)

    def accept_empty(self, req: Request, *, final: bool = False) -> None:
        """Acknowledge ``req`` now with an empty ACK; the response becomes separate.

        With ``final`` no separate response follows (the handler's return value is
        discarded): the answer is a matched request (digest §2.2 rule 5).
        """
        self._run(self._layer.accept_empty(req.message, req.peer, final=final))

    async def request(
        self,
        message: CoapMessage,
        peer: Peer,
        *,
        mid: int | None = None,
        token: bytes | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 (also cancels the exchange)
    ) -> CoapMessage:
        """Send a request and wait for its response.

        Args:
            message: the request; ``mtype`` CON or NON selects reliability.
            peer: destination (host, port); host names are resolved.
            mid: explicit Message ID (default: allocated).
            token: explicit token (default: 4 random bytes).
            timeout: overall limit in seconds (default: the RFC 7252 timers).

        Returns:
            the response, whatever its code.

        Raises:
            RequestTimeout: no answer (retransmissions exhausted or ``timeout``).
            RemoteReset: the peer answered with RST.
            PortUnreachable: the peer's host answered ICMP port unreachable.
            ConnectError: the endpoint is closed or the peer cannot be resolved.
            ValueError: invalid message, or mid/token already in use.
        """
        normal = None if self._closed else self._numeric(peer)
        # a name (or a closed endpoint) needs the coroutine; numbers do not
        peer = normal if normal is not None else await self._destination(peer)
        future: asyncio.Future[CoapMessage] = self._loop.create_future()
        self._run(self._layer.send_request(message, peer, future, mid=mid, token=token))
        try:
            if timeout is None:
                return await future
            try:
                async with asyncio.timeout(timeout):
                    return await future
            except TimeoutError:
                raise RequestTimeout(f"no response within {timeout} s") from None
        finally:
            # awaiting a future cancels it when the caller is cancelled/timed out
            if future.cancelled() or not future.done():
                self._layer.cancel(future)
                self._arm_timer()

    def request_nowait(
        self, message: CoapMessage, peer: Peer
    ) -> asyncio.Future[CoapMessage]:
        """Send a request; return the future of its response (no task needed).

        For callers that start many requests at once (a fan-out) and handle
        outcomes in done-callbacks. ``peer`` must be a numeric address. The
        future fails like :meth:`request` raises; it is never cancelled by the
        engine, and cancelling it does not stop retransmissions.

        Raises:
            ConnectError: the endpoint is closed.
            ValueError: ``peer`` is not a numeric address, or invalid message.
        """
        normal = self._numeric_destination(peer)
        future: asyncio.Future[CoapMessage] = self._loop.create_future()
        self._run(self._layer.send_request(message, normal, future))
        return future

    def request_callback(
        self, message: CoapMessage, peer: Peer, on_done: ResponseCallback
    ) -> None:
        """Send a request; call ``on_done(response, None)`` or ``(None, error)``.

        :meth:`request_nowait` without a future: the outcome is handed over in
        the same pass over the message layer's actions that produced it (no
        future, no done-callback scheduled on the loop). ``on_done`` runs once,
        inside the endpoint's datagram or timer processing: it must be quick
        and must not raise (what it raises is logged). ``error`` is what
        :meth:`request` would raise. ``peer`` must be a numeric address.

        Raises:
            ConnectError: the endpoint is closed.
            ValueError: ``peer`` is not a numeric address, or invalid message.
        """
        normal = self._numeric_destination(peer)
        self._run(self._layer.send_request(message, normal, _Callback(on_done)))

    def abandon(self, peer: Peer) -> None:
        """Fail every outstanding request to ``peer`` now (RequestTimeout).

        The caller knows the peer is gone (it re-registered from elsewhere);
        waiting for MAX_TRANSMIT_WAIT would only delay what is next for it.
        """
        normal = self._numeric(peer)
        if normal is None or self._closed:
            return
        self._run(
            self._layer.abort_peer(normal, RequestTimeout("abandoned: peer moved"))
        )

    async def _destination(self, peer: Peer) -> Peer:
        """Where to send to ``peer``: its numeric form, host names resolved.

        Raises:
            ConnectError: the endpoint is closed or the name cannot be resolved.
        """
        if self._closed:
            raise ConnectError("endpoint closed")
        normal = self._numeric(peer)
        if normal is not None:
            return normal
        return await resolve_peer(self._loop, peer, self._family)

    def _numeric_destination(self, peer: Peer) -> Peer:
        """Where to send to ``peer`` without waiting (numeric addresses only).

        Raises:
            ConnectError: the endpoint is closed.
            ValueError: ``peer`` is not a numeric address.
        """
        if self._closed:
            raise ConnectError("endpoint closed")
        normal = self._numeric(peer)
        if normal is None:
            raise ValueError(f"not a numeric address: {peer!r}")
        return normal

    def _numeric(self, peer: Peer) -> Peer | None:
        """``peer`` in the form this socket reports sources, or None (a name)."""
        if self._floor is not None:  # the floor's own peers, used as they are
            return peer if type(peer) is tuple else None
        if type(peer) is not tuple:
            return None
        known = self._numerics.get(peer)
        if known is not None:
            return known
        normal = numeric_peer(peer, self._family)
        if normal is not None:
            if len(self._numerics) >= _NUMERICS_MAX:
                self._numerics.clear()
            self._numerics[peer] = normal
        return normal

    async def aclose(self) -> None:
        """Stop: cancel handlers and the timer, fail pending requests, close."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._complete(self._layer.abort_all(ConnectError("endpoint closed")))
        self._sendto = not_open
        if self._floor is not None:
            await self._floor.aclose()
        if self._socket is not None:
            await self._socket.aclose()  # sends what is queued first

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------- internals

    def _on_datagram(self, data: bytes, addr: Peer) -> None:
        if self._closed:
            return
        limiter = self._limiter
        if limiter is not None and not limiter.allow(addr):
            self._dropped += 1
            if self._dropped & 0x3FF == 1:  # the 1st, 1025th, ... drop
                _throttled.log(
                    "source-limit",
                    logging.WARNING,
                    "datagrams over the per-source rate limit are dropped "
                    "(%d so far; latest from %r)",
                    self._dropped,
                    addr,
                )
            return
        try:
            self._run(self._layer.receive(data, addr))
        except Exception:
            log.exception("internal error processing a datagram from %r", addr)

    def _on_refused(self, addr: Peer) -> None:
        """ICMP port unreachable from ``addr``: fail its exchanges now."""
        normal = self._numeric(addr)
        if normal is None or self._closed:
            return
        if self._floor is not None:
            error = PortUnreachable(f"{normal[0]}: no secure session to send on")
        else:
            error = PortUnreachable(
                f"{normal[0]}:{normal[1]} refused the datagram (ICMP port "
                "unreachable): nothing listens on that UDP port"
            )
        self._run(self._layer.abort_peer(normal, error))

    def _run(self, actions: list[Action]) -> None:
        """Carry out the actions of the message layer, then re-arm the timer."""
        for action in actions:
            if type(action) is Send:
                self._sendto(action.data, action.peer)
            elif type(action) is Dispatch:
                self._dispatch(action.request, action.peer)
            elif type(action) is Rejected:
                self._on_rejected(action)
            else:
                self._complete((action,))
        self._arm_timer()

    @staticmethod
    def _complete(actions: list[Action] | tuple[Action, ...]) -> None:
        for action in actions:
            if isinstance(action, Complete):
                if type(action.handle) is _Callback:
                    action.handle.call(action.response, None)
                    continue
                future = cast("asyncio.Future[CoapMessage]", action.handle)
                if not future.done():
                    future.set_result(action.response)
            elif isinstance(action, Fail):
                if type(action.handle) is _Callback:
                    action.handle.call(None, action.error)
                    continue
                failed = cast("asyncio.Future[object] | None", action.handle)
                if failed is not None and not failed.done():
                    failed.set_exception(action.error)

    def _arm_timer(self) -> None:
        if self._timer is not None:
            # the common case, after every datagram: the timer is armed early
            # enough (no earlier deadline was added), nothing to pop or re-arm
            bound = self._layer.deadline_bound()
            if bound is None or self._timer_when <= bound:
                return
        deadline = self._layer.next_deadline()
        if deadline is None:
            return
        timer = self._timer
        if timer is not None:
            if self._timer_when <= deadline:
                return
            timer.cancel()
        self._timer_when = deadline
        self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        try:
            self._run(self._layer.poll())
        except Exception:
            log.exception("internal error in the CoAP timer")
            self._arm_timer()

    def _dispatch(self, message: CoapMessage, peer: Peer) -> None:
        site = self._site
        target: Handler | int = (
            site.resolve(message) if site is not None else _NOT_FOUND
        )
        if isinstance(target, int):
            self._reply(message, peer, CoapMessage(0, target))
            return
        limit = self._max_payload
        if limit is not None and len(message.payload) > limit:
            options = [(_SIZE1, encode_uint(limit))]
            self._reply(message, peer, CoapMessage(0, _TOO_LARGE, options=options))
            return
        tasks = self._tasks
        if len(tasks) >= self._max_concurrent:
            self._reply(
                message,
                peer,
                CoapMessage(0, _UNAVAILABLE, options=list(self._overload_options)),
            )
            return
        task = self._loop.create_task(
            self._handle(target, Request(message, peer, self))
        )
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _handle(self, handler: Handler, request: Request) -> None:
        try:
            response = await handler(request)
            if not isinstance(response, CoapMessage):
                raise TypeError(f"handler returned {type(response).__name__}")
        except Exception:
            self._handler_errors += 1
            log.exception(
                "handler for %r raised; answering 5.00", request.message.uri_path
            )
            response = CoapMessage(0, _INTERNAL)
        self._reply(request.message, request.peer, response)

    def _reply(self, message: CoapMessage, peer: Peer, response: CoapMessage) -> None:
        if self._closed:
            return
        try:
            actions = self._layer.respond(message, peer, response)
        except Exception:
            self._handler_errors += 1
            log.exception("response to %r cannot be sent; answering 5.00", peer)
            actions = self._layer.respond(message, peer, CoapMessage(0, _INTERNAL))
        self._run(actions)
