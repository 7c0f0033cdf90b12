"""MessagingService: the façade every transport calls (TS 23.554 §8.2, §8.3, §8.7.1).

This module is the **composition root** of the service: it builds the state
holders, the delivery engine and the procedure modules over one storage
backend, wires each one once (at construction, no setter wiring) and exposes
the procedures under their historical names. The procedures themselves live in
modules named after the spec procedures:

====================  =====================================  ========================
method                procedure (message type)               module
====================  =====================================  ========================
``register``          ``REG`` (digest §3.2.3)                :mod:`.registration`
``deregister``        ``DEREG`` (§3.3.3)                     :mod:`.registration`
``bulk_register``     ``BULKREG`` (§3.4.4)                   :mod:`.registration`
``bulk_deregister``   ``BULKDEREG`` (§3.5)                   :mod:`.registration`
``submit``            ``MSG`` (§3.7.5, §3.8, §3.12)          :mod:`.routing`
``submit_aggregate``  ``AGGMSG`` (§3.10.3)                   :mod:`.routing`
``segment_control``   ``SEGREC`` / ``SEGCONFIR`` (§3.12)     :mod:`.routing`
``report``            ``IMDN`` (§3.9.3)                      :mod:`.reports`
``report_aggregate``  ``AGGIMDN`` (§3.10)                    :mod:`.reports`
``report_from_api``   report from an AS or gateway (§2.0.4)  :mod:`.reports`
``subscribe``         ``TOPICSUB`` (§3.13.3)                 :mod:`.subscriptions`
``unsubscribe``       ``TOPICUNSUB`` (§3.13.2)               :mod:`.subscriptions`
``subscribe_as`` …    AS topic subscriptions (§2.15.1)       :mod:`.subscriptions`
``update_stored``     ``MSGUPD`` (§3.8 step 5)               :mod:`.stored`
``register_as`` …     AS registration, A2P (§2.5, §2.11)     :mod:`.application_server`
====================  =====================================  ========================

The façade's methods *are* the procedure objects' bound methods (assigned in
``__init__``), not wrappers: a transport's call reaches the procedure with no
extra frame, so the split costs the hot path (``MSG`` → route → deliver)
nothing. The CoAP transport keeps one table from message class to procedure
(:mod:`msgin5g.transports.coap.server`).

Application-level outcomes (registration failure, delivery status) are the
*value* of a procedure, the response message the stage-2 flows define
(``REGRESP``, ``MSGRESP`` …, built in :mod:`.answers`); internal checks raise
:class:`~msgin5g.errors.ServiceError` subclasses that a procedure turns into
such a response, or that the REST transport maps to ProblemDetails. Anything
else propagates and becomes 5.00 / 500 at the transport edge.

Time and tasks: every component gets the one :class:`~msgin5g.runtime.Clock`
(tests inject :class:`~msgin5g.testing.ManualClock`), and the background tasks
of the service (the sweeper, the topic pump and its record clean-ups, failure
reports) run under the one :class:`~msgin5g.runtime.Supervisor` opened by
:meth:`load` and closed by :meth:`aclose`; mailbox drain tasks, one per message
on the hot path, are plain tasks owned by the delivery engine (the reason is
measured in :mod:`.delivery`). :meth:`MessagingService.stats` counts the tasks
of both kinds that failed.
"""

from msgin5g.config import DeliveryConfig, LimitsConfig, SealConfig, TopicsConfig
from msgin5g.model.credentials import credential_digest
from msgin5g.runtime import Clock, Supervisor, SystemClock
from msgin5g.service.application_server import ApplicationServers
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.service.broadcast import BroadcastRegistry
from msgin5g.service.cluster import ClusterEvents
from msgin5g.service.dedup import Deduplicator
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.fanout import FanOut
from msgin5g.service.groups import GroupRegistry, GroupSource
from msgin5g.service.message_gateways import MessageGatewayRegistry
from msgin5g.service.nef import Reachability
from msgin5g.service.peers import Peers
from msgin5g.service.ports import ASDeliverer, Cluster, Deliverer
from msgin5g.service.quotas import Quotas
from msgin5g.service.registration import RegistrationOutcome, Registrations
from msgin5g.service.registry import Registry
from msgin5g.service.reports import Reports
from msgin5g.service.routing import Router
from msgin5g.service.segments import SegmentService
from msgin5g.service.stored import StoredMessages
from msgin5g.service.subscriptions import Subscriptions
from msgin5g.service.topic_policy import TopicPolicy
from msgin5g.service.topics import TopicRegistry
from msgin5g.storage.base import Backend

