"""Activity (last seen, failure ring) and the console's rate sampler and chart."""

from msgin5g.model.messages import Imdn, Msg
from msgin5g.model.queue import QueuedItem
from msgin5g.service.activity import Activity
from msgin5g.spec.delivery import ReportDeliveryStatus
from msgin5g.transports.rest.admin_api import RateSampler
from msgin5g.transports.rest.console import chart


def item(recipient: str, message_id: str) -> QueuedItem:
    msg = Msg(message_id=message_id, originating_ue_service_id="a", payload=b"x")
    return QueuedItem(recipient, msg, 1, 100.0, store=True)


def test_failure_ring_is_bounded_and_newest_first() -> None:
    now = [0.0]
    activity = Activity(lambda: now[0], capacity=3)
    for n in range(5):
        now[0] = float(n)
        activity.failed(item("ue1" if n % 2 else "ue2", f"m{n}"), "MESSAGE_EXPIRED")
    assert activity.failures_total == 5
    assert [r.message_id for r in activity.recent()] == ["m4", "m3", "m2"]
    assert [r.message_id for r in activity.recent(recipient="ue1")] == ["m3"]
    assert [r.message_id for r in activity.recent(1)] == ["m4"]
    first = activity.recent()[0]
    assert (first.at, first.originator, first.kind, first.cause) == (
        4.0,
        "a",
        "MSG",
        "MESSAGE_EXPIRED",
    )


def test_report_failures_name_the_reporter() -> None:
    activity = Activity(lambda: 1.0)
    report = Imdn(
        message_id="m1",
        delivery_status=ReportDeliveryStatus.REPT_DELY_SUCCESS,
        originating_ue_service_id="ue9",
        recipient_ue_service_id="ue1",
    )
    activity.failed(QueuedItem("ue1", report, 0, 5.0, store=True), "X")
    assert activity.recent()[0].kind == "IMDN"
    assert activity.recent()[0].originator == "ue9"


def test_last_seen() -> None:
    now = [10.0]
    activity = Activity(lambda: now[0])
    activity.seen("ue1")
    now[0] = 12.5
    activity.seen("ue1")
    now[0] = 13.25  # within the same second: the same float object
    activity.seen("ue2")
    assert activity.last_seen == {"ue1": 12.5, "ue2": 12.5}
    assert activity.last_seen["ue1"] is activity.last_seen["ue2"]
    now[0] = 13.5
    activity.seen("ue1")
    assert activity.last_seen["ue1"] == 13.5


def test_rate_sampler_samples_on_demand_at_most_once_per_interval() -> None:
    clock = [0.0]
    counts = [(0, 0)]
    sampler = RateSampler(interval=1.0, capacity=4, clock=lambda: clock[0])
    assert sampler.rates() == (0.0, 0.0)
    assert sampler.series() == []
    sampler.sample(lambda: counts[0])
    clock[0], counts[0] = 0.5, (100, 100)
    sampler.sample(lambda: counts[0])  # too early: ignored
    assert len(sampler.samples) == 1
    clock[0], counts[0] = 2.0, (100, 40)
    sampler.sample(lambda: counts[0])
    assert sampler.rates() == (50.0, 20.0)
    for n in range(3, 8):
        clock[0], counts[0] = float(n * 2), (100, 40)
        sampler.sample(lambda: counts[0])
    assert len(sampler.samples) == 4
    assert sampler.rates() == (0.0, 0.0)
    assert [ago for ago, _, _ in sampler.series()] == [4.0, 2.0, 0.0]


def test_chart_scales_into_the_box() -> None:
    assert chart([])["in"] == ""
    drawn = chart(
        [
            {"ago": 500.0, "in": 99.0, "out": 99.0},  # outside the window
            {"ago": 60.0, "in": 10.0, "out": 0.0},
            {"ago": 0.0, "in": 5.0, "out": 10.0},
        ]
    )
    assert drawn["top"] == 10.0
    xs_ys = [tuple(map(float, p.split(","))) for p in drawn["in"].split()]
    assert xs_ys[0] == (drawn["width"] / 2, 4.0)  # 60 s of 120: the middle; peak
    assert xs_ys[1][0] == drawn["width"]  # newest at the right edge
    assert all(4.0 <= y <= drawn["height"] - 4 for _, y in xs_ys)
    one = chart([{"ago": 0.0, "in": 0.0, "out": 0.0}])
    assert len(one["out"].split()) == 2  # a single sample still draws a stroke
