"""Ports the domain needs from the outside world (dependency inversion).

The CoAP transport implements :class:`Deliverer` (towards UEs) and
:class:`TopicNotifier` (Observe-form topic subscribers, digest §3.13.4); the
REST transport's HTTP client implements :class:`ASDeliverer` (towards
Application Servers, digest §3.11); tests use recording fakes.

Time is not a port of its own: every service component takes the run-time
:class:`~msgin5g.runtime.Clock` (``now``, ``monotonic``, ``sleep``,
``call_later``), re-exported here for the callers that import it from the
service; tests hand in :class:`msgin5g.testing.ManualClock`.
"""

import asyncio
from collections.abc import Sequence
from typing import Protocol

from msgin5g.model.messages import DownlinkItem, Imdn, Msg, TopicUnsubResp
from msgin5g.model.queue import QueuedItem
from msgin5g.model.registry import Contact, UERegistration
from msgin5g.runtime import Clock, SystemClock

__all__ = [
    "ASDeliverer",
    "Clock",
    "Cluster",
    "ClusterListener",
    "Deliverer",
    "SystemClock",
    "TopicNotifier",
]


class Deliverer(Protocol):
    """Pushes a message or report to a client and waits for its acknowledgement."""

    async def deliver(self, contact: Contact, item: DownlinkItem) -> None:
        """Deliver ``item`` to the client at ``contact``.

        Returns when the client acknowledged it (CoAP 2.xx).

        Raises:
            RecipientUnreachable: no answer, or the client holds no context (RST),
                or a 5.xx; the item may be retried later.
            DeliveryRejected: the client refused the item (4.xx); retrying is futile.
        """
        ...

    def deliver_nowait(
        self, contact: Contact, item: DownlinkItem
    ) -> asyncio.Future[None]:
        """Start delivering ``item``; the future ends as :meth:`deliver` would.

        Lets a fan-out start thousands of deliveries without a task each.
        """
        ...

    def abandon(self, contact: Contact) -> None:
        """Give up on outstanding deliveries to ``contact`` (the UE moved).

        Each pending :meth:`deliver` to it raises ``RecipientUnreachable`` now.
        """
        ...


class ASDeliverer(Protocol):
    """Pushes a message or report to an Application Server's ``targetUri``."""

    async def deliver_to_as(self, target_uri: str, item: Msg | Imdn) -> None:
        """POST ``item`` below ``target_uri`` (digest §3.11).

        Returns when the AS answered 2xx.

        Raises:
            RecipientUnreachable: connection failure, timeout, 408/429 or 5xx;
                the item is retried with back-off.
            DeliveryRejected: any other 4xx; retrying is futile.
        """
        ...


class TopicNotifier(Protocol):
    """Pushes publications to Observe-form topic subscribers (digest §3.13.4).

    An observer is identified by its contact (the source address of its GET) and
    the token of its registration; sequence numbers are the notifier's business.
    """

    def notify_nowait(
        self, observer: Contact, token: bytes, item: Msg, *, confirmable: bool
    ) -> asyncio.Future[None]:
        """Start sending ``item`` as a 2.05 notification (CON or NON).

        Never waits: the returned future ends when a CON notification was
        acknowledged, or once a NON one was sent, so no task is held while an
        observer is slow or dead. An RST answering a NON notification arrives
        later, through
        :meth:`~msgin5g.service.topics.TopicRegistry.observer_gone`.

        The future fails with ``RecipientUnreachable`` when the observer
        answered RST or did not acknowledge a CON notification: it lost
        interest (RFC 7641 §3.6, §4.5) and the observation must end.
        """
        ...

    def end_nowait(self, observer: Contact, token: bytes, body: TopicUnsubResp) -> None:
        """Tell the observer the server ended its observation (best effort).

        A final NON 2.05 without Observe option (RFC 7641 §3.2) carrying
        ``body``; never raises.
        """
        ...


class Cluster(Protocol):
    """This node's membership of a cluster sharing one storage (docs/cluster.md).

    Implemented on NATS JetStream by :class:`msgin5g.storage.nats.NatsCluster`;
    a single process has none (the service then owns every UE). A UE is owned
    by the node that holds its registration (``UERegistration.node``); items
    stored for it by another node are *handed off* to the owner, which delivers
    them; a node whose lease ran out is dead and owns nothing.
    """

    node_id: str

    async def start(self, listener: "ClusterListener") -> None:
        """Join: heartbeat, watch registrations, records and nodes; serve hand-offs."""
        ...

    async def aclose(self) -> None:
        """Leave the cluster (the lease of this node is withdrawn)."""
        ...

    def is_alive(self, node: str) -> bool:
        """Whether ``node`` renewed its lease recently (this node always is)."""
        ...

    async def hand_off(self, node: str, items: Sequence[QueuedItem]) -> bool:
        """Give stored ``items`` to their owner ``node`` (its ack): True if taken.

        On success this node forgets the items (without deleting them); the
        owner delivers and removes them. False: ``node`` did not answer; the
        items stay this node's to deliver later or to expire.
        """
        ...

    async def adopt(self, recipient: str) -> None:
        """Make items other nodes stored for ``recipient`` visible to this node."""
        ...


class ClusterListener(Protocol):
    """What the service does when the cluster tells it something."""

    def on_handed(self, items: Sequence[QueuedItem]) -> None:
        """Another node handed over stored items for UEs registered here."""
        ...

    def on_registration(
        self, ue_service_id: str, stored: UERegistration | None
    ) -> None:
        """A registration changed in storage (any node, this one included)."""
        ...

    def keeps(self, recipient: str, writer: str) -> bool:
        """Whether this node keeps an item stored by ``writer`` (start-up)."""
        ...

    def on_record(self, kind: str, key: str) -> None:
        """A record (AS registration, group...) changed in storage."""
        ...

    def on_node_down(self, node: str) -> None:
        """``node``'s lease ran out: its UEs are unreachable until they move."""
        ...

    def on_node_up(self, node: str) -> None:
        """``node`` renews its lease again: hand it what waited for its UEs."""
        ...
