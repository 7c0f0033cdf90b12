"""The bench's summary math: histogram percentiles, merging, lost, warnings."""

import json
import math
import random

import pytest

from msgin5g.bench.stats import (
    BOTTLENECK_CPU,
    Counts,
    Histogram,
    coap_code,
    format_table,
    refusal_cause,
    summarize,
)


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1] * 1000


def test_percentiles_are_within_about_one_percent_above_the_exact_rank() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-6, 1.2) for _ in range(20_000)]  # ~2.5 ms median
    hist = Histogram()
    for value in values:
        hist.add(value)
    for q in (0.5, 0.9, 0.99, 1.0):
        got, want = hist.percentile_ms(q), exact(values, q)
        assert want <= got <= want * 1.011, (q, got, want)
    assert hist.count == len(values)
    assert hist.percentile_ms(1.0) == pytest.approx(max(values) * 1000)


def test_empty_histogram_has_no_percentiles() -> None:
    assert math.isnan(Histogram().percentile_ms(0.5))


def test_tiny_and_huge_latencies_land_in_the_end_buckets() -> None:
    hist = Histogram()
    hist.add(-1e-3)  # clock noise
    hist.add(0.0)
    hist.add(1e4)
    assert hist.count == 3
    assert hist.percentile_ms(0.5) <= 0.00102  # the first bucket: up to ~1 µs
    assert hist.percentile_ms(1.0) == pytest.approx(1e7)


def test_merge_equals_one_histogram_of_everything() -> None:
    a, b, both = Histogram(), Histogram(), Histogram()
    for i in range(1, 1000):
        value = i / 1e4
        (a if i % 3 else b).add(value)
        both.add(value)
    a.merge(b)
    assert a.buckets == both.buckets
    assert a.count == both.count
    assert a.max_s == both.max_s


def test_counts_survive_the_pipe_between_processes() -> None:
    counts = Counts(sent=5, accepted=4, refused=1, received=4, cpu_s=0.5, wall_s=2.0)
    for value in (0.001, 0.002, 0.5):
        counts.latency.add(value)
    counts.extra["rounds"] = 3
    back = Counts.from_wire(json.loads(json.dumps(counts.to_wire())))
    assert back.sent == 5 and back.received == 4 and back.extra == {"rounds": 3}
    assert back.latency.buckets == counts.latency.buckets
    assert back.latency.max_s == 0.5


def part(sent: int, refused: int, received: int, cpu: float = 0.2) -> Counts:
    counts = Counts(
        sent=sent,
        accepted=sent - refused,
        refused=refused,
        received=received,
        cpu_s=cpu,
        wall_s=1.0,
    )
    for _ in range(received):
        counts.latency.add(0.004)
    return counts


def test_summary_adds_workers_and_derives_rate_and_lost() -> None:
    summary = summarize(
        [part(100, 10, 85), part(50, 0, 50)],
        mode="p2p",
        server="coap://h:1",
        ues=10,
        duration_s=2.0,
        offered_rate=0,
    )
    assert (summary.sent, summary.refused, summary.received) == (150, 10, 135)
    assert summary.lost == 5  # sent - refused - received
    assert summary.rate == pytest.approx(67.5)
    assert summary.workers == 2
    assert summary.p50_ms == pytest.approx(4.0, rel=0.011)
    assert not summary.generator_bottleneck
    assert summary.warnings == []
    # 0.4 s of generator CPU for 135 units
    assert summary.generator_us_per_unit == pytest.approx(0.4e6 / 135)


def test_lost_is_never_negative() -> None:
    # a message whose answer timed out can still arrive: received > sent - refused
    summary = summarize(
        [part(10, 0, 12)], mode="p2p", server="s", ues=2, duration_s=1, offered_rate=0
    )
    assert summary.lost == 0


def test_a_busy_generator_is_reported_as_the_possible_limit() -> None:
    summary = summarize(
        [part(10, 0, 10, cpu=0.3), part(10, 0, 10, cpu=BOTTLENECK_CPU / 100 + 0.01)],
        mode="reg",
        server="s",
        ues=2,
        duration_s=1,
        offered_rate=0,
    )
    assert summary.generator_bottleneck
    assert summary.generator_cpu_pct == pytest.approx(BOTTLENECK_CPU + 1)
    assert any("may be the limit" in text for text in summary.warnings)


def test_paced_sends_that_could_not_go_out_are_reported() -> None:
    counts = part(10, 0, 10)
    counts.behind = 7
    summary = summarize(
        [counts], mode="p2p", server="s", ues=2, duration_s=1, offered_rate=100
    )
    assert summary.behind == 7
    assert any("did not keep up with --rate" in text for text in summary.warnings)


