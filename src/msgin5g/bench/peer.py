"""A lean simulated UE for load generation: one UDP socket, raw CoAP.

:class:`RawUe` speaks CoAP through our codec (:class:`~msgin5g.coap.CoapMessage`)
without the :class:`~msgin5g.coap.Endpoint` machinery, because the generator
must be cheaper than the server it measures: requests complete through a
callback (no future or task per message), retransmission is one periodic
:meth:`RawUe.sweep` for all outstanding requests (RFC 7252 §4.2 doubling
timeouts) instead of a timer each, and a server POST (a delivered ``MSG`` or
``AGGMSG``) is acknowledged with a piggybacked 2.04 before its body is looked at.
Observe notifications (RFC 7641: a response whose token is no longer pending,
after a GET with Observe sent through :meth:`RawUe.request`) are acknowledged
and handed over like a delivered message.

What it does not do: block-wise transfer, DTLS. Devices use
:mod:`msgin5g.client`; this is a measuring instrument.
"""

import asyncio
import itertools
import os
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec

from msgin5g.coap import CoapDecodeError, CoapMessage, Code, Type, encode_uint
from msgin5g.coap.numbers import OptionNumber
from msgin5g.errors import ConnectError
from msgin5g.model.credentials import psk_token

__all__ = [
    "MSGIN5G_OPTIONS",
    "Completion",
    "RawUe",
    "open_ue",
    "payload_sent_at",
    "reg_body",
    "stamp",
]

MSGIN5G_OPTIONS: Final = [
    (int(OptionNumber.URI_PATH), b"msgin5g"),
    (int(OptionNumber.CONTENT_FORMAT), encode_uint(50)),
]
"""``POST /msgin5g`` with Content-Format application/json."""

Completion = Callable[[CoapMessage | None, float], None]
"""Called with the response (None: no answer after the retransmissions) and
the time (``time.perf_counter``) the request was first sent."""

_BUFFER: Final = 4 * 1024 * 1024
_ACK_TIMEOUT: Final = 2.0
_MAX_RETRANSMIT: Final = 4
_STAMP: Final = struct.Struct("<d")


def reg_body(ue_service_id: str, secret: str) -> bytes:
    """A ``REG`` presenting the PSK_TOKEN derived from ``secret``."""
    return msgspec.json.encode(
        {
            "messageType": "REG",
            "ueServiceId": ue_service_id,
            "ueCredentialInfo": {
                "authType": "PSK_TOKEN",
                "credential": psk_token(secret, ue_service_id),
            },
        }
    )


def stamp(size: int, at: float) -> bytes:
    """A payload of ``size`` (>= 8) octets starting with the send time ``at``."""
    return _STAMP.pack(at) + b"x" * (size - _STAMP.size)


def payload_sent_at(payload: bytes) -> float | None:
    """The send time a :func:`stamp` payload carries (None: not one of ours)."""
    if len(payload) < _STAMP.size:
        return None
    sent_at: float = _STAMP.unpack_from(payload)[0]
    return sent_at


class _Item(msgspec.Struct):
    payload: bytes = b""


class _Delivered(msgspec.Struct, rename="camel"):
    """A delivered ``MSG``, or an ``AGGMSG`` bundling several (digest §3.10)."""

    payload: bytes = b""
    aggregated_messages: list[_Item] | None = None


_DECODE_DELIVERED: Final = msgspec.json.Decoder(_Delivered).decode


