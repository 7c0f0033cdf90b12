"""asyncio CoAP endpoint: the only module of the engine that does I/O.

What: :class:`Endpoint` binds one UDP socket (an asyncio ``DatagramProtocol``,
uvloop when the caller installed it, see :func:`use_uvloop`), feeds every
datagram to the sans-I/O :class:`~msgin5g.coap.exchange.MessageLayer` and
carries out the actions it returns: sending datagrams, running request
handlers (server role, routed by a :class:`Site`) and resolving the futures of
:meth:`Endpoint.request` (client role). One endpoint can be both.

RFC clauses (on top of those in :mod:`msgin5g.coap.exchange`):
    * §5.8 method handling: unknown Uri-Path -> 4.04 Not Found; method not
      allowed on the resource -> 4.05 Method Not Allowed.
    * §5.9.2.9 / §5.10.9: a request body above ``max_request_payload`` -> 4.13
      Request Entity Too Large with Size1 = the limit.
    * §5.9.3.4 / §5.10.5: overload -> 5.03 Service Unavailable with Max-Age.
    * §5.2.2 separate responses: a handler calls
      :meth:`Endpoint.accept_empty` before slow work.
    * RFC 7641 (Observe), server side: a handler registers an observation with
      :meth:`Endpoint.observe` (which numbers the 2.05 it answers with) and the
      application pushes notifications with :meth:`Endpoint.notify`. An RST or a
      timed-out CON notification ends the observation (§3.6, §4.5): ``notify``
      raises for a CON, and the ``observe_reset`` callback reports an RST to a
      NON. Sequence numbers and NON bookkeeping live in
      :mod:`msgin5g.coap.observe`; who observes what is the application's.

Design choices:
    * ``datagram_received`` is lean: decode + duplicate check in the layer, then
      a type switch over the returned actions. No logging string formatting,
      no per-message timers, no ``ipaddress`` parsing, no deep copies.
    * One timer for the whole endpoint: a ``loop.call_at`` handle armed for
      ``layer.next_deadline()``; re-armed only when the deadline moves earlier.
    * Handlers run as tasks (strong references kept in a set) so that a slow
      handler never blocks the socket; their number is capped.
    * Routes are matched on the raw Uri-Path *bytes* tuple, so no UTF-8
      decoding happens on the hot path (a path with invalid UTF-8 cannot match
      a route and gets 4.04).
    * Peers passed to :meth:`Endpoint.request` are normalised to the form the
      socket reports for incoming datagrams (numeric host, 4-tuple on IPv6
      sockets, IPv4-mapped addresses on dual-stack sockets), so responses match.
    * Socket buffers are enlarged (4 MiB by default): with the kernel default of
      ~208 KiB bursts of a few hundred datagrams are lost.
    * Flood control (server role, optional): a
      :class:`~msgin5g.coap.limits.SourceLimiter` is asked for every datagram
      *before* it is decoded; what it refuses is dropped silently, counted in
      ``stats()["dropped"]`` and reported through a
      :class:`~msgin5g.logsafe.LogThrottle` (a few lines per minute at most,
      never one per datagram). Client and gateway endpoints have none.

Log levels: DEBUG normal flow and malformed input, INFO retransmission
exhaustion (in the layer), WARNING misbehaving peers, ERROR handler bugs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from msgin5g.coap.exchange import (
    DEFAULT_DEDUP_BYTES,
    Action,
    Complete,
    Dispatch,
    Fail,
    MessageLayer,
    Peer,
    Rejected,
    Send,
)
from msgin5g.coap.limits import SourceLimiter
from msgin5g.coap.message import CoapMessage, encode_uint
from msgin5g.coap.numbers import Code, OptionNumber, TransmissionParameters, Type
from msgin5g.coap.observe import ObserverTable
from msgin5g.errors import ConnectError, RequestTimeout
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

_URI_PATH = int(OptionNumber.URI_PATH)
_NOT_FOUND = int(Code.NOT_FOUND)
_METHOD_NOT_ALLOWED = int(Code.METHOD_NOT_ALLOWED)
_TOO_LARGE = int(Code.REQUEST_ENTITY_TOO_LARGE)
_UNAVAILABLE = int(Code.SERVICE_UNAVAILABLE)
_INTERNAL = int(Code.INTERNAL_SERVER_ERROR)
_SIZE1 = int(OptionNumber.SIZE1)
_MAX_AGE = int(OptionNumber.MAX_AGE)
_OBSERVE = int(OptionNumber.OBSERVE)
_CONTENT_FORMAT = int(OptionNumber.CONTENT_FORMAT)
_CONTENT = int(Code.CONTENT)
_CON = int(Type.CON)
_NON = int(Type.NON)


@dataclass(slots=True)
class Request:
    """A request handed to a :data:`Handler`.

    Attributes:
        message: the decoded request.
        peer: the sender's address as the socket reported it.
        endpoint: the endpoint that received it (for ``accept_empty`` or for
            sending requests of its own).
    """

    message: CoapMessage
    peer: Peer
    endpoint: Endpoint

    @property
    def path(self) -> tuple[str, ...]:
        """The Uri-Path segments (UTF-8 decoded)."""
        return self.message.uri_path


Handler = Callable[[Request], Awaitable[CoapMessage]]
"""Serves one request; returns the response (its code, options and payload are
used; type, Message ID and token are set by the message layer)."""

ObserveResetCallback = Callable[[Peer, bytes], None]
"""Called with ``(peer, token)`` when an RST answers a NON notification: the
observer lost interest (RFC 7641 §3.6) and the application must drop it."""


class _Route:
    __slots__ = ("handler", "methods")

    def __init__(self, handler: Handler, methods: frozenset[int]) -> None:
        self.handler = handler
        self.methods = methods


class Site:
    """Routes requests to handlers by Uri-Path."""

    def __init__(self) -> None:
        self._exact: dict[tuple[bytes, ...], _Route] = {}
        self._prefixes: list[tuple[tuple[bytes, ...], _Route]] = []

    def add(
        self,
        path: tuple[str, ...],
        handler: Handler,
        *,
        methods: frozenset[int] = frozenset({Code.POST}),
        prefix: bool = False,
    ) -> None:
        """Register ``handler`` for ``path``.

        Args:
            path: the Uri-Path segments, e.g. ``("msgin5g",)``.
            handler: the coroutine function serving it.
            methods: allowed method codes; others get 4.05.
            prefix: also serve every path below ``path`` (longest prefix wins;
                an exact route always wins over a prefix route).
        """
        key = tuple(segment.encode() for segment in path)
        route = _Route(handler, frozenset(int(m) for m in methods))
        if prefix:
            self._prefixes = [p for p in self._prefixes if p[0] != key]
            self._prefixes.append((key, route))
            self._prefixes.sort(key=lambda p: len(p[0]), reverse=True)
        else:
            self._exact[key] = route

    def resolve(self, message: CoapMessage) -> Handler | int:
        """Return the handler for ``message``, or the error code to answer with."""
        path = tuple([v for n, v in message.options if n == _URI_PATH])
        route = self._exact.get(path)
        if route is None:
            for key, candidate in self._prefixes:
                if path[: len(key)] == key:
                    route = candidate
                    break
            else:
                return _NOT_FOUND
        if message.code not in route.methods:
            return _METHOD_NOT_ALLOWED
        return route.handler


class _Protocol(asyncio.DatagramProtocol):
    """Thin adapter: forwards datagrams to the endpoint."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self._endpoint._on_datagram(data, addr)

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


