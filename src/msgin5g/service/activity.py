"""What the operator console shows about recent activity: last seen, failures.

What: :class:`Activity`, owned by the :class:`~msgin5g.service.delivery.DeliveryEngine`
(``engine.activity``), fed by two one-line hooks there:

* ``on_uplink`` → :meth:`Activity.seen`: the epoch second of the last request
  a registered UE (or a Gateway UE) sent; a dict of UE Service ID → float, so
  a UE that never sent anything since the server started costs nothing, and
  one that did costs one dict slot (~31 B, measured in docs/console.md: UEs
  seen in the same second share one float), beside the ~288 B of its
  registration. Only registered
  UEs reach ``on_uplink``, so the dict is bounded by the provisioned UEs; an
  entry outlives a de-registration (still shown for that UE, with its queue).
* ``report_failure`` → :meth:`Activity.failed`: one :class:`FailureRecord` in a
  ring of the last ``capacity`` failures (a ``deque`` with ``maxlen``: O(1),
  bounded memory whatever the failure rate).

Why here and not in the metrics: the counters say *how many* deliveries
failed; an operator looking at one UE needs *which* message, to whom and why.
Nothing is persisted: both views describe this process since its start.
"""

import time
from collections import deque
from collections.abc import Callable

import msgspec

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem

__all__ = ["DEFAULT_CAPACITY", "Activity", "FailureRecord"]

DEFAULT_CAPACITY = 500
"""Failures kept by default (the oldest is dropped first)."""


class FailureRecord(msgspec.Struct, frozen=True, gc=False):
    """One failed delivery.

    Attributes:
        at: epoch seconds when the failure was reported.
        recipient: mailbox key of the recipient (a UE Service ID, or ``as/`` +
            an AS Service ID).
        originator: UE or AS Service ID of the originator, if known.
        message_id: the message's ``messageId``.
        kind: ``MSG`` or ``IMDN``.
        cause: the ``failureCause`` value.
    """

    at: float
    recipient: str
    originator: str | None
    message_id: str
    kind: str
    cause: str


class Activity:
    """Last-seen times of UEs and a ring of recent delivery failures."""

    def __init__(
        self,
        now: Callable[[], float] = time.time,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self._now = now
        self.last_seen: dict[str, float] = {}
        self._tick = float("-inf")
        self.failures: deque[FailureRecord] = deque(maxlen=capacity)
        self.failures_total = 0

    def seen(self, ue_service_id: str) -> None:
        """A UE sent a request now (to the second).

        Every UE seen within the same second shares one float object, so an
        entry costs only its dict slot.
        """
        now = self._now()
        if now - self._tick >= 1.0:
            self._tick = now
        self.last_seen[ue_service_id] = self._tick

    def failed(self, item: QueuedItem, cause: str) -> None:
        """Remember that ``item`` could not be delivered, and why."""
        message = item.item
        self.failures_total += 1
        self.failures.append(
            FailureRecord(
                at=self._now(),
                recipient=item.recipient,
                originator=message.originator,
                message_id=message.message_id,
                kind="MSG" if isinstance(message, Msg) else "IMDN",
                cause=str(cause),
            )
        )

    def recent(
        self, limit: int = 100, *, recipient: str | None = None
    ) -> list[FailureRecord]:
        """The newest failures first, optionally of one recipient."""
        found: list[FailureRecord] = []
        for record in reversed(self.failures):
            if recipient is None or record.recipient == recipient:
                found.append(record)
                if len(found) >= limit:
                    break
        return found
