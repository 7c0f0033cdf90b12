"""Reception side of the MSGin5G Client (digest §3.7.7, §3.9.3, §3.10-§3.12).

Serves the server's POSTs to ``/msgin5g``: queues messages and reports once
(duplicates, e.g. redeliveries after a server crash, are acknowledged but not
queued twice), reassembles downlink segments and confirms them (``SEGCONFIR``),
asks for missing ones (``SEGREC``), unbundles ``AGGMSG``/``AGGIMDN``, answers
``SEGREC`` for its own uplink segments, and sends success reports (one ``IMDN``,
or one ``AGGIMDN`` for an aggregate) when ``auto_report`` is on.
"""

import abc
import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from msgin5g.coap.endpoint import Request
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.numbers import Code
from msgin5g.codec.ue_payload import decode_downlink, encode
from msgin5g.errors import DecodeError, MSGin5GError, ServiceError
from msgin5g.model.aggregation import bundle_reports, unbundle, unbundle_reports
from msgin5g.model.messages import (
    AggImdn,
    AggMsg,
    ErrorBody,
    Imdn,
    Msg,
    MsgResp,
    SegConfir,
    SegRec,
)
from msgin5g.model.segmentation import Abandoned, Reassembler
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.coap import CONTENT_FORMAT_JSON
from msgin5g.spec.delivery import DeliveryStatus, ReportDeliveryStatus

__all__ = ["Inbox", "Received"]

log = logging.getLogger(__name__)

_REPORTS_PER_AGGREGATE = 20
"""Reports per ``AGGIMDN`` (~120 octets each: stays below 4096-octet limits)."""


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
    _queue: asyncio.Queue[Received]
    _seen: dict[tuple[str, str, bool], None]
    _auto_report: bool
    _reassembler: Reassembler | None
    _outbox: dict[tuple[str, str], tuple[float, list[Msg]]]
    _tasks: set[asyncio.Task[None]]
    _gap_timer: float

    @abc.abstractmethod
    async def _post(self, payload: bytes) -> CoapMessage:
        """POST a payload to the server and return its (2.xx) response."""

    async def _render_post(self, request: Request) -> CoapMessage:
        message = request.message
        if message.content_format != CONTENT_FORMAT_JSON:
            return make_response(message, Code.UNSUPPORTED_CONTENT_FORMAT)
        try:
            item = decode_downlink(message.payload)
            if isinstance(item, Msg):
                return self._on_msg(message, item)
        except (DecodeError, ServiceError) as exc:
            log.warning("%s: bad request from server: %s", self.ue_service_id, exc)
            body = ErrorBody(
                message_type="ERROR",
                failure_cause=FailureCause.INVALID_MESSAGE,
                detail=str(exc)[:200],
            )
            return make_response(
                message,
                Code.BAD_REQUEST,
                encode(body),
                content_format=CONTENT_FORMAT_JSON,
            )
        if isinstance(item, AggMsg):
            messages = unbundle(item)
            if self._queue.maxsize - self._queue.qsize() < len(messages):
                return make_response(message, Code.SERVICE_UNAVAILABLE)
            accepted = [m for m in messages if self._accept(m, report=False)]
            self._report([m for m in accepted if m.delivery_status_required])
        elif isinstance(item, Imdn):
            self._accept(item, report=False)
        elif isinstance(item, AggImdn):
            for report in unbundle_reports(item):
                self._accept(report, report=False)
        elif isinstance(item, SegRec):
            self._spawn(self._resend(item))
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
            return make_response(
                request, Code.CHANGED, encode(resp), content_format=CONTENT_FORMAT_JSON
            )
        if self._queue.full():
            return make_response(request, Code.SERVICE_UNAVAILABLE)
        if item.segmentation_set_id is not None:
            assert self._reassembler is not None  # noqa: S101 - set in start()
            whole = self._reassembler.add(item)
            if whole is None:
                return make_response(request, Code.CHANGED)
            self._spawn(self._confirm_segments(item, whole))
            item = whole
        self._accept(item, report=True)
        return make_response(request, Code.CHANGED)

    def _accept(self, item: Msg | Imdn, *, report: bool) -> bool:
        """Queue a message or report once; True if it was new."""
        key = (item.originator or "", item.message_id, isinstance(item, Imdn))
        if key in self._seen:
            return False
        if len(self._seen) >= 100_000:
            for old in list(self._seen)[:50_000]:
                del self._seen[old]
        self._seen[key] = None
        self._queue.put_nowait(Received(item))
        if report and isinstance(item, Msg) and item.delivery_status_required:
            self._report([item])
        return True

    def _report(self, messages: list[Msg]) -> None:
        """Send success reports: one IMDN, or one AGGIMDN per originator."""
        if not messages or not self._auto_report:
            return
        reports = [
            self._imdn(m, ReportDeliveryStatus.REPT_DELY_SUCCESS) for m in messages
        ]
        by_target: dict[tuple[str | None, str | None], list[Imdn]] = {}
        for report in reports:
            by_target.setdefault((report.recipient, None), []).append(report)
        for group in by_target.values():
            for start in range(0, len(group), _REPORTS_PER_AGGREGATE):
                chunk = group[start : start + _REPORTS_PER_AGGREGATE]
                body = encode(chunk[0] if len(chunk) == 1 else bundle_reports(chunk))
                self._spawn(self._post_quietly(body, chunk[0].message_id))

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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post_quietly(self, body: bytes, what: str) -> None:
        try:
            await self._post(body)
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
        await self._post_quietly(encode(confirmation), "SEGCONFIR")

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
                await self._post_quietly(encode(segments[number - 1]), "segment")

    async def _housekeeping(self) -> None:
        """Reassembly timers (SEGREC / give up) and the sent-segments buffer."""
        assert self._reassembler is not None  # noqa: S101 - set in start()
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, self._gap_timer / 2))
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
                        await self._post_quietly(encode(failed), "IMDN")
                    continue
                recovery = SegRec(
                    message_id=sample.message_id,
                    segmentation_set_id=sample.segmentation_set_id or "",
                    missing_segments=action.missing,
                    total_segments_unknown=action.segment_set.total is None,
                    **self._segment_peer(sample),
                )
                await self._post_quietly(encode(recovery), "SEGREC")
            now = loop.time()
            for key in [k for k, (until, _) in self._outbox.items() if until <= now]:
                del self._outbox[key]
