"""Store-and-forward delivery engine (TS 23.554 §8.3.3, §8.3.6; digest §3.7.6, §3.8).

Every accepted message or report becomes a :class:`~msgin5g.model.queue.QueuedItem`
that is written durably *before* its sender is acknowledged, so a ``kill -9``
after the acknowledgement loses nothing; a message that asks for no storage and
can be delivered at once may instead be acknowledged once the recipient took it
(the transit path, :mod:`.transit`: answered means delivered or written).
Delivery then runs per recipient:

* a **mailbox** per recipient holds the items to push, in a heap ordered by
  (priority, arrival seq), and one drain task sends them one at a time (CoAP
  NSTART = 1 towards each client keeps them in order anyway);
* an acknowledged item is removed with ``remove_nowait`` (batched into the next
  group commit; a crash before it causes a duplicate, never a loss);
* when a delivery fails (retransmissions exhausted, RST, 5.xx) the recipient is
  marked **unreachable**: items with the store-and-forward flag stay in storage,
  the others are dropped with a failure report; new messages for it are stored
  without a delivery attempt;
* the recipient's registration, or any uplink request from it, **wakes** the
  mailbox: stored items are loaded from storage (in priority then arrival order)
  and delivered; a periodic retry (``delivery.retry_interval``) wakes unreachable
  but registered recipients too;
* the **sweeper** removes expired items every ``delivery.sweep_interval`` and sends
  ``MESSAGE_EXPIRED`` reports to originators that asked for one; every
  ``delivery.retry_interval`` it also purges expired report routes, fan-out
  payloads and duplicate-detection records; it runs the reassembly timers of
  :class:`~msgin5g.service.segments.SegmentService` and queues the
  ``SEGMENT_MISSING`` reports they produce.

**Time and tasks**: every wait goes through the injected
:class:`~msgin5g.runtime.Clock` (the sweeper's ``sleep``, the AS back-off's
``call_later``), so unit tests advance a :class:`~msgin5g.testing.ManualClock`
instead of sleeping. The sweeper and the failure reports of fan-out copies run
under the service's :class:`~msgin5g.runtime.Supervisor`, which logs and counts
a task that fails instead of dropping it. The one exception is the mailbox
**drain task**, started per recipient and, when messages trickle in, per
message: spawning it through the supervisor's ``TaskGroup`` and guard cost 13 %
of the in-process ``MSG`` → route → deliver rate (measured, issue 11), so it is
a plain task held by its mailbox (a strong reference, cancelled by
:meth:`DeliveryEngine.aclose`), and ``_drain`` itself logs an unexpected
failure and counts it in :attr:`DeliveryEngine.drain_failures`, which the
service's ``stats()`` adds to the supervisor's failures. When messages trickle
in one at a time, a mailbox's lone item to a UE registered directly needs no
drain task at all (:meth:`DeliveryEngine._send_one`, issue 13): it goes out
through the deliverer's ``deliver_nowait`` and a done-callback; what arrives
meanwhile waits in the mailbox for a drain task, so there is still one delivery
in flight per recipient and bundling is unchanged.

**Segmentation** (digest §3.12): the engine decides when a downlink message is
too large for its recipient and asks the
:class:`~msgin5g.service.segments.SegmentService` given at construction for the
parts; the segment service never calls back into the engine (the sweeper takes
its reports), so the two are wired once, in one direction.

**Storage usage** (:class:`~msgin5g.service.quotas.Quotas`): every store and
every removal of an item goes through this engine, which keeps the per-recipient
and total counters the storage quotas are checked against.

**Application Servers** (P2A messages and reports for A2P messages, digest §2.11,
§2.12, §3.11) use the very same mailboxes, keyed ``"as/" + AS Service ID``
(:mod:`msgin5g.model.application`). Their contact is the registered ``targetUri``
and they are pushed through the :class:`~msgin5g.service.ports.ASDeliverer` port.
An AS sends no uplink that could wake its mailbox, so when a delivery fails the
mailbox is parked like a UE's and a **retry timer** wakes it again after a
back-off that starts at ``delivery.as_retry_initial`` and doubles per failure up
to ``delivery.as_retry_max`` (reset by a success or a new registration). Items
stay stored meanwhile (durably, as every accepted item), so an AS that is down
loses nothing; a restarted server resumes them like UE mailboxes.

**Message Gateways** (digest §2.4, §2.10.2): a UE Service ID that an L3G or N3G
registered (:mod:`.message_gateways`) and that has no direct registration keeps
its mailbox under its own UE Service ID (report routes name it as the
reporter) but is drained like an AS one: through the
:class:`~msgin5g.service.ports.GatewayDeliverer` port to the gateway's
``{apiRoot}``, with the same back-off timers (``delivery.as_retry_*``).

No item is ever in two places: the storage row is the truth, the heap only a
working copy, and ``seqs``/``done`` sets keep a reload from storage from
duplicating an item that is queued or was just delivered.

**Why one module of ~1,300 lines** (issue 11 asks for a reason above ~500): the
engine is one state machine. The mailboxes, the ``unreachable``, ``backlog``
and ``held`` sets, the back-off timers and the storage-usage counters are read
and changed by every path here (accept, burst, drain, park, sweep, forget), and
the invariant above holds only if those changes stay together. Since issue 11
the mailbox has grown targets — a UE over CoAP or MQTT, an AS, a UE of a peer
server (MSGin5G-8), a UE behind a Message Gateway, a UE owned by another
cluster node (hand-off) — and each target is a branch of the same drain loop
over the same state: splitting them into mixin modules was tried on paper and
needed a self-type protocol listing ~30 members of the engine in each part,
which passes the state around without making any of it independent. The
procedures that *use* the engine live elsewhere (:mod:`.routing`,
:mod:`.registration`, :mod:`.reports`, :mod:`.cluster`, :mod:`.nef`), and the
bookkeeping of the transit path's held writes lives in :mod:`.transit` (the
engine only starts the delivery and reports its outcome there).
"""

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial

