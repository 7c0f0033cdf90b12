"""msgin5g.coap: a fast CoAP engine (RFC 7252) that knows nothing of MSGin5G.

Layers, bottom up:

* :mod:`~msgin5g.coap.numbers`: types, codes, option numbers, content formats and
  transmission parameters (RFC 7252 §3, §4.8, §12).
* :mod:`~msgin5g.coap.message`: the sans-I/O codec, ``bytes`` <->
  :class:`CoapMessage` (§3); raises only :class:`CoapDecodeError`.
* :mod:`~msgin5g.coap.exchange`: the sans-I/O message layer (§4, §5.3):
  deduplication, retransmission, NSTART, token matching; returns actions.
* :mod:`~msgin5g.coap.observe`: sans-I/O Observe (RFC 7641) server state:
  sequence numbers and the NON notifications an RST may answer.
* :mod:`~msgin5g.coap.endpoint`: the asyncio ``DatagramProtocol`` shell that
  performs those actions, routes requests to handlers, awaits responses and
  sends Observe notifications.

The engine imports nothing from ``msgin5g`` except :mod:`msgin5g.errors`.
Observe (RFC 7641) is implemented for the server role only. Not implemented:
the Observe client role, block-wise transfer (RFC 7959), multicast, DTLS,
proxying; their option numbers are recognised so they are not rejected with
4.02 merely for being unknown.
"""

from msgin5g.coap.endpoint import (
    Endpoint,
    Handler,
    ObserveResetCallback,
    Request,
    Site,
    use_uvloop,
)
from msgin5g.coap.exchange import (
    Action,
    Complete,
    Dispatch,
    Fail,
    MessageLayer,
    Peer,
    Rejected,
    Send,
)
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
