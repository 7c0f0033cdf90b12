"""What ``msgin5g bench`` counts, and how it turns counts into a summary.

Sans-I/O and standard library only (unit-tested without sockets):

* :class:`Histogram`: latencies in logarithmic buckets (about 1 % wide, 1 µs to
  ~100 s), so a worker keeps a fixed ~2,000 integers however long it runs, and
  workers' histograms add up;
* :class:`Counts`: what one worker saw in the measured window;
* :func:`summarize` merges the workers' counts into a :class:`Summary` (rate,
  p50/p90/p99, sent, received, lost, the generator's own CPU), and
  :func:`format_table` / :meth:`Summary.to_json` print it.

Definitions (docs/performance.md, "msgin5g bench"): a request *sent* in the
window either got a refusal (*refused*: a CoAP 4.xx/5.xx, a failure
``deliveryStatus``, an HTTP 4xx/5xx), or arrived (*received*: at the recipient
UE; for ``reg`` a successful REGRESP), or is *lost* (no answer after the
retransmissions, or accepted and never delivered): ``lost = sent - refused -
received``, never negative. The rate is ``received / duration``. Refusals
are also counted by cause (:func:`refusal_cause`), and a cause a user can act
on (the server's per-UE rate limit, its overload answer) adds a warning.
"""

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Final

__all__ = [
    "BOTTLENECK_CPU",
    "Counts",
    "Histogram",
    "Summary",
    "coap_code",
    "format_table",
    "refusal_cause",
    "summarize",
]

_PER_DECADE: Final = 230
"""Buckets per factor of 10 (each ~1 % wide)."""

_DECADES: Final = 8
"""1 µs .. 100 s."""

_BUCKETS: Final = _PER_DECADE * _DECADES + 1

_SCALE: Final = _PER_DECADE / math.log(10)

BOTTLENECK_CPU: Final = 90.0
"""A generator process busier than this (% of one core) may be the limit."""

CONGESTION: Final = "SERVER_CONGESTION"
"""The cause of a refusal by the server's per-originator submission limit."""

_CAUSE: Final = re.compile(rb'"(?:failureCause|cause)"\s*:\s*"([A-Za-z0-9_]{1,64})"')
_STATUS: Final = re.compile(rb'"deliveryStatus"\s*:\s*"([A-Z_]{1,32})"')


def refusal_cause(code: str | None, payload: bytes) -> str:
    """A short key for a refusal, from its answer.

    ``code`` is None for a success code whose body refuses (a MSGRESP with
    ``DELY_REJECTED``: the key is its failure cause, else its status), or the
    error code (``"5.03"``, ``"HTTP 429"``), to which the body's cause is
    added (``"5.03 SERVER_CONGESTION"``).
    """
    match = _CAUSE.search(payload) or _STATUS.search(payload)
    cause = match.group(1).decode() if match else None
    if code is None:
        return cause or "refused"
    return f"{code} {cause}" if cause else code


def coap_code(code: int) -> str:
    """``"5.03"`` for the CoAP code byte 163."""
    return f"{code >> 5}.{code & 31:02d}"


