"""Ports the domain needs from the outside world (dependency inversion).

The CoAP transport implements :class:`Deliverer`; tests use a recording fake.
"""

import time
from typing import Protocol

from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.registry import Contact

__all__ = ["Clock", "Deliverer", "SystemClock"]


class Clock(Protocol):
    """Wall-clock time source (epoch seconds); injected so tests never sleep."""

    def now(self) -> float:
        """Current time in seconds since the epoch."""
        ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Current time in seconds since the epoch."""
        return time.time()


class Deliverer(Protocol):
    """Pushes a message or report to a client and waits for its acknowledgement."""

    async def deliver(self, contact: Contact, item: Msg | Imdn) -> None:
        """Deliver ``item`` to the client at ``contact``.

        Returns when the client acknowledged it (CoAP 2.xx).

        Raises:
            RecipientUnreachable: no answer, or the client holds no context (RST),
                or a 5.xx; the item may be retried later.
            DeliveryRejected: the client refused the item (4.xx); retrying is futile.
        """
        ...
