"""What the DTLS layer checks on records before Mbed TLS sees them (sans-I/O).

What: the peer naming of DTLS sessions (:func:`identity_peer`,
:func:`identity_of`) and three framing checks on raw datagrams that
:class:`~msgin5g.coap.dtls.DtlsServer` applies before handing a datagram to a
session (RFC 6347 §4.1 record layout: type, version, epoch, sequence number,
length; 13 octets):

* :func:`is_client_hello`: an epoch-0 handshake record holding a ClientHello,
  the only thing an address without a session may send;
* :func:`framed`: whole records only, epoch 0 only for a handshake
  retransmission — what an established session may be fed (python-mbedtls
  resets a context on some errors a forged datagram provokes);
* :func:`one_protected_record`: what is tried against the sessions of a host
  when it comes from an unknown port (NAT rebinding).

No cryptography here and no Mbed TLS import: the checks are cheap and
testable alone.
"""

from __future__ import annotations

from typing import Any

from msgin5g.coap.address import Peer

__all__ = [
    "APPLICATION",
    "HANDSHAKE",
    "PSK_PREFIX",
    "RECORD_HEADER",
    "framed",
    "identity_of",
    "identity_peer",
    "is_client_hello",
    "one_protected_record",
]

PSK_PREFIX = "psk:"
"""Host part of the peer of a DTLS session: ``psk:`` + the PSK identity."""

CHANGE_CIPHER_SPEC, HANDSHAKE, APPLICATION = 20, 22, 23
"""Record content types (RFC 5246 §6.2.1)."""
CLIENT_HELLO = 1
RECORD_HEADER = 13


def identity_peer(identity: str) -> Peer:
    """The peer the CoAP layer sees for a DTLS session of ``identity``."""
    return (PSK_PREFIX + identity, 0)


def identity_of(peer: Any) -> str | None:
    """The PSK identity of a peer from :func:`identity_peer`, else None."""
    if type(peer) is tuple and peer and type(peer[0]) is str:
        host: str = peer[0]
        if host.startswith(PSK_PREFIX):
            return host[len(PSK_PREFIX) :]
    return None


def is_client_hello(data: bytes) -> bool:
    """Whether ``data`` starts with an epoch-0 handshake record holding a ClientHello."""
    return (
        len(data) > RECORD_HEADER
        and data[0] == HANDSHAKE
        and data[3] == 0
        and data[4] == 0
        and data[RECORD_HEADER] == CLIENT_HELLO
    )


_MAX_RECORD = 16 * 1024 + 2048  # RFC 6347 §4.1.2.3: plaintext bound + expansion


def framed(data: bytes) -> bool:
    """Whether ``data`` is whole DTLS records an established session may see.

    Checked before Mbed TLS sees a datagram for an established session: a
    datagram whose record lengths do not add up, or an epoch-0 record other
    than a handshake retransmission (handshake or ChangeCipherSpec), is
    dropped here. Python-mbedtls resets a context on some errors a forged
    datagram provokes; this keeps a spoofer from tearing a session down.
    """
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < RECORD_HEADER:
            return False
        kind = data[offset]
        length = int.from_bytes(data[offset + 11 : offset + 13], "big")
        if kind < CHANGE_CIPHER_SPEC or kind > APPLICATION or length > _MAX_RECORD:
            return False
        if (
            data[offset + 3] == 0
            and data[offset + 4] == 0
            and kind
            not in (
                CHANGE_CIPHER_SPEC,
                HANDSHAKE,
            )
        ):
            return False
        offset += RECORD_HEADER + length
    return offset == end


def one_protected_record(data: bytes) -> bool:
    """Whether ``data`` is exactly one application-data record of epoch >= 1.

    Only such a datagram is tried against the sessions of its host: a trial
    must never feed a session anything but what a moved peer would send.
    """
    return (
        data[0] == APPLICATION
        and (data[3] | data[4]) != 0
        and int.from_bytes(data[11:13], "big") == len(data) - RECORD_HEADER
    )