class Histogram:
    """Latency counts in ~1 % logarithmic buckets from 1 µs (seconds in, ms out)."""

    __slots__ = ("buckets", "count", "max_s")

    def __init__(self, buckets: list[int] | None = None, max_s: float = 0.0) -> None:
        self.buckets = buckets if buckets is not None else [0] * _BUCKETS
        self.count = sum(self.buckets)
        self.max_s = max_s

    def add(self, seconds: float) -> None:
        """Count one latency (negative or tiny values go to the first bucket)."""
        micros = seconds * 1e6
        index = int(math.log(micros) * _SCALE) if micros > 1.0 else 0
        self.buckets[min(index, _BUCKETS - 1)] += 1
        self.count += 1
        self.max_s = max(self.max_s, seconds)

    def merge(self, other: "Histogram") -> None:
        """Add ``other``'s counts to this histogram."""
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.count += other.count
        self.max_s = max(self.max_s, other.max_s)

    def percentile_ms(self, q: float) -> float:
        """The ``q`` quantile (0 < q <= 1) in milliseconds; NaN when empty.

        The value is the upper edge of the bucket holding the ``ceil(q *
        count)``-th smallest latency (at most ~1 % high), never above the
        largest latency seen.
        """
        if not self.count:
            return math.nan
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for index, n in enumerate(self.buckets):
            seen += n
            if seen >= rank:
                if index == _BUCKETS - 1:  # the overflow bucket: above ~100 s
                    return self.max_s * 1000.0
                upper = math.exp((index + 1) / _SCALE) / 1000.0
                return min(upper, self.max_s * 1000.0)
        return self.max_s * 1000.0

    def to_wire(self) -> dict[str, Any]:
        """Sparse form for a pipe between processes."""
        return {
            "max_s": self.max_s,
            "buckets": {i: n for i, n in enumerate(self.buckets) if n},
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Histogram":
        """The inverse of :meth:`to_wire`."""
        buckets = [0] * _BUCKETS
        for index, n in data["buckets"].items():
            buckets[int(index)] = int(n)
        return cls(buckets, float(data["max_s"]))


@dataclass
class Counts:
    """What one generator process counted in the measured window."""

    sent: int = 0
    accepted: int = 0
    refused: int = 0
    received: int = 0
    timeouts: int = 0
    behind: int = 0
    """Paced sends that could not go out (every lane had its window full)."""
    cpu_s: float = 0.0
    """This process's CPU time during the window."""
    wall_s: float = 0.0
    """The window as this process measured it."""
    latency: Histogram = field(default_factory=Histogram)
    """Delivery latency: receipt at the recipient minus send time."""
    answer: Histogram = field(default_factory=Histogram)
    """Answer latency: the sender got MSGRESP (CoAP) or the HTTP answer."""
    extra: dict[str, float] = field(default_factory=dict)
    """Mode-specific figures (``fanout``: ``last_ms`` per round, maximum)."""
    refusals: dict[str, int] = field(default_factory=dict)
    """Refusals by cause (:func:`refusal_cause`)."""

    def refuse(self, cause: str, n: int = 1) -> None:
        """Count ``n`` refusals for ``cause``."""
        self.refused += n
        self.refusals[cause] = self.refusals.get(cause, 0) + n

    def to_wire(self) -> dict[str, Any]:
        data = asdict(self)
        data["latency"] = self.latency.to_wire()
        data["answer"] = self.answer.to_wire()
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> "Counts":
        values = dict(data)
        values["latency"] = Histogram.from_wire(values["latency"])
        values["answer"] = Histogram.from_wire(values["answer"])
        return cls(**values)


@dataclass
class Summary:
    """The merged figures of one run (what ``--json`` prints)."""

    mode: str
    server: str
    ues: int
    workers: int
    duration_s: float
    offered_rate: float
    """``--rate`` (0: closed loop, as fast as the server answers)."""
    rate: float
    """Received per second of the window."""
    sent: int
    accepted: int
    refused: int
    received: int
    lost: int
    timeouts: int
    behind: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    answer_p50_ms: float
    """How long the sender waited for its answer (MSGRESP, REGRESP, HTTP)."""
    answer_p99_ms: float
    generator_cpu_pct: float
    """The busiest generator process's CPU, % of one core."""
    generator_bottleneck: bool
    generator_us_per_unit: float
    """CPU of all generator processes per received unit (µs): with ``W``
    processes of one core each, the generator alone could reach about
    ``W * 1e6 / generator_us_per_unit`` units/s."""
    extra: dict[str, float] = field(default_factory=dict)
    refusals: dict[str, int] = field(default_factory=dict)
    """Refusals by cause (a failure cause, a status, or a CoAP/HTTP code)."""
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """One JSON object (NaN percentiles, when nothing arrived, become null)."""
        data = {
            key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in asdict(self).items()
        }
        return json.dumps(data, sort_keys=False)


_SUMMED: Final = frozenset({"mid_reused"})
"""Extra figures added over processes (the others: the largest)."""

_UNIT: Final = {
    "p2p": "msgs/s delivered",
    "reg": "registrations/s",
    "a2p": "msgs/s delivered",
    "fanout": "copies/s delivered",
}


def summarize(
    parts: list[Counts],
    *,
    mode: str,
    server: str,
    ues: int,
    duration_s: float,
    offered_rate: float,
) -> Summary:
    """Merge the workers' counts into one :class:`Summary`.

    Raises:
        ValueError: no worker reported, or the duration is not positive.
    """
    if not parts:
        raise ValueError("no generator process reported")
    if duration_s <= 0:
        raise ValueError("the duration must be positive")
    latency, answer = Histogram(), Histogram()
    for part in parts:
        latency.merge(part.latency)
        answer.merge(part.answer)
    sent = sum(p.sent for p in parts)
    refused = sum(p.refused for p in parts)
    received = sum(p.received for p in parts)
    cpu = max(100.0 * p.cpu_s / p.wall_s if p.wall_s > 0 else 0.0 for p in parts)
    extra: dict[str, float] = {}
    for part in parts:
        for key, value in part.extra.items():
            if key in _SUMMED:
                extra[key] = extra.get(key, 0) + value
            else:
                extra[key] = max(extra.get(key, value), value)
    refusals: dict[str, int] = {}
    for part in parts:
        for cause, n in part.refusals.items():
            refusals[cause] = refusals.get(cause, 0) + n
    behind = sum(p.behind for p in parts)
    warnings = _refusal_warnings(refusals)
    bottleneck = cpu >= BOTTLENECK_CPU
    if bottleneck:
        warnings.append(
            f"the generator was busy {cpu:.0f} % of a core: it may be the limit, "
            "not the server (add --workers, or run it on another machine)"
        )
    if behind:
        warnings.append(
            f"{behind:,} paced sends could not go out (every UE had its window "
            "full): the server did not keep up with --rate"
        )
    return Summary(
        mode=mode,
        server=server,
        ues=ues,
        workers=len(parts),
        duration_s=duration_s,
        offered_rate=offered_rate,
        rate=received / duration_s,
        sent=sent,
        accepted=sum(p.accepted for p in parts),
        refused=refused,
        received=received,
        lost=max(0, sent - refused - received),
        timeouts=sum(p.timeouts for p in parts),
        behind=behind,
        p50_ms=latency.percentile_ms(0.50),
        p90_ms=latency.percentile_ms(0.90),
        p99_ms=latency.percentile_ms(0.99),
        max_ms=latency.max_s * 1000.0 if latency.count else math.nan,
        answer_p50_ms=answer.percentile_ms(0.50),
        answer_p99_ms=answer.percentile_ms(0.99),
        generator_cpu_pct=cpu,
        generator_bottleneck=bottleneck,
        generator_us_per_unit=(
            1e6 * sum(p.cpu_s for p in parts) / received if received else math.nan
        ),
        extra=extra,
        refusals=dict(sorted(refusals.items(), key=lambda kv: -kv[1])),
        warnings=warnings,
    )


def _refusal_warnings(refusals: dict[str, int]) -> list[str]:
    """What a user can do about the refusals they can act on."""
    warnings = []
    congested = refusals.get(CONGESTION, 0)
    if congested:
        warnings.append(
            f"{congested:,} messages were refused with {CONGESTION}: the server "
            "limits what each UE submits (limits.submit_rate, default 2,000/s per "
            "UE); spread the load over more --ues, or raise the limit on a test "
            "server (--set limits.submit_rate=0)"
        )
    overloaded = sum(n for key, n in refusals.items() if key.startswith("5.03"))
    if overloaded:
        warnings.append(
            f"{overloaded:,} requests were answered 5.03 (the server was "
            "overloaded and shed them): lower --rate or --window"
        )
    limited = sum(n for key, n in refusals.items() if key.startswith("HTTP 429"))
    if limited:
        warnings.append(
            f"{limited:,} requests were answered 429: the server limits each AS "
            "(rest.rate_limit); raise it on a test server"
        )
    return warnings


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f} ms"


