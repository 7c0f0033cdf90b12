"""Reception side of the MSGin5G Client (digest §3.7.7, §3.9.3, §3.10-§3.12).

Serves the server's POSTs to ``/msgin5g``: queues messages and reports once
(duplicates, e.g. redeliveries after a server crash, are acknowledged but not
queued twice), reassembles downlink segments and confirms them (``SEGCONFIR``),
asks for missing ones (``SEGREC``), unbundles ``AGGMSG``/``AGGIMDN``, answers
``SEGREC`` for its own uplink segments, and sends success reports (one ``IMDN``,
or one ``AGGIMDN`` for an aggregate) when ``auto_report`` is on. A report answers
a received request: its POST re-uses that request's Token (digest §3.9.3 step 2,
§2.2 rule 5). Before any of this, an optional ``claim`` hook may take a ``MSG``
or ``IMDN`` (a Gateway UE stores those meant for its constrained UEs).
"""

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from msgin5g.client.wire import error_response, json_response, require_json
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code
from msgin5g.codec.ue_payload import decode_downlink
from msgin5g.errors import DecodeError, MSGin5GError, ServiceError
from msgin5g.model.aggregation import bundle_reports, unbundle, unbundle_reports
from msgin5g.model.messages import (
    AggImdn,
    AggMsg,
    Imdn,
    Msg,
    MsgResp,
    SegConfir,
    SegRec,
)
from msgin5g.model.segmentation import Abandoned, Reassembler
from msgin5g.runtime import Clock, Supervisor
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import DeliveryStatus, ReportDeliveryStatus

__all__ = ["Claim", "Inbox", "Received"]

log = logging.getLogger(__name__)

_REPORTS_PER_AGGREGATE = 20
"""Reports per ``AGGIMDN`` (~120 octets each: stays below 4096-octet limits)."""
_SEEN_MAX = 100_000
"""Received (originator, messageId) remembered for duplicate detection."""

Claim = Callable[[Msg | Imdn], Awaitable[bool | None]]
"""Returns None: not claimed (the inbox takes it); True: taken; False: cannot
take it now (the server gets 5.03 and retries)."""


@dataclass(frozen=True, slots=True)
class Received:
    """A message or a delivery report the server delivered to this UE."""

    item: Msg | Imdn

    @property
    def is_report(self) -> bool:
        """True for an ``IMDN``."""
        return isinstance(self.item, Imdn)


