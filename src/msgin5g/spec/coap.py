"""CoAP conventions of MSGin5G-1 (TS 24.538 digest §2).

Resource paths, the Content-Format every payload carries and the default limits.
"""

__all__ = [
    "CONFIG_PATH",
    "CONFIG_RESOURCE",
    "CONTENT_FORMAT_JSON",
    "DEFAULT_COAP_PORT",
    "GATEWAY_STATUS_PATH",
    "MAX_COAP_PAYLOAD",
    "MSGIN5G_PATH",
    "PENDING_PATH",
    "PENDING_RESOURCE",
]

MSGIN5G_PATH: tuple[str, ...] = ("msgin5g",)
"""Uri-Path of the MSGin5G resource on server and client (PROJECT CHOICE, §2.3)."""

CONFIG_RESOURCE = "config"
"""Sub-resource of :data:`MSGIN5G_PATH` that serves configuration (digest §3.1)."""

CONFIG_PATH: tuple[str, ...] = (*MSGIN5G_PATH, CONFIG_RESOURCE)
"""``/msgin5g/config``: ``CONFREQ``/``BULKCONFREQ`` on server and gateway (§3.1)."""

PENDING_RESOURCE = "pending"
"""Sub-resource of a gateway's :data:`MSGIN5G_PATH`: cached registration requests."""

PENDING_PATH: tuple[str, ...] = (*MSGIN5G_PATH, PENDING_RESOURCE)
"""``/msgin5g/pending``: a gateway's expectedRegistrationTime (GET ``?ue=ID``)."""

GATEWAY_STATUS_PATH: tuple[str, ...] = (*MSGIN5G_PATH, "gateway")
"""``/msgin5g/gateway``: a gateway's status (GET, loopback only)."""

CONTENT_FORMAT_JSON = 50
"""``application/json``; mandatory on every request and response with a payload."""

DEFAULT_COAP_PORT = 5683

MAX_COAP_PAYLOAD = 4096
"""Largest encoded payload accepted on MSGin5G-1 (digest §5.5); larger gets 4.13."""
