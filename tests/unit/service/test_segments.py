"""Server-side reassembly with durable segments (digest §3.12)."""

from collections.abc import AsyncIterator

import pytest

from msgin5g.model.messages import Msg, SegConfir, SegRec
from msgin5g.model.registry import Contact
from msgin5g.model.segmentation import split
from msgin5g.service.segments import SegmentService, StoredSegment
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock, RecordingDeliverer

UE1 = Contact("10.0.0.1", 1)


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    b = MemoryBackend()
    await b.start()
    yield b
    await b.aclose()


def make(
    backend: MemoryBackend, deliverer: RecordingDeliverer, clock: ManualClock
) -> SegmentService:
    return SegmentService(
        backend,
        deliverer,
        clock,
        contact_for=lambda ue: UE1 if ue == "ue1" else None,
        gap_timer=10,
        timeout=100,
    )


def big(**kw: object) -> Msg:
    return Msg(
        message_id="m",
        originating_ue_service_id="ue1",
        recipient_ue_service_id="ue2",
        payload=b"z" * 5000,
        **kw,
    )  # type: ignore[arg-type]


async def test_complete_set_is_confirmed_and_records_removed(
    backend: MemoryBackend,
) -> None:
    deliverer, clock = RecordingDeliverer(), ManualClock()
    svc = make(backend, deliverer, clock)
    parts = split(big(), 2048)
    assert await svc.accept(parts[0]) is None
    assert await svc.accept(parts[1]) is None
    assert len(await backend.load_records("segment", StoredSegment)) == 2
    whole = await svc.accept(parts[2])
    assert whole == big()
    [confirmation] = deliverer.items_for(UE1)
    assert isinstance(confirmation, SegConfir) and confirmation.total_segments == 3
    assert await backend.load_records("segment", StoredSegment) == []


async def test_acknowledged_segments_survive_a_restart(backend: MemoryBackend) -> None:
    clock = ManualClock()
    parts = split(big(), 2048)
    first = make(backend, RecordingDeliverer(), clock)
    await first.accept(parts[0])
    await first.accept(parts[1])
    second = make(backend, RecordingDeliverer(), clock)  # "restarted"
    assert await second.load() == 2
    assert await second.accept(parts[2]) == big()


async def test_gap_gives_segrec_then_segment_missing_report(
    backend: MemoryBackend,
) -> None:
    deliverer, clock = RecordingDeliverer(), ManualClock()
    svc = make(backend, deliverer, clock)
    parts = split(big(delivery_status_required=True), 2048)
    await svc.accept(parts[0])
    clock.advance(11)
    assert await svc.poll() == []  # a SEGREC went to the sender, no report yet
    [recovery] = deliverer.items_for(UE1)
    assert isinstance(recovery, SegRec) and recovery.missing_segments == [2, 3]
    clock.advance(100)
    [(ue, report)] = await svc.poll()  # given up: the caller queues the report
    assert ue == "ue1" and report.failure_cause == "SEGMENT_MISSING"
    assert report.originating_ue_service_id == "ue2"
    assert await backend.load_records("segment", StoredSegment) == []


async def test_downlink_segments_kept_for_recovery(backend: MemoryBackend) -> None:
    deliverer, clock = RecordingDeliverer(), ManualClock()
    svc = make(backend, deliverer, clock)
    parts = svc.segments_for("ue1", big(), 1000)
    assert len(parts) == 5
    request = SegRec(
        message_id="m",
        segmentation_set_id=parts[0].segmentation_set_id or "",
        missing_segments=[2, 4, 99],
    )
    await svc.recover("ue1", request)
    assert [m.segment_number for m in deliverer.items_for(UE1)] == [2, 4]
    svc.confirmed(
        "ue1",
        SegConfir(
            message_id="m",
            total_segments=5,
            segmentation_set_id=request.segmentation_set_id,
        ),
    )
    await svc.recover("ue1", request)
    assert len(deliverer.items_for(UE1)) == 2
