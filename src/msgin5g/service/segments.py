"""Server side of segmentation and reassembly (TS 23.554 §8.5; digest §3.12).

Uplink (UE → server): every segment is acknowledged (``MSGRESP DELY_ACCEPTED``)
once it is **durably** stored as a record (kind ``"segment"``), so a server
restart loses no segment it acknowledged: :meth:`SegmentService.load` puts them
back into the :class:`~msgin5g.model.segmentation.Reassembler`. When the set is
complete the server confirms it with ``SEGCONFIR`` to the sender and routes the
whole message like any other (the project always reassembles, digest §3.12.4
step 5). A gap in a set triggers ``SEGREC`` to the sender; a set given up after
``SEGREC_MAX`` rounds or ``REASSEMBLY_TIMEOUT`` produces a ``SEGMENT_MISSING``
report to the sender when it asked for one (returned by :meth:`SegmentService.poll`
to the delivery engine's sweeper, which queues it: the dependency goes one way,
delivery → segments, and both are wired at construction).

Downlink (server → UE): a message larger than the recipient's limit (its
announced ``maxSegmentSize``, else ``delivery.segment_size``) is split and the
segments are pushed one by one; they are kept for ``SEGREC`` from the client
until its ``SEGCONFIR`` or ``SEG_BUFFER_TTL``.
"""

import logging
from collections.abc import Callable

import msgspec

from msgin5g.errors import ServiceError
from msgin5g.model.messages import Imdn, Msg, SegConfir, SegRec
from msgin5g.model.registry import Contact
from msgin5g.model.segmentation import Abandoned, Reassembler, RecoveryNeeded, split
from msgin5g.runtime import Clock
from msgin5g.service.ports import Deliverer
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import ReportDeliveryStatus
from msgin5g.storage.base import Backend

__all__ = ["SegmentService", "StoredSegment"]

log = logging.getLogger(__name__)

_KIND = "segment"
SEG_BUFFER_TTL = 600.0


class StoredSegment(msgspec.Struct, frozen=True):
    """An acknowledged uplink segment, kept until its set completes or expires."""

    segment: Msg
    received_at: float


def _key(segment: Msg) -> str:
    return "|".join(
        (
            segment.originator or "",
            segment.message_id,
            segment.segmentation_set_id or "",
            f"{segment.segment_number or 0:08d}",
        )
    )


