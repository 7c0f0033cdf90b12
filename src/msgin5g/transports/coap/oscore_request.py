"""The request an OSCORE-protected CoAP request becomes once verified.

Its own module so that :mod:`.oscore` can be compiled with mypyc (a dataclass
subclass of the interpreted :class:`~msgin5g.coap.resource.Request` cannot live
in a compiled module; docs/performance.md, "Compiled hot path").
"""

from dataclasses import dataclass

from msgin5g.coap.resource import Request

__all__ = ["OscoreRequest"]


@dataclass(slots=True)
class OscoreRequest(Request):
    """An inner request that arrived OSCORE-protected.

    Attributes:
        ue_service_id: the UE whose security context verified it (the
            requester's identity, whatever its source address).
    """

    ue_service_id: str = ""
