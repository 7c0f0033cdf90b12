"""Opaque relaying of OSCORE-protected exchanges through the Gateway UE.

A constrained UE that protects its MSGin5G-1 exchanges end to end with OSCORE
(RFC 8613) talks to the server *through* the gateway, which acts as a CoAP
forwarding proxy without any security context: it cannot read or alter what it
relays (the inner code, Uri-Path, payload and Class E options are encrypted,
and the AEAD covers what the proxy could change, RFC 8613 §4.1 and §11.2).

* **uplink**: an OSCORE request on the gateway's ``listen`` port (an outer
  POST/FETCH without Uri-Path) is forwarded as is (OSCORE option, Class U
  options, ciphertext) from :class:`OscoreRelay`'s own socket to the server;
  the server's outer answer goes back to the device. The kid context of the
  request (the UE Service ID, ``oscore_profile``) tells the relay which device
  sits at which address; that table is bounded (:data:`MAX_DEVICES`).
* **downlink**: the server registers the device at the relay's socket, so its
  protected requests for the device arrive there; their kid context names the
  device, and they are forwarded to its last known address.

Errors are unprotected answers (the relay has no context): 4.01 without a kid
context (nothing to route by), 4.04 for an unknown device, 5.04 Gateway Timeout
when the next hop does not answer, 5.02 Bad Gateway when it cannot be reached.
"""

import logging
from urllib.parse import urlsplit

from msgin5g.coap.address import Peer
from msgin5g.coap.endpoint import Endpoint, Request, Site
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code, TransmissionParameters, Type
from msgin5g.coap.oscore import OSCORE, OscoreError, decode_option
from msgin5g.errors import ConnectError, RequestTimeout, TransportError
from msgin5g.logsafe import LogThrottle
from msgin5g.spec.coap import DEFAULT_COAP_PORT

__all__ = ["MAX_DEVICES", "OscoreRelay"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)

MAX_DEVICES = 65536
"""Devices whose address the relay remembers (oldest forgotten first)."""
_METHODS = frozenset({Code.POST, Code.FETCH})
_TEXT_PLAIN = (12, b"")


def _kid_context(message: CoapMessage) -> bytes | None:
    for number, value in message.options:
        if number == OSCORE:
            try:
                return decode_option(value).kid_context
            except OscoreError:
                return None
    return None


def _forward(message: CoapMessage) -> CoapMessage:
    """The same outer request as a fresh CON (new Message ID and token)."""
    return CoapMessage(
        Type.CON, message.code, options=list(message.options), payload=message.payload
    )


def _refusal(request: CoapMessage, code: int, detail: str) -> CoapMessage:
    return make_response(request, code, detail.encode(), options=[_TEXT_PLAIN])


class OscoreRelay:
    """Forwards OSCORE exchanges between constrained UEs and the server.

    Args:
        server: ``coap://host[:port]`` of the MSGin5G Server.
        bind: local address of the relay's socket towards the server.
        params: transmission parameters of both hops.
    """

    def __init__(
        self, server: str, bind: tuple[str, int], params: TransmissionParameters
    ) -> None:
        parts = urlsplit(server)
        if not parts.hostname:
            raise ConnectError(f"gateway server must be a coap:// URI: {server!r}")
        self._server: Peer = (parts.hostname, parts.port or DEFAULT_COAP_PORT)
        self._bind = bind
        self._params = params
        self._devices: dict[bytes, Peer] = {}
        self._upstream: Endpoint | None = None
        self._local: Endpoint | None = None
        self.relayed_up = 0
        """Requests of devices forwarded to the server."""
        self.relayed_down = 0
        """Requests of the server forwarded to devices."""

    async def start(self, local: Endpoint) -> None:
        """Bind the socket towards the server; ``local`` reaches the devices."""
        site = Site()
        site.add((), self.down, methods=_METHODS)
        self._upstream = await Endpoint.create(
            self._bind, site=site, params=self._params
        )
        self._local = local

    async def aclose(self) -> None:
        """Close the socket towards the server."""
        upstream, self._upstream = self._upstream, None
        if upstream is not None:
            await upstream.aclose()

    @property
    def address(self) -> tuple[str, int]:
        """The relay socket's address (where the server sees the devices)."""
        if self._upstream is None:
            raise ConnectError("OSCORE relay not started")
        return self._upstream.local_address

    async def up(self, request: Request) -> CoapMessage:
        """A device's OSCORE request (the ``listen`` site's empty-path route)."""
        message = request.message
        device = _kid_context(message)
        if not device:
            return _refusal(message, Code.UNAUTHORIZED, "kid context required")
        if device not in self._devices and len(self._devices) >= MAX_DEVICES:
            del self._devices[next(iter(self._devices))]
        self._devices[device] = request.peer
        if self._upstream is None:
            return _refusal(message, Code.SERVICE_UNAVAILABLE, "relay closed")
        self.relayed_up += 1
        return await self._hop(self._upstream, message, self._server)

    async def down(self, request: Request) -> CoapMessage:
        """The server's OSCORE request for a device (the relay socket's route)."""
        message = request.message
        device = _kid_context(message)
        peer = self._devices.get(device) if device else None
        if peer is None or self._local is None:
            return _refusal(message, Code.NOT_FOUND, "unknown device")
        self.relayed_down += 1
        return await self._hop(self._local, message, peer)

    async def _hop(
        self, endpoint: Endpoint, message: CoapMessage, peer: Peer
    ) -> CoapMessage:
        try:
            answer = await endpoint.request(_forward(message), peer)
        except RequestTimeout:
            return _refusal(message, Code.GATEWAY_TIMEOUT, "next hop did not answer")
        except TransportError as exc:
            _throttled.log("oscore-relay", logging.INFO, "OSCORE relay: %s", exc)
            return _refusal(message, Code.BAD_GATEWAY, "next hop unreachable")
        return make_response(
            message, answer.code, answer.payload, options=list(answer.options)
        )
