"""Read-mostly queries and the one repair an operator makes: the console's service.

What: :class:`OperatorView` answers what the operator admin API
(``/admin/v1``, :mod:`msgin5g.transports.rest.admin_api`) and the web console
show, from the state the service already keeps — no second copy:

* :meth:`summary`: registered UEs by kind (direct, behind a Gateway UE), ASs,
  stored items and bytes (the storage-quota counters), delivery counters;
* :meth:`search`: registered UEs whose UE Service ID contains a text, with
  contact, queue depth (the quota counters: no storage read) and last seen;
* :meth:`ue`: one UE in detail with its stored items (one storage read);
* :meth:`discard`: removes one stored ``MSG`` through the delivery engine so
  the quota counters, the in-memory mailbox and the report route stay right;
  an originator that asked for a report gets ``REPT_DELY_FAILED`` with
  ``NOT_AUTHORIZED`` (the operator withdrew the message) — nothing
  acknowledged disappears silently;
* :meth:`groups`, :meth:`areas`, :meth:`gateways`, :meth:`failures`.

Cost: :meth:`search` and :meth:`gateways` walk the routing table (O(registered
UEs), ~0.1 s at a million UEs); they stop at ``limit`` matches. Results are
plain dicts with the wire-style camelCase names the admin API answers.
"""

from typing import Any

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem
from msgin5g.model.registry import UERegistration
from msgin5g.service.activity import FailureRecord
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.service.broadcast import BroadcastRegistry
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.groups import GroupRegistry
from msgin5g.service.messaging import MessagingService
from msgin5g.service.quotas import Quotas
from msgin5g.service.registry import Registry
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.base import Backend, stored_size

__all__ = ["MAX_LIMIT", "OperatorView"]

MAX_LIMIT = 1000
"""Upper bound of every ``limit`` (a page, never the whole table)."""

Json = dict[str, Any]


