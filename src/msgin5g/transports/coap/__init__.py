"""MSGin5G-1 over CoAP: the server's resource ``/msgin5g`` and downlink delivery."""

from msgin5g.transports.coap.server import CoapTransport

__all__ = ["CoapTransport"]
