"""Delivery status report procedures: ``IMDN``, ``AGGIMDN`` and reports from the APIs.

Specified in TS 23.554 §8.3.4 and digest §3.9.3 (a UE's ``IMDN``), §3.10
(``AGGIMDN``, several reports in one) and §2.0.4 (a report from an AS or a
Message Gateway through ``/deliver-report``).

A report is relayed only along a **report route**: the record
(messageId, reporter → originator) written when a message asking for
``deliveryStatusRequired`` was accepted. Taking the route consumes it, so a
report is relayed at most once per recipient and a report nobody asked for goes
nowhere. From a UE, reports from unregistered or spoofed senders and reports
without a route are acknowledged and ignored (digest §3.9.3 step 1) with a
throttled log line; from the APIs they are refused with an error.
"""

import logging

from msgin5g.errors import NotAuthorized, NotRegistered
from msgin5g.logsafe import LogThrottle
from msgin5g.model.aggregation import unbundle_reports
from msgin5g.model.application import as_key
from msgin5g.model.messages import AggImdn, Imdn
from msgin5g.model.registry import Contact
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.registry import Registry
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.base import Backend

__all__ = ["Reports"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)  # faults a flood can repeat (issue 10 item 11)


class Reports:
    """Relays delivery status reports to the originators that asked for them."""

    def __init__(
        self,
        backend: Backend,
        registry: Registry,
        applications: ApplicationRegistry,
        delivery: DeliveryEngine,
    ) -> None:
        self._backend = backend
        self._registry = registry
        self._applications = applications
        self._delivery = delivery

    async def report(self, imdn: Imdn, source: Contact) -> None:
        """Handle a client's ``IMDN`` (digest §3.9.3): relay it to the originator.

        Reports from unregistered or spoofed senders, and reports nobody asked for,
        are acknowledged and ignored (digest §3.9.3 step 1), with a log line.
        """
        reporter = imdn.originating_ue_service_id or ""
        refusal = self._registry.refuse_sender(
            reporter, source, "imdn-ignored", "IMDN for %s ignored", imdn.message_id
        )
        if refusal is not None:
            return
        self._delivery.on_uplink(reporter)
        route = await self._backend.take_report_route(imdn.message_id, reporter)
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
        await self._delivery.send_report(route.originator, imdn)

    async def report_aggregate(self, aggregate: AggImdn, source: Contact) -> None:
        """Handle ``AGGIMDN`` (digest §3.10): each report as its own ``IMDN``."""
        for report in unbundle_reports(aggregate):
            await self.report(report, source)

    async def report_from_api(self, imdn: Imdn, *, client: str | None = None) -> None:
        """A delivery status report from an AS or a gateway (digest §2.0.4).

        Relayed to the original sender like a UE's ``IMDN``.

        Raises:
            NotAuthorized / NotRegistered: the reporting AS may not report, or
                ``client`` does not serve the reporting UE (gateway rule).
            NotRegistered: no report is expected (``MESSAGE_NOT_FOUND``).
        """
        if imdn.originating_as_service_id is not None:
            self._applications.check_acting(imdn.originating_as_service_id, client)
            reporter = as_key(imdn.originating_as_service_id)
        else:
            reporter = imdn.originating_ue_service_id or ""
            if not self._applications.serves_ue(client, reporter):
                raise NotAuthorized(f"client {client} does not serve UE {reporter}")
        route = await self._backend.take_report_route(imdn.message_id, reporter)
        if route is None:
            raise NotRegistered(
                f"no report expected from {reporter} for {imdn.message_id}",
                cause=FailureCause.MESSAGE_NOT_FOUND,
            )
        await self._delivery.send_report(route.originator, imdn)
