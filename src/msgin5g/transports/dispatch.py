"""One dispatch table for the uplink Message Types, shared by the UE transports.

The CoAP transport (:mod:`msgin5g.transports.coap.server`) and the MQTT
transport (:mod:`msgin5g.transports.mqtt.server`) run the same service procedure
for the same decoded uplink and answer with the same code: 2.01 for a new
registration context (``REG``, ``BULK_REG``), else 2.04, with the procedure's
response message or no body. :data:`PROCEDURES` maps each uplink class to a
:data:`Procedure` that returns that outcome as ``(code, body)``; each transport
renders it on its own wire (a piggybacked CoAP response; a PUBLISH with the code
in a user property).

Layering: this module sits in ``msgin5g.transports`` but in neither
``transports.coap`` nor ``transports.rest`` (which must stay independent), and
uses only the service and the CoAP code numbers.
"""

from collections.abc import Awaitable, Callable
from operator import attrgetter
from typing import Any

import msgspec

from msgin5g.coap.numbers import Code
from msgin5g.model.messages import (
    AggImdn,
    AggMsg,
    BulkDereg,
    BulkReg,
    Dereg,
    Imdn,
    Msg,
    MsgUpd,
    Reg,
    SegConfir,
    SegRec,
    TopicSub,
    TopicUnsub,
)
from msgin5g.model.registry import Contact
from msgin5g.service.messaging import MessagingService

__all__ = ["PROCEDURES", "TAGS", "Outcome", "Procedure"]

Outcome = tuple[Code, msgspec.Struct | None]
"""(success code, response message or ``None`` for an empty answer)."""

Procedure = Callable[[MessagingService, Any, Contact], Awaitable[Outcome]]
"""Runs one service procedure for a decoded uplink from ``source``."""


def _answering(procedure: str) -> Procedure:
    """A procedure whose response message goes back with 2.04."""
    get = attrgetter(procedure)

    async def run(service: MessagingService, uplink: Any, source: Contact) -> Outcome:
        response = await get(service)(uplink, source)
        return Code.CHANGED, response

    return run


def _acknowledging(procedure: str) -> Procedure:
    """A procedure without response message (an empty 2.04)."""
    get = attrgetter(procedure)

    async def run(service: MessagingService, uplink: Any, source: Contact) -> Outcome:
        await get(service)(uplink, source)
        return Code.CHANGED, None

    return run


async def _on_reg(service: MessagingService, uplink: Reg, source: Contact) -> Outcome:
    outcome = await service.register(uplink, source)
    return (Code.CREATED if outcome.created else Code.CHANGED), outcome.response


async def _on_bulk_reg(
    service: MessagingService, uplink: BulkReg, source: Contact
) -> Outcome:
    response, created = await service.bulk_register(uplink, source)
    return (Code.CREATED if created else Code.CHANGED), response


PROCEDURES: dict[type, Procedure] = {
    Msg: _answering("submit"),
    Imdn: _acknowledging("report"),
    Reg: _on_reg,
    Dereg: _answering("deregister"),
    BulkReg: _on_bulk_reg,
    BulkDereg: _answering("bulk_deregister"),
    AggMsg: _answering("submit_aggregate"),
    AggImdn: _acknowledging("report_aggregate"),
    SegRec: _acknowledging("segment_control"),
    SegConfir: _acknowledging("segment_control"),
    TopicSub: _answering("subscribe"),
    TopicUnsub: _answering("unsubscribe"),
    MsgUpd: _answering("update_stored"),
}
"""The dispatch table: the decoded class of each uplink Message Type → its
procedure (named after the :class:`MessagingService` method it runs)."""

TAGS: dict[type, str] = {
    kind: str(kind.__struct_config__.tag)  # type: ignore[attr-defined]
    for kind in PROCEDURES
}
"""The Message Type of each uplink class (the metrics' ``type`` label)."""
