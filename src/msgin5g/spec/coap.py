"""CoAP conventions of MSGin5G-1 (TS 24.538 digest §2).

Resource paths, the Content-Format every payload carries and the default limits.
"""

__all__ = [
    "CONTENT_FORMAT_JSON",
    "DEFAULT_COAP_PORT",
    "MAX_COAP_PAYLOAD",
    "MSGIN5G_PATH",
]

MSGIN5G_PATH: tuple[str, ...] = ("msgin5g",)
"""Uri-Path of the MSGin5G resource on server and client (PROJECT CHOICE, §2.3)."""

CONTENT_FORMAT_JSON = 50
"""``application/json``; mandatory on every request and response with a payload."""

DEFAULT_COAP_PORT = 5683

MAX_COAP_PAYLOAD = 4096
"""Largest encoded payload accepted on MSGin5G-1 (digest §5.5); larger gets 4.13."""
