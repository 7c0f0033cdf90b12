"""Fan-out of one message to many recipients (group, topic, broadcast area).

TS 23.554 §8.7.4 (group), §8.8 (topics), digest §2.14 (broadcast): every member
gets its own copy over its own path, stored when offline if the originator asked
for store and forward, with per-member delivery status reports.

Efficiency (issue #4): the payload is stored **once**. A fan-out is one durable
write (:meth:`~msgin5g.storage.base.MessageQueue.enqueue_fanout`): the message
template without a recipient, one small row per member (recipient, priority,
expiry, store flag: the per-member delivery state) and the report routes of the
members. Member copies in memory share the payload object; each one is a
``Msg`` whose ``recipientUeServiceId`` (or ``recipientAsServiceId``) names the
member, so the delivery engine, the downlink aggregation and MSGUPD treat them
like any other item. The originator is acknowledged after that one write.

The admission rules per member are those of a point-to-point message
(:func:`admission_failure`): unknown member → ``RECIPIENT_UNKNOWN``; member
offline and no store and forward → ``RECIPIENT_NOT_REGISTERED`` /
``RECIPIENT_NOT_REACHABLE`` / ``STORE_AND_FORWARD_NOT_ALLOWED``. A member that
fails is reported to the originator (``REPT_DELY_FAILED`` with the cause) when
it asked for delivery status; reports queued together for a UE originator reach
it as one ``AGGIMDN`` (downlink aggregation). A member whose storage quota is
used up (``[limits]``, :mod:`msgin5g.service.quotas`) fails alone with
``SERVER_CONGESTION``; the others are served.

Duplicate detection (:mod:`msgin5g.service.dedup`): the fan-out's
(originator, messageId) record is written in the same transaction as the
payload and the member rows. If storage already holds one (a retry after a
crash, or of a message the memory cache forgot), nothing is stored, nobody
gets a second copy and no failure is reported twice.
"""

import logging
from datetime import datetime

from msgin5g.config import DeliveryConfig
from msgin5g.model.application import as_key, as_of_key
from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute, fanout_template, member_copy
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.service.dedup import Deduplicator
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.registry import Registry
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import DeliveryStatus, PriorityRank
from msgin5g.storage.base import stored_size

__all__ = ["FanOut", "admission_failure", "expiry_of", "originator_key"]

log = logging.getLogger(__name__)


def expiry_of(msg: Msg, now: float, config: DeliveryConfig) -> float:
    """When an accepted ``msg`` expires: its own expiration capped by max_ttl."""
    limit = now + config.max_ttl
    params = msg.store_and_forward_params
    when: datetime | None = params.message_expiration_time if params else None
    if when is None:
        return now + config.default_ttl
    return min(when.timestamp(), limit)


def admission_failure(
    msg: Msg, *, online: bool, refuses: bool, registered: bool
) -> FailureCause | None:
    """Why ``msg`` cannot be accepted for a recipient in this state (None: it can)."""
    if online or (msg.store_and_forward_flag and not refuses):
        return None
    if refuses:
        return FailureCause.STORE_AND_FORWARD_NOT_ALLOWED
    if not registered:
        return FailureCause.RECIPIENT_NOT_REGISTERED
    return FailureCause.RECIPIENT_NOT_REACHABLE


def originator_key(msg: Msg) -> str | None:
    """The mailbox key reports for ``msg`` go to (UE Service ID or ``as/<id>``)."""
    if msg.originating_as_service_id is not None:
        return as_key(msg.originating_as_service_id)
    return msg.originating_ue_service_id


class FanOut:
    """Accepts one message for many recipients in one durable write."""

    def __init__(
        self,
        registry: Registry,
        applications: ApplicationRegistry,
        delivery: DeliveryEngine,
        config: DeliveryConfig,
        dedup: Deduplicator | None = None,
    ) -> None:
        self._registry = registry
        self._applications = applications
        self._delivery = delivery
        self._config = config
        self._dedup = dedup
        self.fanouts = 0
        self.copies = 0

    async def deliver(
        self, msg: Msg, recipients: list[str], now: float, label: str
    ) -> int:
        """Accept ``msg`` for every recipient key; return how many were accepted.

        Recipients are UE Service IDs or AS keys; duplicates are ignored.
        """
        expires_at = expiry_of(msg, now, self._config)
        priority = PriorityRank[str(msg.priority_type)] if msg.priority_type else 1
        template = fanout_template(msg)
        reports_to = originator_key(msg) if msg.delivery_status_required else None
        quotas = self._delivery.quotas
        size = stored_size(template)
        planned = 0
        items: list[QueuedItem] = []
        online: list[bool] = []
        routes: list[ReportRoute] = []
        failures: list[tuple[str, FailureCause]] = []
        for recipient in dict.fromkeys(recipients):
            if expires_at <= now:
                failures.append((recipient, FailureCause.MESSAGE_EXPIRED))
                continue
            state = await self._state(recipient)
            if state is None:
                failures.append((recipient, FailureCause.RECIPIENT_UNKNOWN))
                continue
            is_online, refuses, registered = state
            cause = admission_failure(
                msg, online=is_online, refuses=refuses, registered=registered
            )
            if cause is not None:
                failures.append((recipient, cause))
                continue
            if quotas.storage_full(recipient, size, planned):
                failures.append((recipient, FailureCause.SERVER_CONGESTION))
                continue
            planned += size
            items.append(
                QueuedItem(
                    recipient=recipient,
                    item=member_copy(template, recipient),
                    priority=priority,
                    expires_at=expires_at,
                    store=msg.store_and_forward_flag and not refuses,
                )
            )
            online.append(is_online)
            if reports_to:
                routes.append(
                    ReportRoute(
                        message_id=msg.message_id,
                        reporter=recipient,
                        originator=reports_to,
                        expires_at=expires_at + self._config.report_wait,
                    )
                )
        if items:
            key = (originator_key(msg) or "", msg.message_id)
            record = (
                self._dedup.record_for(key, msg, DeliveryStatus.DELY_ACCEPTED)
                if self._dedup is not None
                else None
            )
            existing = await self._delivery.accept_fanout(
                template, items, online, routes, dedup=record, now=now
            )
            if existing is not None and self._dedup is not None:
                log.info("%s: message %s is a duplicate", label, msg.message_id)
                self._dedup.conflict(key, existing)
                return 0
        self.fanouts += 1
        self.copies += len(items)
        log.info(
            "%s: message %s accepted for %d of %d recipients (%d now)",
            label,
            msg.message_id,
            len(items),
            len(items) + len(failures),
            sum(online),
        )
        for recipient, cause in failures:
            log.info("%s: %s not delivered (%s)", label, recipient, cause.value)
            failed = QueuedItem(
                recipient=recipient,
                item=member_copy(template, recipient),
                priority=priority,
                expires_at=expires_at,
                store=False,
            )
            await self._delivery.report_failure(failed, cause)
        return len(items)

    async def _state(self, recipient: str) -> tuple[bool, bool, bool] | None:
        """(online, refuses store-and-forward, registered), or None if unknown."""
        as_id = as_of_key(recipient)
        if as_id is not None:
            application = self._applications.get(as_id)
            if application is None or application.target_uri is None:
                return None
            return not self._delivery.is_unreachable(recipient), False, True
        registration = self._registry.get(recipient)
        if registration is None and self._delivery.via_gateway(recipient):
            return not self._delivery.is_unreachable(recipient), False, True
        if registration is None:
            if not await self._registry.is_known(recipient):
                return None
            return False, False, False
        online = not self._delivery.is_unreachable(recipient)
        return online, registration.refuses_store_and_forward, True
