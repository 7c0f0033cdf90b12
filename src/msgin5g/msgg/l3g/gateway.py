"""The Legacy 3GPP Message Gateway process (``msgin5g l3g``; embeddable).

Flows (digest §2.10.2, §2.10.4, §2.0.4):

* **MT** — ``POST deliver-message`` for a UE it represents: the payload (UTF-8
  text; anything else is refused ``400``) is stored in the outbox as one SMS
  and answered ``204``; :mod:`.esme` submits it (GSM 7-bit when every character
  is in the GSM 03.38 alphabet, else UCS-2; concatenated with a UDH when long),
  with ``registered_delivery = 1`` when ``delivStReqInd`` asked for a report;
* **receipt** — ``stat:DELIVRD`` becomes ``REPT_DELY_SUCCESS``, ``UNDELIV``,
  ``EXPIRED``, ``REJECTD``, ``DELETED``, ``UNKNOWN`` ``REPT_DELY_FAILED``
  (``failureCause`` ``RECIPIENT_NOT_REACHABLE`` / ``MESSAGE_EXPIRED``), sent
  with ``POST deliver-report`` for the Legacy UE; an SMSC refusal of the
  submit_sm itself also becomes a failure report;
* **MO** — a deliver_sm from a mapped MSISDN to one of the gateway's numbers
  becomes ``POST deliver-ue-message`` from that UE to the number's target (or,
  for ``reply`` numbers, to the last originator that wrote to that MSISDN);
  an SMS from an unmapped MSISDN or to an unknown number is logged and dropped
  (the SMSC still gets its deliver_sm_resp: it was received).

Report routes (SMSC message id → message) and reply routes (MSISDN → last
originator) are kept in the outbox file, so they survive a restart (7 days).
"""

import asyncio
import base64
import binascii
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiosmpplib import ESME

from msgin5g.codec.openapi_json import DeliveryStatusReport
from msgin5g.errors import InvalidRequest, NotRegistered
from msgin5g.msgg.api import GatewayMessageDelivery
from msgin5g.msgg.base import (
    GatewayConfig,
    GatewayProcess,
    GatewayRuntime,
    split_hostport,
)
from msgin5g.msgg.l3g.directory import Directory
from msgin5g.msgg.l3g.esme import SMS, SmppEvents, SmsQueue, make_esme
from msgin5g.spec.causes import FailureCause

__all__ = ["L3GConfig", "LegacyGateway"]

log = logging.getLogger(__name__)

_ROUTE_TTL = 7 * 86_400.0
_MAX_TEXT = 10 * 153  # ten concatenated GSM 7-bit parts
_FAILED = {
    "UNDELIV": FailureCause.RECIPIENT_NOT_REACHABLE,
    "EXPIRED": FailureCause.MESSAGE_EXPIRED,
    "REJECTD": FailureCause.RECIPIENT_NOT_REACHABLE,
    "DELETED": FailureCause.RECIPIENT_NOT_REACHABLE,
    "UNKNOWN": FailureCause.RECIPIENT_NOT_REACHABLE,
}


@dataclass
class L3GConfig:
    """``msgin5g l3g`` settings."""

    gateway: GatewayConfig
    smsc: str = "127.0.0.1:2775"
    system_id: str = "msgin5g"
    password: str = ""
    system_type: str = ""
    source: str = "5000"
    window: int = 10
    enquire_link: float = 30.0
    directory: Directory = field(default_factory=Directory)