class Inbox(abc.ABC):
    """Reception state and handlers; :class:`~msgin5g.client.Client` builds on it."""

    ue_service_id: str
    _auto_report: bool
    _claim: Claim | None
    _clock: Clock
    _tasks: Supervisor
    _outbox: dict[tuple[str, str], tuple[float, list[Msg]]]

    def _init_inbox(self, queue_size: int, gap_timer: float) -> None:
        self._queue: asyncio.Queue[Received] = asyncio.Queue(queue_size)
        self._seen: dict[tuple[str, str, bool], bytes] = {}
        self._reassembler: Reassembler | None = None
        self._gap_timer = gap_timer

    @abc.abstractmethod
    async def _emit(self, item: msgspec.Struct, token: bytes | None = None) -> None:
        """POST ``item`` to the server (2.xx expected; the body is ignored)."""

    async def _render_post(self, message: CoapMessage) -> CoapMessage:
        refused = require_json(message)
        if refused is not None:
            return refused
        try:
            item = decode_downlink(message.payload)
            if isinstance(item, (Msg, Imdn)) and self._claim is not None:
                claimed = await self._claim(item)
                if claimed is not None:
                    code = Code.CHANGED if claimed else Code.SERVICE_UNAVAILABLE
                    return make_response(message, code)
            if isinstance(item, Msg):
                return self._on_msg(message, item)
        except (DecodeError, ServiceError) as exc:
            log.warning("%s: bad request from server: %s", self.ue_service_id, exc)
            return error_response(
                message, Code.BAD_REQUEST, FailureCause.INVALID_MESSAGE, str(exc)
            )
        if isinstance(item, AggMsg):
            messages = unbundle(item)
            if self._queue.maxsize - self._queue.qsize() < len(messages):
                return make_response(message, Code.SERVICE_UNAVAILABLE)
            accepted = [m for m in messages if self._accept(m, message.token)]
            self._report(
                [m for m in accepted if m.delivery_status_required], message.token
            )
        elif isinstance(item, Imdn):
            self._accept(item, message.token)
        elif isinstance(item, AggImdn):
            for report in unbundle_reports(item):
                self._accept(report, message.token)
        elif isinstance(item, SegRec):
            self._tasks.spawn(self._resend(item), name="resend segments")
        else:  # SegConfir: the server has the whole message
            self._outbox.pop((item.message_id, item.segmentation_set_id), None)
        return make_response(message, Code.CHANGED)

    def _on_msg(self, request: CoapMessage, item: Msg) -> CoapMessage:
        if item.recipient_ue_service_id not in (None, self.ue_service_id):
            resp = MsgResp(
                message_id=item.message_id,
                originating_ue_service_id=item.originating_ue_service_id,
                delivery_status=DeliveryStatus.DELY_REJECTED,
                failure_cause=FailureCause.RECIPIENT_UNKNOWN,
            )
            return json_response(request, Code.CHANGED, resp)
        if self._queue.full():
            return make_response(request, Code.SERVICE_UNAVAILABLE)
        if item.segmentation_set_id is not None:
            assert self._reassembler is not None  # noqa: S101 - set in start()
            whole = self._reassembler.add(item)
            if whole is None:
                return make_response(request, Code.CHANGED)
            self._tasks.spawn(self._confirm_segments(item, whole), name="SEGCONFIR")
            item = whole
        if self._accept(item, request.token) and item.delivery_status_required:
            self._report([item], request.token)
        return make_response(request, Code.CHANGED)

    def _accept(self, item: Msg | Imdn, token: bytes) -> bool:
        """Queue a message or report once; True if it was new.

        ``token`` is the Token of the server's POST that carried it: a report
        about this message re-uses it.
        """
        key = (item.originator or "", item.message_id, isinstance(item, Imdn))
        if key in self._seen:
            return False
        if len(self._seen) >= _SEEN_MAX:
            for old in list(self._seen)[: _SEEN_MAX // 2]:
                del self._seen[old]
        self._seen[key] = token
        self._queue.put_nowait(Received(item))
        return True

    def _token_of(self, message: Msg) -> bytes | None:
        """The Token of the server's POST that delivered ``message``, if known."""
        return self._seen.get((message.originator or "", message.message_id, False))

    def _report(self, messages: list[Msg], token: bytes | None) -> None:
        """Send success reports: one IMDN, or one AGGIMDN per originator.

        The first report POST re-uses ``token`` (the Token of the request that
        delivered the messages); further chunks get fresh Tokens.
        """
        if not messages or not self._auto_report:
            return
        reports = [
            self._imdn(m, ReportDeliveryStatus.REPT_DELY_SUCCESS) for m in messages
        ]
        by_target: dict[str | None, list[Imdn]] = {}
        for report in reports:
            by_target.setdefault(report.recipient, []).append(report)
        for group in by_target.values():
            for start in range(0, len(group), _REPORTS_PER_AGGREGATE):
                chunk = group[start : start + _REPORTS_PER_AGGREGATE]
                body = chunk[0] if len(chunk) == 1 else bundle_reports(chunk)
                self._tasks.spawn(
                    self._emit_quietly(body, chunk[0].message_id, token), name="IMDN"
                )
                token = None

    def _imdn(
        self,
        message: Msg,
        status: ReportDeliveryStatus,
        cause: FailureCause | None = None,
    ) -> Imdn:
        return Imdn(
            message_id=message.message_id,
            delivery_status=status,
            originating_ue_service_id=self.ue_service_id,
            recipient_ue_service_id=message.originating_ue_service_id,
            recipient_as_service_id=(
                None
                if message.originating_ue_service_id
                else message.originating_as_service_id
            ),
            failure_cause=cause.value if cause else None,
        )

    async def _emit_quietly(
        self, item: msgspec.Struct, what: str, token: bytes | None = None
    ) -> None:
        try:
            await self._emit(item, token)
        except MSGin5GError as exc:
            log.warning("%s: could not send %s: %s", self.ue_service_id, what, exc)

    def _segment_peer(self, segment: Msg) -> dict[str, str | None]:
        """Originator/recipient members of a SEGREC/SEGCONFIR about ``segment``."""
        return {
            "originating_ue_service_id": self.ue_service_id,
            "recipient_ue_service_id": segment.originating_ue_service_id,
            "recipient_as_service_id": (
                None
                if segment.originating_ue_service_id
                else segment.originating_as_service_id
            ),
        }

    async def _confirm_segments(self, segment: Msg, whole: Msg) -> None:
        total = -(-len(whole.payload or b"") // max(1, len(segment.payload or b"")))
        confirmation = SegConfir(
            message_id=segment.message_id,
            segmentation_set_id=segment.segmentation_set_id or "",
            total_segments=segment.total_segments or max(total, 1),
            **self._segment_peer(segment),
        )
        await self._emit_quietly(confirmation, "SEGCONFIR")

    async def _resend(self, request: SegRec) -> None:
        entry = self._outbox.get((request.message_id, request.segmentation_set_id))
        if entry is None:
            log.info(
                "%s: SEGREC for unknown set %s", self.ue_service_id, request.message_id
            )
            return
        segments = entry[1]
        for number in request.missing_segments:
            if 1 <= number <= len(segments):
                await self._emit_quietly(segments[number - 1], "segment")

    async def _housekeeping(self) -> None:
        """Reassembly timers (SEGREC / give up) and the sent-segments buffer."""
        assert self._reassembler is not None  # noqa: S101 - set in start()
        while True:
            await self._clock.sleep(min(1.0, self._gap_timer / 2))
            for action in self._reassembler.poll():
                sample = action.segment_set.first or action.segment_set.sample
                if sample is None:
                    continue
                if isinstance(action, Abandoned):
                    if action.segment_set.report_required:
                        failed = self._imdn(
                            sample,
                            ReportDeliveryStatus.REPT_DELY_FAILED,
                            FailureCause.SEGMENT_MISSING,
                        )
                        await self._emit_quietly(failed, "IMDN")
                    continue
                recovery = SegRec(
                    message_id=sample.message_id,
                    segmentation_set_id=sample.segmentation_set_id or "",
                    missing_segments=action.missing,
                    total_segments_unknown=action.segment_set.total is None,
                    **self._segment_peer(sample),
                )
                await self._emit_quietly(recovery, "SEGREC")
            now = self._clock.monotonic()
            for key in [k for k, (until, _) in self._outbox.items() if until <= now]:
                del self._outbox[key]
