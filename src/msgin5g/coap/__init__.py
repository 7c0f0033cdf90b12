"""msgin5g.coap: a fast CoAP engine (RFC 7252) that knows nothing of MSGin5G.

Layers, bottom up:

* :mod:`~msgin5g.coap.numbers`: types, codes, option numbers, content formats and
  transmission parameters (RFC 7252 §3, §4.8, §12).
* :mod:`~msgin5g.coap.message`: the sans-I/O codec, ``bytes`` <->
  :class:`CoapMessage` (§3); raises only :class:`CoapDecodeError`.
* :mod:`~msgin5g.coap.address`: :data:`Peer`, the concrete address type, and
  its canonical numeric form.
* :mod:`~msgin5g.coap.dedup`: the duplicate-detection cache (§4.5), two
  generations, bounded by entries and bytes.
* :mod:`~msgin5g.coap.outgoing`: what we sent and track (§4.2-§4.7, §5.3):
  retransmission, NSTART, Message ID and token allocation, matching.
* :mod:`~msgin5g.coap.observe`: sans-I/O Observe (RFC 7641) server state:
  sequence numbers and notification options.
* :mod:`~msgin5g.coap.exchange`: the sans-I/O message layer (§4, §5.3) on
  top of those three; fed datagrams, returns actions
  (:mod:`~msgin5g.coap.actions`).
* :mod:`~msgin5g.coap.limits`: per-source rate limits before decoding.
* :mod:`~msgin5g.coap.resource`: the server role's resource tree
  (:class:`Site`, :class:`Request`).
* :mod:`~msgin5g.coap.udp`: socket binding, the datagram protocol, name
  resolution, uvloop.
* :mod:`~msgin5g.coap.endpoint`: the asyncio shell that performs the actions,
  routes requests to handlers, awaits responses and sends Observe
  notifications.

A datagram walks down and up once: ``udp`` -> ``endpoint`` (limits) ->
``exchange`` (``message`` decode, ``dedup`` or ``outgoing``) -> actions ->
``endpoint`` (``resource`` -> handler) -> ``exchange.respond`` -> ``udp``.

The engine imports nothing from ``msgin5g`` except :mod:`msgin5g.errors`.
Observe (RFC 7641) is implemented for the server role only. Not implemented:
the Observe client role, block-wise transfer (RFC 7959), multicast, DTLS,
proxying; their option numbers are recognised so they are not rejected with
4.02 merely for being unknown.
"""

from msgin5g.coap.actions import Action, Complete, Dispatch, Fail, Rejected, Send
from msgin5g.coap.address import Peer
from msgin5g.coap.endpoint import Endpoint, ObserveResetCallback
from msgin5g.coap.exchange import MessageLayer
from msgin5g.coap.message import (
    CoapDecodeError,
    CoapMessage,
    decode_uint,
    encode_uint,
    make_response,
    uri_path_options,
)
from msgin5g.coap.numbers import (
    KNOWN_OPTIONS,
    Code,
    ContentFormat,
    OptionNumber,
    TransmissionParameters,
    Type,
    code_str,
    is_critical,
    is_request,
    is_response,
    is_success,
)
from msgin5g.coap.observe import ObserverTable, next_sequence
from msgin5g.coap.resource import Handler, Request, Site
from msgin5g.coap.udp import use_uvloop

__all__ = [
    "KNOWN_OPTIONS",
    "Action",
    "CoapDecodeError",
    "CoapMessage",
    "Code",
    "Complete",
    "ContentFormat",
    "Dispatch",
    "Endpoint",
    "Fail",
    "Handler",
    "MessageLayer",
    "ObserveResetCallback",
    "ObserverTable",
    "OptionNumber",
    "Peer",
    "Rejected",
    "Request",
    "Send",
    "Site",
    "TransmissionParameters",
    "Type",
    "code_str",
    "decode_uint",
    "encode_uint",
    "is_critical",
    "is_request",
    "is_response",
    "is_success",
    "make_response",
    "next_sequence",
    "uri_path_options",
    "use_uvloop",
]