def test_summarize_refuses_nothing_or_no_time() -> None:
    with pytest.raises(ValueError, match="no generator"):
        summarize([], mode="p2p", server="s", ues=1, duration_s=1, offered_rate=0)
    with pytest.raises(ValueError, match="positive"):
        summarize(
            [part(1, 0, 1)], mode="p2p", server="s", ues=1, duration_s=0, offered_rate=0
        )


def test_json_has_null_percentiles_when_nothing_arrived() -> None:
    summary = summarize(
        [part(3, 3, 0)], mode="a2p", server="s", ues=1, duration_s=1, offered_rate=0
    )
    data = json.loads(summary.to_json())
    assert data["p99_ms"] is None and data["max_ms"] is None
    assert data["refused"] == 3 and data["lost"] == 0


def test_table_names_every_figure() -> None:
    summary = summarize(
        [part(20, 1, 19)],
        mode="fanout",
        server="coap://x:5683",
        ues=20,
        duration_s=1,
        offered_rate=500,
    )
    summary.extra["rounds"] = 2
    table = format_table(summary)
    for label in (
        "rate",
        "latency p50",
        "latency p90",
        "latency p99",
        "sent",
        "received",
        "refused",
        "lost",
        "generator CPU",
        "generator cost",
        "rounds",
    ):
        assert label in table
    assert "500/s paced" in table
    assert "copies/s delivered" in table


def test_message_id_reuses_add_up_over_processes_and_rounds_do_not() -> None:
    a, b = part(1, 0, 1), part(1, 0, 1)
    a.extra.update(mid_reused=2, rounds=5)
    b.extra.update(mid_reused=3)
    summary = summarize(
        [a, b], mode="fanout", server="s", ues=2, duration_s=1, offered_rate=0
    )
    assert summary.extra == {"mid_reused": 5, "rounds": 5}


@pytest.mark.parametrize(
    ("code", "payload", "key"),
    [
        (
            None,
            b'{"messageType":"MSGRESP","deliveryStatus":"DELY_REJECTED",'
            b'"failureCause":"SERVER_CONGESTION"}',
            "SERVER_CONGESTION",
        ),
        (None, b'{"deliveryStatus": "DELY_FAILED"}', "DELY_FAILED"),
        (None, b"", "refused"),
        ("5.03", b"", "5.03"),
        ("5.03", b'{"failureCause":"SERVER_CONGESTION"}', "5.03 SERVER_CONGESTION"),
        (
            "HTTP 429",
            b'{"status":429,"cause":"TOO_MANY_REQUESTS"}',
            "HTTP 429 TOO_MANY_REQUESTS",
        ),
        ("4.04", b'{"failureCause":"UNKNOWN_UE","x":1}', "4.04 UNKNOWN_UE"),
    ],
)
def test_a_refusal_is_keyed_by_its_cause(
    code: str | None, payload: bytes, key: str
) -> None:
    assert refusal_cause(code, payload) == key


def test_coap_codes_read_as_class_dot_detail() -> None:
    assert coap_code(163) == "5.03"
    assert coap_code(132) == "4.04"


def test_refusal_causes_add_up_over_workers_and_say_what_to_do() -> None:
    first, second = part(100, 0, 60), part(100, 0, 90)
    first.refuse("SERVER_CONGESTION", 30)
    first.refuse("5.03", 10)
    second.refuse("SERVER_CONGESTION", 10)
    back = Counts.from_wire(json.loads(json.dumps(second.to_wire())))
    assert back.refusals == {"SERVER_CONGESTION": 10}
    summary = summarize(
        [first, back], mode="p2p", server="s", ues=2, duration_s=1, offered_rate=0
    )
    assert summary.refused == 50
    assert summary.refusals == {"SERVER_CONGESTION": 40, "5.03": 10}  # most first
    assert summary.lost == 0
    assert any("limits.submit_rate" in text for text in summary.warnings)
    assert any("5.03" in text and "--rate" in text for text in summary.warnings)
    table = format_table(summary)
    assert "refused" in table and "(SERVER_CONGESTION 40, 5.03 10)" in table


def test_a_c_engine_final_line_without_refusals_still_reads() -> None:
    # the C engine's line from before the refusals member (and any without it)
    wire = Counts(sent=1, received=1).to_wire()
    del wire["refusals"]
    assert Counts.from_wire(wire).refusals == {}