class SegmentService:
    """Reassembly of uplink segments and buffering of downlink segments."""

    def __init__(
        self,
        backend: Backend,
        deliverer: Deliverer,
        clock: Clock,
        *,
        contact_for: Callable[[str], Contact | None],
        gap_timer: float = 30.0,
        timeout: float = 300.0,
    ) -> None:
        self._backend = backend
        self._deliverer = deliverer
        self._clock = clock
        self._contact_for = contact_for
        self.reassembler = Reassembler(clock.now, gap_timer=gap_timer, timeout=timeout)
        self._sent: dict[tuple[str, str, str], tuple[float, list[Msg]]] = {}
        self._keys: dict[tuple[str, str, str], list[str]] = {}

    async def load(self) -> int:
        """Put acknowledged segments of unfinished sets back (start-up)."""
        stored = await self._backend.load_records(_KIND, StoredSegment)
        for record in stored:
            try:
                self._remember(record.segment)
                self.reassembler.add(record.segment)
            except ServiceError as exc:
                log.info("dropping a stored segment: %s", exc)
                await self._backend.delete_record(_KIND, _key(record.segment))
        return len(stored)

    def _remember(self, segment: Msg) -> None:
        set_key = (
            segment.originator or "",
            segment.message_id,
            segment.segmentation_set_id or "",
        )
        self._keys.setdefault(set_key, []).append(_key(segment))

    async def _forget(self, set_key: tuple[str, str, str]) -> None:
        for key in self._keys.pop(set_key, []):
            await self._backend.delete_record(_KIND, key)

    # uplink -----------------------------------------------------------------------

    async def accept(self, segment: Msg) -> Msg | None:
        """Store and add one uplink segment; the whole message when complete.

        Raises:
            InvalidRequest, PayloadTooLarge, Overloaded: from the reassembler.
        """
        whole = self.reassembler.add(segment)
        set_key = (
            segment.originator or "",
            segment.message_id,
            segment.segmentation_set_id or "",
        )
        if whole is None:
            if self.reassembler.get(set_key) is not None:
                await self._backend.put_record(
                    _KIND, _key(segment), StoredSegment(segment, self._clock.now())
                )
                self._remember(segment)
            return None
        await self._forget(set_key)
        confirmation = SegConfir(
            message_id=segment.message_id,
            segmentation_set_id=segment.segmentation_set_id or "",
            total_segments=segment.total_segments or segment.segment_number or 1,
            recipient_ue_service_id=segment.originating_ue_service_id,
            recipient_as_service_id=segment.originating_as_service_id,
        )
        await self._send_control(segment.originator or "", confirmation)
        return whole

    async def _send_control(self, ue: str, item: SegRec | SegConfir) -> None:
        """Hop-by-hop SEGREC/SEGCONFIR; best effort (the sender retries anyway)."""
        contact = self._contact_for(ue)
        if contact is None:
            return
        try:
            await self._deliverer.deliver(contact, item)
        except ServiceError as exc:
            log.info("could not send %s to %s: %s", type(item).__name__, ue, exc)

    async def poll(self) -> list[tuple[str, Imdn]]:
        """Run reassembly timers: SEGREC for gaps, SEGMENT_MISSING for given-up sets.

        Returns:
            The ``SEGMENT_MISSING`` reports to queue, as (recipient, report): the
            caller (the delivery engine's sweeper) owns report delivery, so this
            service needs no reference back to it.
        """
        reports: list[tuple[str, Imdn]] = []
        for action in self.reassembler.poll():
            entry = action.segment_set
            sample = entry.first or entry.sample
            if sample is None:
                continue
            originator = sample.originator or ""
            if isinstance(action, RecoveryNeeded):
                recovery = SegRec(
                    message_id=sample.message_id,
                    segmentation_set_id=sample.segmentation_set_id or "",
                    missing_segments=action.missing,
                    total_segments_unknown=entry.total is None,
                    recipient_ue_service_id=sample.originating_ue_service_id,
                    recipient_as_service_id=sample.originating_as_service_id,
                )
                await self._send_control(originator, recovery)
                continue
            assert isinstance(action, Abandoned)  # noqa: S101
            await self._forget(entry.key)
            log.info(
                "gave up segmented message %s from %s", sample.message_id, originator
            )
            if entry.report_required and sample.originating_ue_service_id:
                report = Imdn(
                    message_id=sample.message_id,
                    delivery_status=ReportDeliveryStatus.REPT_DELY_FAILED,
                    failure_cause=FailureCause.SEGMENT_MISSING.value,
                    originating_ue_service_id=sample.recipient_ue_service_id,
                    originating_as_service_id=sample.recipient_as_service_id,
                    recipient_ue_service_id=sample.originating_ue_service_id,
                )
                reports.append((sample.originating_ue_service_id, report))
        now = self._clock.now()
        for key in [k for k, (until, _) in self._sent.items() if until <= now]:
            del self._sent[key]
        return reports

    # downlink ---------------------------------------------------------------------

    def segments_for(self, recipient: str, msg: Msg, limit: int) -> list[Msg]:
        """Split ``msg`` for ``recipient`` and keep the parts for its SEGREC."""
        parts = split(msg, limit)
        if len(parts) > 1:
            key = (recipient, msg.message_id, parts[0].segmentation_set_id or "")
            self._sent[key] = (self._clock.now() + SEG_BUFFER_TTL, parts)
        return parts

    async def recover(self, recipient: str, request: SegRec) -> None:
        """The client asked for downlink segments again (its ``SEGREC``)."""
        entry = self._sent.get(
            (recipient, request.message_id, request.segmentation_set_id)
        )
        contact = self._contact_for(recipient)
        if entry is None or contact is None:
            log.info(
                "SEGREC from %s for an unknown set %s", recipient, request.message_id
            )
            return
        parts = entry[1]
        for number in request.missing_segments:
            if 1 <= number <= len(parts):
                await self._deliverer.deliver(contact, parts[number - 1])

    def confirmed(self, recipient: str, confirmation: SegConfir) -> None:
        """The client has the whole downlink message (its ``SEGCONFIR``)."""
        key = (recipient, confirmation.message_id, confirmation.segmentation_set_id)
        self._sent.pop(key, None)