__all__ = ["MessagingService", "RegistrationOutcome"]


class MessagingService:
    """The MSGin5G Server's use cases over one storage backend.

    Args:
        backend: storage (opened by the caller).
        deliverer: the port towards UEs (the CoAP transport).
        config: ``[delivery]``.
        clock: time source of every component (default: the system clock).
        as_deliverer: the port towards Application Servers (the HTTP client).
        group_source: an external SEAL group management server, if any.
        seal: ``[seal]``.
        topics: ``[topics]`` (topic policies).
        limits: ``[limits]`` (storage quotas, submission rate).
    """

    def __init__(
        self,
        backend: Backend,
        deliverer: Deliverer,
        *,
        config: DeliveryConfig | None = None,
        clock: Clock | None = None,
        as_deliverer: ASDeliverer | None = None,
        group_source: GroupSource | None = None,
        seal: SealConfig | None = None,
        topics: TopicsConfig | None = None,
        limits: LimitsConfig | None = None,
        cluster: Cluster | None = None,
    ) -> None:
        config = self.config = config or DeliveryConfig()
        clock = self.clock = clock or SystemClock()
        self.backend = backend
        self.tasks = Supervisor("msgin5g service")
        self._open = False
        # state holders (bottom floor: only storage below them)
        self.quotas = Quotas(limits)
        self.registry = registry = Registry(backend, clock, config)
        self.cluster = cluster
        if cluster is not None:
            registry.node = cluster.node_id
        self.applications = applications = ApplicationRegistry(backend, clock)
        self.topic_policy = TopicPolicy(backend, clock, topics, is_ue=registry.is_known)
        self.topics = TopicRegistry(
            backend, clock, config, policy=self.topic_policy, tasks=self.tasks
        )
        self.groups = GroupRegistry(
            backend,
            clock,
            config,
            source=group_source,
            registrations=registry,
            seal=seal,
        )
        self.broadcast = BroadcastRegistry(backend, clock, config, registry=registry)
        self.dedup = Deduplicator(
            config.dedup_window,
            config.dedup_max_entries,
            config.dedup_max_bytes,
            clock.now(),
        )
        # delivery (segments below the engine; nothing calls back up)
        self.segments = SegmentService(
            backend,
            deliverer,
            clock,
            contact_for=registry.contact_for,
            gap_timer=config.reassembly_gap_timer,
            timeout=config.reassembly_timeout,
        )
        self.gateways = gateways = MessageGatewayRegistry(clock)
        self.delivery = delivery = DeliveryEngine(
            backend,
            deliverer,
            registry,
            clock,
            config,
            tasks=self.tasks,
            segments=self.segments,
            applications=applications,
            as_deliverer=as_deliverer,
            quotas=self.quotas,
            cluster=cluster,
            gateways=gateways,
        )
        self.cluster_events = (
            None
            if cluster is None
            else ClusterEvents(
                cluster,
                registry=registry,
                delivery=delivery,
                applications=applications,
                deliverer=deliverer,
                topics=self.topics,
                tasks=self.tasks,
            )
        )
        self.fanout = FanOut(registry, applications, delivery, config, self.dedup)
        # procedures (top floor)
        self.router = router = Router(
            backend=backend,
            clock=clock,
            config=config,
            registry=registry,
            applications=applications,
            delivery=delivery,
            segments=self.segments,
            dedup=self.dedup,
            quotas=self.quotas,
            fanout=self.fanout,
            groups=self.groups,
            topics=self.topics,
            topic_policy=self.topic_policy,
            broadcast=self.broadcast,
        )
        registrations = Registrations(registry, delivery, self.topics)
        reports = Reports(backend, registry, applications, delivery)
        subscriptions = Subscriptions(
            clock,
            registry,
            applications,
            delivery,
            topics=self.topics,
            policy=self.topic_policy,
        )
        stored = StoredMessages(backend, clock, config, registry, delivery)
        servers = ApplicationServers(
            registry, applications, delivery, self.topics, router, gateways=gateways
        )
        # the procedures, by their historical names (bound methods, no wrappers)
        self.register, self.deregister = (
            registrations.register,
            registrations.deregister,
        )
        self.bulk_register = registrations.bulk_register
        self.bulk_deregister = registrations.bulk_deregister
        self.submit = router.submit
        self.submit_aggregate = router.submit_aggregate
        self.segment_control = router.segment_control
        self.report = reports.report
        self.report_aggregate = reports.report_aggregate
        self.report_from_api = reports.report_from_api
        self.subscribe = subscriptions.subscribe
        self.unsubscribe = subscriptions.unsubscribe
        self.subscribe_as = subscriptions.subscribe_as
        self.unsubscribe_as = subscriptions.unsubscribe_as
        self.topics_of_as = subscriptions.topics_of_as
        self.update_stored = stored.update_stored
        self.register_as, self.deregister_as = (
            servers.register_as,
            servers.deregister_as,
        )
        self.submit_from_as, self.submit_for_ue = (
            servers.submit_from_as,
            servers.submit_for_ue,
        )
        self._servers = servers
        self.peers: Peers | None = None
        self.nef: Reachability | None = None
        """The NEF client's logic when ``[nef]`` is set (:meth:`set_nef`)."""

    def set_nef(self, nef: Reachability) -> None:
        """Monitor reachability and trigger devices through a NEF (:mod:`.nef`)."""
        self.nef = nef
        self.delivery.watch(nef)

    def set_peers(self, peers: Peers) -> None:
        """Route ``ue@peer-domain`` to peer servers (MSGin5G-8, :mod:`.peers`)."""
        self.peers = self.router.peers = self._servers.peers = peers
        self.delivery.set_peers(peers)

    # lifecycle ------------------------------------------------------------------

    async def start(self, *, sweeper: bool = True) -> None:
        """Load registrations and resume delivery of everything stored."""
        await self.load()
        await self.resume(sweeper=sweeper)

    async def load(self) -> None:
        """Open the task supervisor, load the registrations (before any request)."""
        if not self._open:
            await self.tasks.start()
            self._open = True
        await self.registry.load()
        await self.topics.load()
        await self.applications.load()
        if self.cluster is not None and self.cluster_events is not None:
            # after the tables are loaded (the events update them), before
            # delivery resumes (start-up keeps only this node's share)
            await self.cluster.start(self.cluster_events)

    async def resume(self, *, sweeper: bool = True) -> None:
        """Resume delivery of stored items (once the deliverer can send)."""
        await self.segments.load()
        await self.delivery.start(sweeper=sweeper)

    async def aclose(self) -> None:
        """Stop background work (stored items stay stored)."""
        if self.cluster is not None:
            await self.cluster.aclose()
        await self.delivery.aclose()
        await self.topics.aclose()
        await self.tasks.aclose()
        self._open = False

    def stats(self) -> dict[str, int]:
        """Counters for diagnostics (``taskFailures``: background tasks that failed;
        ``transitUnwritten``: messages delivered without ever being written,
        ``transitWritten``: transit messages written because their delivery
        outlasted ``delivery.transit_hold`` or failed, :mod:`.transit`)."""
        transit = self.delivery.transit
        return {
            "registeredUes": len(self.registry),
            "registeredAss": len(self.applications),
            "delivered": self.delivery.delivered,
            "failed": self.delivery.failed,
            "expired": self.delivery.expired,
            "pendingInMemory": self.delivery.pending_in_memory(),
            "fanouts": self.fanout.fanouts,
            "fanoutCopies": self.fanout.copies,
            "transitUnwritten": 0 if transit is None else transit.unwritten,
            "transitWritten": 0 if transit is None else transit.written,
            "droppedNotifications": self.topics.dropped_notifications,
            "supersededNotifications": self.topics.superseded_notifications,
            "backgroundTasks": self.tasks.running + self.delivery.drain_tasks(),
            "taskFailures": self.tasks.failures + self.delivery.drain_failures,
        }

    # provisioning -------------------------------------------------------------

    async def provision(self, ue_service_id: str, credential: str) -> None:
        """Store the digest of a UE's credential (``msgin5g ue add``)."""
        await self.backend.put_credential(ue_service_id, credential_digest(credential))
        self.registry.forget_credential(ue_service_id)
