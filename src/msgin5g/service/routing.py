"""Message procedures: ``MSG``, ``AGGMSG``, ``SEGREC``/``SEGCONFIR`` and routing.

Specified in TS 23.554 §8.3 and digest §3.7.5 (server reception of a message),
§3.8 (store and forward), §3.10.3 (aggregated messages), §3.12 (segmentation)
and §8.7.4 / §3.13.2 / §2.14 (group, topic, broadcast fan-out).

One path for every message, whoever sent it. A UE's ``MSG`` enters through
:meth:`Router.submit`; an AS's (A2P) or a gateway's through
:meth:`Router.submit_deduplicated` from :mod:`.application_server`. Then, on
the way down and never back:

1. :meth:`Router.submit_deduplicated`: duplicate detection by (originator,
   messageId) (:mod:`.dedup`) and the originator's submission rate
   (:mod:`.quotas`);
2. :meth:`Router.route`: by the recipient member of the message, to one UE
   (registered directly, or a Legacy 3GPP / Non-3GPP UE behind the Message
   Gateway that registered it, :mod:`.message_gateways`), one AS (P2A: a
   mailbox keyed ``as/<AS Service ID>``), a topic, a group or a broadcast area;
3. one recipient: :meth:`Router._enqueue` stores the item (with its
   duplicate-detection record and report route, in one transaction) and hands
   it to the :class:`~msgin5g.service.delivery.DeliveryEngine`; several:
   :class:`~msgin5g.service.fanout.FanOut` stores one payload and a row per
   member in one write.

The answer is the ``MSGRESP`` of digest §3.7.5: ``DELY_ACCEPTED`` (delivery
starts now), ``DELY_STORED`` (kept for a recipient that is not reachable),
``DELY_FAILED`` / ``DELY_REJECTED`` with a failure cause.
"""

import asyncio
import logging

import msgspec

from msgin5g.config import DeliveryConfig
from msgin5g.errors import ServiceError
from msgin5g.model.aggregation import unbundle
from msgin5g.model.application import as_key
from msgin5g.model.messages import AggMsg, ItemResponse, Msg, MsgResp, SegConfir, SegRec
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.model.registry import Contact
from msgin5g.runtime import Clock
from msgin5g.service.answers import congested, msg_resp
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
from msgin5g.service.groups import GroupRegistry
from msgin5g.service.peers import Peers
from msgin5g.service.quotas import Quotas
from msgin5g.service.registry import Registry
from msgin5g.service.segments import SegmentService
from msgin5g.service.topic_policy import PUBLISH, SUBSCRIBE, TopicPolicy
from msgin5g.service.topics import TopicRegistry
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import DeliveryStatus, PriorityRank, PriorityType
from msgin5g.storage.base import Backend, stored_size

__all__ = ["Router"]

log = logging.getLogger(__name__)

_ACCEPTED = DeliveryStatus.DELY_ACCEPTED
_FAILED = DeliveryStatus.DELY_FAILED
_REJECTED = DeliveryStatus.DELY_REJECTED