from msgin5g.config import DeliveryConfig
from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.aggregation import bundle, bundle_reports
from msgin5g.model.application import as_key, as_of_key
from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.model.registry import Contact, UERegistration
from msgin5g.runtime import Clock, Supervisor, Timer
from msgin5g.service.activity import Activity
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.service.message_gateways import MessageGatewayRegistry
from msgin5g.service.ports import (
    ASDeliverer,
    Cluster,
    Deliverer,
    GatewayDeliverer,
    PeerLink,
    Watcher,
)
from msgin5g.service.quotas import Quotas
from msgin5g.service.registry import Registry
from msgin5g.service.segments import SegmentService
from msgin5g.service.transit import DELIVERED, FAILED, RETRY, Held, Transit
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import PriorityRank, PriorityType, ReportDeliveryStatus
from msgin5g.storage.base import Backend, DedupRecord, stored_size

__all__ = ["DeliveryEngine"]

log = logging.getLogger(__name__)

_LOAD_BATCH = 500

_Failed = tuple[Contact, list[tuple[int, QueuedItem]], BaseException]
"""A delivery that failed outside the drain task: (contact, batch, error)."""
_BURST_SLICE = 256
_DONE_CAP = 50_000


class _Mailbox:
    __slots__ = ("adopt", "done", "heap", "more", "seqs", "task")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, QueuedItem]] = []
        self.seqs: set[int] = set()
        self.done: set[int] = set()
        self.more = False
        self.adopt = False  # cluster: look for items other nodes stored first
        # the drain task, or the outcome of a lone item's delivery in flight
        # (:meth:`DeliveryEngine._send_one`): either way, one at a time
        self.task: asyncio.Future[None] | None = None


