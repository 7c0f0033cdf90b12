"""A DTLS 1.2 PSK CoAP peer for tests: Mbed TLS's client over a real UDP socket.

It can do what the libcoap and aiocoap command lines cannot: keep one DTLS
session while moving to another UDP port (:meth:`DtlsPeer.rebind`, a NAT
rebinding), answer the server's CON requests (downlink), and send raw records.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from mbedtls.exceptions import TLSError
from mbedtls.tls import (
    HandshakeStep,
    TLSWrappedBuffer,
    WantReadError,
    WantWriteError,
)

from msgin5g.coap.dtls_client import psk_client_buffer
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code, Type
from msgin5g.coap_binding import post_options
from msgin5g.config import load_config
from msgin5g.model.credentials import psk_token
from msgin5g.server import Server, provision_ue, store_dtls_key

CIPHER = "TLS-PSK-WITH-AES-128-CCM-8"


class _Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(data)


class DtlsPeer:
    """One DTLS session to ``server`` with PSK ``identity``/``key``."""

    def __init__(
        self,
        server: tuple[str, int],
        identity: str,
        key: bytes,
        *,
        cipher: str = CIPHER,
    ) -> None:
        self.server = server
        self.buffer: TLSWrappedBuffer = psk_client_buffer(identity, key, (cipher,))
        self.transport: asyncio.DatagramTransport | None = None
        self.protocol = _Queue()
        self.mid = 0x1000
        self.requests: asyncio.Queue[CoapMessage] = asyncio.Queue()
        self.notifications: asyncio.Queue[CoapMessage] = asyncio.Queue()
        self._responses: dict[int, asyncio.Future[CoapMessage]] = {}
        self._reader: asyncio.Task[None] | None = None

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    async def _open_socket(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self.protocol = _Queue()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.protocol, sock=sock
        )

    def _flush(self) -> None:
        out = self.buffer.peek_outgoing(1 << 20)
        if out:
            self.buffer.consume_outgoing(len(out))
            assert self.transport is not None
            self.transport.sendto(out, self.server)

    async def connect(self, timeout: float = 20.0) -> None:
        """Open a socket and complete the handshake (raises TLSError on failure)."""
        await self._open_socket()
        async with asyncio.timeout(timeout):
            while self.buffer._handshake_state is not HandshakeStep.HANDSHAKE_OVER:
                try:
                    self.buffer.do_handshake()
                except WantWriteError:
                    self._flush()
                except WantReadError:
                    self._flush()
                    try:
                        async with asyncio.timeout(1.0):
                            data = await self.protocol.queue.get()
                    except TimeoutError:
                        continue  # Mbed TLS retransmits when its timer ran out
                    self.buffer.receive_from_network(data)
        self._flush()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def rebind(self) -> None:
        """Move to a new UDP port, keeping the DTLS session (a NAT rebinding)."""
        old = self.transport
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self._open_socket()
        if old is not None:
            old.close()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        chunk = bytearray(20_000)
        while True:
            data = await self.protocol.queue.get()
            self.buffer.receive_from_network(data)
            while True:
                try:
                    size = self.buffer.readinto(chunk, len(chunk))  # type: ignore[arg-type]
                except (WantReadError, WantWriteError):
                    break
                except TLSError:
                    return
                self._on_coap(bytes(chunk[:size]))
            self._flush()

    def _on_coap(self, data: bytes) -> None:
        message = CoapMessage.decode(data)
        if message.mtype in (Type.ACK, Type.RST) or message.code >= 64:
            waiter = self._responses.pop(message.mid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(message)
            elif message.code >= 64:  # an Observe notification
                self.notifications.put_nowait(message)
                if message.mtype == Type.CON:
                    self.send_plain(CoapMessage(Type.ACK, 0, message.mid).encode())
            return
        self.requests.put_nowait(message)
        if message.mtype == Type.CON:
            ack = make_response(message, Code.CHANGED)  # piggybacked ACK
            ack.mid = message.mid
            self.send_plain(ack.encode())

    def send_plain(self, data: bytes) -> None:
        """Encrypt ``data`` as one record on the session and send it."""
        self.buffer.write(data)
        self._flush()

    async def post(self, payload: bytes, timeout: float = 20.0) -> CoapMessage:
        """CON POST ``payload`` (JSON) to /msgin5g; retransmitted until answered."""
        request = CoapMessage(
            Type.CON, Code.POST, options=post_options(("msgin5g",)), payload=payload
        )
        return await self.request(request, timeout)

    async def request(self, request: CoapMessage, timeout: float = 20.0) -> CoapMessage:
        """Send CON ``request`` (MID and token set here) until it is answered."""
        self.mid = (self.mid + 1) & 0xFFFF
        request.mid = self.mid
        request.token = self.mid.to_bytes(2, "big")
        waiter: asyncio.Future[CoapMessage] = asyncio.get_running_loop().create_future()
        self._responses[self.mid] = waiter
        data = request.encode()
        async with asyncio.timeout(timeout):
            while True:
                self.send_plain(data)
                try:
                    async with asyncio.timeout(2.0):
                        return await asyncio.shield(waiter)
                except TimeoutError:
                    continue

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self.transport is not None:
            self.transport.close()


UES = ("ue1", "ue2", "ue3")


def token(ue: str) -> str:
    """The PSK_TOKEN of a test UE (secret ``secret-<ue>``)."""
    return psk_token(f"secret-{ue}", ue)


def reg_json(ue: str, credential: str = "") -> bytes:
    """A REG; over DTLS the credential may stay empty (the session is it)."""
    return json.dumps(
        {
            "messageType": "REG",
            "ueServiceId": ue,
            "ueCredentialInfo": {"authType": "PSK_TOKEN", "credential": credential},
        }
    ).encode()


def msg_json(sender: str, recipient: str, message_id: str, text: str = "hi") -> bytes:
    """A MSG from ``sender`` to ``recipient``."""
    return json.dumps(
        {
            "messageType": "MSG",
            "originatingUeServiceId": sender,
            "recipientUeServiceId": recipient,
            "messageId": message_id,
            "payload": base64.b64encode(text.encode()).decode(),
        }
    ).encode()


@contextlib.asynccontextmanager
async def secure_server(tmp_path: Path, **settings: str) -> AsyncIterator[Server]:
    """A server with ``coaps://`` on a free loopback port and UEs ue1..ue3 with keys.

    ``settings`` are ``coap.*`` keys (``allow_insecure="true"`` adds plain CoAP).
    """
    url = f"sqlite:///{tmp_path / 'dtls.db'}"
    overrides = {
        "coap.bind": "127.0.0.1:0",
        "coap.secure_bind": "127.0.0.1:0",
        "coap.psk_store": str(tmp_path / "psk.db"),
        "storage.url": url,
        "rest.enabled": "false",
        **{f"coap.{key}": value for key, value in settings.items()},
    }
    config = load_config(None, {}, overrides)
    for ue in UES:
        await provision_ue(url, ue, f"secret-{ue}")
        store_dtls_key(config.coap, ue, f"secret-{ue}")
    async with Server(config) as server:
        yield server


def secure_address(server: Server) -> tuple[str, int]:
    address = server.coap_addresses[1]
    assert address is not None
    return address


def dtls_stats(server: Server) -> dict[str, int]:
    assert server.coap is not None and server.coap.secure is not None
    return server.coap.secure.dtls.stats()


async def connected(server: Server, ue: str, *, key_length: int = 32) -> DtlsPeer:
    """A DtlsPeer of ``ue`` with its session established and registered."""
    peer = DtlsPeer(secure_address(server), ue, token(ue)[:key_length].encode())
    await peer.connect()
    answer = await peer.post(reg_json(ue))
    assert b"SUCCESS" in answer.payload, answer.payload
    return peer


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` until true (bounded; generous for a loaded machine)."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
