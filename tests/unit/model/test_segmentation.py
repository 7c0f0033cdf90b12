"""Segmentation and reassembly as pure functions (TS 23.554 §8.5, digest §3.12)."""

import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from msgin5g.errors import InvalidRequest, Overloaded, PayloadTooLarge
from msgin5g.model.messages import Msg
from msgin5g.model.segmentation import Abandoned, Reassembler, RecoveryNeeded, split
from msgin5g.testing import FakeClock


def message(payload: bytes, **kw: object) -> Msg:
    return Msg(
        message_id="m1",
        originating_ue_service_id="a",
        recipient_ue_service_id="b",
        payload=payload,
        **kw,  # type: ignore[arg-type]
    )


def reassembler(clock: FakeClock | None = None, **kw: float) -> Reassembler:
    return Reassembler((clock or FakeClock()).now, **kw)  # type: ignore[arg-type]


def test_small_message_is_not_segmented() -> None:
    msg = message(b"x" * 10)
    assert split(msg, 10) == [msg]


def test_segment_members_per_digest() -> None:
    msg = message(
        b"abcdefg",
        delivery_status_required=True,
        application_id="app",
        priority_type="HIGH",
        store_and_forward_flag=True,
    )
    first, middle, last = split(msg, 3, set_id="set")
    assert [s.payload for s in (first, middle, last)] == [b"abc", b"def", b"g"]
    assert [s.segment_number for s in (first, middle, last)] == [1, 2, 3]
    assert {s.segmentation_set_id for s in (first, middle, last)} == {"set"}
    assert {s.total_segments for s in (first, middle, last)} == {3}
    assert (
        first.last_segment_flag,
        middle.last_segment_flag,
        last.last_segment_flag,
    ) == (
        False,
        False,
        True,
    )
    assert first.delivery_status_required and first.application_id == "app"
    assert not middle.delivery_status_required and middle.application_id is None
    assert all(
        s.message_id == "m1" and s.recipient_ue_service_id == "b"
        for s in (first, middle, last)
    )


def test_split_refuses_segments_and_bad_limits() -> None:
    with pytest.raises(InvalidRequest):
        split(message(b"abc"), 0)
    [segment, _] = split(message(b"abcd"), 2)
    with pytest.raises(InvalidRequest):
        split(segment, 1)


@given(
    st.binary(min_size=0, max_size=5000),
    st.integers(min_value=1, max_value=700),
    st.randoms(use_true_random=False),
)
def test_round_trip_any_payload_any_order(
    payload: bytes, limit: int, rng: random.Random
) -> None:
    original = message(payload, delivery_status_required=True, application_id="app")
    segments = split(original, limit)
    if len(segments) == 1:
        return
    rng.shuffle(segments)
    segments.append(segments[0])  # a duplicate
    r = reassembler()
    results = [r.add(s) for s in segments]
    done = [m for m in results if m is not None]
    assert done == [original]
    assert len(r) == 0
    assert r.buffered_octets == 0


def test_duplicates_and_out_of_order() -> None:
    r = reassembler()
    s1, s2, s3 = split(message(b"123456"), 2)
    assert r.add(s3) is None
    assert r.add(s3) is None
    assert r.add(s1) is None
    whole = r.add(s2)
    assert whole is not None and whole.payload == b"123456"
    assert whole.segmentation_set_id is None and whole.total_segments is None


@pytest.mark.parametrize(
    "mutation",
    [
        {"segment_number": 9},
        {"total_segments": 5},
        {"last_segment_flag": True, "total_segments": None},
    ],
)
def test_inconsistent_segments_are_refused(mutation: dict[str, object]) -> None:
    r = reassembler()
    s1, s2, _ = split(message(b"123456"), 2)
    r.add(s1)
    bad = msgspec.structs.replace(s2, **mutation)
    with pytest.raises(InvalidRequest):
        r.add(bad)


def test_set_size_limit() -> None:
    r = reassembler(max_set_octets=5)
    s1, s2, s3 = split(message(b"123456"), 2)
    r.add(s1)
    r.add(s2)
    with pytest.raises(PayloadTooLarge):
        r.add(s3)
    assert len(r) == 0 and r.buffered_octets == 0


def test_flood_of_incomplete_sets_stays_bounded() -> None:
    r = reassembler(max_sets=50, max_sets_per_originator=20)
    refused = 0
    for i in range(500):
        origin = f"ue{i % 5}"
        segment = split(
            Msg(
                message_id=f"m{i}",
                originating_ue_service_id=origin,
                recipient_ue_service_id="b",
                payload=b"xxxx",
            ),
            2,
        )[0]
        try:
            r.add(segment)
        except Overloaded:
            refused += 1
    assert len(r) == 50
    assert refused == 450


def test_gap_timer_recovery_then_abandon() -> None:
    clock = FakeClock()
    r = reassembler(clock, gap_timer=30, timeout=300, max_rounds=2)
    s1, _s2, _s3, s4 = split(message(b"12345678", delivery_status_required=True), 2)
    r.add(s1)
    r.add(s4)
    assert r.poll() == []
    clock.advance(31)
    [action] = r.poll()
    assert isinstance(action, RecoveryNeeded) and action.missing == [2, 3]
    clock.advance(31)
    [again] = r.poll()
    assert isinstance(again, RecoveryNeeded)
    clock.advance(31)
    [gone] = r.poll()
    assert isinstance(gone, Abandoned) and gone.segment_set.report_required
    assert len(r) == 0


def test_unknown_total_recovery_lists_gaps_to_highest() -> None:
    clock = FakeClock()
    r = reassembler(clock, gap_timer=1)
    segments = split(message(b"123456"), 2)
    third = msgspec.structs.replace(
        segments[2], total_segments=None, last_segment_flag=False
    )
    r.add(third)
    clock.advance(2)
    [action] = r.poll()
    assert isinstance(action, RecoveryNeeded) and action.missing == [1, 2]