def delivered_payloads(body: bytes) -> list[bytes]:
    """The payloads of a delivered ``MSG``/``AGGMSG`` body (empty if unreadable)."""
    try:
        message = _DECODE_DELIVERED(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return []
    if message.aggregated_messages:
        return [item.payload for item in message.aggregated_messages]
    return [message.payload] if message.payload else []


class _Outstanding:
    __slots__ = ("acked", "attempts", "datagram", "done", "due", "mid", "sent_at")

    def __init__(
        self, mid: int, datagram: bytes, done: Completion, sent_at: float
    ) -> None:
        self.mid = mid
        self.datagram = datagram
        self.done = done
        self.sent_at = sent_at
        self.attempts = 0
        self.acked = False
        self.due = sent_at + _ACK_TIMEOUT


def _not_connected(_datagram: bytes) -> None:
    raise ConnectError("the simulated UE has no socket yet")


class RawUe(asyncio.DatagramProtocol):
    """One simulated UE on a connected UDP socket.

    Args:
        name: the UE Service ID it registers as.
        on_payload: called with each payload the server delivers to it.
    """

    def __init__(self, name: str, on_payload: Callable[[bytes], None]) -> None:
        self.name = name
        self.on_payload = on_payload
        self.transport: asyncio.DatagramTransport | None = None
        self._sendto: Callable[[bytes], None] = _not_connected
        self.in_flight = 0
        self.posts = 0
        self._mids = itertools.count(int.from_bytes(os.urandom(2), "big"))
        self._tokens = itertools.count(1)
        self._by_token: dict[bytes, _Outstanding] = {}
        self._by_mid: dict[int, bytes] = {}
        self._seen: dict[int, bytes] = {}
        self.mid_reuses = 0
        """Server POSTs that came with a Message ID seen before, new token."""
        self.bad_datagrams = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._sendto = transport.sendto

    def next_mid(self) -> int:
        """Take the next Message ID (for whoever sends on this socket next:
        the C engine goes on from here, :mod:`msgin5g.bench.native`)."""
        return next(self._mids) & 0xFFFF

    def post(self, payload: bytes, done: Completion, sent_at: float) -> None:
        """Send ``payload`` as a CON ``POST /msgin5g``; ``done`` gets the answer.

        ``sent_at`` is the send time the caller counted (and stamped) it with.
        """
        self.request(Code.POST, MSGIN5G_OPTIONS, payload, done, sent_at)

    def request(
        self,
        code: int,
        options: list[tuple[int, bytes]],
        payload: bytes,
        done: Completion,
        sent_at: float | None = None,
    ) -> None:
        """Send a CON request; ``done`` gets the answer (or None)."""
        mid = self.next_mid()
        token = next(self._tokens).to_bytes(4, "big")
        datagram = CoapMessage(Type.CON, code, mid, token, options, payload).encode()
        now = time.perf_counter() if sent_at is None else sent_at
        self._by_token[token] = _Outstanding(mid, datagram, done, now)
        self._by_mid[mid] = token
        self.in_flight += 1
        self.posts += 1
        self._sendto(datagram)

    async def call(
        self,
        payload: bytes,
        *,
        code: int = Code.POST,
        options: list[tuple[int, bytes]] = MSGIN5G_OPTIONS,
    ) -> CoapMessage | None:
        """:meth:`request` awaited (set-up requests, not the measured load)."""
        future: asyncio.Future[CoapMessage | None] = (
            asyncio.get_running_loop().create_future()
        )

        def done(response: CoapMessage | None, _sent_at: float) -> None:
            if not future.done():
                future.set_result(response)

        self.request(code, options, payload, done)
        return await future

    def sweep(self, now: float) -> None:
        """Retransmit what is due; give up after MAX_RETRANSMIT (RFC 7252 §4.2)."""
        for token, item in list(self._by_token.items()):
            if item.due > now or item.acked:
                continue
            if item.attempts >= _MAX_RETRANSMIT:
                self._finish(token, None)
                continue
            item.attempts += 1
            item.due = now + _ACK_TIMEOUT * (2**item.attempts)
            self._sendto(item.datagram)

    def _finish(self, token: bytes, response: CoapMessage | None) -> None:
        item = self._by_token.pop(token, None)
        if item is None:
            return
        self._by_mid.pop(item.mid, None)
        self.in_flight -= 1
        item.done(response, item.sent_at)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = CoapMessage.decode(data)
        except CoapDecodeError:
            self.bad_datagrams += 1
            return
        mtype, code = message.mtype, message.code
        if mtype in (Type.ACK, Type.RST):
            token = self._by_mid.pop(message.mid, None)
            if token is None:
                return
            if mtype == Type.RST:
                self._finish(token, message)
            elif code == Code.EMPTY:  # a separate response follows (§5.2.2)
                item = self._by_token.get(token)
                if item is not None:
                    item.acked = True
            else:
                self._finish(token, message)
            return
        if mtype == Type.CON:
            self._acknowledge(message)
        if code >> 5 == 0:  # a request: the server delivers a message
            if code == Code.POST and message.payload and self._first(message):
                self.on_payload(message.payload)
            return
        if message.token in self._by_token:
            self._finish(message.token, message)  # a separate response
        elif message.payload:  # an Observe notification (RFC 7641)
            self.on_payload(message.payload)

    def _acknowledge(self, message: CoapMessage) -> None:
        if message.code == Code.EMPTY:  # a CoAP ping is answered with RST (§4.3)
            reply = CoapMessage(Type.RST, Code.EMPTY, message.mid)
        elif message.code == Code.POST:
            reply = CoapMessage(Type.ACK, Code.CHANGED, message.mid, message.token)
        else:
            reply = CoapMessage(Type.ACK, Code.EMPTY, message.mid)
        self._sendto(reply.encode())

    def _first(self, message: CoapMessage) -> bool:
        """False for a retransmitted server POST (already counted).

        Keyed by Message ID *and* token: a server whose Message ID counter is
        shared by all its peers may give this UE a used ID again within seconds
        under load, with a new token (counted in :attr:`mid_reuses`: RFC 7252
        §4.4 forbids it within EXCHANGE_LIFETIME, and a client deduplicating on
        the Message ID alone would drop that message); a retransmission repeats
        both.
        """
        seen = self._seen.get(message.mid)
        if seen == message.token:
            return False
        if seen is not None:
            self.mid_reuses += 1
        elif len(self._seen) > 4096:
            self._seen.clear()
        self._seen[message.mid] = message.token
        return True

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (port unreachable) surface as timeouts of the requests."""


async def open_ue(
    name: str, server: tuple[str, int], on_payload: Callable[[bytes], None]
) -> RawUe:
    """A :class:`RawUe` on a fresh socket connected to ``server``."""
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _BUFFER)
    sock.setblocking(False)
    try:
        sock.connect(server)
    except OSError:
        sock.close()
        raise
    loop = asyncio.get_running_loop()
    _, protocol = await loop.create_datagram_endpoint(
        lambda: RawUe(name, on_payload), sock=sock
    )
    return protocol
