"""Registration procedures: ``REG``, ``DEREG``, ``BULKREG``, ``BULKDEREG``.

Specified in TS 23.554 §8.2.1 / §8.2.2 and digest §3.2.3 (registration), §3.3.3
(de-registration), §3.4.4 (bulk registration through a Gateway UE) and §3.5
(bulk de-registration). The state lives in
:class:`~msgin5g.service.registry.Registry`; this module holds the procedures,
their security rules and their answers:

* an unknown UE Service ID and a wrong credential are answered alike
  (``AUTHENTICATION_FAILED``, :func:`~msgin5g.service.answers.wire_auth_cause`);
  the throttled log line keeps the real reason;
* ``DEREG`` of a UE that is not registered answers ``SUCCESS`` and changes
  nothing (no credential check can be needed to change nothing, and the answer
  does not tell whether the ID is provisioned);
* a registered UE is de-registered only with its valid credential or from the
  address it registered from; a gateway acts for others only once it is
  authenticated and registered from the address the bulk request came from.

A (re-)registration wakes the UE's mailbox in the delivery engine; a
de-registration ends its topic subscriptions and fails the stored items that
were never to be stored (§8.3.6: store and forward exists for recipients that
are not registered, so the others wait for the next registration).
"""

import asyncio
import logging
from typing import Final

from msgin5g.errors import ServiceError
from msgin5g.logsafe import LogThrottle
from msgin5g.model.messages import (
    BulkDereg,
    BulkDeregResp,
    BulkReg,
    BulkRegResp,
    Dereg,
    DeregResp,
    DeregResult,
    Reg,
    RegResp,
    RegResult,
)
from msgin5g.model.registry import Contact
from msgin5g.service.answers import (
    bulk_reg_resp,
    dereg_failure,
    reg_failure,
    reg_result_failure,
    wire_auth_cause,
)
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.registry import Registry
from msgin5g.service.topics import TopicRegistry
from msgin5g.spec.causes import FailureCause, Result

__all__ = ["RegistrationOutcome", "Registrations"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)  # faults a flood can repeat (issue 10 item 11)


class RegistrationOutcome:
    """Result of a ``REG``: the response and whether a new context was created.

    A plain slotted class, not a dataclass: one is built per ``REG``, and a
    dataclass's generated ``__init__`` stays interpreted Python even when this
    module is compiled (docs/performance.md, "Compiled hot path").
    """

    __slots__ = ("created", "response")

    def __init__(self, response: RegResp, created: bool) -> None:
        self.response: Final = response
        self.created: Final = created

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RegistrationOutcome):
            return NotImplemented
        return self.response == other.response and self.created == other.created

    def __hash__(self) -> int:
        return hash((self.response, self.created))

    def __repr__(self) -> str:
        return (
            f"RegistrationOutcome(response={self.response!r}, created={self.created!r})"
        )


