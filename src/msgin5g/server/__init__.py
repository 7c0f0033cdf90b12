"""Composition root: builds backend, service and transports from a ServerConfig."""

from msgin5g.server.admin import list_ues, provision_ue, remove_ue
from msgin5g.server.app import Server
from msgin5g.server.dtls_keys import forget_dtls_key, store_dtls_key

__all__ = [
    "Server",
    "forget_dtls_key",
    "list_ues",
    "provision_ue",
    "remove_ue",
    "store_dtls_key",
]