class Endpoint:
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
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: _Protocol | None = None
        self._sendto: Callable[[bytes, Any], None] = _not_open
        self._family = socket.AF_INET
        self._closed = False
        self._handler_errors = 0

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
        sock = await _bind_socket(loop, bind, recv_buffer, send_buffer)
        self._family = sock.family
        protocol = _Protocol(self)
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: protocol, sock=sock
            )
        except OSError as exc:
            sock.close()
            raise ConnectError(f"cannot open UDP endpoint on {bind!r}: {exc}") from exc
        self._transport = transport
        self._protocol = protocol
        self._sendto = transport.sendto
        if log.isEnabledFor(logging.DEBUG):
            log.debug("CoAP endpoint listening on %r", self.local_address)
        return self

    # ----------------------------------------------------------------- public

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        if self._transport is None:
            raise ConnectError("endpoint not open")
        name = self._transport.get_extra_info("sockname")
        return (name[0], name[1])

    def stats(self) -> dict[str, int]:
        """Return the message-layer counters plus ``handlers_running``.

        With a source limiter also ``dropped`` (datagrams refused before
        decoding) and ``sources`` (sources tracked).
        """
        counters = self._layer.stats()
        if self._limiter is not None:
            counters["dropped"] = self._dropped
            counters["sources"] = len(self._limiter)
        counters["handlers_running"] = len(self._tasks)
        counters["handler_errors"] = self._handler_errors
        counters["observations"] = len(self._observers)
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
            ConnectError: the endpoint is closed or the peer cannot be resolved.
            ValueError: invalid message, or mid/token already in use.
        """
        if self._closed:
            raise ConnectError("endpoint closed")
        normal = _numeric_peer(peer, self._family) if type(peer) is tuple else None
        peer = normal if normal is not None else await self._resolve_peer(peer)
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
        if self._closed:
            raise ConnectError("endpoint closed")
        normal = _numeric_peer(peer, self._family) if type(peer) is tuple else None
        if normal is None:
            raise ValueError(f"not a numeric address: {peer!r}")
        future: asyncio.Future[CoapMessage] = self._loop.create_future()
        self._run(self._layer.send_request(message, normal, future))
        return future

    def abandon(self, peer: Peer) -> None:
        """Fail every outstanding request to ``peer`` now (RequestTimeout).

        The caller knows the peer is gone (it re-registered from elsewhere);
        waiting for MAX_TRANSMIT_WAIT would only delay what is next for it.
        """
        normal = _numeric_peer(peer, self._family) if type(peer) is tuple else None
        if normal is None or self._closed:
            return
        self._run(
            self._layer.abort_peer(normal, RequestTimeout("abandoned: peer moved"))
        )

    # ---------------------------------------------------------- Observe (server)

    def observe(self, peer: Peer, token: bytes) -> int:
        """Register (or refresh) the observation ``(peer, token)`` in the engine.

        Call it from the handler of a GET with Observe = 0 and put the returned
        value into the Observe option of the 2.05 answer (RFC 7641 §4.1).

        Returns:
            the sequence number for the registration response.
        """
        return self._observers.next(self._observer_key(peer), token)

    def forget_observation(self, peer: Peer, token: bytes) -> bool:
        """Drop the engine's state of ``(peer, token)`` (deregistration).

        Returns:
            True if the engine knew the observation.
        """
        return self._observers.forget(self._observer_key(peer), token)

    async def notify(
        self,
        peer: Peer,
        token: bytes,
        payload: bytes,
        *,
        confirmable: bool = True,
        final: bool = False,
        code: int = _CONTENT,
        content_format: int | None = 50,
        options: list[tuple[int, bytes]] | None = None,
    ) -> int | None:
        """Send a notification to the observation ``(peer, token)`` (RFC 7641 §4.2).

        A 2.05 with the next Observe sequence number and Content-Format 50 by
        default. A CON notification waits for the ACK; a NON one returns once
        sent (an RST answering it reaches the ``observe_reset`` callback).
        With ``final`` the message carries no Observe option and ends the
        observation in the engine (RFC 7641 §3.2: "the last notification").

        Args:
            peer: the observer's address (host, port); host names are resolved.
            token: the token of the registration request.
            payload: the representation.
            confirmable: CON (True) or NON.
            final: send without Observe option and forget the observation.
            code: response code (2.05 by default; an error code ends the
                observation on the client, §3.2).
            content_format: Content-Format option value, or None for none.
            options: further options.

        Returns:
            the sequence number sent, or None for a ``final`` notification.

        Raises:
            RemoteReset: the observer answered with RST (it lost interest).
            RequestTimeout: a CON notification was not acknowledged.
            ConnectError: the endpoint is closed or the peer cannot be resolved.
            ValueError: invalid token or code.
        """
        if self._closed:
            raise ConnectError("endpoint closed")
        normal = _numeric_peer(peer, self._family) if type(peer) is tuple else None
        peer = normal if normal is not None else await self._resolve_peer(peer)
        opts = list(options) if options else []
        seq: int | None = None
        if final:
            self._observers.forget(peer, token)
        else:
            seq = self._observers.next(peer, token)
            opts.append((_OBSERVE, encode_uint(seq)))
        if content_format is not None:
            opts.append((_CONTENT_FORMAT, encode_uint(content_format)))
        mtype = _CON if confirmable else _NON
        message = CoapMessage(mtype, code, 0, token, opts, payload)
        if not confirmable:
            _, actions = self._layer.send_notification(message, peer, None)
            self._run(actions)
            return seq
        future: asyncio.Future[CoapMessage] = self._loop.create_future()
        _, actions = self._layer.send_notification(message, peer, future)
        self._run(actions)
        try:
            await future
        except Exception:
            self._observers.forget(peer, token)
            raise
        finally:
            if future.cancelled() or not future.done():
                self._layer.cancel(future)
                self._arm_timer()
        return seq

    def notify_nowait(
        self,
        peer: Peer,
        token: bytes,
        payload: bytes,
        *,
        confirmable: bool = True,
        final: bool = False,
        content_format: int | None = 50,
    ) -> asyncio.Future[None]:
        """Start a notification like :meth:`notify`; return the future of its outcome.

        No task waits for the ACK, so many notifications to slow or dead
        observers cost one exchange each and hold nothing else. The future
        ends when a CON notification is acknowledged (or at once for NON and
        ``final``); it fails like :meth:`notify` raises. Cancelling it stops
        the retransmissions. ``peer`` must be a numeric address.

        Raises:
            ConnectError: the endpoint is closed.
            ValueError: ``peer`` is not a numeric address, or invalid token.
        """
        if self._closed:
            raise ConnectError("endpoint closed")
        normal = _numeric_peer(peer, self._family) if type(peer) is tuple else None
        if normal is None:
            raise ValueError(f"not a numeric address: {peer!r}")
        opts: list[tuple[int, bytes]] = []
        if final:
            self._observers.forget(normal, token)
        else:
            opts.append((_OBSERVE, encode_uint(self._observers.next(normal, token))))
        if content_format is not None:
            opts.append((_CONTENT_FORMAT, encode_uint(content_format)))
        outcome: asyncio.Future[None] = self._loop.create_future()
        if not confirmable:
            message = CoapMessage(_NON, _CONTENT, 0, token, opts, payload)
            self._run(self._layer.send_notification(message, normal, None)[1])
            outcome.set_result(None)
            return outcome
        message = CoapMessage(_CON, _CONTENT, 0, token, opts, payload)
        self._run(self._layer.send_notification(message, normal, outcome)[1])
        if outcome.done():  # refused at once (max_pending)
            self._observers.forget(normal, token)
        else:
            outcome.add_done_callback(
                lambda future: self._notification_done(future, normal, token)
            )
        return outcome

    def _notification_done(
        self, future: asyncio.Future[None], peer: Peer, token: bytes
    ) -> None:
        """Outcome of a :meth:`notify_nowait` CON (its exchange resolved it)."""
        if future.cancelled():
            self._layer.cancel(future)
            self._arm_timer()
        elif future.exception() is not None:
            self._observers.forget(peer, token)

    def _observer_key(self, peer: Peer) -> Peer:
        normal = _numeric_peer(peer, self._family) if type(peer) is tuple else None
        return normal if normal is not None else peer

    def _on_rejected(self, action: Rejected) -> None:
        token = action.token
        self._observers.forget(action.peer, token)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("observer %r reset a notification", action.peer)
        callback = self._observe_reset
        if callback is not None:
            try:
                callback(action.peer, token)
            except Exception:
                log.exception("observe_reset callback failed")

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
        transport, protocol = self._transport, self._protocol
        self._sendto = _not_open
        if transport is not None and protocol is not None:
            transport.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await protocol.closed

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

    def _run(self, actions: list[Action]) -> None:
        """Carry out the actions of the message layer, then re-arm the timer."""
        for action in actions:
            cls = action.__class__
            if cls is Send:
                self._sendto(action.data, action.peer)  # type: ignore[union-attr]
            elif cls is Dispatch:
                self._dispatch(action.request, action.peer)  # type: ignore[union-attr]
            elif cls is Rejected:
                self._on_rejected(action)  # type: ignore[arg-type]
            else:
                self._complete((action,))
        self._arm_timer()

    @staticmethod
    def _complete(actions: list[Action] | tuple[Action, ...]) -> None:
        for action in actions:
            if isinstance(action, Complete):
                future: asyncio.Future[CoapMessage] = action.handle  # type: ignore[assignment]
                if not future.done():
                    future.set_result(action.response)
            elif isinstance(action, Fail):
                future = action.handle  # type: ignore[assignment]
                if future is not None and not future.done():
                    future.set_exception(action.error)

    def _arm_timer(self) -> None:
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
        if target.__class__ is int:
            self._reply(message, peer, CoapMessage(0, target))  # type: ignore[arg-type]
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
            self._handle(target, Request(message, peer, self))  # type: ignore[arg-type]
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

    async def _resolve_peer(self, peer: Peer) -> Peer:
        """Resolve a host name to the form the socket reports source addresses."""
        if not isinstance(peer, tuple) or len(peer) < 2:
            raise ValueError(f"peer must be a (host, port) tuple, got {peer!r}")
        flags = socket.AI_V4MAPPED if self._family == socket.AF_INET6 else 0
        try:
            infos = await self._loop.getaddrinfo(
                peer[0],
                peer[1],
                family=self._family,
                type=socket.SOCK_DGRAM,
                flags=flags,
            )
        except OSError as exc:
            raise ConnectError(f"cannot resolve {peer[0]!r}: {exc}") from exc
        resolved = _numeric_peer(tuple(infos[0][4]), self._family)
        if resolved is None:
            raise ConnectError(f"cannot resolve {peer[0]!r}")
        return resolved


def _not_open(data: bytes, peer: Any) -> None:
    raise ConnectError("endpoint not open")


def _numeric_peer(peer: tuple[Any, ...], family: int) -> Peer | None:
    """Canonical numeric form of ``peer`` for a socket of ``family``, or None."""
    if len(peer) < 2:
        return None
    host, port = peer[0], peer[1]
    if family == socket.AF_INET6:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host)
        except (OSError, TypeError):
            try:
                socket.inet_pton(socket.AF_INET, host)
            except (OSError, TypeError):
                return None
            return (f"::ffff:{host}", port, 0, 0)
        flow = peer[2] if len(peer) > 2 else 0
        scope = peer[3] if len(peer) > 3 else 0
        return (socket.inet_ntop(socket.AF_INET6, packed), port, flow, scope)
    try:
        socket.inet_pton(socket.AF_INET, host)
    except (OSError, TypeError):
        return None
    return (host, port)


async def _bind_socket(
    loop: asyncio.AbstractEventLoop,
    bind: tuple[str, int],
    recv_buffer: int,
    send_buffer: int,
) -> socket.socket:
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
