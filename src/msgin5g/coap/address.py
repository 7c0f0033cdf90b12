"""Peer addresses: the concrete type the engine keys its state on.

What: :data:`Peer`, the transport address of a CoAP peer exactly as an asyncio
datagram socket reports it (``(host, port)`` on an IPv4 socket,
``(host, port, flowinfo, scope_id)`` on an IPv6 one), and
:func:`numeric_peer`, which brings an address given by an application into
that form so that its responses match (RFC 7252 §5.3.2 matches on the source
endpoint).

Design choices:
    * A plain tuple, not a class: the socket hands one over with every
      datagram, and the duplicate cache, the exchanges and the observers key
      dicts on it, so wrapping it would cost an object per datagram.
    * The canonical form is numeric: ``::ffff:a.b.c.d`` on a dual-stack IPv6
      socket, the 4-tuple on IPv6, the 2-tuple on IPv4. Host names are
      resolved by :class:`~msgin5g.coap.endpoint.Endpoint`, not here.
"""

from __future__ import annotations

import socket
from typing import TypeAlias

__all__ = ["Peer", "host_port", "numeric_peer"]

Peer: TypeAlias = tuple[str, int] | tuple[str, int, int, int]
"""A transport address: ``(host, port)`` or ``(host, port, flowinfo, scope_id)``."""


def host_port(peer: Peer) -> tuple[str, int]:
    """The ``(host, port)`` of a peer address (flow and scope dropped)."""
    return peer[0], peer[1]


def numeric_peer(peer: tuple[object, ...], family: int) -> Peer | None:
    """The canonical numeric form of ``peer`` for a socket of ``family``.

    Args:
        peer: ``(host, port, ...)`` with a numeric host (IPv4 or IPv6).
        family: ``socket.AF_INET`` or ``socket.AF_INET6``.

    Returns:
        the address as that socket reports sources, or None when the host is
        not numeric (a name to resolve) or the tuple is not an address.
    """
    if len(peer) < 2:
        return None
    host, port = peer[0], peer[1]
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    if family == socket.AF_INET6:
        try:
            packed = socket.inet_pton(socket.AF_INET6, host)
        except OSError:
            try:
                socket.inet_pton(socket.AF_INET, host)
            except OSError:
                return None
            return (f"::ffff:{host}", port, 0, 0)
        flow = peer[2] if len(peer) > 2 else 0
        scope = peer[3] if len(peer) > 3 else 0
        if not isinstance(flow, int) or not isinstance(scope, int):
            return None
        return (socket.inet_ntop(socket.AF_INET6, packed), port, flow, scope)
    try:
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None
    return (host, port)
