"""OSCORE (RFC 8613) for the CoAP engine: sans-I/O, no knowledge of MSGin5G.

Floors (each imports only those below it)::

    protect    protect/unprotect requests and responses, the OSCORE option
    context    SecurityContext: HKDF derivation, nonces, AEAD, replay window,
               sender sequence numbers with reservation (Appendix B.1.1),
               Echo freshness after a restart (Appendix B.1.2, RFC 9175)
    cbor       the few CBOR items RFC 8613 needs (info, external AAD)

Only AES-CCM-16-64-128 (COSE algorithm 10) with HKDF-SHA-256 is implemented:
it is the mandatory-to-implement algorithm (RFC 8613 §3.2.1) and what aiocoap
and libcoap use by default. The I/O side (who holds which context, where the
sequence reservations are stored) is in ``transports.coap.oscore`` (server),
``client.oscore`` (devices) and ``gateway.oscore_relay`` (opaque relaying).
"""

from msgin5g.coap.oscore.context import (
    ECHO,
    OSCORE,
    EchoRequired,
    OscoreError,
    ReplayError,
    SecurityContext,
    SequenceExhausted,
    UnknownContext,
    derive_context,
)
from msgin5g.coap.oscore.protect import (
    OscoreOption,
    RequestBinding,
    binding_of,
    decode_option,
    encode_option,
    inner_option,
    is_protected,
    protect_request,
    protect_response,
    request_option,
    unprotect_request,
    unprotect_response,
)

__all__ = [
    "ECHO",
    "OSCORE",
    "EchoRequired",
    "OscoreError",
    "OscoreOption",
    "ReplayError",
    "RequestBinding",
    "SecurityContext",
    "SequenceExhausted",
    "UnknownContext",
    "binding_of",
    "decode_option",
    "derive_context",
    "encode_option",
    "inner_option",
    "is_protected",
    "protect_request",
    "protect_response",
    "request_option",
    "unprotect_request",
    "unprotect_response",
]
