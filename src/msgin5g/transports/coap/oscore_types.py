"""The OSCORE edge's own types: the verified request and the stored reservation.

Their own module, kept interpreted, so that :mod:`.oscore` can be compiled with
mypyc: a dataclass subclass of the interpreted
:class:`~msgin5g.coap.resource.Request` cannot live in a compiled module, and a
``msgspec.Struct`` subclass defined in one loses its class keywords
(``frozen=True`` here) (docs/performance.md, "Compiled hot path").
"""

from dataclasses import dataclass

import msgspec

from msgin5g.coap.resource import Request

__all__ = ["OscoreRequest", "OscoreSequence"]


@dataclass(slots=True)
class OscoreRequest(Request):
    """An inner request that arrived OSCORE-protected.

    Attributes:
        ue_service_id: the UE whose security context verified it (the
            requester's identity, whatever its source address).
    """

    ue_service_id: str = ""


class OscoreSequence(msgspec.Struct, frozen=True):
    """The stored reservation: numbers below ``next`` may have been used."""

    next: int
