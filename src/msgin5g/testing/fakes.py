"""In-memory stand-ins for the service's ports (unit tests only)."""

import asyncio

from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.registry import Contact

__all__ = ["FakeClock", "RecordingDeliverer"]


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.value = start

    def now(self) -> float:
        """Current fake time."""
        return self.value

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.value += seconds


class RecordingDeliverer:
    """Records deliveries; contacts in ``unreachable``/``rejecting`` fail."""

    def __init__(self) -> None:
        self.delivered: list[tuple[Contact, Msg | Imdn]] = []
        self.unreachable: set[Contact] = set()
        self.rejecting: set[Contact] = set()
        self.event = asyncio.Event()

    async def deliver(self, contact: Contact, item: Msg | Imdn) -> None:
        """Record ``item`` or fail as configured."""
        await asyncio.sleep(0)
        if contact in self.unreachable:
            raise RecipientUnreachable("test: unreachable")
        if contact in self.rejecting:
            raise DeliveryRejected("test: rejected")
        self.delivered.append((contact, item))
        self.event.set()

    def items_for(self, contact: Contact) -> list[Msg | Imdn]:
        """Everything delivered to ``contact`` in order."""
        return [item for c, item in self.delivered if c == contact]
