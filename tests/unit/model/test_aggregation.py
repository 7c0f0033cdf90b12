"""AGGMSG / AGGIMDN bundling (digest §3.10, §3.11)."""

import pytest

from msgin5g.errors import InvalidRequest
from msgin5g.model.aggregation import bundle, bundle_reports, unbundle, unbundle_reports
from msgin5g.model.messages import Imdn, Msg


def msg(mid: str, **kw: object) -> Msg:
    base: dict[str, object] = {
        "originating_ue_service_id": "a",
        "recipient_ue_service_id": "b",
        "payload": mid.encode(),
    }
    base.update(kw)
    return Msg(message_id=mid, **base)  # type: ignore[arg-type]


def test_bundle_round_trip() -> None:
    messages = [
        msg("1", delivery_status_required=True, application_id="x"),
        msg("2", priority_type="LOW"),
    ]
    aggregate = bundle(messages, message_id="agg")
    assert aggregate.message_id == "agg"
    assert aggregate.recipient_ue_service_id == "b"
    assert unbundle(aggregate) == messages


@pytest.mark.parametrize(
    "odd",
    [
        msg("x", recipient_ue_service_id="c"),
        msg("x", priority_type="HIGH"),
        msg("x", segmentation_set_id="s", segment_number=1),
    ],
)
def test_bundle_refuses(odd: Msg) -> None:
    with pytest.raises(InvalidRequest):
        bundle([msg("1"), odd])
    with pytest.raises(InvalidRequest):
        bundle([])


def test_report_bundle_round_trip() -> None:
    reports = [
        Imdn(
            message_id=str(i),
            delivery_status="REPT_DELY_SUCCESS",
            originating_ue_service_id="b",
            recipient_ue_service_id="a",
        )
        for i in range(3)
    ]
    assert unbundle_reports(bundle_reports(reports)) == reports
    other = Imdn(
        message_id="z",
        delivery_status="REPT_DELY_SUCCESS",
        originating_ue_service_id="c",
        recipient_ue_service_id="a",
    )
    # per-member reports of a fan-out: items name their own reporter
    mixed = bundle_reports([*reports, other])
    assert mixed.originating_ue_service_id == "b"
    assert mixed.delivery_reports[0].originating_ue_service_id is None
    assert mixed.delivery_reports[3].originating_ue_service_id == "c"
    assert unbundle_reports(mixed) == [*reports, other]
    elsewhere = Imdn(
        message_id="y",
        delivery_status="REPT_DELY_SUCCESS",
        originating_ue_service_id="b",
        recipient_ue_service_id="d",
    )
    with pytest.raises(InvalidRequest):
        bundle_reports([*reports, elsewhere])
