"""The network probes of ``msgin5g doctor`` that speak a protocol: DTLS and MQTT.

What: :func:`dtls_answers` sends the first flight of a real DTLS 1.2 PSK client
(Mbed TLS, the RFC 7925 suites of :data:`~msgin5g.coap.dtls.CIPHERS`) and
reports whether a HelloVerifyRequest comes back: what msgin5g's ``coaps://``
listener answers to a ClientHello without a cookie, before any key is looked
up, so the probe needs no credential and leaves no state behind.
:func:`mqtt_connect` opens the server's own broker link
(:class:`~msgin5g.mqtt.link.BrokerLink`) with the configured credentials and
TLS files: one MQTT CONNECT, whose CONNACK decides, then DISCONNECT.

Both are bounded (the caller's bound) and never raise for a peer that is
absent or wrong: they say so.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

from msgin5g.errors import MSGin5GError

if TYPE_CHECKING:
    from msgin5g.config import MqttConfig

__all__ = ["dtls_answers", "mqtt_connect"]

_HANDSHAKE = 22  # TLS ContentType handshake
_HELLO_VERIFY_REQUEST = 3  # HandshakeType (RFC 6347 §4.2.1)
_RECORD_HEADER = 13  # DTLS record header octets


def client_hello() -> bytes:
    """The first flight of a DTLS 1.2 PSK client: a ClientHello without cookie."""
    from mbedtls.tls import (
        ClientContext,
        DTLSConfiguration,
        DTLSVersion,
        WantReadError,
        WantWriteError,
    )

    from msgin5g.coap.dtls import CIPHERS

    buffer = ClientContext(
        DTLSConfiguration(
            ciphers=CIPHERS,
            lowest_supported_version=DTLSVersion.DTLSv1_2,
            highest_supported_version=DTLSVersion.DTLSv1_2,
            validate_certificates=False,
            pre_shared_key=("msgin5g-doctor", b"\x00" * 16),
        )
    ).wrap_buffers(None)
    for _ in range(2):  # the first step only prepares; the second writes
        try:
            buffer.do_handshake()
        except (WantReadError, WantWriteError):
            pass
    return bytes(buffer.peek_outgoing(4096))


def dtls_answers(host: str, port: int, timeout: float) -> bool:
    """Whether a DTLS server at (host, port) answers a ClientHello with a cookie."""
    hello = client_hello()
    family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.sendto(hello, (host, port))
            data = sock.recv(2048)
    except OSError:
        return False
    return (
        len(data) > _RECORD_HEADER
        and data[0] == _HANDSHAKE
        and data[_RECORD_HEADER] == _HELLO_VERIFY_REQUEST
    )


async def mqtt_connect(config: MqttConfig, within: float) -> str | None:
    """Connect to ``config.url`` as the server would: None when accepted, else why.

    The CONNECT waits for its CONNACK at most ``within`` seconds.

    Raises:
        ModuleNotFoundError: the MQTT extra (aiomqtt) is not installed.
    """
    from msgin5g.mqtt.link import BrokerLink
    from msgin5g.transports.mqtt.server import broker_for

    broker = broker_for(config, connect_timeout=min(within, config.connect_timeout))
    link = BrokerLink(broker, f"msgin5g-doctor-{socket.gethostname()}", (), _ignore)
    try:
        async with asyncio.timeout(within + 1.0):
            await link.start()
    except MSGin5GError as exc:
        return str(exc)
    except (TimeoutError, OSError) as exc:
        await link.aclose()
        return f"MQTT broker {config.url}: {exc or 'no answer'}"
    await link.aclose()
    return None


def _ignore(message: object) -> None:
    """Messages to the probe (there are none: it subscribes to nothing)."""