class DeliveryEngine:
    """Pushes accepted items to their recipients; owns the sweeper task."""

    def __init__(
        self,
        backend: Backend,
        deliverer: Deliverer,
        registry: Registry,
        clock: Clock,
        config: DeliveryConfig,
        *,
        tasks: Supervisor,
        segments: SegmentService | None = None,
        applications: ApplicationRegistry | None = None,
        as_deliverer: ASDeliverer | None = None,
        quotas: Quotas | None = None,
        cluster: Cluster | None = None,
        gateways: MessageGatewayRegistry | None = None,
    ) -> None:
        self._backend = backend
        self._cluster = cluster
        self._node = "" if cluster is None else cluster.node_id
        self._peers: PeerLink | None = None
        self._watchers: list[Watcher] = []
        self._held: set[str] = set()
        self._gateways = (
            gateways if gateways is not None else MessageGatewayRegistry(clock)
        )
        self._gateways.listeners.append(self.on_gateway_registered)
        self._gateway_deliverer: GatewayDeliverer | None = None
        self.quotas = quotas if quotas is not None else Quotas()
        self._deliverer = deliverer
        self._registry = registry
        self._applications = (
            applications
            if applications is not None
            else ApplicationRegistry(backend, clock)
        )
        self._as_deliverer = as_deliverer
        self._as_failures: dict[str, int] = {}
        self._as_timers: dict[str, Timer] = {}
        self._clock = clock
        self._config = config
        self._mailboxes: dict[str, _Mailbox] = {}
        self._unreachable: set[str] = set()
        self._backlog: set[str] = set()
        self._started = False  # start(): the deliverer can send
        self._tasks = tasks
        self._sweeper: asyncio.Task[None] | None = None
        self._last_retry = 0.0
        self._segments = segments
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.delivered = 0
        self.failed = 0
        self.expired = 0
        self.activity = Activity(clock.now)  # last seen, recent failures (console)
        self.drain_failures = 0
        """Drain tasks that ended with an unexpected exception (logged)."""
        self.transit = (
            Transit(
                backend,
                clock,
                config.transit_hold,
                tasks,
                push=lambda item: self._push(item.recipient, item),
                done=self._unstored,
            )
            if config.transit_hold > 0
            else None
        )
        """Messages delivered before they are written (:mod:`.transit`)."""

    # lifecycle ---------------------------------------------------------------

    async def start(self, *, sweeper: bool = True) -> None:
        """Find recipients with stored items and start delivering to registered ones."""
        await self.quotas.load(self._backend)
        self._backlog.update(await self._backend.recipients_with_pending())
        self._last_retry = self._clock.now()
        self._started = True
        for recipient in list(self._backlog):
            if self._is_registered(recipient) and self._remote_owner(recipient) is None:
                self.wake(recipient)
        if sweeper:
            self._sweeper = self._tasks.spawn(self._sweep_loop(), name="sweeper")

    async def aclose(self) -> None:
        """Stop the sweeper and every drain task (items stay in storage).

        The tasks belong to the service's :class:`~msgin5g.runtime.Supervisor`;
        this stops the ones of the engine, and the supervisor's own ``aclose``
        (after this) whatever else is left, such as a failure report started
        by a fan-out copy.
        """
        self._closing = True
        if self.transit is not None:
            self.transit.close()
        for timer in self._as_timers.values():
            timer.cancel()
        self._as_timers.clear()
        tasks = [
            t
            for t in (self._sweeper, *(mb.task for mb in self._mailboxes.values()))
            if t is not None
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._mailboxes.clear()

    # state queries -------------------------------------------------------------

    def is_unreachable(self, recipient: str) -> bool:
        """Whether the last delivery to a registered recipient failed.

        In a cluster also when the node that owns the recipient is dead.
        """
        if recipient in self._unreachable:
            return True
        if self._cluster is None:
            return False
        owner = self._remote_owner(recipient)
        return owner is not None and not self._cluster.is_alive(owner)

    def _remote_owner(self, recipient: str) -> str | None:
        """The other node that owns a UE recipient, or None (this node, or an AS)."""
        if self._cluster is None:
            return None
        node = self._registry.owner_of(recipient)
        return None if node is None or node == self._node else node

    def set_as_deliverer(self, as_deliverer: ASDeliverer) -> None:
        """Attach the port that reaches Application Servers (composition root)."""
        self._as_deliverer = as_deliverer

    def set_peers(self, peers: PeerLink) -> None:
        """Attach MSGin5G-8: keys ``ue@peer-domain`` go to a peer server.

        Such a key is a mailbox like an AS's (:meth:`_drain_as`): same
        store-and-forward, same back-off timer while the peer is down.
        """
        self._peers = peers

    def watch(self, watcher: Watcher) -> None:
        """Tell ``watcher`` about (de-)registrations and UEs whose items wait."""
        self._watchers.append(watcher)

    def hold(self, ue_service_id: str) -> None:
        """The network says the UE cannot be reached (NEF, or outside its window).

        New items are stored without a delivery attempt and the periodic retry
        skips the UE until :meth:`release` (or an uplink from it).
        """
        self._held.add(ue_service_id)
        if self._registry.get(ue_service_id) is not None:
            self._unreachable.add(ue_service_id)

    def release(self, ue_service_id: str) -> None:
        """The UE is reachable again (NEF report, window opens): deliver."""
        self._held.discard(ue_service_id)
        if self._registry.get(ue_service_id) is not None:
            self._unreachable.discard(ue_service_id)
            self.wake(ue_service_id)

    def is_held(self, ue_service_id: str) -> bool:
        """Whether :meth:`hold` is in force for the UE."""
        return ue_service_id in self._held

    def _peer(self, key: str) -> bool:
        return self._peers is not None and self._peers.is_remote(key)

    def _waiting(self, recipient: str, urgent: bool) -> None:
        for watcher in self._watchers:
            watcher.waiting(recipient, urgent)

    def set_gateway_deliverer(self, deliverer: GatewayDeliverer) -> None:
        """Attach the port that reaches Message Gateways (composition root)."""
        self._gateway_deliverer = deliverer

    def _is_registered(self, key: str) -> bool:
        as_id = as_of_key(key)
        if as_id is None:
            if self._peer(key):
                return True
            return (
                self._registry.get(key) is not None
                or self._gateways.gateway_of(key) is not None
            )
        return self._applications.get(as_id) is not None

    def via_gateway(self, key: str) -> bool:
        """Whether ``key`` is a UE reached through a Message Gateway now."""
        return (
            self._registry.get(key) is None
            and self._gateways.gateway_of(key) is not None
        )

    def pending_in_memory(self) -> int:
        """Items queued in mailboxes (diagnostics)."""
        return sum(len(mb.heap) for mb in self._mailboxes.values())

    def drain_tasks(self) -> int:
        """Mailboxes being delivered now (diagnostics)."""
        return sum(1 for mb in self._mailboxes.values() if mb.task is not None)

    # entry points ---------------------------------------------------------------

    async def accept(
        self,
        item: QueuedItem,
        *,
        deliver_now: bool,
        dedup: DedupRecord | None = None,
        now: float = 0.0,
        routes: Sequence[ReportRoute] = (),
    ) -> DedupRecord | None:
        """Store ``item`` durably and, if ``deliver_now``, queue it for delivery.

        With ``dedup`` the record (and the report ``routes``) are stored in the
        same transaction; if storage already holds a live record of that
        (originator, messageId), nothing is stored or delivered and that record
        is returned. Without ``dedup``, ``routes`` must be empty.

        A message that asks for no storage and no report route, to a UE that
        can take it at once, goes the transit path (:mod:`.transit`): delivered
        first, written only if its delivery outlasts ``delivery.transit_hold``;
        this returns when it was delivered or written, whichever came first.
        """
        transit = self.transit
        if (
            transit is not None
            and deliver_now
            and dedup is not None
            and not routes
            and not item.store
            and item.recipient not in transit.recipients
        ):
            contact = self._direct_contact(item)
            if contact is not None:
                entry = transit.start(item, dedup, now)
                self._stored(item)
                outcome = self._deliverer.deliver_nowait(contact, item.item)
                outcome.add_done_callback(partial(self._transit_done, entry))
                return await entry.answer
        if dedup is None:
            await self._backend.enqueue(item)
        else:
            existing = await self._backend.enqueue_once(item, dedup, now, routes)
            if existing is not None:
                return existing
        self._stored(item)
        if deliver_now:
            self._push(item.recipient, item)
        else:
            self._backlog.add(item.recipient)
            self._waiting(item.recipient, item.priority == PriorityRank.HIGH)
        return None

    def _stored(self, item: QueuedItem) -> None:
        self.quotas.added(item.recipient, stored_size(item.item))

    def _unstored(self, item: QueuedItem) -> None:
        self.quotas.removed(item.recipient, stored_size(item.item))

    def discarded(self, item: QueuedItem) -> None:
        """``item`` was removed from storage outside this engine (``MSGUPD``)."""
        self._unstored(item)
        self.drop_from_memory(item.recipient, item.seq)

    async def accept_fanout(
        self,
        template: Msg,
        items: list[QueuedItem],
        online: list[bool],
        routes: list[ReportRoute],
        *,
        dedup: DedupRecord | None = None,
        now: float = 0.0,
    ) -> DedupRecord | None:
        """Store a fan-out in one write (one payload, per-member rows), then push.

        ``online[i]`` tells whether ``items[i]`` is delivered now or waits.
        Delivery starts once the write is durable. (Starting it while the write
        commits was measured: with 10,000 members the last copy arrived no
        sooner on 2 cores, and the originator's acknowledgement queued behind
        10,000 deliveries for ~2 s.) Copies for members with nothing else
        queued go out as a burst (:meth:`_burst`); the others join their
        mailboxes. With ``dedup``: as :meth:`accept` (a duplicate stores and
        delivers nothing and returns the earlier record).
        """
        if dedup is None:
            await self._backend.enqueue_fanout(template, items, routes)
        else:
            existing = await self._backend.enqueue_fanout(
                template, items, routes, dedup, now
            )
            if existing is not None:
                return existing
        size = stored_size(template)
        for item in items:
            self.quotas.added(item.recipient, size)
        ready = []
        for item, is_online in zip(items, online, strict=True):
            if is_online:
                ready.append(item)
            else:
                self._backlog.add(item.recipient)
        if ready:
            # after the originator's answer, in slices that let ACKs in between
            asyncio.get_running_loop().call_soon(self._burst_slice, ready, 0)
        return None

    def _burst_slice(self, items: list[QueuedItem], start: int) -> None:
        end = start + _BURST_SLICE
        remote: dict[str, list[QueuedItem]] = {}
        for item in items[start:end]:
            if self._cluster is not None:
                node = self._remote_owner(item.recipient)
                if node is not None and item.recipient not in self._mailboxes:
                    remote.setdefault(node, []).append(item)
                    continue
            if not self._burst(item):
                self._push(item.recipient, item)
        for node, batch in remote.items():
            # one hand-off per node for a fan-out's members registered there
            self._tasks.spawn(self._hand_off_batch(node, batch), name="hand-off")
        if end < len(items) and not self._closing:
            asyncio.get_running_loop().call_soon(self._burst_slice, items, end)

    async def _hand_off_batch(self, node: str, items: list[QueuedItem]) -> None:
        assert self._cluster is not None  # noqa: S101 - only called in a cluster
        if await self._cluster.hand_off(node, items):
            for item in items:
                self._unstored(item)
            return
        for item in items:  # the mailboxes retry or park them
            self._push(item.recipient, item)

    def _burst(self, item: QueuedItem) -> bool:
        """Start delivering ``item`` without a mailbox; False if it needs one.

        Only for a UE registered directly, reachable, with no mailbox or stored
        backlog (so nothing older is bypassed) and a copy that needs no
        segmentation. The outcome is handled in :meth:`_burst_done`; a copy
        that fails joins the ordinary mailbox path (retries, parking, reports).
        Saves a task, a mailbox and a heap per member: the fan-out hot path.
        """
        contact = self._direct_contact(item)
        if contact is None:
            return False
        outcome = self._deliverer.deliver_nowait(contact, item.item)
        outcome.add_done_callback(partial(self._burst_done, item))
        return True

    def _direct_contact(self, item: QueuedItem) -> Contact | None:
        """The contact to send ``item`` to at once, without a mailbox; else None.

        For a UE registered directly at this node, reachable, with no mailbox or
        stored backlog (so nothing older is bypassed) and a message that needs
        no segmentation (:meth:`_burst`, the transit path).
        """
        recipient = item.recipient
        if (
            recipient in self._mailboxes
            or recipient in self._unreachable
            or recipient in self._backlog
            or self._closing
        ):
            return None
        registration = self._registry.get(recipient)
        message = item.item
        if (
            registration is None
            or registration.gateway is not None
            or registration.node != self._node
            or not isinstance(message, Msg)
        ):
            return None
        limit = registration.max_segment_size or self._config.segment_size
        if len(message.payload or b"") > limit:
            return None
        return registration.contact

    def _transit_done(self, entry: Held, outcome: asyncio.Future[None]) -> None:
        """The outcome of a transit delivery (:mod:`.transit`)."""
        if self._closing:
            return
        transit = self.transit
        assert transit is not None  # noqa: S101 - only set up with a transit
        error = None if outcome.cancelled() else outcome.exception()
        if outcome.cancelled() or isinstance(error, RecipientUnreachable):
            transit.finished(entry, RETRY)  # written, then the mailbox retries
            return
        if error is None:
            self.delivered += 1
            transit.finished(entry, DELIVERED)
            return
        item = entry.item
        cause = (
            error.cause
            if isinstance(error, DeliveryRejected)
            else FailureCause.INTERNAL_ERROR
        )
        log.warning("%s refused %s: %s", item.recipient, _describe(item), error)
        transit.finished(entry, FAILED)
        self._tasks.spawn(self.report_failure(item, cause), name="failure report")

    def _burst_done(self, item: QueuedItem, outcome: asyncio.Future[None]) -> None:
        if self._closing:
            return
        error = None if outcome.cancelled() else outcome.exception()
        if outcome.cancelled() or isinstance(error, RecipientUnreachable):
            self._push(item.recipient, item)  # the mailbox retries or parks it
            return
        self._backend.remove_nowait(item.seq)
        self._unstored(item)
        if error is None:
            self.delivered += 1
            return
        cause = (
            error.cause
            if isinstance(error, DeliveryRejected)
            else FailureCause.INTERNAL_ERROR
        )
        log.warning("%s refused %s: %s", item.recipient, _describe(item), error)
        self._tasks.spawn(self.report_failure(item, cause), name="failure report")

    def on_uplink(self, ue_service_id: str) -> None:
        """A registered UE sent something: it is reachable; deliver what waits.

        In a cluster, an uplink of a UE registered at another node means its
        datagrams now reach this node (a load balancer or ``SO_REUSEPORT``
        moved it): this node claims it and collects what other nodes stored.
        """
        self.activity.seen(ue_service_id)
        if self._held:
            self._held.discard(ue_service_id)
        if self._cluster is not None and self._remote_owner(ue_service_id):
            self._tasks.spawn(self._claim(ue_service_id), name="cluster claim")
            return
        if ue_service_id in self._unreachable or ue_service_id in self._backlog:
            self._unreachable.discard(ue_service_id)
            self.wake(ue_service_id)

    async def _claim(self, ue_service_id: str) -> None:
        if await self._registry.claim(ue_service_id) is not None:
            log.info("%s now reaches this node: claimed", ue_service_id)
            self.on_registered(ue_service_id)

    def on_moved(self, ue_service_id: str, old: Contact) -> None:
        """A UE re-registered from another address: stop waiting for the old one.

        Deliveries in flight to ``old`` (its mailbox's, or burst copies of a
        fan-out) fail at once; the mailbox path then tries the new address.
        """
        log.info("%s moved away from %s:%d", ue_service_id, old.host, old.port)
        self._deliverer.abandon(old)

    def on_registered(self, ue_service_id: str) -> None:
        """A UE (re-)registered: deliver what is stored for it.

        In a cluster, other nodes may have stored items for it while it was
        elsewhere or unregistered: the mailbox first adopts them.
        """
        if self._cluster is not None:
            self._held.discard(ue_service_id)
            self._unreachable.discard(ue_service_id)
            self.wake(ue_service_id, adopt=True)
        else:
            self.on_uplink(ue_service_id)
        for watcher in self._watchers:
            watcher.registered(ue_service_id)

    def on_as_registered(self, as_service_id: str) -> None:
        """An AS registered: deliver what is stored for it, without back-off."""
        self._remote_back(as_key(as_service_id))

    def on_gateway_registered(self, ue_service_ids: Iterable[str]) -> None:
        """A Message Gateway (re-)registered UEs: deliver what waits for them.

        Only UEs with stored items or a failed delivery are woken: a gateway
        refreshes its whole list every few minutes.
        """
        waiting = self._backlog | self._unreachable
        for ue in ue_service_ids:
            if ue in waiting and self._registry.get(ue) is None:
                self._remote_back(ue)

    def _remote_back(self, key: str) -> None:
        self._as_failures.pop(key, None)
        timer = self._as_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._unreachable.discard(key)
        self.wake(key)

    def wake(self, recipient: str, *, adopt: bool = False) -> None:
        """Load stored items of ``recipient`` and deliver them."""
        self._backlog.discard(recipient)
        mailbox = self._mailboxes.setdefault(recipient, _Mailbox())
        mailbox.more = True
        mailbox.adopt = mailbox.adopt or adopt
        self._ensure_task(recipient, mailbox)

    # cluster ---------------------------------------------------------------------

    def on_handed(self, items: Sequence[QueuedItem]) -> None:
        """Another node gave this one stored items (docs/cluster.md, hand-off)."""
        for item in items:
            self._stored(item)
            # before start() (a hand-off while this node still loads) the CoAP
            # socket cannot send yet: start() wakes the backlog
            if (
                self._started
                and self._is_registered(item.recipient)
                and not self._remote_owner(item.recipient)
            ):
                self._push(item.recipient, item)
            else:
                self._backlog.add(item.recipient)

    def retry_owned_by(self, node: str) -> None:
        """Wake the parked recipients registered at ``node`` (it is back)."""
        self._retry(
            r
            for r in list(self._unreachable | self._backlog)
            if self._registry.owner_of(r) == node
        )

    async def _hand_off(self, recipient: str, mailbox: _Mailbox, node: str) -> None:
        """Give the mailbox's items to ``node``, which owns ``recipient``."""
        assert self._cluster is not None  # noqa: S101 - only called in a cluster
        while await self._has_work(recipient, mailbox):
            entries, mailbox.heap = mailbox.heap, []
            items = [entry for _, _, entry in sorted(entries)]
            if not await self._cluster.hand_off(node, items):
                for entry in entries:
                    heapq.heappush(mailbox.heap, entry)
                if self._registry.owner_of(recipient) != node:
                    return  # it moved meanwhile (a worker restarted): try again
                log.info("%s: its node %s does not answer; parking", recipient, node)
                # only its node is silent (a worker restarting, a node whose
                # lease has not run out): unlike _park, nothing is failed; all
                # stays stored for the node's return (on_node_up) or the node
                # the UE reaches next (claim, adopt)
                if self._is_registered(recipient):
                    self._unreachable.add(recipient)
                mailbox.heap = []
                mailbox.seqs.clear()
                mailbox.more = False
                self._backlog.add(recipient)
                return
            for item in items:
                mailbox.seqs.discard(item.seq)
                self._unstored(item)

    async def forget(
        self, recipient: str, *, keep_stored: bool = False
    ) -> list[QueuedItem]:
        """Stop delivering to ``recipient``; remove and return its items.

        With ``keep_stored`` (a UE de-registers) the items accepted with store
        and forward stay stored for the UE's next registration (TS 23.554
        §8.3.6) and only the others are removed and returned; without it (an AS
        de-registers) everything is.
        """
        timer = self._as_timers.pop(recipient, None)
        if timer is not None:
            timer.cancel()
        self._as_failures.pop(recipient, None)
        mailbox = self._mailboxes.pop(recipient, None)
        if mailbox is not None and mailbox.task is not None:
            mailbox.task.cancel()
        self._unreachable.discard(recipient)
        self._backlog.discard(recipient)
        if keep_stored:  # a UE de-registers
            self._held.discard(recipient)
            for watcher in self._watchers:
                watcher.deregistered(recipient)
        if not keep_stored:
            items = await self._backend.take_all_for(recipient)
            for item in items:
                self._unstored(item)
            return items
        pending = await self._backend.pending_for(recipient, limit=1 << 62)
        dropped = [item for item in pending if not item.store]
        for item in dropped:
            await self._backend.remove(item.seq)
            self._unstored(item)
        if len(dropped) < len(pending):
            self._backlog.add(recipient)  # delivered on the next registration
        return dropped

    def drop_from_memory(self, recipient: str, seq: int) -> None:
        """Forget a queued copy of ``seq`` (after it was discarded from storage)."""
        mailbox = self._mailboxes.get(recipient)
        if mailbox is None or seq not in mailbox.seqs:
            return
        mailbox.seqs.discard(seq)
        mailbox.heap = [entry for entry in mailbox.heap if entry[1] != seq]
        heapq.heapify(mailbox.heap)

    def update_in_memory(self, recipient: str, seq: int, expires_at: float) -> None:
        """Apply a new expiry to a queued copy of ``seq``."""
        mailbox = self._mailboxes.get(recipient)
        if mailbox is None:
            return
        for _, entry_seq, item in mailbox.heap:
            if entry_seq == seq:
                item.expires_at = expires_at

    # failure reports ---------------------------------------------------------------

    async def report_failure(self, item: QueuedItem, cause: FailureCause) -> None:
        """Tell the originator of a failed ``MSG`` (if it asked) why it failed."""
        self.failed += 1
        self.activity.failed(item, cause)
        message = item.item
        if not isinstance(message, Msg) or not message.delivery_status_required:
            return
        await self._backend.take_report_route(message.message_id, item.recipient)
        reporter_as = as_of_key(item.recipient)
        report = Imdn(
            message_id=message.message_id,
            delivery_status=ReportDeliveryStatus.REPT_DELY_FAILED,
            originating_ue_service_id=None if reporter_as else item.recipient,
            originating_as_service_id=reporter_as,
            recipient_ue_service_id=message.originating_ue_service_id,
            recipient_as_service_id=message.originating_as_service_id,
            failure_cause=cause.value,
        )
        if message.originating_as_service_id is not None:
            await self.send_report(as_key(message.originating_as_service_id), report)
        elif message.originating_ue_service_id is not None:
            await self.send_report(message.originating_ue_service_id, report)

    async def send_report(self, recipient: str, report: Imdn) -> None:
        """Queue a report for a UE or AS key (store and forward always applies)."""
        now = self._clock.now()
        item = QueuedItem(
            recipient=recipient,
            item=report,
            priority=PriorityRank.HIGH,
            expires_at=now + self._config.default_ttl,
            store=True,
        )
        reachable = (
            self._is_registered(recipient) and recipient not in self._unreachable
        )
        await self.accept(item, deliver_now=reachable)

    # internals -----------------------------------------------------------------------

    def _push(self, recipient: str, item: QueuedItem) -> None:
        mailbox = self._mailboxes.get(recipient)
        if mailbox is None:
            mailbox = self._mailboxes[recipient] = _Mailbox()
        if item.seq in mailbox.seqs or item.seq in mailbox.done:
            return
        mailbox.seqs.add(item.seq)
        heapq.heappush(mailbox.heap, (item.priority, item.seq, item))
        self._ensure_task(recipient, mailbox)

    def _ensure_task(self, recipient: str, mailbox: _Mailbox) -> None:
        if mailbox.task is None and not self._closing:
            if (
                len(mailbox.heap) == 1
                and not mailbox.more
                and self._send_one(recipient, mailbox)
            ):
                return
            # not through the Supervisor: see "Time and tasks" above
            loop = self._loop
            if loop is None:  # once: get_running_loop() costs a getpid()
                loop = self._loop = asyncio.get_running_loop()
            mailbox.task = loop.create_task(self._drain(recipient, mailbox))

    def _send_one(self, recipient: str, mailbox: _Mailbox) -> bool:
        """Deliver the mailbox's only item without a drain task; False: not here.

        The drain loop's common case (messages trickling in, one at a time, to
        a UE registered directly) as a callback: the deliverer's
        ``deliver_nowait`` and :meth:`_sent_one`, which does what the loop
        does after ``_push_to_ue``. Saves a task, a handful of coroutines and
        a future per message (issue 13). Anything else (an AS, a gateway or
        peer server's UE, a UE of another node, an expired item, a message to
        segment, a cluster adoption) is left to the drain task.
        """
        if mailbox.adopt or as_of_key(recipient) is not None or self._peer(recipient):
            return False
        registration = self._registry.get(recipient)
        if registration is None or registration.gateway is not None:
            return False
        contact = self._registry.contact_for(recipient)
        if contact is None or self._remote_owner(recipient) is not None:
            return False
        _, seq, item = mailbox.heap[0]
        if item.expires_at <= self._clock.now():
            return False
        message = item.item
        if (
            isinstance(message, Msg)
            and self._segments is not None
            and message.segmentation_set_id is None
            and len(message.payload or b"")
            > (registration.max_segment_size or self._config.segment_size)
        ):
            return False
        mailbox.heap.clear()
        outcome = self._deliverer.deliver_nowait(contact, message)
        mailbox.task = outcome
        outcome.add_done_callback(
            partial(self._sent_one, recipient, mailbox, (contact, seq, item))
        )
        return True

    def _sent_one(
        self,
        recipient: str,
        mailbox: _Mailbox,
        sent: tuple[Contact, int, QueuedItem],
        outcome: asyncio.Future[None],
    ) -> None:
        """The outcome of :meth:`_send_one`: finish, go on, or handle the failure."""
        contact, seq, item = sent
        mailbox.task = None
        if self._closing or self._mailboxes.get(recipient) is not mailbox:
            return  # stopped or forgotten meanwhile: the item stays stored
        error = (
            RecipientUnreachable("delivery cancelled")
            if outcome.cancelled()
            else outcome.exception()
        )
        if error is None:
            self._finish(mailbox, seq, item)
            self.delivered += 1
            if mailbox.heap or mailbox.more:
                self._ensure_task(recipient, mailbox)
            else:
                del self._mailboxes[recipient]
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        failed = (contact, [(seq, item)], error)
        mailbox.task = loop.create_task(self._drain(recipient, mailbox, failed))

    async def _load(self, recipient: str, mailbox: _Mailbox) -> None:
        if mailbox.adopt and self._cluster is not None:
            mailbox.adopt = False
            await self._cluster.adopt(recipient)
        mailbox.more = False
        items = await self._backend.pending_for(recipient, limit=_LOAD_BATCH)
        if len(items) == _LOAD_BATCH:
            mailbox.more = True
        for item in items:
            if item.seq not in mailbox.seqs and item.seq not in mailbox.done:
                mailbox.seqs.add(item.seq)
                heapq.heappush(mailbox.heap, (item.priority, item.seq, item))

    async def _drain(
        self, recipient: str, mailbox: _Mailbox, failed: _Failed | None = None
    ) -> None:
        try:
            await self._drain_loop(recipient, mailbox, failed)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.drain_failures += 1
            log.exception("delivery to %s failed unexpectedly", recipient)
            self._backlog.add(recipient)
        finally:
            mailbox.task = None
            if self._mailboxes.get(recipient) is mailbox:
                if mailbox.heap or mailbox.more:
                    if recipient not in self._unreachable:
                        self._ensure_task(recipient, mailbox)
                else:
                    del self._mailboxes[recipient]

    def _moved(self, recipient: str, contact: Contact) -> bool:
        """Whether ``recipient`` registered again since a delivery to ``contact``.

        Then the drain loop tries the new address, or hands off to the node its
        datagrams now reach (a cluster, docs/cluster.md), instead of parking.
        """
        return (
            self._registry.contact_for(recipient) != contact
            or self._remote_owner(recipient) is not None
        )

    async def _drain_loop(
        self, recipient: str, mailbox: _Mailbox, failed: _Failed | None = None
    ) -> None:
        if failed is None:
            as_id = as_of_key(recipient)
            if (
                as_id is not None
                or self._peer(recipient)
                or self.via_gateway(recipient)
            ):
                await self._drain_as(recipient, as_id, mailbox)
                return
        elif not await self._after_failure(recipient, mailbox, *failed):
            return
        # the common cases without awaiting a coroutine: items in the heap, a
        # registration with a contact
        while mailbox.heap or await self._has_work(recipient, mailbox):
            registration = self._registry.get(recipient)
            contact = (
                None if registration is None else self._registry.contact_for(recipient)
            )
            if registration is None or contact is None:
                await self._target(recipient, mailbox)  # parks the queue
                return
            owner = self._remote_owner(recipient)  # None outside a cluster
            if owner is not None:
                await self._hand_off(recipient, mailbox, owner)
                continue
            _, seq, item = heapq.heappop(mailbox.heap)
            if item.expires_at <= self._clock.now():
                mailbox.seqs.discard(seq)  # the sweeper reports and removes it
                continue
            direct = registration.gateway is None
            batch = self._take_batch(mailbox, item) if direct else [(seq, item)]
            try:
                await self._push_to_ue(recipient, contact, registration, batch)
            except (RecipientUnreachable, DeliveryRejected) as exc:
                if await self._after_failure(recipient, mailbox, contact, batch, exc):
                    continue
                return
            for entry_seq, entry in batch:
                self._finish(mailbox, entry_seq, entry)
            self.delivered += len(batch)

    async def _after_failure(
        self,
        recipient: str,
        mailbox: _Mailbox,
        contact: Contact,
        batch: list[tuple[int, QueuedItem]],
        exc: BaseException,
    ) -> bool:
        """A delivery of ``batch`` to a UE failed: True to go on draining.

        Unreachable: the items go back to the heap; the loop tries again if the
        UE moved meanwhile, else parks the queue. Refused: the items are done,
        with failure reports. Anything else is a bug, raised for ``_drain``.
        """
        if isinstance(exc, RecipientUnreachable):
            for entry_seq, entry in batch:
                heapq.heappush(mailbox.heap, (entry.priority, entry_seq, entry))
            if self._moved(recipient, contact):
                return True
            log.info("%s unreachable (%s); parking its queue", recipient, exc)
            await self._park(recipient, mailbox, FailureCause.RECIPIENT_NOT_REACHABLE)
            return False
        if isinstance(exc, DeliveryRejected):
            item = batch[0][1]
            log.warning("%s refused %s: %s", recipient, _describe(item), exc)
            for entry_seq, entry in batch:
                self._finish(mailbox, entry_seq, entry)
                await self.report_failure(entry, exc.cause)
            return True
        raise exc

    async def _has_work(self, recipient: str, mailbox: _Mailbox) -> bool:
        """Whether the heap holds items, loading more from storage if needed."""
        if not mailbox.heap and mailbox.more:
            await self._load(recipient, mailbox)
        return bool(mailbox.heap)

    async def _target(
        self, recipient: str, mailbox: _Mailbox
    ) -> tuple[UERegistration, Contact] | None:
        """The registration and current contact, or None after parking the queue."""
        registration = self._registry.get(recipient)
        if registration is None:
            await self._park(recipient, mailbox, FailureCause.RECIPIENT_NOT_REGISTERED)
            return None
        contact = self._registry.contact_for(recipient)
        if contact is None:  # registered through a gateway that is gone
            await self._park(recipient, mailbox, FailureCause.RECIPIENT_NOT_REACHABLE)
            return None
        return registration, contact

    def _take_batch(
        self, mailbox: _Mailbox, first: QueuedItem
    ) -> list[tuple[int, QueuedItem]]:
        """``first`` plus queued items it can be aggregated with (§8.4.3).

        Only items already waiting are bundled (no added latency): messages from
        the same originator that are small, not HIGH priority and not segments,
        or reports from the same reporter.
        """
        batch = [(first.seq, first)]
        if not self._config.aggregate_downlink or not self._bundlable(first.item):
            return batch
        key = _bundle_key(first.item)
        now = self._clock.now()
        size = _estimate(first.item)
        while mailbox.heap and len(batch) < self._config.aggregate_max_items:
            _, seq, candidate = mailbox.heap[0]
            size += _estimate(candidate.item)
            if (
                size > self._config.aggregate_max_octets
                or candidate.expires_at <= now
                or not self._bundlable(candidate.item)
                or _bundle_key(candidate.item) != key
            ):
                break
            heapq.heappop(mailbox.heap)
            batch.append((seq, candidate))
        return batch

    def _bundlable(self, item: Msg | Imdn) -> bool:
        if isinstance(item, Imdn):
            return True
        return (
            item.segmentation_set_id is None
            and item.priority_type != PriorityType.HIGH
            and len(item.payload or b"") <= self._config.aggregate_max_item_octets
        )

    async def _push_to_ue(
        self,
        recipient: str,
        contact: Contact,
        registration: UERegistration,
        batch: list[tuple[int, QueuedItem]],
    ) -> None:
        """Deliver one item, an aggregate of several, or the segments of a big one."""
        items = [entry.item for _, entry in batch]
        if len(items) > 1:
            if isinstance(items[0], Imdn):
                reports = [i for i in items if isinstance(i, Imdn)]
                await self._deliverer.deliver(contact, bundle_reports(reports))
            else:
                messages = [i for i in items if isinstance(i, Msg)]
                await self._deliverer.deliver(contact, bundle(messages))
            return
        item = items[0]
        limit = registration.max_segment_size or self._config.segment_size
        if (
            isinstance(item, Msg)
            and self._segments is not None
            and registration.gateway is None
            and item.segmentation_set_id is None
            and len(item.payload or b"") > limit
        ):
            for part in self._segments.segments_for(recipient, item, limit):
                await self._deliverer.deliver(contact, part)
            return
        await self._deliverer.deliver(contact, item)

    async def _drain_as(self, key: str, as_id: str | None, mailbox: _Mailbox) -> None:
        """Deliver an AS mailbox to its ``targetUri`` (digest §3.11).

        With ``as_id`` None: a UE of a peer server (MSGin5G-8, through
        :meth:`set_peers`' link) or a UE represented by a Message Gateway; the
        same retries and back-off as for an AS.
        """
        while True:
            if not mailbox.heap:
                if not mailbox.more:
                    return
                await self._load(key, mailbox)
                if not mailbox.heap:
                    return
            send = self._remote(key, as_id)
            if send is None:
                await self._park(key, mailbox, FailureCause.RECIPIENT_NOT_REGISTERED)
                return
            _, seq, item = heapq.heappop(mailbox.heap)
            if item.expires_at <= self._clock.now():
                mailbox.seqs.discard(seq)
                continue
            try:
                await send(item.item)
            except RecipientUnreachable as exc:
                heapq.heappush(mailbox.heap, (item.priority, seq, item))
                await self._park(key, mailbox, FailureCause.RECIPIENT_NOT_REACHABLE)
                delay = self._schedule_as_retry(key)
                log.info("%s unreachable (%s); retry in %.1f s", key, exc, delay)
                return
            except DeliveryRejected as exc:
                log.warning("%s refused %s: %s", key, _describe(item), exc)
                self._finish(mailbox, seq, item)
                await self.report_failure(item, exc.cause)
                continue
            self._as_failures.pop(key, None)
            if key in self._unreachable:  # back: look for items stored meanwhile
                self._unreachable.discard(key)
                mailbox.more = True
            self._finish(mailbox, seq, item)
            self.delivered += 1

    def _remote(
        self, key: str, as_id: str | None
    ) -> Callable[[Msg | Imdn], Awaitable[None]] | None:
        """How to push to an AS, a peer server's UE or a gateway-represented UE.

        None: not registered (any more).
        """
        if as_id is None:
            if self._peer(key):
                assert self._peers is not None  # noqa: S101 - _peer checked it
                return partial(self._peers.deliver_to_peer, key)
            gateway = self._gateways.gateway_of(key)
            if gateway is None or self._registry.get(key) is not None:
                return None
            if self._gateway_deliverer is None:
                return _unreachable("no HTTP client towards Message Gateways")
            return partial(
                self._gateway_deliverer.deliver_to_gateway,
                gateway.kind.value,
                gateway.api_root,
            )
        registration = self._applications.get(as_id)
        if registration is None or registration.target_uri is None:
            return None
        if self._as_deliverer is None:
            return _unreachable("no HTTP client towards ASs")
        return partial(self._as_deliverer.deliver_to_as, registration.target_uri)

    def _schedule_as_retry(self, key: str) -> float:
        failures = self._as_failures.get(key, 0)
        self._as_failures[key] = failures + 1
        backoff: float = self._config.as_retry_initial * 2.0 ** min(failures, 30)
        delay = min(backoff, self._config.as_retry_max)
        old = self._as_timers.pop(key, None)
        if old is not None:
            old.cancel()
        self._as_timers[key] = self._clock.call_later(
            delay, partial(self._retry_as, key)
        )
        return delay

    def _retry_as(self, key: str) -> None:
        # the key stays "unreachable" (new items are stored, answered
        # DELY_STORED) until a delivery succeeds
        self._as_timers.pop(key, None)
        if self._is_registered(key):
            self.wake(key)

    def _finish(self, mailbox: _Mailbox, seq: int, item: QueuedItem) -> None:
        mailbox.seqs.discard(seq)
        if len(mailbox.done) >= _DONE_CAP:
            mailbox.done.clear()
        mailbox.done.add(seq)
        self._backend.remove_nowait(seq)
        self._unstored(item)

    async def _park(
        self, recipient: str, mailbox: _Mailbox, cause: FailureCause
    ) -> None:
        """Stop delivering to ``recipient``: keep storable items, fail the rest."""
        registered = self._is_registered(recipient)
        if registered:
            self._unreachable.add(recipient)
        entries, mailbox.heap = mailbox.heap, []
        mailbox.seqs.clear()
        mailbox.more = False
        kept = urgent = False
        for _, seq, item in entries:
            if item.store:
                kept = True
                urgent = urgent or item.priority == PriorityRank.HIGH
                continue
            await self._backend.remove(seq)
            self._unstored(item)
            await self.report_failure(item, cause)
        # storage may hold further items that were never loaded: always look
        # again when the recipient shows up
        self._backlog.add(recipient)
        if kept and registered:
            self._waiting(recipient, urgent)

    # sweeper ----------------------------------------------------------------------------

    async def sweep_once(self) -> int:
        """Drop expired items (with failure reports); retry unreachable UEs when due.

        Returns:
            The number of expired items.
        """
        now = self._clock.now()
        count = 0
        if self._segments is not None:
            for recipient, report in await self._segments.poll():
                await self.send_report(recipient, report)
        while True:
            expired = await self._backend.take_expired(now, limit=1000)
            for item in expired:
                self._unstored(item)
                self.drop_from_memory(item.recipient, item.seq)
                self.expired += 1
                log.info("expired %s for %s", _describe(item), item.recipient)
                await self.report_failure(item, FailureCause.MESSAGE_EXPIRED)
            count += len(expired)
            if len(expired) < 1000:
                break
        if now - self._last_retry >= self._config.retry_interval:
            self._last_retry = now
            await self._backend.purge_report_routes(now)
            await self._backend.purge_payloads()
            await self._backend.purge_dedup(now)
            self._retry(
                r
                for r in list(self._unreachable)
                if self._is_registered(r)
                and r not in self._as_timers
                and r not in self._held
            )
        return count

    def _retry(self, recipients: Iterable[str]) -> None:
        for recipient in recipients:
            self._unreachable.discard(recipient)
            self.wake(recipient)

    async def _sweep_loop(self) -> None:
        while True:
            await self._clock.sleep(self._config.sweep_interval)
            try:
                await self.sweep_once()
            except Exception:
                log.exception("sweeper failed; retrying next interval")


def _unreachable(reason: str) -> Callable[[Msg | Imdn], Awaitable[None]]:
    async def send(item: Msg | Imdn) -> None:
        raise RecipientUnreachable(reason)

    return send


def _estimate(item: Msg | Imdn) -> int:
    """Rough encoded size of an item inside an aggregate (base64 + members)."""
    payload = item.payload if isinstance(item, Msg) else None
    return 160 + (len(payload or b"") * 4) // 3


def _bundle_key(item: Msg | Imdn) -> tuple[object, ...]:
    if isinstance(item, Imdn):
        # one AGGIMDN may carry reports of several reporters (per-member reports
        # of a fan-out); items name their own reporter then
        return ("IMDN", item.recipient)
    return (
        "MSG",
        item.originating_ue_service_id,
        item.originating_as_service_id,
        item.recipient_ue_service_id,
        item.recipient_group_service_id,
        item.messaging_topic,
    )


def _describe(item: QueuedItem) -> str:
    kind = "report" if isinstance(item.item, Imdn) else "message"
    return f"{kind} {item.item.message_id}"