class LegacyGateway(GatewayProcess):
    """One L3G: MSGG_L3GDelivery server, SMPP ESME, server registration."""

    def __init__(self, config: L3GConfig) -> None:
        self.config = config
        self.directory = config.directory
        if config.source not in self.directory.numbers:
            self.directory.numbers[config.source] = None
        self.runtime = GatewayRuntime(
            config.gateway, self, self.directory.ue_service_ids
        )
        self.queue: SmsQueue | None = None
        self.events: SmppEvents | None = None
        self.esme: ESME | None = None

    # lifecycle -------------------------------------------------------------------

    async def _open(self, stack: AsyncExitStack) -> None:
        """Bind to the SMSC (reconnecting in the background)."""
        outbox = self.runtime.box
        outbox.purge()
        self.queue = SmsQueue(outbox, window=self.config.window)
        self.events = SmppEvents(self.queue, outbox, self)
        host, port = split_hostport(self.config.smsc)
        self.esme = esme = make_esme(
            host,
            port,
            system_id=self.config.system_id,
            password=self.config.password,
            system_type=self.config.system_type,
            queue=self.queue,
            hook=self.events,
            enquire_link_interval=self.config.enquire_link,
        )
        task = asyncio.create_task(esme.start(), name="esme")
        stack.push_async_callback(_stop_esme, esme, task)

    def _queue(self) -> SmsQueue:
        if self.queue is None:
            raise RuntimeError("gateway not started")
        return self.queue

    # MSGG_L3GDelivery (GatewayHandler) ---------------------------------------------

    async def deliver(self, body: GatewayMessageDelivery) -> None:
        """Store an SMS for a Legacy UE (see the module docstring)."""
        if body.dest_addr.addr_type != "UE":
            raise InvalidRequest("destAddr.addrType must be UE")
        ue = body.dest_addr.addr
        msisdn = self.directory.msisdn_of(ue)
        if msisdn is None:
            raise NotRegistered(
                f"{ue} is not a UE of this gateway",
                cause=FailureCause.RECIPIENT_UNKNOWN,
            )
        text = _text(body.payload)
        outbox = self.runtime.box
        queue = self._queue()
        originator = body.ori_addr.wire()
        outbox.put(
            SMS,
            {
                "text": text,
                "source": self.config.source,
                "msisdn": msisdn,
                "report": bool(body.deliv_st_req_ind),
                "msgId": body.msg_id,
                "ue": ue,
                "ori": originator,
            },
        )
        outbox.remember(f"reply:{msisdn}", originator, _ROUTE_TTL)
        queue.wake()

    async def report(self, body: DeliveryStatusReport) -> None:
        """SMS has no place for an MSGin5G report: it is logged."""
        log.info(
            "report for %s's message %s: %s %s",
            body.dest_addr.addr,
            body.msg_id,
            body.deliv_st,
            body.failure_cause or "",
        )

    # SMPP events (SmsSink) ---------------------------------------------------------

    def submitted(self, row_id: int, row: dict[str, Any], smsc_message_id: str) -> None:
        """Keep the report route of an accepted SMS that asked for a receipt.

        Under the outbox row id (what the library's correlation gives a
        receipt) and under the SMSC message id (what a receipt names after a
        gateway restart, when that correlation is gone).
        """
        if row.get("report") and "msgId" in row:
            outbox = self.runtime.box
            route = {**row, "smscId": smsc_message_id, "rowId": row_id}
            outbox.remember(f"rcpt:{row_id}", route, _ROUTE_TTL)
            outbox.remember(f"smsc:{smsc_message_id}", route, _ROUTE_TTL)

    def refused(self, row: dict[str, Any], reason: str) -> None:
        """The SMSC refused the SMS for good: a failure report if one was asked."""
        if row.get("report") and "msgId" in row:
            self.runtime.send_report(
                row["ue"],
                row["ori"],
                row["msgId"],
                delivered=False,
                cause=FailureCause.RECIPIENT_NOT_REACHABLE.value,
            )

    def receipt(self, log_id: str, smsc_message_id: str, stat: str) -> None:
        """A delivery receipt → DeliveryStatusReport for the original sender."""
        if stat in {"ENROUTE", "ACCEPTD"}:
            return  # intermediate
        outbox = self.runtime.box
        row = None
        if log_id.isdigit():
            row = outbox.recall(f"rcpt:{log_id}", forget=True)
        if row is None:
            row = outbox.recall(f"smsc:{smsc_message_id}", forget=True)
        if row is None:
            log.info("receipt %s (%s) for no known message", smsc_message_id, stat)
            return
        outbox.recall(f"smsc:{row['smscId']}", forget=True)
        outbox.recall(f"rcpt:{row['rowId']}", forget=True)
        delivered = stat == "DELIVRD"
        cause = (
            None
            if delivered
            else _FAILED.get(stat, FailureCause.RECIPIENT_NOT_REACHABLE)
        )
        self.runtime.send_report(
            row["ue"],
            row["ori"],
            row["msgId"],
            delivered=delivered,
            cause=None if cause is None else cause.value,
        )

    def mobile_originated(self, source: str, destination: str, text: str) -> None:
        """An SMS from a Legacy UE → ``deliver-ue-message``."""
        ue = self.directory.ue_of(source)
        if ue is None:
            log.warning("MO SMS from unmapped MSISDN %s dropped", source)
            return
        number = destination.removeprefix("+")
        if number not in self.directory.numbers:
            log.warning("MO SMS from %s to unknown number %s dropped", source, number)
            return
        target = self.directory.numbers[number]
        if target is None:
            outbox = self.runtime.box
            last = outbox.recall(f"reply:{source}")
            if last is None:
                log.warning("MO SMS from %s: nobody to reply to; dropped", source)
                return
            target = (str(last["addrType"]), str(last["addr"]))
        msg_id = self.runtime.send_ue_message(ue, target, text.encode("utf-8"))
        log.info("MO SMS from %s (%s) → %s %s as %s", source, ue, *target, msg_id)


def _text(payload: str | None) -> str:
    if payload is None:
        raise InvalidRequest("payload is required (SMS carries text)")
    try:
        text = base64.b64decode(payload, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidRequest("payload must be base64 of UTF-8 text for SMS") from None
    if not text:
        raise InvalidRequest("payload is empty")
    if len(text) > _MAX_TEXT:
        raise InvalidRequest(f"payload longer than {_MAX_TEXT} characters for SMS")
    return text


async def _stop_esme(esme: ESME, task: "asyncio.Task[None]") -> None:
    try:
        await asyncio.wait_for(esme.stop(), 5.0)
    except TimeoutError:
        log.info("SMSC did not answer unbind in time")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