def _per_unit(summary: Summary) -> str:
    cost = summary.generator_us_per_unit
    if math.isnan(cost) or cost <= 0:
        return "-"
    ceiling = summary.workers * 1e6 / cost
    return f"{cost:,.0f} µs CPU per unit (alone it could do ~{ceiling:,.0f}/s)"


def _refused(summary: Summary) -> str:
    if not summary.refusals:
        return f"{summary.refused:,}"
    causes = ", ".join(f"{cause} {n:,}" for cause, n in summary.refusals.items())
    return f"{summary.refused:,} ({causes})"


def format_table(summary: Summary) -> str:
    """The human summary: a two-column table, then any warnings."""
    offered = (
        f"{summary.offered_rate:,.0f}/s paced"
        if summary.offered_rate
        else "closed loop (saturation)"
    )
    rows = [
        ("mode", f"{summary.mode} against {summary.server}"),
        ("load", f"{summary.ues:,} UEs, {summary.workers} process(es), {offered}"),
        ("duration", f"{summary.duration_s:.1f} s"),
        ("rate", f"{summary.rate:,.0f} {_UNIT.get(summary.mode, '/s')}"),
        ("latency p50", _ms(summary.p50_ms)),
        ("latency p90", _ms(summary.p90_ms)),
        ("latency p99", _ms(summary.p99_ms)),
        ("latency max", _ms(summary.max_ms)),
        (
            "answer p50/p99",
            f"{_ms(summary.answer_p50_ms)} / {_ms(summary.answer_p99_ms)}",
        ),
        ("sent", f"{summary.sent:,}"),
        ("accepted", f"{summary.accepted:,}"),
        ("received", f"{summary.received:,}"),
        ("refused", _refused(summary)),
        ("lost", f"{summary.lost:,} ({summary.timeouts:,} without an answer)"),
        ("generator CPU", f"{summary.generator_cpu_pct:.0f} % of a core (busiest)"),
        ("generator cost", _per_unit(summary)),
    ]
    rows += [
        (key.replace("_", " "), f"{value:,.2f}") for key, value in summary.extra.items()
    ]
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    lines += [f"warning: {text}" for text in summary.warnings]
    return "\n".join(lines)
