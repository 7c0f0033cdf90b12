"""MessagingService: the one façade every transport calls (TS 23.554 §8.2, §8.3, §8.7.1).

Procedures and where they are specified:

* registration / de-registration — digest §3.2.3, §3.3.3;
* point-to-point message — digest §3.7.5 (server reception), §3.8 (store and forward);
* delivery status report — digest §3.9.3;
* update of a stored message (``MSGUPD``) — digest §3.8 step 5;
* Application Server registration / de-registration — digest §2.5, §3.4;
* Application-to-Point (an AS sends to a UE) — digest §2.11, §3.5;
* Point-to-Application (a UE, or a gateway for a UE, sends to an AS) — §2.12, §3.11;
* delivery status reports from an AS or a gateway — digest §2.0.4, §3.5.

A2P and P2A are not a second routing path: an AS's message is a model ``Msg``
with ``originatingAsServiceId`` and goes through the same ``_route`` /
:class:`DeliveryEngine` / report-route machinery as a UE's; an AS is a mailbox
keyed ``"as/<AS Service ID>"`` (:mod:`msgin5g.model.application`) whose contact
is its ``targetUri``. The REST transport calls the ``*_as`` / ``*_api`` methods
with the authenticated OAuth2 client id (None when OAuth2 is off).

Application-level outcomes (registration failure, delivery status) are the *value*
of a procedure, returned as the response message the stage-2 flows define
(``REGRESP``, ``MSGRESP`` …); internal checks raise :class:`ServiceError` subclasses
that are turned into those responses here. Anything else propagates and becomes
5.00 at the transport edge.
"""

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec

from msgin5g.config import DeliveryConfig, LimitsConfig, SealConfig, TopicsConfig
from msgin5g.errors import InvalidRequest, NotAuthorized, NotRegistered, ServiceError
from msgin5g.logsafe import LogThrottle
from msgin5g.model.aggregation import unbundle, unbundle_reports
from msgin5g.model.application import ASRegistration, as_key
from msgin5g.model.credentials import credential_digest
from msgin5g.model.messages import (
    AggImdn,
    AggMsg,
    BulkDereg,
    BulkDeregResp,
    BulkReg,
    BulkRegResp,
    Dereg,
    DeregResp,
    DeregResult,
    Imdn,
    ItemResponse,
    Msg,
    MsgResp,
    MsgUpd,
    Reg,
    RegResp,
    RegResult,
    SegConfir,
    SegRec,
    TopicResult,
    TopicSub,
    TopicSubResp,
    TopicUnsub,
    TopicUnsubResp,
)
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.model.registry import Contact
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.service.broadcast import BroadcastRegistry
from msgin5g.service.dedup import Deduplicator
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.fanout import (
    FanOut,
    admission_failure,
    expiry_of,
    originator_key,
)
from msgin5g.service.groups import GroupRegistry, GroupSource
from msgin5g.service.ports import ASDeliverer, Clock, Deliverer, SystemClock
from msgin5g.service.quotas import Quotas
from msgin5g.service.registry import Registry
from msgin5g.service.segments import SegmentService
from msgin5g.service.topic_policy import PUBLISH, SUBSCRIBE, TopicPolicy
from msgin5g.service.topics import TopicRegistry, check_topic
from msgin5g.spec.causes import FailureCause, Result
from msgin5g.spec.delivery import DeliveryStatus, PriorityRank, PriorityType
from msgin5g.storage.base import Backend, stored_size

__all__ = ["MessagingService", "RegistrationOutcome"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)  # faults a flood can repeat (issue 10 item 11)


@dataclass(frozen=True, slots=True)
class RegistrationOutcome:
    """Result of a ``REG``: the response and whether a new context was created."""

    response: RegResp
    created: bool


