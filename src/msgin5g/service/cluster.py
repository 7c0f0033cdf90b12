"""What the service does when the cluster reports a change (docs/cluster.md).

A node of a cluster keeps the whole routing table in memory, like a single
process, and follows the changes other nodes make through the
:class:`~msgin5g.service.ports.Cluster` (a watch on the registrations and records
stored in NATS JetStream). :class:`ClusterEvents` is the one place that turns those
events into changes of the service's state:

* a registration stored by any node updates the :class:`.Registry` (older
  echoes of this node's own writes are ignored there);
* a UE that registered at (or moved to) another node: deliveries in flight to
  its old address are abandoned, and what this node still holds for it is
  handed to the new owner (a fresh :meth:`~.DeliveryEngine.wake` finds the
  owner through the registration; the owner ignores what it already has or
  already delivered);
* a UE that moved *here* was claimed by this node itself (registration or
  uplink), nothing to do;
* items another node hands over join the delivery engine's mailboxes;
* an AS registration changed elsewhere is re-read, so every node's TS 29.538
  API accepts A2P for it and delivers P2A to its current ``targetUri``; so is
  a POST-form topic subscription, so a publication at any node reaches every
  subscriber.
"""

import logging
from collections.abc import Sequence

from msgin5g.model.application import as_of_key
from msgin5g.model.queue import QueuedItem
from msgin5g.model.registry import UERegistration
from msgin5g.runtime import Supervisor
from msgin5g.service.applications import AS_REGISTRATION_KIND, ApplicationRegistry
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.ports import Cluster, Deliverer
from msgin5g.service.registry import Registry
from msgin5g.service.topics import TOPIC_SUBSCRIPTION_KIND, TopicRegistry

__all__ = ["ClusterEvents"]

log = logging.getLogger(__name__)


class ClusterEvents:
    """Implements :class:`~msgin5g.service.ports.ClusterListener` for the service."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        registry: Registry,
        delivery: DeliveryEngine,
        applications: ApplicationRegistry,
        deliverer: Deliverer,
        topics: TopicRegistry,
        tasks: Supervisor,
    ) -> None:
        self._node = cluster.node_id
        self._alive = cluster.is_alive
        self._registry = registry
        self._delivery = delivery
        self._applications = applications
        self._deliverer = deliverer
        self._topics = topics
        self._tasks = tasks
        self.moves = 0
        """UEs this node saw move to another node (diagnostics)."""

    def on_handed(self, items: Sequence[QueuedItem]) -> None:
        """Another node handed over stored items for UEs registered here."""
        self._delivery.on_handed(items)

    def on_registration(
        self, ue_service_id: str, stored: UERegistration | None
    ) -> None:
        """Follow a registration stored by any node."""
        previous, current = self._registry.apply_stored(ue_service_id, stored)
        if current is None or current is previous or current.node == self._node:
            return
        if (
            previous is not None
            and previous.node == current.node
            and previous.contact == current.contact
        ):
            return
        self.moves += 1
        log.debug("%s is registered at node %s", ue_service_id, current.node)
        if (
            previous is not None
            and previous.node == self._node
            and previous.gateway is None
        ):
            self._deliverer.abandon(previous.contact)
        # what this node stored for it meanwhile goes to the new owner
        self._delivery.wake(ue_service_id)

    def keeps(self, recipient: str, writer: str) -> bool:
        """Whether this node keeps an item it found in storage at start-up.

        Items of a UE registered at another live node are that node's; items
        for an AS are delivered by the node that stored them (while it lives).
        Everything else (unregistered recipients, UEs or writers of dead nodes)
        is kept: several nodes may then hold the same item, and storage decides
        which one removes it (docs/cluster.md, "Who removes an item").
        """
        if as_of_key(recipient) is not None:
            return writer in {"", self._node} or not self._alive(writer)
        owner = self._registry.owner_of(recipient)
        return owner is None or owner == self._node or not self._alive(owner)

    def on_record(self, kind: str, key: str) -> None:
        """Re-read a record another node changed, where the service caches it."""
        if kind == AS_REGISTRATION_KIND:
            self._tasks.spawn(self._refresh_as(key), name="AS registration refresh")
        elif kind == TOPIC_SUBSCRIPTION_KIND:
            self._tasks.spawn(self._topics.refresh(key), name="topic refresh")

    async def _refresh_as(self, as_service_id: str) -> None:
        await self._applications.refresh(as_service_id)
        if self._applications.get(as_service_id) is not None:
            self._delivery.on_as_registered(as_service_id)

    def on_node_down(self, node: str) -> None:
        """A node's lease ran out; its UEs count as unreachable (routing asks)."""
        log.warning("cluster node %s is down: its UEs are unreachable", node)

    def on_node_up(self, node: str) -> None:
        """A node is back: what waits here for UEs registered there goes to it."""
        log.info("cluster node %s is up again", node)
        self._delivery.retry_owned_by(node)