class OperatorView:
    """The operator's window on one running service.

    Args:
        backend: the service's storage.
        registry: the UE routing table.
        delivery: the delivery engine (counters, activity, discard).
        quotas: the storage-usage counters.
        groups: hosted VAL groups.
        broadcast: Broadcast Areas.
        applications: the registered Application Servers.
    """

    def __init__(
        self,
        *,
        backend: Backend,
        registry: Registry,
        delivery: DeliveryEngine,
        quotas: Quotas,
        groups: GroupRegistry,
        broadcast: BroadcastRegistry,
        applications: ApplicationRegistry,
    ) -> None:
        self._backend = backend
        self._registry = registry
        self._delivery = delivery
        self._quotas = quotas
        self._groups = groups
        self._broadcast = broadcast
        self._applications = applications

    @classmethod
    def of(cls, service: MessagingService) -> "OperatorView":
        """The view of a running :class:`MessagingService`."""
        return cls(
            backend=service.backend,
            registry=service.registry,
            delivery=service.delivery,
            quotas=service.quotas,
            groups=service.groups,
            broadcast=service.broadcast,
            applications=service.applications,
        )

    # counts ---------------------------------------------------------------------

    def summary(self) -> Json:
        """Live counts: UEs by kind, stored items, delivery outcomes."""
        direct = behind_gateway = 0
        for registration in self._registry.registrations():
            if registration.gateway is None:
                direct += 1
            else:
                behind_gateway += 1
        delivery = self._delivery
        return {
            "registeredUes": {"direct": direct, "gateway": behind_gateway},
            "registeredAses": len(self._applications),
            "storedMessages": self._quotas.total_items(),
            "storedBytes": self._quotas.total_bytes,
            "delivered": delivery.delivered,
            "failed": delivery.failed,
            "expired": delivery.expired,
            "failuresSeen": delivery.activity.failures_total,
        }

    # UEs ------------------------------------------------------------------------

    def search(self, text: str = "", limit: int = 50) -> list[Json]:
        """Registered UEs whose UE Service ID contains ``text``, sorted by ID.

        An exact ID is answered from the routing table at once (or, for a UE
        that is not registered but has stored items, from the quota
        counters); otherwise the table is walked until ``limit`` matches are
        found.
        """
        limit = _bounded(limit)
        exact = self._registry.get(text) if text else None
        if exact is not None:
            return [self._row(exact)]
        if text and self._quotas.usage(text)[0]:  # not registered, items wait
            return [self._unregistered(text)]
        found: list[UERegistration] = []
        for registration in self._registry.registrations():
            if text in registration.ue_service_id:
                found.append(registration)
                if len(found) >= limit:
                    break
        found.sort(key=lambda r: r.ue_service_id)
        return [self._row(r) for r in found]

    async def ue(self, ue_service_id: str, limit: int = 100) -> Json | None:
        """One UE: its registration (if any) and its stored items; None if neither."""
        registration = self._registry.get(ue_service_id)
        items = await self._backend.pending_for(ue_service_id, limit=_bounded(limit))
        if registration is None and not items:
            return None
        row = (
            self._row(registration)
            if registration is not None
            else self._unregistered(ue_service_id)
        )
        row["stored"] = [_item(i) for i in items]
        row["failures"] = [
            _failure(f)
            for f in self._delivery.activity.recent(20, recipient=ue_service_id)
        ]
        return row

    async def discard(self, ue_service_id: str, message_id: str) -> bool:
        """Remove a stored ``MSG`` for ``ue_service_id``; False if none is stored.

        Goes through the delivery engine: the quota counters drop, a queued
        copy leaves the mailbox, and the originator's report (if it asked for
        one) says ``NOT_AUTHORIZED``.
        """
        stored = await self._backend.find(ue_service_id, message_id)
        if stored is None or not isinstance(stored.item, Msg):
            return False
        await self._backend.remove(stored.seq)
        self._delivery.discarded(stored)
        await self._delivery.report_failure(stored, FailureCause.NOT_AUTHORIZED)
        return True

    def _row(self, registration: UERegistration) -> Json:
        ue = registration.ue_service_id
        count, size = self._quotas.usage(ue)
        contact = registration.contact
        return {
            "ueServiceId": ue,
            "registered": True,
            "registeredAt": registration.registered_at,
            "contact": f"{contact.host}:{contact.port}/{'/'.join(contact.path)}",
            "gateway": registration.gateway,
            "cellId": registration.cell_id,
            "trackingAreaId": registration.tracking_area_id,
            "queueDepth": count,
            "queueBytes": size,
            "unreachable": self._delivery.is_unreachable(ue),
            "lastSeen": self._delivery.activity.last_seen.get(ue),
        }

    def _unregistered(self, ue_service_id: str) -> Json:
        count, size = self._quotas.usage(ue_service_id)
        return {
            "ueServiceId": ue_service_id,
            "registered": False,
            "registeredAt": None,
            "contact": None,
            "gateway": None,
            "cellId": None,
            "trackingAreaId": None,
            "queueDepth": count,
            "queueBytes": size,
            "unreachable": False,
            "lastSeen": self._delivery.activity.last_seen.get(ue_service_id),
        }

    # groups, areas, gateways, failures -------------------------------------------

    async def groups(self) -> list[Json]:
        """The hosted VAL groups (empty when an external SEAL server is used)."""
        documents = await self._groups.documents()
        return [
            {
                "groupId": d.group_id,
                "description": d.description,
                "members": [t.val_user_id or t.val_ue_id for t in d.member_targets],
                "owner": d.owner,
            }
            for d in sorted(documents, key=lambda d: d.group_id)
        ]

    async def areas(self) -> list[Json]:
        """Broadcast Areas with how many UEs a broadcast would reach now."""
        rows = []
        for area in await self._broadcast.all():
            members = await self._broadcast.members(area.area_id)
            rows.append(
                {
                    "areaId": area.area_id,
                    "cells": area.cells,
                    "trackingAreas": area.tracking_areas,
                    "ues": area.ues,
                    "ueMaySend": area.ue_may_send,
                    "allowedAs": area.allowed_as,
                    "reach": len(members or ()),
                }
            )
        return rows

    def gateways(self, limit: int = 100) -> list[Json]:
        """Gateway UEs with the number of UEs registered through each."""
        behind: dict[str, int] = {}
        for registration in self._registry.registrations():
            if registration.gateway is not None:
                behind[registration.gateway] = behind.get(registration.gateway, 0) + 1
        rows = []
        for gateway in sorted(behind)[: _bounded(limit)]:
            own = self._registry.get(gateway)
            rows.append(
                {
                    "gatewayUeServiceId": gateway,
                    "registered": own is not None,
                    "ues": behind[gateway],
                    "contact": None
                    if own is None
                    else f"{own.contact.host}:{own.contact.port}",
                    "unreachable": self._delivery.is_unreachable(gateway),
                    "lastSeen": self._delivery.activity.last_seen.get(gateway),
                }
            )
        return rows

    def failures(self, limit: int = 100, recipient: str | None = None) -> list[Json]:
        """The most recent delivery failures, newest first."""
        return [
            _failure(f)
            for f in self._delivery.activity.recent(
                _bounded(limit), recipient=recipient
            )
        ]


def _bounded(limit: int) -> int:
    return max(1, min(int(limit), MAX_LIMIT))


def _item(item: QueuedItem) -> Json:
    message = item.item
    return {
        "seq": item.seq,
        "messageId": message.message_id,
        "type": "MSG" if isinstance(message, Msg) else "IMDN",
        "originator": message.originator,
        "priority": item.priority,
        "expiresAt": item.expires_at,
        "storeAndForward": item.store,
        "size": stored_size(message),
    }


def _failure(record: FailureRecord) -> Json:
    return {
        "at": record.at,
        "recipient": record.recipient,
        "originator": record.originator,
        "messageId": record.message_id,
        "type": record.kind,
        "cause": record.cause,
    }
