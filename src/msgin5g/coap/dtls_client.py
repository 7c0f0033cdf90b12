"""The device side of ``coaps://``: one DTLS 1.2 PSK session to one server.

What: :class:`DtlsClient` is a :class:`~msgin5g.coap.udp.DatagramFloor` for
the client's :class:`~msgin5g.coap.endpoint.Endpoint`
(:meth:`~msgin5g.coap.endpoint.Endpoint.create_on`): it binds a UDP socket,
does the handshake with the server (PSK identity and key, RFC 7925 suites of
:data:`~msgin5g.coap.dtls.CIPHERS`), and then encrypts every datagram the
engine sends to the server and decrypts what comes back. The server's own
requests (downlink) arrive on the same session. Mbed TLS through
python-mbedtls, like the server (docs/security-dtls.md).

Not here: a new handshake after the server lost the session (restart,
``coap.dtls_idle_timeout``); the application re-opens the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from mbedtls.exceptions import TLSError
from mbedtls.tls import (
    ClientContext,
    DTLSConfiguration,
    DTLSVersion,
    HandshakeStep,
    TLSWrappedBuffer,
    WantReadError,
    WantWriteError,
)

from msgin5g.coap.address import Peer
from msgin5g.coap.dtls import CIPHERS
from msgin5g.coap.udp import UdpSocket, bind_socket, open_socket
from msgin5g.errors import ConnectError

__all__ = ["DtlsClient", "psk_client_buffer"]

log = logging.getLogger(__name__)

_OVER = HandshakeStep.HANDSHAKE_OVER
_CHUNK = 16 * 1024 + 256


def psk_client_buffer(
    identity: str, key: bytes, ciphers: tuple[str, ...] = CIPHERS
) -> TLSWrappedBuffer:
    """The Mbed TLS client side of one DTLS 1.2 PSK session (no socket).

    Args:
        identity: the PSK identity (the UE Service ID).
        key: the pre-shared key.
        ciphers: the suites offered (default: the server's RFC 7925 set).
    """
    return ClientContext(
        DTLSConfiguration(
            ciphers=ciphers,
            lowest_supported_version=DTLSVersion.DTLSv1_2,
            highest_supported_version=DTLSVersion.DTLSv1_2,
            validate_certificates=False,
            pre_shared_key=(identity, key),
        )
    ).wrap_buffers(None)


class DtlsClient:
    """A DTLS-PSK session from a local UDP socket to ``server``.

    Args:
        server: the server's numeric address (as the socket reports it).
        identity: the PSK identity (the UE Service ID).
        key: the pre-shared key.
    """

    def __init__(self, server: Peer, identity: str, key: bytes) -> None:
        self._server = server
        self._buffer = psk_client_buffer(identity, key)
        self._socket: UdpSocket | None = None
        self._inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._on_datagram: Callable[[bytes, Any], None] | None = None
        self._on_refused: Callable[[Any], None] | None = None

    async def open(
        self,
        bind: tuple[str, int],
        *,
        timeout: float = 30.0,  # noqa: ASYNC109 - the handshake's own bound
        recv_buffer: int = 1 << 20,
    ) -> None:
        """Bind the socket and complete the handshake.

        Raises:
            ConnectError: the socket cannot be bound, the server refused the
                key or identity, or no handshake within ``timeout`` seconds.
        """
        loop = asyncio.get_running_loop()
        sock = await bind_socket(loop, bind, recv_buffer, recv_buffer)
        # the native socket where built: ICMP errors read where libuv never sees them
        self._socket = await open_socket(
            loop, sock, bind, self._received, self._refused
        )
        where = f"{self._server[0]}:{self._server[1]}"
        try:
            async with asyncio.timeout(timeout):
                await self._handshake()
        except ConnectError:
            await self.aclose()
            raise
        except TimeoutError:
            await self.aclose()
            raise ConnectError(
                f"no DTLS handshake with {where} within {timeout:g} s "
                "(is coaps:// served there?)"
            ) from None
        except TLSError as exc:
            await self.aclose()
            raise ConnectError(
                f"DTLS handshake with {where} failed: {exc} "
                "(check the PSK identity and key)"
            ) from exc

    async def _handshake(self) -> None:
        buffer = self._buffer
        while not self.established:
            try:
                buffer.do_handshake()
                continue
            except WantWriteError:
                self._flush()
                continue
            except WantReadError:
                self._flush()
            try:
                async with asyncio.timeout(0.5):
                    data = await self._inbox.get()
            except TimeoutError:
                continue  # Mbed TLS resends its flight when its timer ran out
            if not data:
                raise ConnectError(
                    f"{self._server[0]}:{self._server[1]} refused the handshake "
                    "(ICMP port unreachable): nothing listens on that UDP port"
                )
            buffer.receive_from_network(data)
        self._flush()

    @property
    def established(self) -> bool:
        """Whether the handshake is over."""
        state: object = self._buffer._handshake_state
        return state is _OVER

    def start(
        self,
        on_datagram: Callable[[bytes, Any], None],
        on_refused: Callable[[Any], None],
    ) -> None:
        """Hand decrypted datagrams to ``on_datagram(data, server)``."""
        self._on_datagram = on_datagram
        self._on_refused = on_refused
        while not self._inbox.empty():  # arrived with the last handshake flight
            self._read(self._inbox.get_nowait())

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        if self._socket is None:
            raise ConnectError("endpoint not open")
        return self._socket.local_address

    def sendto(self, data: bytes, peer: Any) -> None:
        """Encrypt ``data`` for the server (the only peer of this floor)."""
        if peer != self._server or self._socket is None:
            if self._on_refused is not None:
                asyncio.get_running_loop().call_soon(self._on_refused, peer)
            return
        try:
            self._buffer.write(data)
        except (TLSError, WantReadError, WantWriteError) as exc:
            log.warning("DTLS session with the server is gone: %s", exc)
            if self._on_refused is not None:
                asyncio.get_running_loop().call_soon(self._on_refused, peer)
            return
        self._flush()

    async def aclose(self) -> None:
        """Send close_notify (best effort) and close the socket."""
        sock, self._socket = self._socket, None
        if sock is None:
            return
        with contextlib.suppress(TLSError, WantReadError, WantWriteError):
            if self.established:
                self._buffer.shutdown()
        out = self._buffer.peek_outgoing(1 << 16)
        if out:
            sock.send(out, self._server)
        await sock.aclose()

    def _refused(self, addr: Any) -> None:
        """ICMP port unreachable: fails the handshake now, later the exchanges."""
        if not self.established:
            self._inbox.put_nowait(b"")  # the handshake's signal
        elif self._on_refused is not None:
            self._on_refused(self._server)

    def _received(self, data: bytes, addr: Any) -> None:
        if self._on_datagram is None:
            self._inbox.put_nowait(data)
        else:
            self._read(data)

    def _read(self, data: bytes) -> None:
        buffer = self._buffer
        buffer.receive_from_network(data)
        chunk = bytearray(_CHUNK)
        while True:
            try:
                size = buffer.readinto(chunk, _CHUNK)  # type: ignore[arg-type]
            except (WantReadError, WantWriteError):
                break
            except TLSError as exc:
                log.warning("DTLS session with the server ended: %s", exc)
                break
            if self._on_datagram is not None:
                self._on_datagram(bytes(chunk[:size]), self._server)
        self._flush()

    def _flush(self) -> None:
        out = self._buffer.peek_outgoing(1 << 16)
        if out:
            self._buffer.consume_outgoing(len(out))
            if self._socket is not None:
                self._socket.send(out, self._server)