class Registrations:
    """The UE registration procedures over the registry and the delivery engine."""

    def __init__(
        self, registry: Registry, delivery: DeliveryEngine, topics: TopicRegistry
    ) -> None:
        self._registry = registry
        self._delivery = delivery
        self._topics = topics

    async def register(self, reg: Reg, source: Contact) -> RegistrationOutcome:
        """Handle ``REG`` (digest §3.2.3)."""
        cause = await self._registry.authenticate(
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
            wire = wire_auth_cause(cause)
            return RegistrationOutcome(reg_failure(reg.ue_service_id, wire), False)
        previous = self._registry.get(reg.ue_service_id)
        try:
            registration, created = await self._registry.register(reg, source)
        except ServiceError as exc:
            return RegistrationOutcome(reg_failure(reg.ue_service_id, exc.cause), False)
        log.debug("registered %s from %s", reg.ue_service_id, source)
        if (
            previous is not None
            and previous.gateway is None
            and previous.contact != registration.contact
        ):
            # a CON to the old address would retransmit for ~45 s first
            self._delivery.on_moved(reg.ue_service_id, previous.contact)
        self._delivery.on_registered(reg.ue_service_id)
        response = RegResp(
            ue_service_id=reg.ue_service_id, registration_result=Result.SUCCESS
        )
        return RegistrationOutcome(response, created)

    async def deregister(self, dereg: Dereg, source: Contact) -> DeregResp:
        """Handle ``DEREG`` (digest §3.3.3).

        Idempotent: a UE that is not registered is answered ``SUCCESS`` and
        nothing changes. A registered UE is de-registered when the request
        carries its valid credential or comes from the address it registered
        from. Stored messages survive (§8.3.6); only items that were never to be
        stored fail with ``RECIPIENT_DEREGISTERED``.
        """
        ue = dereg.ue_service_id
        registration = self._registry.get(ue)
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
            cause = await self._registry.authenticate(ue, dereg.ue_credential_info)
            if cause is not None:
                _throttled.log(
                    "dereg-refused",
                    logging.WARNING,
                    "DEREG of %s from %s refused: %s",
                    ue,
                    source,
                    cause,
                )
                return dereg_failure(ue, wire_auth_cause(cause))
        elif registration.source != source:
            _throttled.log(
                "dereg-refused",
                logging.WARNING,
                "DEREG of %s from %s refused: foreign source",
                ue,
                source,
            )
            return dereg_failure(ue, FailureCause.NOT_AUTHORIZED)
        await self.drop(ue)
        return DeregResp(ue_service_id=ue, deregistration_result=Result.SUCCESS)

    async def drop(self, ue: str) -> None:
        """End a registration; keep what store and forward keeps (§8.3.6)."""
        await self._registry.deregister(ue)
        await self._topics.unsubscribe(ue, [])
        for item in await self._delivery.forget(ue, keep_stored=True):
            await self._delivery.report_failure(
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
        cause = await self._registry.authenticate(gateway, bulk.ue_credential_info)
        if cause is not None:
            return wire_auth_cause(cause)
        refusal = self._registry.refuse_sender(gateway, source)
        return None if refusal is None else refusal.cause

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
                reg_result_failure(entry.ue_service_id, FailureCause.NOT_AUTHORIZED)
                for entry in bulk.reg_requests
            ]
            return bulk_reg_resp(refused), False
        self._delivery.on_uplink(gateway)
        outcomes = await asyncio.gather(
            *(self._register_entry(e, source, gateway) for e in bulk.reg_requests)
        )
        log.debug("bulk registration of %d UEs via %s", len(outcomes), gateway)
        created = any(new for _, new in outcomes)
        return bulk_reg_resp([result for result, _ in outcomes]), created

    async def _register_entry(
        self, entry: Reg, source: Contact, gateway: str
    ) -> tuple[RegResult, bool]:
        ue = entry.ue_service_id
        cause = await self._registry.authenticate(ue, entry.ue_credential_info)
        if cause is not None:
            log.info("bulk registration of %s via %s refused: %s", ue, gateway, cause)
            return reg_result_failure(ue, wire_auth_cause(cause)), False
        try:
            _, created = await self._registry.register(entry, source, gateway=gateway)
        except ServiceError as exc:
            return reg_result_failure(ue, exc.cause), False
        self._delivery.on_registered(ue)
        return RegResult(ue_service_id=ue, registration_result=Result.SUCCESS), created

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
                if self._registry.get(ue) is not None:
                    await self.drop(ue)
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
        registration = self._registry.get(entry.ue_service_id)
        if registration is None:
            return None  # nothing to change: idempotent success
        if entry.ue_credential_info is not None:
            cause = await self._registry.authenticate(
                entry.ue_service_id, entry.ue_credential_info
            )
            return None if cause is None else wire_auth_cause(cause)
        if registration.gateway == gateway:
            return None
        return FailureCause.NOT_AUTHORIZED
