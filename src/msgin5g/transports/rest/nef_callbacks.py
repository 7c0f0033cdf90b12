"""Notifications from the NEF (TS 29.122 callbacks; docs/nef.md).

* ``POST /nef-callbacks/v1/monitoring``: a ``MonitoringNotification``
  (TS29122_MonitoringEvent.yaml: ``subscription`` Link required,
  ``monitoringEventReports`` array of ``MonitoringEventReport`` with at least
  one item, each with ``monitoringType``; ``cancelInd`` boolean) → ``204``;
* ``POST /nef-callbacks/v1/triggering``: a
  ``DeviceTriggeringDeliveryReportNotification`` (TS29122_DeviceTriggering.yaml:
  ``transaction`` Link and ``result`` DeliveryResult, both required) → ``204``.

A body that does not match the schema is a ``400`` naming the member (the
shared validation handler of :mod:`.asgi`); a ``subscription``/``transaction``
that this server did not create is a ``404`` (``RESOURCE_NOT_FOUND``): a
notification can only wake the UE of a subscription the server made. Members
the server does not read are accepted and ignored (the YAML has many).
"""

import logging
from typing import Annotated

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from msgin5g.service.nef import MonitoringReport, Reachability
from msgin5g.transports.rest.nef_client import CALLBACK_PREFIX
from msgin5g.transports.rest.problems import problem

__all__ = ["MonitoringNotification", "TriggeringReport", "router"]

log = logging.getLogger(__name__)


class _Nef(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class MonitoringEventReport(_Nef):
    """The members of ``MonitoringEventReport`` the server reads."""

    monitoring_type: Annotated[str, Field(alias="monitoringType", min_length=1)]
    external_id: Annotated[str | None, Field(alias="externalId")] = None
    msisdn: str | None = None
    reachability_type: Annotated[str | None, Field(alias="reachabilityType")] = None
    event_time: Annotated[str | None, Field(alias="eventTime")] = None


class MonitoringNotification(_Nef):
    """``MonitoringNotification`` (TS 29.122 §5.3.2.1.3)."""

    subscription: Annotated[str, Field(min_length=1)]
    monitoring_event_reports: Annotated[
        list[MonitoringEventReport] | None,
        Field(alias="monitoringEventReports", min_length=1),
    ] = None
    cancel_ind: Annotated[bool | None, Field(alias="cancelInd")] = None


class TriggeringReport(_Nef):
    """``DeviceTriggeringDeliveryReportNotification`` (TS 29.122 §5.7)."""

    transaction: Annotated[str, Field(min_length=1)]
    result: Annotated[str, Field(min_length=1)]


def _unknown(what: str, uri: str) -> Response:
    log.info("NEF notification for unknown %s %s", what, uri)
    return problem(404, "RESOURCE_NOT_FOUND", f"no such {what} of this server")


def router(nef: Reachability) -> APIRouter:
    """The callback routes, bound to the server's :class:`Reachability`."""
    api = APIRouter(prefix=CALLBACK_PREFIX, include_in_schema=False)

    @api.post("/monitoring", response_model=None)
    async def monitoring(body: MonitoringNotification) -> Response:
        if not nef.is_subscription(body.subscription):
            return _unknown("subscription", body.subscription)
        reports = [
            MonitoringReport(r.monitoring_type, r.external_id, r.msisdn)
            for r in body.monitoring_event_reports or ()
        ]
        nef.notified(body.subscription, reports, bool(body.cancel_ind))
        return Response(status_code=204)

    @api.post("/triggering", response_model=None)
    async def triggering(body: TriggeringReport) -> Response:
        if not nef.is_transaction(body.transaction):
            return _unknown("transaction", body.transaction)
        nef.trigger_reported(body.transaction, body.result)
        return Response(status_code=204)

    return api
