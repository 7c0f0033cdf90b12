"""In-memory stand-ins for the service's ports (unit tests only)."""

import asyncio

from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.aggregation import unbundle, unbundle_reports
from msgin5g.model.messages import AggImdn, AggMsg, DownlinkItem, Imdn, Msg
from msgin5g.model.registry import Contact
from msgin5g.testing.clock import ManualClock

__all__ = ["FakeClock", "RecordingDeliverer"]


FakeClock = ManualClock
"""Old name of :class:`~msgin5g.testing.ManualClock` (kept for the tests of other
layers that still use it; ``advance`` moves the time as it always did, and now
also fires the timers that fall due)."""


class RecordingDeliverer:
    """Records deliveries; contacts in ``unreachable``/``rejecting`` fail."""

    def __init__(self) -> None:
        self.delivered: list[tuple[Contact, DownlinkItem]] = []
        self.unreachable: set[Contact] = set()
        self.rejecting: set[Contact] = set()
        self.abandoned: list[Contact] = []
        self.event = asyncio.Event()

    async def deliver(self, contact: Contact, item: DownlinkItem) -> None:
        """Record ``item`` or fail as configured."""
        await asyncio.sleep(0)
        if contact in self.unreachable:
            raise RecipientUnreachable("test: unreachable")
        if contact in self.rejecting:
            raise DeliveryRejected("test: rejected")
        self.delivered.append((contact, item))
        self.event.set()

    def deliver_nowait(
        self, contact: Contact, item: DownlinkItem
    ) -> asyncio.Future[None]:
        """:meth:`deliver` as a task (tasks are futures)."""
        return asyncio.ensure_future(self.deliver(contact, item))

    def abandon(self, contact: Contact) -> None:
        """Record the call (deliveries here never hang)."""
        self.abandoned.append(contact)

    def items_for(self, contact: Contact) -> list[DownlinkItem]:
        """Everything delivered to ``contact`` in order."""
        return [item for c, item in self.delivered if c == contact]

    def messages_for(self, contact: Contact) -> list[Msg | Imdn]:
        """Like :meth:`items_for`, with ``AGGMSG``/``AGGIMDN`` unbundled."""
        flat: list[Msg | Imdn] = []
        for item in self.items_for(contact):
            if isinstance(item, AggMsg):
                flat.extend(unbundle(item))
            elif isinstance(item, AggImdn):
                flat.extend(unbundle_reports(item))
            elif isinstance(item, Msg | Imdn):
                flat.append(item)
        return flat
