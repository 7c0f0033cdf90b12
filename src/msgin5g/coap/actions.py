"""What the sans-I/O message layer asks its I/O shell to do.

:class:`~msgin5g.coap.exchange.MessageLayer` never touches a socket or the
event loop: every call returns a list of these actions and
:class:`~msgin5g.coap.endpoint.Endpoint` carries them out, in order.

Design choice: small slotted classes rather than dataclasses or a tagged
union, because one is built for every datagram and the endpoint switches on
``action.__class__`` (an identity test) in its hot loop.
"""

from __future__ import annotations

from msgin5g.coap.address import Peer
from msgin5g.coap.message import CoapMessage

__all__ = ["Action", "Complete", "Dispatch", "Fail", "Rejected", "Send"]


class Send:
    """Action: transmit ``data`` to ``peer``."""

    __slots__ = ("data", "peer")

    def __init__(self, data: bytes, peer: Peer) -> None:
        self.data = data
        self.peer = peer

    def __repr__(self) -> str:
        return f"Send({self.data!r}, {self.peer!r})"


class Dispatch:
    """Action: a new request for the application; answer with ``respond``."""

    __slots__ = ("peer", "request")

    def __init__(self, request: CoapMessage, peer: Peer) -> None:
        self.request = request
        self.peer = peer

    def __repr__(self) -> str:
        return f"Dispatch({self.request!r}, {self.peer!r})"


class Complete:
    """Action: the response to the request sent with ``handle`` arrived."""

    __slots__ = ("handle", "response")

    def __init__(self, handle: object, response: CoapMessage) -> None:
        self.handle = handle
        self.response = response

    def __repr__(self) -> str:
        return f"Complete({self.handle!r}, {self.response!r})"


class Fail:
    """Action: the request sent with ``handle`` failed with ``error``."""

    __slots__ = ("error", "handle")

    def __init__(self, handle: object, error: Exception) -> None:
        self.handle = handle
        self.error = error

    def __repr__(self) -> str:
        return f"Fail({self.handle!r}, {self.error!r})"


class Rejected:
    """Action: ``peer`` answered the NON notification ``mid`` (``token``) with RST."""

    __slots__ = ("mid", "peer", "token")

    def __init__(self, peer: Peer, mid: int, token: bytes) -> None:
        self.peer = peer
        self.mid = mid
        self.token = token

    def __repr__(self) -> str:
        return f"Rejected({self.peer!r}, {self.mid}, {self.token!r})"


Action = Send | Dispatch | Complete | Fail | Rejected
"""What :class:`~msgin5g.coap.exchange.MessageLayer` asks the I/O shell to do."""
