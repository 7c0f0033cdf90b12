"""How a :class:`~msgin5g.client.Client` reaches its server: a small transport protocol.

A transport carries CoAP messages (:class:`~msgin5g.coap.message.CoapMessage`,
the engine's sans-I/O model) both ways:

* :meth:`ClientTransport.request` sends the client's request to the server and
  returns the server's response, whatever its code (the client turns 4.xx/5.xx
  into :class:`~msgin5g.errors.RemoteError`);
* the server's own requests (``MSG``, ``IMDN``, ``SEGREC`` … POSTed to the UE's
  ``/msgin5g``) are handed to the :data:`Serve` callback given to
  :meth:`ClientTransport.open`.

Two implementations, the shape of httpx's transports (STYLE.md §9 items 1 and 5):

* :class:`CoapTransport`: one UDP socket on our CoAP engine (the real thing);
* :class:`MockTransport`: in memory; a handler answers the client's requests and
  :meth:`MockTransport.deliver` plays the server's requests, so the client's
  logic is unit-tested without sockets (like ``httpx.MockTransport``).
"""

import asyncio
import inspect
import socket
from collections.abc import Awaitable, Callable
from typing import Protocol

from msgin5g.coap.address import Peer, numeric_peer
from msgin5g.coap.endpoint import Endpoint, Request, Site
from msgin5g.coap.message import CoapMessage
from msgin5g.errors import ConnectError
from msgin5g.spec.coap import MSGIN5G_PATH

__all__ = ["ClientTransport", "CoapTransport", "MockTransport", "Serve"]

Serve = Callable[[CoapMessage], Awaitable[CoapMessage]]
"""Answers one request of the server (returns the response to send)."""


class ClientTransport(Protocol):
    """What a client needs from the network."""

    async def open(self, serve: Serve) -> None:
        """Start; the server's requests are answered by ``serve`` from now on.

        Raises:
            ConnectError: the transport cannot be opened.
        """
        ...

    async def aclose(self) -> None:
        """Stop (outstanding requests fail)."""
        ...

    @property
    def local_address(self) -> tuple[str, int]:
        """Where the server reaches the client."""
        ...

    async def request(
        self, message: CoapMessage, *, token: bytes | None = None
    ) -> CoapMessage:
        """Send ``message`` to the server and return its response.

        Args:
            message: the request (CON or NON).
            token: the Token to use (a matched request, digest §2.2 rule 5);
                default: a fresh one.

        Raises:
            RequestTimeout: no answer; RemoteReset: RST; ConnectError: closed.
        """
        ...


class CoapTransport:
    """The client's UDP socket on the msgin5g CoAP engine.

    Args:
        host: the server's host name or address.
        port: the server's port.
        bind: local (host, port); port 0 picks a free port.
        psk: (identity, key) for ``coaps://``: the socket then carries one
            DTLS 1.2 PSK session to the server
            (:class:`~msgin5g.coap.dtls_client.DtlsClient`; needs python-mbedtls).
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        bind: tuple[str, int],
        psk: tuple[str, bytes] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._bind = bind
        self._psk = psk
        self._endpoint: Endpoint | None = None
        self._server: Peer | None = None

    async def open(self, serve: Serve) -> None:
        """Resolve the server, bind the socket, serve ``/msgin5g``."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self._host, self._port, type=socket.SOCK_DGRAM
            )
        except OSError as exc:
            raise ConnectError(f"cannot resolve {self._host}: {exc}") from exc
        family, _, _, _, sockaddr = infos[0]
        bind = self._bind
        if family == socket.AF_INET6 and bind[0] == "0.0.0.0":
            bind = ("::", bind[1])

        async def handler(request: Request) -> CoapMessage:
            return await serve(request.message)

        site = Site()
        site.add(MSGIN5G_PATH, handler)
        site.add((), handler)  # OSCORE: the outer request has no Uri-Path
        server = numeric_peer(tuple(sockaddr), family)
        if server is None:
            raise ConnectError(f"cannot resolve {self._host}: {sockaddr!r}")
        if self._psk is not None:
            from msgin5g.coap.dtls_client import DtlsClient  # python-mbedtls

            floor = DtlsClient(server, *self._psk)
            await floor.open(bind)
            self._endpoint = Endpoint.create_on(floor, site=site)
        else:
            try:
                self._endpoint = await Endpoint.create(bind, site=site)
            except OSError as exc:
                raise ConnectError(f"cannot bind {bind[0]}:{bind[1]}: {exc}") from exc
        self._server = server

    async def aclose(self) -> None:
        """Close the socket."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            await endpoint.aclose()

    @property
    def local_address(self) -> tuple[str, int]:
        """The socket's address."""
        return self._require().local_address

    def _require(self) -> Endpoint:
        if self._endpoint is None:
            raise ConnectError("client not started (use 'async with Client(...)')")
        return self._endpoint

    async def request(
        self, message: CoapMessage, *, token: bytes | None = None
    ) -> CoapMessage:
        """One exchange with the server (see :class:`ClientTransport`)."""
        endpoint = self._require()
        assert self._server is not None  # noqa: S101 - set with the endpoint
        if token is not None:
            try:
                return await endpoint.request(message, self._server, token=token)
            except ValueError:
                pass  # the Token is in use by another of our requests: fresh one
        return await endpoint.request(message, self._server)


Handler = Callable[[CoapMessage], Awaitable[CoapMessage] | CoapMessage]


class MockTransport:
    """An in-memory transport for unit tests (no sockets, no timers).

    Args:
        handler: plays the server: gets each request the client sends and
            returns the response (plain or awaitable), or raises a
            :class:`~msgin5g.errors.TransportError` to simulate a timeout or RST.

    Attributes:
        sent: every request the client sent, with the Token it asked for.
    """

    def __init__(self, handler: Handler) -> None:
        self._handler = handler
        self._serve: Serve | None = None
        self.sent: list[tuple[CoapMessage, bytes | None]] = []

    async def open(self, serve: Serve) -> None:
        """Remember the client's handler."""
        self._serve = serve

    async def aclose(self) -> None:
        """Forget the client's handler."""
        self._serve = None

    @property
    def local_address(self) -> tuple[str, int]:
        """A made-up address."""
        return ("192.0.2.1", 5683)

    async def request(
        self, message: CoapMessage, *, token: bytes | None = None
    ) -> CoapMessage:
        """Record the request and let the handler answer it."""
        if self._serve is None:
            raise ConnectError("transport closed")
        if token is not None:
            message.token = token
        self.sent.append((message, token))
        answer = self._handler(message)
        if inspect.isawaitable(answer):
            return await answer
        return answer

    async def deliver(self, message: CoapMessage) -> CoapMessage:
        """Play a request of the server to the client; return the client's answer."""
        if self._serve is None:
            raise ConnectError("transport closed")
        return await self._serve(message)