class MessagingService:
    """The MSGin5G Server's use cases over one storage backend."""

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
    ) -> None:
        self.config = config or DeliveryConfig()
        self.clock: Clock = clock or SystemClock()
        self.backend = backend
        self.quotas = Quotas(limits)
        self.registry = Registry(backend, self.clock, self.config)
        self.applications = ApplicationRegistry(backend, self.clock)
        self.delivery = DeliveryEngine(
            backend,
            deliverer,
            self.registry,
            self.clock,
            self.config,
            applications=self.applications,
            as_deliverer=as_deliverer,
            quotas=self.quotas,
        )
        self.segments = SegmentService(
            backend,
            deliverer,
            self.clock,
            contact_for=self.registry.contact_for,
            report=self.delivery.send_report,
            gap_timer=self.config.reassembly_gap_timer,
            timeout=self.config.reassembly_timeout,
        )
        self.delivery.segmenter = self.segments
        self.topic_policy = TopicPolicy(
            backend, self.clock, topics, is_ue=self.registry.is_known
        )
        self.topics = TopicRegistry(
            backend, self.clock, self.config, policy=self.topic_policy
        )
        self.groups = GroupRegistry(
            backend,
            self.clock,
            self.config,
            source=group_source,
            registrations=self.registry,
            seal=seal,
        )
        self.broadcast = BroadcastRegistry(
            backend, self.clock, self.config, registry=self.registry
        )
        self._dedup = Deduplicator(
            self.config.dedup_window,
            self.config.dedup_max_entries,
            self.config.dedup_max_bytes,
            self.clock.now(),
        )
        self.fanout = FanOut(
            self.registry, self.applications, self.delivery, self.config, self._dedup
        )

    async def start(self, *, sweeper: bool = True) -> None:
        """Load registrations and resume delivery of everything stored."""
        await self.load()
        await self.resume(sweeper=sweeper)

    async def load(self) -> None:
        """Load the registrations (before the transports accept requests)."""
        await self.registry.load()
        await self.topics.load()
        await self.applications.load()

    async def resume(self, *, sweeper: bool = True) -> None:
        """Resume delivery of stored items (once the deliverer can send)."""
        await self.segments.load()
        await self.delivery.start(sweeper=sweeper)

    async def aclose(self) -> None:
        """Stop background work (stored items stay stored)."""
        await self.delivery.aclose()

    # provisioning -------------------------------------------------------------

    async def provision(self, ue_service_id: str, credential: str) -> None:
        """Store the digest of a UE's credential (``msgin5g ue add``)."""
        await self.backend.put_credential(ue_service_id, credential_digest(credential))
        self.registry.forget_credential(ue_service_id)

    # registration ---------------------------------------------------------------

    async def register(self, reg: Reg, source: Contact) -> RegistrationOutcome:
        """Handle ``REG`` (digest §3.2.3)."""
        cause = await self.registry.authenticate(
            reg.ue_service_id, reg.ue_credential_info
        )
        if cause is not None:
            _throttled.log(
                "registration-refused",
                logging.WARNING,
                "registration of %s refused: %s",
                reg.ue_service_id,
                cause,
            )
            wire = _wire_auth_cause(cause)
            return RegistrationOutcome(_reg_failure(reg.ue_service_id, wire), False)
        previous = self.registry.get(reg.ue_service_id)
        try:
            registration, created = await self.registry.register(reg, source)
        except ServiceError as exc:
            return RegistrationOutcome(
                _reg_failure(reg.ue_service_id, exc.cause), False
            )
        log.debug("registered %s from %s", reg.ue_service_id, source)
        if (
            previous is not None
            and previous.gateway is None
            and previous.contact != registration.contact
        ):
            # a CON to the old address would retransmit for ~45 s first
            self.delivery.on_moved(reg.ue_service_id, previous.contact)
        self.delivery.on_registered(reg.ue_service_id)
        response = RegResp(
            ue_service_id=reg.ue_service_id, registration_result=Result.SUCCESS
        )
        return RegistrationOutcome(response, created)

    async def deregister(self, dereg: Dereg, source: Contact) -> DeregResp:
        """Handle ``DEREG`` (digest §3.3.3).

        Idempotent: a UE that is not registered is answered ``SUCCESS`` and
        nothing changes (no credential check can be needed to change nothing, and
        the answer does not tell whether the ID is provisioned). A registered UE
        is de-registered when the request carries its valid credential or comes
        from the address it registered from. Stored messages survive (§8.3.6:
        store and forward exists for recipients that are not registered); only
        items that were never to be stored fail with ``RECIPIENT_DEREGISTERED``.
        """
        ue = dereg.ue_service_id
        registration = self.registry.get(ue)
        if registration is None:
            _throttled.log(
                "dereg-unregistered",
                logging.INFO,
                "DEREG of %s from %s: not registered, nothing to do",
                ue,
                source,
            )
            return DeregResp(ue_service_id=ue, deregistration_result=Result.SUCCESS)
        if dereg.ue_credential_info is not None:
            cause = await self.registry.authenticate(ue, dereg.ue_credential_info)
            if cause is not None:
                _throttled.log(
                    "dereg-refused",
                    logging.WARNING,
                    "DEREG of %s from %s refused: %s",
                    ue,
                    source,
                    cause,
                )
                return _dereg_failure(ue, _wire_auth_cause(cause))
        elif registration.source != source:
            _throttled.log(
                "dereg-refused",
                logging.WARNING,
                "DEREG of %s from %s refused: foreign source",
                ue,
                source,
            )
            return _dereg_failure(ue, FailureCause.NOT_AUTHORIZED)
        await self._drop_registration(ue)
        return DeregResp(ue_service_id=ue, deregistration_result=Result.SUCCESS)

    async def _drop_registration(self, ue: str) -> None:
        """End a registration; keep what store and forward keeps (§8.3.6)."""
        await self.registry.deregister(ue)
        await self.topics.unsubscribe(ue, [])
        for item in await self.delivery.forget(ue, keep_stored=True):
            await self.delivery.report_failure(
                item, FailureCause.RECIPIENT_DEREGISTERED
            )
        log.debug("de-registered %s", ue)

    # bulk registration through a Gateway UE ---------------------------------------

    async def _gateway_refusal(
        self, gateway: str, bulk: BulkReg | BulkDereg, source: Contact
    ) -> FailureCause | None:
        """Why the gateway may not act for others, or None (digest §3.4.4 step 1).

        Project policy: any provisioned UE may act as a Gateway UE once it has
        authenticated and is registered from the address the bulk request came from.
        """
        cause = await self.registry.authenticate(gateway, bulk.ue_credential_info)
        if cause is not None:
            return _wire_auth_cause(cause)
        try:
            self.registry.check_source(gateway, source)
        except NotRegistered as exc:
            return exc.cause
        return None

    async def bulk_register(
        self, bulk: BulkReg, source: Contact
    ) -> tuple[BulkRegResp, bool]:
        """Handle ``BULKREG`` (digest §3.4.4); returns the response and "any new".

        Every entry is authenticated and registered on its own; their writes are
        issued together so the group commit stores them in one transaction.
        """
        gateway = bulk.ue_service_id
        refusal = await self._gateway_refusal(gateway, bulk, source)
        if refusal is not None:
            _throttled.log(
                "bulk-registration-refused",
                logging.WARNING,
                "bulk registration from %s refused: %s",
                gateway,
                refusal,
            )
            refused = [
                RegResult(
                    ue_service_id=entry.ue_service_id,
                    registration_result=Result.FAILURE,
                    failure_cause=FailureCause.NOT_AUTHORIZED.value,
                )
                for entry in bulk.reg_requests
            ]
            return _bulk_reg_resp(refused), False
        self.delivery.on_uplink(gateway)
        outcomes = await asyncio.gather(
            *(self._register_entry(e, source, gateway) for e in bulk.reg_requests)
        )
        log.debug("bulk registration of %d UEs via %s", len(outcomes), gateway)
        created = any(new for _, new in outcomes)
        return _bulk_reg_resp([result for result, _ in outcomes]), created

    async def _register_entry(
        self, entry: Reg, source: Contact, gateway: str
    ) -> tuple[RegResult, bool]:
        ue = entry.ue_service_id
        cause = await self.registry.authenticate(ue, entry.ue_credential_info)
        if cause is not None:
            log.info("bulk registration of %s via %s refused: %s", ue, gateway, cause)
            cause = _wire_auth_cause(cause)
        else:
            try:
                _, created = await self.registry.register(
                    entry, source, gateway=gateway
                )
            except ServiceError as exc:
                cause = exc.cause
            else:
                self.delivery.on_registered(ue)
                ok = RegResult(ue_service_id=ue, registration_result=Result.SUCCESS)
                return ok, created
        failed = RegResult(
            ue_service_id=ue,
            registration_result=Result.FAILURE,
            failure_cause=cause.value,
        )
        return failed, False

    async def bulk_deregister(self, bulk: BulkDereg, source: Contact) -> BulkDeregResp:
        """Handle ``BULKDEREG`` (digest §3.5).

        Entries registered through this gateway, or carrying their own valid
        credential, are de-registered; others fail with ``NOT_AUTHORIZED``. An
        entry that is not registered succeeds and changes nothing (as ``DEREG``).
        """
        gateway = bulk.ue_service_id
        refusal = await self._gateway_refusal(gateway, bulk, source)
        if refusal is not None:
            log.warning("bulk de-registration from %s refused: %s", gateway, refusal)
        results: list[DeregResult] = []
        for entry in bulk.dereg_requests:
            ue = entry.ue_service_id
            cause = refusal or await self._may_deregister_via(entry, gateway)
            if cause is None:
                if self.registry.get(ue) is not None:
                    await self._drop_registration(ue)
                results.append(
                    DeregResult(ue_service_id=ue, deregistration_result=Result.SUCCESS)
                )
                continue
            results.append(
                DeregResult(
                    ue_service_id=ue,
                    deregistration_result=Result.FAILURE,
                    failure_cause=cause.value,
                )
            )
        return BulkDeregResp(
            num_of_dereg_responses=len(results), dereg_responses=results
        )

    async def _may_deregister_via(
        self, entry: Dereg, gateway: str
    ) -> FailureCause | None:
        registration = self.registry.get(entry.ue_service_id)
        if registration is None:
            return None  # nothing to change: idempotent success
        if entry.ue_credential_info is not None:
            cause = await self.registry.authenticate(
                entry.ue_service_id, entry.ue_credential_info
            )
            return None if cause is None else _wire_auth_cause(cause)
        if registration.gateway == gateway:
            return None
        return FailureCause.NOT_AUTHORIZED

    # messages --------------------------------------------------------------------

    async def submit(self, msg: Msg, source: Contact) -> MsgResp:
        """Handle a client's ``MSG`` (digest §3.7.5) and return its ``MSGRESP``."""
        originator = msg.originating_ue_service_id or ""
        try:
            self.registry.check_source(originator, source)
        except NotRegistered as exc:
            _throttled.log(
                "msg-rejected",
                logging.WARNING,
                "MSG %s rejected: %s",
                msg.message_id,
                exc.detail,
            )
            return _msg_resp(msg, DeliveryStatus.DELY_REJECTED, exc.cause)
        self.delivery.on_uplink(originator)
        if msg.segmentation_set_id is not None:
            try:
                whole = await self.segments.accept(msg)
            except ServiceError as exc:
                log.info("segment of %s refused: %s", msg.message_id, exc.detail)
                return _msg_resp(msg, DeliveryStatus.DELY_REJECTED, exc.cause)
            if whole is None:
                return _msg_resp(msg, DeliveryStatus.DELY_ACCEPTED)
            msg = whole
        return await self._submit_deduplicated(msg, originator)

    async def submit_aggregate(self, aggregate: AggMsg, source: Contact) -> MsgResp:
        """Handle a client's ``AGGMSG`` (digest §3.10.3): route every item.

        The answer refers to the aggregate; ``itemResponses`` lists the items
        whose outcome is not ``DELY_ACCEPTED``.
        """
        originator = aggregate.originating_ue_service_id or ""
        header = Msg(
            message_id=aggregate.message_id,
            originating_ue_service_id=originator,
        )
        try:
            self.registry.check_source(originator, source)
        except NotRegistered as exc:
            return _msg_resp(header, DeliveryStatus.DELY_REJECTED, exc.cause)
        self.delivery.on_uplink(originator)
        items = unbundle(aggregate)
        refused = (
            aggregate.recipient_ue_service_id is None
            and aggregate.recipient_as_service_id is None
        ) or any(m.priority_type == PriorityType.HIGH for m in items)
        if refused:
            cause = FailureCause.AGGREGATION_NOT_ALLOWED
            return _msg_resp(header, DeliveryStatus.DELY_REJECTED, cause)
        outcomes = [await self._submit_deduplicated(m, originator) for m in items]
        odd = [
            ItemResponse(
                message_id=r.message_id,
                delivery_status=r.delivery_status,
                failure_cause=r.failure_cause,
            )
            for r in outcomes
            if r.delivery_status != DeliveryStatus.DELY_ACCEPTED
        ]
        response = _msg_resp(header, DeliveryStatus.DELY_ACCEPTED)
        if odd:
            response = msgspec.structs.replace(response, item_responses=odd)
        return response

    async def control(
        self, item: AggImdn | SegRec | SegConfir, source: Contact
    ) -> None:
        """``AGGIMDN`` (split into reports), ``SEGREC`` and ``SEGCONFIR`` from a UE."""
        if isinstance(item, AggImdn):
            for report in unbundle_reports(item):
                await self.report(report, source)
            return
        ue = item.originating_ue_service_id or ""
        try:
            self.registry.check_source(ue, source)
        except NotRegistered as exc:
            _throttled.log(
                "control-ignored",
                logging.WARNING,
                "%s ignored: %s",
                type(item).__name__,
                exc.detail,
            )
            return
        if isinstance(item, SegRec):
            await self.segments.recover(ue, item)
        else:
            self.segments.confirmed(ue, item)

    async def _submit_deduplicated(self, msg: Msg, originator: str) -> MsgResp:
        """Duplicate check by (originator key, messageId), rate limit, routing.

        Duplicates are answered from memory or, for stored messages, found by
        the write itself (:mod:`msgin5g.service.dedup`); an originator beyond
        ``limits.submit_rate`` gets ``DELY_REJECTED`` / ``SERVER_CONGESTION``.
        """
        now = self.clock.now()
        if msg.segmentation_set_id is not None:
            if not self.quotas.take_token(originator, now):
                return _congested(msg)
            return await self._route(msg, now)
        key = (originator, msg.message_id)
        fingerprint = self._dedup.fingerprint(msg)
        seen = await self._dedup.seen(key, fingerprint, msg, now)
        if seen is not None:
            return seen
        if not self.quotas.take_token(originator, now):
            return _congested(msg)
        self._dedup.begin(key, fingerprint, now)
        try:
            response = await self._route(msg, now)
        except BaseException:
            self._dedup.abort(key)
            raise
        return self._dedup.finish(key, msg, response, now)

    async def _route(self, msg: Msg, now: float) -> MsgResp:
        if msg.recipient_ue_service_id is not None:
            return await self._to_ue(msg, msg.recipient_ue_service_id, now)
        if msg.recipient_as_service_id is not None:
            return await self._to_as(msg, msg.recipient_as_service_id, now)
        if msg.messaging_topic is not None:
            return await self._to_topic(msg, msg.messaging_topic, now)
        if msg.recipient_group_service_id is not None:
            return await self._to_group(msg, msg.recipient_group_service_id, now)
        if msg.recipient_broadcast_area_id is not None:
            return await self._to_area(msg, msg.recipient_broadcast_area_id, now)
        return _msg_resp(
            msg, DeliveryStatus.DELY_FAILED, FailureCause.RECIPIENT_UNKNOWN
        )

    async def _to_group(self, msg: Msg, group_id: str, now: float) -> MsgResp:
        """Resolve a group and fan the message out to its members (§8.7.4).

        Each member gets its own copy with ``recipientUeServiceId`` set and
        ``recipientGroupServiceId`` kept, over its own path (stored when offline
        and store-and-forward was asked); reports come back per member.
        """
        group = await self.groups.get(group_id)
        if group is None:
            return _msg_resp(
                msg, DeliveryStatus.DELY_FAILED, FailureCause.GROUP_NOT_FOUND
            )
        originator = msg.originator
        from_ue = msg.originating_ue_service_id is not None
        if from_ue and originator not in group.members:
            # UEs send only to their own groups; a registered AS may send to any
            return _msg_resp(
                msg, DeliveryStatus.DELY_REJECTED, FailureCause.NOT_AUTHORIZED
            )
        members = group.members
        if not self.config.group_include_originator:
            members = [m for m in members if m != originator]
        await self._fan_out(msg, members, now, f"group {group_id}")
        return _msg_resp(msg, DeliveryStatus.DELY_ACCEPTED)

    async def _to_topic(self, msg: Msg, topic: str, now: float) -> MsgResp:
        """Fan a publication out to every subscriber but the publisher (§3.13.2).

        POST-form subscribers (UEs, and ASs keyed ``as/<id>``) get their own copy
        with ``recipientUeServiceId`` / ``recipientAsServiceId`` set and
        ``messagingTopic`` kept, through the ordinary mailbox path (stored when
        offline and the publisher asked for store-and-forward); Observe-form
        subscribers get a 2.05 notification. Publishing to a topic without
        subscribers is accepted (§3.7.5 step 5). The topic policy
        (:mod:`.topic_policy`) decides who may publish (else ``DELY_REJECTED`` /
        ``NOT_AUTHORIZED``) and, per subscriber, who still receives.
        """
        originator = msg.originator
        exclude = {originator}
        publisher = originator or ""
        if msg.originating_as_service_id is not None:
            publisher = as_key(msg.originating_as_service_id)
            exclude.add(publisher)
        policy = self.topic_policy
        if not await policy.may(topic, publisher, PUBLISH):
            return _msg_resp(
                msg, DeliveryStatus.DELY_REJECTED, FailureCause.NOT_AUTHORIZED
            )
        readers = await policy.verdict(topic, SUBSCRIBE)  # checked per delivery too
        subscribers = [
            s for s in self.topics.subscribers(topic) if s not in exclude and readers(s)
        ]
        await self._fan_out(msg, subscribers, now, f"topic {topic}")
        await self.topics.notify_observers(msg, exclude=originator, allowed=readers)
        return _msg_resp(msg, DeliveryStatus.DELY_ACCEPTED)

    async def _to_area(self, msg: Msg, area_id: str, now: float) -> MsgResp:
        """Broadcast to every UE registered in a Broadcast Area (digest §2.14)."""
        members = await self.broadcast.members(area_id)
        if members is None:
            return _msg_resp(
                msg, DeliveryStatus.DELY_FAILED, FailureCause.RECIPIENT_UNKNOWN
            )
        cause = self.broadcast.refusal(msg, area_id)
        if cause is not None:
            return _msg_resp(msg, DeliveryStatus.DELY_REJECTED, cause)
        originator = msg.originator
        members = [m for m in members if m != originator]
        await self._fan_out(msg, members, now, f"area {area_id}")
        return _msg_resp(msg, DeliveryStatus.DELY_ACCEPTED)

    async def _fan_out(
        self, msg: Msg, recipients: list[str], now: float, label: str
    ) -> None:
        """One stored payload, one delivery state per recipient (:mod:`.fanout`)."""
        await self.fanout.deliver(msg, recipients, now, label)

    async def subscribe(self, request: TopicSub, source: Contact) -> TopicSubResp:
        """Handle ``TOPICSUB`` (digest §3.13.3)."""
        ue = request.originating_ue_service_id
        try:
            self.registry.check_source(ue, source)
        except NotRegistered as exc:
            failed = _topic_failures(request.messaging_topics, exc.cause)
            return TopicSubResp(originating_ue_service_id=ue, topic_results=failed)
        self.delivery.on_uplink(ue)
        requested = request.expiration.timestamp() if request.expiration else None
        if requested is not None and requested <= self.clock.now():
            raise InvalidRequest("expiration must be in the future")
        expires_at = self.topics.granted_expiry(requested)
        results = await self.topics.subscribe(ue, request.messaging_topics, expires_at)
        return TopicSubResp(
            originating_ue_service_id=ue,
            topic_results=results,
            expiration=datetime.fromtimestamp(expires_at, UTC),
        )

    async def unsubscribe(self, request: TopicUnsub, source: Contact) -> TopicUnsubResp:
        """Handle ``TOPICUNSUB`` (digest §3.13.2; empty list = all topics)."""
        ue = request.originating_ue_service_id
        try:
            self.registry.check_source(ue, source)
        except NotRegistered as exc:
            failed = _topic_failures(request.messaging_topics, exc.cause)
            return TopicUnsubResp(originating_ue_service_id=ue, topic_results=failed)
        results = await self.topics.unsubscribe(ue, list(request.messaging_topics))
        return TopicUnsubResp(originating_ue_service_id=ue, topic_results=results)

    async def _to_as(self, msg: Msg, as_service_id: str, now: float) -> MsgResp:
        """Point-to-Application (digest §2.12): queue for the AS's targetUri."""
        registration = self.applications.get(as_service_id)
        if registration is None or registration.target_uri is None:
            # de-registered (or send-only) ASs are not message endpoints (§2.5)
            return _msg_resp(
                msg, DeliveryStatus.DELY_FAILED, FailureCause.RECIPIENT_UNKNOWN
            )
        key = as_key(as_service_id)
        online = not self.delivery.is_unreachable(key)
        return await self._enqueue(msg, key, now, online=online, refuses=False)

    async def _to_ue(self, msg: Msg, recipient: str, now: float) -> MsgResp:
        registration = self.registry.get(recipient)
        if registration is None and not await self.registry.is_known(recipient):
            return _msg_resp(
                msg, DeliveryStatus.DELY_FAILED, FailureCause.RECIPIENT_UNKNOWN
            )
        refuses = registration is not None and registration.refuses_store_and_forward
        online = registration is not None and not self.delivery.is_unreachable(
            recipient
        )
        return await self._enqueue(
            msg,
            recipient,
            now,
            online=online,
            refuses=refuses,
            registered=registration is not None,
        )

    async def _enqueue(
        self,
        msg: Msg,
        recipient: str,
        now: float,
        *,
        online: bool,
        refuses: bool,
        registered: bool = True,
    ) -> MsgResp:
        """Store ``msg`` for the mailbox ``recipient`` (a UE or an AS key)."""
        expires_at = expiry_of(msg, now, self.config)
        if expires_at <= now:
            return _msg_resp(
                msg, DeliveryStatus.DELY_FAILED, FailureCause.MESSAGE_EXPIRED
            )
        store = msg.store_and_forward_flag and not refuses
        cause = admission_failure(
            msg, online=online, refuses=refuses, registered=registered
        )
        if cause is not None:
            return _msg_resp(msg, DeliveryStatus.DELY_FAILED, cause)
        if self.quotas.storage_full(recipient, stored_size(msg)):
            return _msg_resp(
                msg, DeliveryStatus.DELY_FAILED, FailureCause.SERVER_CONGESTION
            )
        priority = PriorityRank[str(msg.priority_type)] if msg.priority_type else 1
        item = QueuedItem(
            recipient=recipient,
            item=msg,
            priority=priority,
            expires_at=expires_at,
            store=store,
        )
        status = DeliveryStatus.DELY_ACCEPTED if online else DeliveryStatus.DELY_STORED
        originator = originator_key(msg)
        routes = []
        if msg.delivery_status_required and originator:
            routes.append(
                ReportRoute(
                    message_id=msg.message_id,
                    reporter=recipient,
                    originator=originator,
                    expires_at=expires_at + self.config.report_wait,
                )
            )
        key = (originator or "", msg.message_id)
        record = self._dedup.record_for(key, msg, status)
        if record is None:  # not deduplicated (a segment): two writes at once
            await asyncio.gather(
                self.delivery.accept(item, deliver_now=online),
                *(self.backend.put_report_route(route) for route in routes),
            )
            return _msg_resp(msg, status)
        # one transaction: item, record and route (a duplicate revives no route)
        existing = await self.delivery.accept(
            item, deliver_now=online, dedup=record, now=now, routes=routes
        )
        if existing is not None:
            self._dedup.conflict(key, existing)
        return _msg_resp(msg, status)

    # reports -------------------------------------------------------------------------

    async def report(self, imdn: Imdn, source: Contact) -> None:
        """Handle a client's ``IMDN`` (digest §3.9.3): relay it to the originator.

        Reports from unregistered or spoofed senders, and reports nobody asked for,
        are acknowledged and ignored (digest §3.9.3 step 1), with a log line.
        """
        reporter = imdn.originating_ue_service_id or ""
        try:
            self.registry.check_source(reporter, source)
        except NotRegistered as exc:
            _throttled.log(
                "imdn-ignored",
                logging.WARNING,
                "IMDN for %s ignored: %s",
                imdn.message_id,
                exc.detail,
            )
            return
        self.delivery.on_uplink(reporter)
        route = await self.backend.take_report_route(imdn.message_id, reporter)
        if route is None:
            _throttled.log(
                "imdn-ignored",
                logging.WARNING,
                "IMDN for %s from %s ignored: %s",
                imdn.message_id,
                reporter,
                FailureCause.NOT_AUTHORIZED,
            )
            return
        await self.delivery.send_report(route.originator, imdn)

    # Application Servers (TS 29.538 northbound APIs) -------------------------------------

    async def register_as(
        self,
        as_service_id: str,
        *,
        application_id: str | None = None,
        target_uri: str | None = None,
        profile: str = "{}",
        client: str | None = None,
    ) -> ASRegistration:
        """AS registration (digest §2.5): store it, then deliver what waits for it.

        Raises:
            InvalidRequest: unusable ``asSvcId`` or ``targetUri``.
            NotAuthorized: already registered, or ``client`` acts for another AS.
        """
        registration = await self.applications.register(
            as_service_id,
            application_id=application_id,
            target_uri=target_uri,
            profile=profile,
            owner=client,
        )
        log.info("AS %s registered (%s)", as_service_id, target_uri)
        self.delivery.on_as_registered(as_service_id)
        return registration

    async def deregister_as(
        self, registration_id: str, *, client: str | None = None
    ) -> ASRegistration:
        """AS de-registration (digest §2.5): stored items fail with reports.

        Raises:
            NotRegistered: unknown ``registrationId`` (``APPLICATION_NOT_FOUND``).
            NotAuthorized: the registration belongs to another client.
        """
        registration = self.applications.check_deregistration(registration_id, client)
        await self.applications.deregister(registration)
        await self.topics.unsubscribe(as_key(registration.as_service_id), [])
        for item in await self.delivery.forget(as_key(registration.as_service_id)):
            await self.delivery.report_failure(
                item, FailureCause.RECIPIENT_DEREGISTERED
            )
        log.info("AS %s de-registered", registration.as_service_id)
        return registration

    async def subscribe_as(
        self,
        as_service_id: str,
        topics: list[str],
        expiration: datetime | None,
        *,
        client: str | None = None,
    ) -> float:
        """An AS subscribes to Messaging Topics (digest §2.15.1; REST extension).

        Publications then reach the AS's ``targetUri`` like P2A messages (its
        mailbox ``as/<id>``). Returns the granted expiry (epoch seconds).

        Raises:
            NotRegistered / NotAuthorized: as for any AS request.
            NotAuthorized: the topic policy refuses one of the topics (none is
                subscribed then).
            InvalidRequest: bad topic name, expiration in the past, or an AS
                without ``targetUri`` (it could not receive publications).
        """
        self._check_as(as_service_id, client)
        registration = self.applications.get(as_service_id)
        if registration is None or registration.target_uri is None:
            raise InvalidRequest(
                f"AS {as_service_id} registered without targetUri: it cannot "
                "receive topic messages"
            )
        key = as_key(as_service_id)
        for topic in topics:
            check_topic(topic)
        refused = [
            t for t in topics if not await self.topic_policy.may(t, key, SUBSCRIBE)
        ]
        if refused:
            raise NotAuthorized(
                f"AS {as_service_id} may not subscribe to {', '.join(refused)}"
            )
        requested = expiration.timestamp() if expiration else None
        if requested is not None and requested <= self.clock.now():
            raise InvalidRequest("expiration must be in the future")
        expires_at = self.topics.granted_expiry(requested)
        await self.topics.subscribe(key, topics, expires_at)
        return expires_at

    async def unsubscribe_as(
        self, as_service_id: str, topics: list[str], *, client: str | None = None
    ) -> list[str]:
        """End an AS's topic subscriptions (all when ``topics`` is empty).

        Returns the topics the AS was subscribed to among those asked for.
        """
        self._check_as(as_service_id, client)
        key = as_key(as_service_id)
        had = self.topics.topics_of(key)
        wanted = topics or had
        await self.topics.unsubscribe(key, list(wanted))
        return [t for t in wanted if t in had]

    def topics_of_as(
        self, as_service_id: str, *, client: str | None = None
    ) -> list[str]:
        """Topics an AS is subscribed to."""
        self._check_as(as_service_id, client)
        return self.topics.topics_of(as_key(as_service_id))

    def _check_as(self, as_service_id: str, client: str | None) -> None:
        if not self.applications.may_act_for_as(client, as_service_id):
            raise NotAuthorized(f"client {client} may not act for {as_service_id}")
        if self.applications.get(as_service_id) is None:
            raise NotRegistered(f"AS {as_service_id} is not registered")

    async def submit_from_as(self, msg: Msg, *, client: str | None = None) -> MsgResp:
        """Application-to-Point (digest §2.11): an AS's ``MSG`` into ``_route``.

        Raises:
            NotAuthorized: ``client`` may not act for the originating AS.
            NotRegistered: the originating AS is not registered.
        """
        as_service_id = msg.originating_as_service_id or ""
        self._check_as(as_service_id, client)
        return await self._submit_deduplicated(msg, as_key(as_service_id))

    async def submit_for_ue(self, msg: Msg, *, client: str | None = None) -> MsgResp:
        """A message a gateway sends on behalf of a UE (``/deliver-ue-message``).

        The originating UE must be provisioned or registered. With OAuth2 the
        client must be a Message Gateway serving that UE (TS 23.554 §8.6), or
        the operator.

        Raises:
            NotAuthorized: ``client`` does not serve the originating UE.
            NotRegistered: the originating UE is unknown.
        """
        ue = msg.originating_ue_service_id or ""
        if not self.applications.serves_ue(client, ue):
            raise NotAuthorized(f"client {client} does not serve UE {ue}")
        if not await self.registry.is_known(ue):
            raise NotRegistered(
                f"UE {ue} is unknown", cause=FailureCause.NOT_REGISTERED
            )
        log.debug("message %s for %s via API client %s", msg.message_id, ue, client)
        return await self._submit_deduplicated(msg, ue)

    async def report_from_api(self, imdn: Imdn, *, client: str | None = None) -> None:
        """A delivery status report from an AS or a gateway (digest §2.0.4).

        Relayed to the original sender like a UE's ``IMDN``.

        Raises:
            NotAuthorized / NotRegistered: the reporting AS may not report, or
                ``client`` does not serve the reporting UE (gateway rule).
            NotRegistered: no report is expected (``MESSAGE_NOT_FOUND``).
        """
        if imdn.originating_as_service_id is not None:
            self._check_as(imdn.originating_as_service_id, client)
            reporter = as_key(imdn.originating_as_service_id)
        else:
            reporter = imdn.originating_ue_service_id or ""
            if not self.applications.serves_ue(client, reporter):
                raise NotAuthorized(f"client {client} does not serve UE {reporter}")
        route = await self.backend.take_report_route(imdn.message_id, reporter)
        if route is None:
            raise NotRegistered(
                f"no report expected from {reporter} for {imdn.message_id}",
                cause=FailureCause.MESSAGE_NOT_FOUND,
            )
        await self.delivery.send_report(route.originator, imdn)

    # stored message update ------------------------------------------------------------

    async def update_stored(self, upd: MsgUpd, source: Contact) -> MsgResp:
        """Handle ``MSGUPD`` (digest §3.8 step 5): new expiry, or discard."""
        resp = MsgResp(
            message_id=upd.message_id,
            originating_ue_service_id=upd.originating_ue_service_id,
            delivery_status=DeliveryStatus.DELY_FAILED,
            failure_cause=FailureCause.MESSAGE_NOT_FOUND,
        )
        try:
            self.registry.check_source(upd.originating_ue_service_id, source)
        except NotRegistered as exc:
            return _replace(resp, DeliveryStatus.DELY_REJECTED, exc.cause)
        stored = await self.backend.find(upd.recipient_ue_service_id, upd.message_id)
        if stored is None or not isinstance(stored.item, Msg):
            return resp
        if stored.item.originating_ue_service_id != upd.originating_ue_service_id:
            return _replace(
                resp, DeliveryStatus.DELY_REJECTED, FailureCause.NOT_AUTHORIZED
            )
        recipient = upd.recipient_ue_service_id
        params = upd.store_and_forward_params
        if params is None:
            await self.backend.remove(stored.seq)
            self.delivery.discarded(stored)
            await self.backend.take_report_route(upd.message_id, recipient)
            return _replace(resp, DeliveryStatus.DELY_ACCEPTED, None)
        now = self.clock.now()
        when = params.message_expiration_time
        expires_at = (
            min(when.timestamp(), now + self.config.max_ttl)
            if when
            else now + self.config.default_ttl
        )
        if expires_at <= now:
            raise InvalidRequest("messageExpirationTime is in the past")
        await self.backend.set_expiry(stored.seq, expires_at)
        self.delivery.update_in_memory(recipient, stored.seq, expires_at)
        return _replace(resp, DeliveryStatus.DELY_STORED, None)