class Router:
    """Accepts messages and routes them to their recipients (one path for all)."""

    def __init__(
        self,
        *,
        backend: Backend,
        clock: Clock,
        config: DeliveryConfig,
        registry: Registry,
        applications: ApplicationRegistry,
        delivery: DeliveryEngine,
        segments: SegmentService,
        dedup: Deduplicator,
        quotas: Quotas,
        fanout: FanOut,
        groups: GroupRegistry,
        topics: TopicRegistry,
        topic_policy: TopicPolicy,
        broadcast: BroadcastRegistry,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._config = config
        self._registry = registry
        self._applications = applications
        self._delivery = delivery
        self._segments = segments
        self._dedup = dedup
        self._quotas = quotas
        self._fanout = fanout
        self._groups = groups
        self._topics = topics
        self._topic_policy = topic_policy
        self._broadcast = broadcast
        self.peers: Peers | None = None
        """MSGin5G-8 routing table (set by the composition root when configured)."""

    # uplink from a UE ----------------------------------------------------------

    async def submit(self, msg: Msg, source: Contact) -> MsgResp:
        """Handle a client's ``MSG`` (digest §3.7.5) and return its ``MSGRESP``."""
        originator = msg.originating_ue_service_id or ""
        refusal = self._registry.refuse_sender(
            originator, source, "msg-rejected", "MSG %s rejected", msg.message_id
        )
        if refusal is not None:
            return msg_resp(msg, _REJECTED, refusal.cause)
        self._delivery.on_uplink(originator)
        if msg.segmentation_set_id is not None:
            try:
                whole = await self._segments.accept(msg)
            except ServiceError as exc:
                log.info("segment of %s refused: %s", msg.message_id, exc.detail)
                return msg_resp(msg, _REJECTED, exc.cause)
            if whole is None:
                return msg_resp(msg, _ACCEPTED)
            msg = whole
        return await self.submit_deduplicated(msg, originator)

    async def submit_aggregate(self, aggregate: AggMsg, source: Contact) -> MsgResp:
        """Handle a client's ``AGGMSG`` (digest §3.10.3): route every item.

        The answer refers to the aggregate; ``itemResponses`` lists the items
        whose outcome is not ``DELY_ACCEPTED``.
        """
        originator = aggregate.originating_ue_service_id or ""
        header = Msg(
            message_id=aggregate.message_id, originating_ue_service_id=originator
        )
        refusal = self._registry.refuse_sender(originator, source)
        if refusal is not None:
            return msg_resp(header, _REJECTED, refusal.cause)
        self._delivery.on_uplink(originator)
        items = unbundle(aggregate)
        refused = (
            aggregate.recipient_ue_service_id is None
            and aggregate.recipient_as_service_id is None
        ) or any(m.priority_type == PriorityType.HIGH for m in items)
        if refused:
            return msg_resp(header, _REJECTED, FailureCause.AGGREGATION_NOT_ALLOWED)
        outcomes = [await self.submit_deduplicated(m, originator) for m in items]
        odd = [
            ItemResponse(
                message_id=r.message_id,
                delivery_status=r.delivery_status,
                failure_cause=r.failure_cause,
            )
            for r in outcomes
            if r.delivery_status != _ACCEPTED
        ]
        response = msg_resp(header, _ACCEPTED)
        if odd:
            response = msgspec.structs.replace(response, item_responses=odd)
        return response

    async def segment_control(self, item: SegRec | SegConfir, source: Contact) -> None:
        """A UE's ``SEGREC`` (send segments again) or ``SEGCONFIR`` (§3.12)."""
        ue = item.originating_ue_service_id or ""
        refusal = self._registry.refuse_sender(
            ue, source, "control-ignored", "%s ignored", type(item).__name__
        )
        if refusal is not None:
            return
        if isinstance(item, SegRec):
            await self._segments.recover(ue, item)
        else:
            self._segments.confirmed(ue, item)

    # every originator ------------------------------------------------------------

    async def submit_deduplicated(self, msg: Msg, originator: str) -> MsgResp:
        """Duplicate check by (originator key, messageId), rate limit, routing.

        Duplicates are answered from memory or, for stored messages, found by
        the write itself (:mod:`msgin5g.service.dedup`); an originator beyond
        ``limits.submit_rate`` gets ``DELY_REJECTED`` / ``SERVER_CONGESTION``.
        """
        now = self._clock.now()
        if msg.segmentation_set_id is not None:
            if not self._quotas.take_token(originator, now):
                return congested(msg)
            return await self.route(msg, now)
        key = (originator, msg.message_id)
        fingerprint = self._dedup.fingerprint(msg)
        seen = await self._dedup.seen(key, fingerprint, msg, now)
        if seen is not None:
            return seen
        if not self._quotas.take_token(originator, now):
            return congested(msg)
        self._dedup.begin(key, fingerprint, now)
        try:
            response = await self.route(msg, now)
        except BaseException:
            self._dedup.abort(key)
            raise
        return self._dedup.finish(key, msg, response, now)

    async def route(self, msg: Msg, now: float) -> MsgResp:
        """Send ``msg`` on by its recipient member (UE, AS, topic, group, area)."""
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
        return msg_resp(msg, _FAILED, FailureCause.RECIPIENT_UNKNOWN)

    # one recipient -----------------------------------------------------------------

    async def _to_ue(self, msg: Msg, recipient: str, now: float) -> MsgResp:
        peers = self.peers
        if peers is not None and peers.is_remote(recipient):
            return await self._to_peer(msg, recipient, now)
        registration = self._registry.get(recipient)
        if registration is None and self._delivery.via_gateway(recipient):
            # a Legacy 3GPP / Non-3GPP UE behind its Message Gateway (§2.10.2)
            online = not self._delivery.is_unreachable(recipient)
            return await self._enqueue(
                msg, recipient, now, online=online, refuses=False
            )
        if registration is None and not await self._registry.is_known(recipient):
            domain = None if peers is None else peers.unknown_domain(recipient)
            if domain is not None:
                log.info("%s: no peer server for domain %s", msg.message_id, domain)
            return msg_resp(msg, _FAILED, FailureCause.RECIPIENT_UNKNOWN)
        refuses = registration is not None and registration.refuses_store_and_forward
        online = registration is not None and not self._delivery.is_unreachable(
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

    async def _to_peer(self, msg: Msg, recipient: str, now: float) -> MsgResp:
        """MSGin5G-8 (digest §2.16): store, then forward to the peer server.

        Only UE-originated messages cross (TS 23.554 §8.7.5); the peer would
        know no AS of ours, so an AS's message is refused ``NOT_AUTHORIZED``.
        """
        if msg.originating_ue_service_id is None:
            log.info("%s: AS messages are not forwarded to peers", msg.message_id)
            return msg_resp(msg, _REJECTED, FailureCause.NOT_AUTHORIZED)
        online = not self._delivery.is_unreachable(recipient)
        return await self._enqueue(msg, recipient, now, online=online, refuses=False)

    async def _to_as(self, msg: Msg, as_service_id: str, now: float) -> MsgResp:
        """Point-to-Application (digest §2.12): queue for the AS's targetUri."""
        registration = self._applications.get(as_service_id)
        if registration is None or registration.target_uri is None:
            # de-registered (or send-only) ASs are not message endpoints (§2.5)
            return msg_resp(msg, _FAILED, FailureCause.RECIPIENT_UNKNOWN)
        key = as_key(as_service_id)
        online = not self._delivery.is_unreachable(key)
        return await self._enqueue(msg, key, now, online=online, refuses=False)

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
        expires_at = expiry_of(msg, now, self._config)
        if expires_at <= now:
            return msg_resp(msg, _FAILED, FailureCause.MESSAGE_EXPIRED)
        store = msg.store_and_forward_flag and not refuses
        cause = admission_failure(
            msg, online=online, refuses=refuses, registered=registered
        )
        if cause is not None:
            return msg_resp(msg, _FAILED, cause)
        if self._quotas.storage_full(recipient, stored_size(msg)):
            return msg_resp(msg, _FAILED, FailureCause.SERVER_CONGESTION)
        priority = PriorityRank[str(msg.priority_type)] if msg.priority_type else 1
        item = QueuedItem(
            recipient=recipient,
            item=msg,
            priority=priority,
            expires_at=expires_at,
            store=store,
        )
        status = _ACCEPTED if online else DeliveryStatus.DELY_STORED
        originator = originator_key(msg)
        routes = []
        if msg.delivery_status_required and originator:
            routes.append(
                ReportRoute(
                    message_id=msg.message_id,
                    reporter=recipient,
                    originator=originator,
                    expires_at=expires_at + self._config.report_wait,
                )
            )
        key = (originator or "", msg.message_id)
        record = self._dedup.record_for(key, msg, status)
        if record is None:  # not deduplicated (a segment): two writes at once
            await asyncio.gather(
                self._delivery.accept(item, deliver_now=online),
                *(self._backend.put_report_route(route) for route in routes),
            )
            return msg_resp(msg, status)
        # one transaction: item, record and route (a duplicate revives no route)
        existing = await self._delivery.accept(
            item, deliver_now=online, dedup=record, now=now, routes=routes
        )
        if existing is not None:
            self._dedup.conflict(key, existing)
        return msg_resp(msg, status)

    # many recipients (one stored payload, one delivery state each: .fanout) -----------

    async def _to_group(self, msg: Msg, group_id: str, now: float) -> MsgResp:
        """Resolve a group and fan the message out to its members (§8.7.4).

        Each member gets its own copy with ``recipientUeServiceId`` set and
        ``recipientGroupServiceId`` kept, over its own path (stored when offline
        and store-and-forward was asked); reports come back per member.
        """
        group = await self._groups.get(group_id)
        if group is None:
            return msg_resp(msg, _FAILED, FailureCause.GROUP_NOT_FOUND)
        originator = msg.originator
        from_ue = msg.originating_ue_service_id is not None
        if from_ue and originator not in group.members:
            # UEs send only to their own groups; a registered AS may send to any
            return msg_resp(msg, _REJECTED, FailureCause.NOT_AUTHORIZED)
        members = group.members
        if not self._config.group_include_originator:
            members = [m for m in members if m != originator]
        await self._fanout.deliver(msg, members, now, f"group {group_id}")
        return msg_resp(msg, _ACCEPTED)

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
        policy = self._topic_policy
        if not await policy.may(topic, publisher, PUBLISH):
            return msg_resp(msg, _REJECTED, FailureCause.NOT_AUTHORIZED)
        readers = await policy.verdict(topic, SUBSCRIBE)  # checked per delivery too
        subscribers = [
            s
            for s in self._topics.subscribers(topic)
            if s not in exclude and readers(s)
        ]
        await self._fanout.deliver(msg, subscribers, now, f"topic {topic}")
        await self._topics.notify_observers(msg, exclude=originator, allowed=readers)
        return msg_resp(msg, _ACCEPTED)

    async def _to_area(self, msg: Msg, area_id: str, now: float) -> MsgResp:
        """Broadcast to every UE registered in a Broadcast Area (digest §2.14)."""
        members = await self._broadcast.members(area_id)
        if members is None:
            return msg_resp(msg, _FAILED, FailureCause.RECIPIENT_UNKNOWN)
        cause = self._broadcast.refusal(msg, area_id)
        if cause is not None:
            return msg_resp(msg, _REJECTED, cause)
        originator = msg.originator
        members = [m for m in members if m != originator]
        await self._fanout.deliver(msg, members, now, f"area {area_id}")
        return msg_resp(msg, _ACCEPTED)
