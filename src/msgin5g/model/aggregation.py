"""Aggregated messages and reports (TS 23.554 §8.4; digest §3.10, §3.11).

Pure conversions shared by server and client:

* :func:`unbundle` turns an ``AGGMSG`` into the individual ``MSG`` objects it
  stands for (common originator and target, each item's own Message ID,
  Application ID, report request, payload, priority and store-and-forward);
* :func:`bundle` builds an ``AGGMSG`` from messages that share originator and
  target (it refuses ``HIGH`` priority items and segments, digest §3.10.1);
* :func:`unbundle_reports` / :func:`bundle_reports` do the same for ``AGGIMDN``.
"""

import uuid
from typing import Any

from msgin5g.errors import InvalidRequest
from msgin5g.model.messages import (
    AggImdn,
    AggMsg,
    AggregatedItem,
    Imdn,
    Msg,
    ReportItem,
)
from msgin5g.spec.delivery import PriorityType

__all__ = ["bundle", "bundle_reports", "unbundle", "unbundle_reports"]

_TARGET = (
    "recipient_ue_service_id",
    "recipient_as_service_id",
    "recipient_group_service_id",
    "recipient_broadcast_area_id",
    "messaging_topic",
)
_ORIGIN = ("originating_ue_service_id", "originating_as_service_id")


def _common(message: Msg | AggMsg) -> dict[str, Any]:
    return {name: getattr(message, name) for name in _TARGET + _ORIGIN}


def unbundle(aggregate: AggMsg) -> list[Msg]:
    """The individual messages an ``AGGMSG`` carries, in order."""
    common = _common(aggregate)
    return [
        Msg(
            message_id=item.message_id,
            application_id=item.application_id,
            delivery_status_required=item.delivery_status_required,
            payload=item.payload,
            priority_type=item.priority_type,
            store_and_forward_flag=item.store_and_forward_flag,
            store_and_forward_params=item.store_and_forward_params,
            **common,
        )
        for item in aggregate.aggregated_messages
    ]


def bundle(messages: list[Msg], *, message_id: str | None = None) -> AggMsg:
    """One ``AGGMSG`` for messages with the same originator and target.

    Raises:
        InvalidRequest: empty list, different originators/targets, a ``HIGH``
            priority item or a segment (those are never aggregated).
    """
    if not messages:
        raise InvalidRequest("nothing to aggregate")
    common = _common(messages[0])
    items = []
    for msg in messages:
        if _common(msg) != common:
            raise InvalidRequest("aggregated messages must share originator and target")
        if msg.priority_type == PriorityType.HIGH:
            raise InvalidRequest("HIGH priority messages are not aggregated")
        if msg.segmentation_set_id is not None:
            raise InvalidRequest("segments are not aggregated")
        items.append(
            AggregatedItem(
                message_id=msg.message_id,
                application_id=msg.application_id,
                delivery_status_required=msg.delivery_status_required,
                payload=msg.payload,
                priority_type=msg.priority_type,
                store_and_forward_flag=msg.store_and_forward_flag,
                store_and_forward_params=msg.store_and_forward_params,
            )
        )
    return AggMsg(
        message_id=message_id or str(uuid.uuid4()),
        aggregated_messages=items,
        **common,
    )


def unbundle_reports(aggregate: AggImdn) -> list[Imdn]:
    """The individual reports an ``AGGIMDN`` carries, in order.

    An item's own reporter (``originating*ServiceId`` on the item) wins over the
    aggregate's.
    """
    reports = []
    for report in aggregate.delivery_reports:
        own = report.originating_ue_service_id or report.originating_as_service_id
        reports.append(
            Imdn(
                message_id=report.message_id,
                delivery_status=report.delivery_status,
                failure_cause=report.failure_cause,
                originating_ue_service_id=(
                    report.originating_ue_service_id
                    if own
                    else aggregate.originating_ue_service_id
                ),
                originating_as_service_id=(
                    report.originating_as_service_id
                    if own
                    else aggregate.originating_as_service_id
                ),
                recipient_ue_service_id=aggregate.recipient_ue_service_id,
                recipient_as_service_id=aggregate.recipient_as_service_id,
            )
        )
    return reports


def bundle_reports(reports: list[Imdn]) -> AggImdn:
    """One ``AGGIMDN`` for reports to the same recipient.

    The aggregate's reporter is the first report's; items from another
    reporter (per-member reports of a fan-out) carry their own.

    Raises:
        InvalidRequest: empty, or recipients differ.
    """
    if not reports:
        raise InvalidRequest("nothing to aggregate")
    first = reports[0]
    if any(r.recipient != first.recipient for r in reports):
        raise InvalidRequest("aggregated reports must share their recipient")
    return AggImdn(
        delivery_reports=[
            ReportItem(
                message_id=r.message_id,
                delivery_status=r.delivery_status,
                failure_cause=r.failure_cause,
                originating_ue_service_id=(
                    r.originating_ue_service_id
                    if r.originator != first.originator
                    else None
                ),
                originating_as_service_id=(
                    r.originating_as_service_id
                    if r.originator != first.originator
                    else None
                ),
            )
            for r in reports
        ],
        originating_ue_service_id=first.originating_ue_service_id,
        originating_as_service_id=first.originating_as_service_id,
        recipient_ue_service_id=first.recipient_ue_service_id,
        recipient_as_service_id=first.recipient_as_service_id,
    )