def _msg_resp(
    msg: Msg, status: DeliveryStatus, cause: FailureCause | None = None
) -> MsgResp:
    return MsgResp(
        message_id=msg.message_id,
        originating_ue_service_id=msg.originating_ue_service_id,
        originating_as_service_id=msg.originating_as_service_id,
        delivery_status=status,
        failure_cause=cause.value if cause is not None else None,
    )


def _congested(msg: Msg) -> MsgResp:
    """The answer to an originator beyond its submission rate (``[limits]``)."""
    return _msg_resp(msg, DeliveryStatus.DELY_REJECTED, FailureCause.SERVER_CONGESTION)


def _replace(
    resp: MsgResp, status: DeliveryStatus, cause: FailureCause | None
) -> MsgResp:
    return MsgResp(
        message_id=resp.message_id,
        originating_ue_service_id=resp.originating_ue_service_id,
        delivery_status=status,
        failure_cause=cause.value if cause is not None else None,
    )


def _topic_failures(topics: list[str], cause: FailureCause) -> list[TopicResult]:
    """One ``FAILURE`` result per topic (the subscriber may not subscribe)."""
    return [
        TopicResult(messaging_topic=t, result=Result.FAILURE, failure_cause=cause.value)
        for t in topics
    ]


def _bulk_reg_resp(results: list[RegResult]) -> BulkRegResp:
    return BulkRegResp(num_of_reg_responses=len(results), reg_responses=results)


def _reg_failure(ue_service_id: str, cause: FailureCause) -> RegResp:
    return RegResp(
        ue_service_id=ue_service_id,
        registration_result=Result.FAILURE,
        failure_cause=cause.value,
    )


def _wire_auth_cause(cause: FailureCause) -> FailureCause:
    """The cause a refused credential check shows on the wire.

    An unknown UE Service ID and a wrong credential look the same to the
    requester (``AUTHENTICATION_FAILED``), so nobody can enumerate provisioned
    IDs; the log line written by the caller keeps the real reason.
    """
    if cause is FailureCause.UNKNOWN_UE_SERVICE_ID:
        return FailureCause.AUTHENTICATION_FAILED
    return cause


def _dereg_failure(ue_service_id: str, cause: FailureCause) -> DeregResp:
    return DeregResp(
        ue_service_id=ue_service_id,
        deregistration_result=Result.FAILURE,
        failure_cause=cause.value,
    )
