"""Prometheus metrics of a running server: a collector over the existing counters.

What: :class:`ServerCollector` is a prometheus-client custom collector. At
scrape time it reads the plain counters the server already keeps (service
``stats()``, the CoAP endpoint's message-layer counters, the CoAP transport's
uplink counts and delivery-latency histogram, the stored-usage totals, the
REST request counts; with ``coap.secure_bind`` the DTLS server's counters, with
``cluster.node_id`` the cluster's hand-offs and live nodes) and turns them into
metric families. :func:`render` produces the text exposition format for
``GET /metrics``. :func:`binding_metrics` is the part every MSGin5G-1 binding
shares (uplink counts, delivery latency): :mod:`.mqtt_metrics` uses it too.

Why a collector and not prometheus-client's ``Counter.inc()`` per message: the
hot path then pays nothing but the ``+= 1`` it already did (PERFORMANCE.md);
all the formatting happens once per scrape.

Names follow the Prometheus conventions: ``msgin5g_`` prefix, ``_total`` for
counters, base units (seconds, bytes). Multi-process: every server process
serves its own figures on its own REST port (the collector reads that
process's memory); Prometheus scrapes each process and sums with ``sum()``
(``PROMETHEUS_MULTIPROC_DIR`` is not needed: nothing is written to files).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from msgin5g.runtime.histogram import Histogram
    from msgin5g.service.messaging import MessagingService
    from msgin5g.transports.coap import CoapTransport

__all__ = [
    "CONTENT_TYPE",
    "ServerCollector",
    "StatsSource",
    "binding_metrics",
    "render",
    "traffic_counts",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_COAP_COUNTERS = (
    ("received", "msgin5g_coap_datagrams_received_total", "CoAP datagrams received"),
    ("sent", "msgin5g_coap_datagrams_sent_total", "CoAP datagrams sent"),
    (
        "retransmissions",
        "msgin5g_coap_retransmissions_total",
        "CON retransmissions (RFC 7252 §4.2)",
    ),
    (
        "duplicates",
        "msgin5g_coap_duplicates_total",
        "duplicate requests answered from the cache",
    ),
    (
        "timeouts",
        "msgin5g_coap_timeouts_total",
        "downlink exchanges given up after every retransmission",
    ),
    ("malformed", "msgin5g_coap_malformed_total", "undecodable CoAP datagrams"),
    ("resets_sent", "msgin5g_coap_resets_sent_total", "RST messages sent"),
    (
        "dropped",
        "msgin5g_coap_dropped_total",
        "datagrams dropped by the per-source rate limit",
    ),
    (
        "send_thread_fallbacks",
        "msgin5g_coap_send_thread_fallbacks_total",
        "datagrams the event loop sent itself: the send thread's queue was full "
        "or the address not numeric",
    ),
    (
        "send_thread_failed",
        "msgin5g_coap_send_thread_failed_total",
        "datagrams the send thread could not send (after one retry)",
    ),
    (
        "socket_refused",
        "msgin5g_coap_icmp_unreachable_total",
        "ICMP port unreachable errors read from the listener's socket",
    ),
    (
        "socket_dropped",
        "msgin5g_coap_send_dropped_total",
        "datagrams dropped because the socket stayed full (8,192 waiting)",
    ),
    (
        "socket_errors",
        "msgin5g_coap_socket_errors_total",
        "send or receive errors on the listener's socket",
    ),
)
_COAP_GAUGES = (
    ("pending", "msgin5g_coap_exchanges_open", "outstanding and queued requests"),
    ("handlers_running", "msgin5g_coap_handlers_running", "requests in progress"),
    ("observations", "msgin5g_coap_observations", "CoAP Observe registrations"),
    ("dedup_bytes", "msgin5g_coap_dedup_bytes", "bytes held by the duplicate cache"),
    (
        "send_thread_queued",
        "msgin5g_coap_send_thread_queued",
        "datagrams waiting in the send thread's queue",
    ),
    (
        "socket_queued",
        "msgin5g_coap_send_queued",
        "datagrams waiting for the listener's socket to be writable",
    ),
)

_DTLS_COUNTERS = (
    ("handshakes", "msgin5g_dtls_handshakes_total", "DTLS handshakes completed"),
    (
        "handshake_failures",
        "msgin5g_dtls_handshake_failures_total",
        "DTLS handshakes that failed (wrong key, alert) or timed out",
    ),
    (
        "hello_verify",
        "msgin5g_dtls_hello_verify_requests_total",
        "ClientHellos answered with a stateless HelloVerifyRequest (cookie)",
    ),
    (
        "dropped",
        "msgin5g_dtls_dropped_total",
        "datagrams dropped by the per-source rate limit before any DTLS work",
    ),
    (
        "refused_full",
        "msgin5g_dtls_refused_total",
        "handshakes refused: session, per-host or handshake bound reached",
    ),
    (
        "rebound",
        "msgin5g_dtls_rebindings_total",
        "sessions that moved to a new source address (NAT rebinding)",
    ),
    (
        "bad_records",
        "msgin5g_dtls_bad_records_total",
        "records that failed to parse, authenticate or fit a session",
    ),
    ("closed", "msgin5g_dtls_sessions_closed_total", "DTLS sessions closed"),
)
_DTLS_GAUGES = (
    ("sessions", "msgin5g_dtls_sessions", "DTLS sessions held (with handshakes)"),
    ("handshaking", "msgin5g_dtls_handshakes_in_progress", "DTLS handshakes open"),
)
_CLUSTER_COUNTERS = (
    (
        "handed_out",
        "msgin5g_cluster_handed_out_total",
        "stored items handed off to the node that owns their recipient",
    ),
    (
        "handed_in",
        "msgin5g_cluster_handed_in_total",
        "stored items taken over from other nodes",
    ),
)
_CLUSTER_GAUGES = (
    ("nodes_alive", "msgin5g_cluster_nodes_alive", "cluster nodes with a live lease"),
)

_Spec = tuple[tuple[str, str, str], ...]


@runtime_checkable
class StatsSource(Protocol):
    """Anything with a ``stats()`` of named integer figures (DTLS, cluster)."""

    def stats(self) -> dict[str, int]:
        """The figures now."""
        ...


def _families(
    stats: Mapping[str, int], counters: _Spec, gauges: _Spec
) -> Iterator[Metric]:
    """Counter and gauge families of the keys of ``stats`` named in the specs."""
    for key, name, text in counters:
        if key in stats:
            yield CounterMetricFamily(name, text, value=stats[key])
    for key, name, text in gauges:
        if key in stats:
            yield GaugeMetricFamily(name, text, value=stats[key])


def binding_metrics(
    prefix: str,
    over: str,
    uplink: Mapping[tuple[str, str], int],
    latency: Histogram,
    latency_help: str,
) -> Iterator[Metric]:
    """Uplink counts and the delivery-latency histogram of one MSGin5G-1 binding.

    Args:
        prefix: ``msgin5g_`` (CoAP) or ``msgin5g_mqtt_``.
        over: words after "requests from UEs" in the help text (``""``, ``" over MQTT"``).
        uplink: ``(Message Type, result) -> count``.
        latency: the binding's delivery-latency histogram.
        latency_help: what the histogram measures.
    """
    family = CounterMetricFamily(
        f"{prefix}uplink_messages",
        f"MSGin5G-1 requests from UEs{over} by Message Type and result "
        "(ok, or the failureCause)",
        labels=("type", "result"),
    )
    for (kind, result), count in sorted(uplink.items()):
        family.add_metric((kind, result), count)
    yield family
    histogram = HistogramMetricFamily(f"{prefix}delivery_latency_seconds", latency_help)
    histogram.add_metric([], latency.cumulative(), latency.sum)
    yield histogram


class ServerCollector(Collector):
    """Reads the server's counters at scrape time.

    Args:
        service: the running messaging service.
        coap: the CoAP transport (None before it is started).
        rest_requests: ``(api, code) -> count`` of the REST port, or a callable
            returning it (None when the REST APIs are off).
        cluster: this node's cluster membership (``cluster.node_id``), if any.
    """

    def __init__(
        self,
        service: MessagingService,
        coap: CoapTransport | None,
        rest_requests: Callable[[], dict[tuple[str, str], int]] | None = None,
        cluster: StatsSource | None = None,
    ) -> None:
        self._service = service
        self._coap = coap
        self._rest_requests = rest_requests
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        """Yield every metric family (called by the registry per scrape)."""
        yield from self._service_metrics()
        if self._coap is not None:
            yield from self._coap_metrics(self._coap)
        if self._rest_requests is not None:
            rest = CounterMetricFamily(
                "msgin5g_rest_requests",
                "TS 29.538 REST requests by API root and HTTP status",
                labels=("api", "code"),
            )
            for (api, code), count in sorted(self._rest_requests().items()):
                rest.add_metric((api, code), count)
            yield rest
        if self._cluster is not None:
            stats = self._cluster.stats()
            yield from _families(stats, _CLUSTER_COUNTERS, _CLUSTER_GAUGES)

    def _service_metrics(self) -> Iterator[Metric]:
        service = self._service
        stats = service.stats()
        direct = gateway = 0
        for registration in service.registry.registrations():
            if registration.gateway is None:
                direct += 1
            else:
                gateway += 1
        ues = GaugeMetricFamily(
            "msgin5g_registered_ues",
            "registered UEs by kind (direct, or through a Gateway UE)",
            labels=("kind",),
        )
        ues.add_metric(("direct",), direct)
        ues.add_metric(("gateway",), gateway)
        yield ues
        yield GaugeMetricFamily(
            "msgin5g_registered_ases",
            "registered Application Servers",
            value=stats["registeredAss"],
        )
        deliveries = CounterMetricFamily(
            "msgin5g_downlink_messages",
            "messages and reports leaving the server, by result",
            labels=("result",),
        )
        for result in ("delivered", "failed", "expired"):
            deliveries.add_metric((result,), stats[result])
        yield deliveries
        yield CounterMetricFamily(
            "msgin5g_fanout_copies",
            "copies made by group, topic and broadcast fan-outs",
            value=stats["fanoutCopies"],
        )
        transit = CounterMetricFamily(
            "msgin5g_transit_messages",
            "messages that asked for no storage, delivered before their write:"
            " unwritten (delivered within delivery.transit_hold) or written",
            labels=("outcome",),
        )
        transit.add_metric(("unwritten",), stats["transitUnwritten"])
        transit.add_metric(("written",), stats["transitWritten"])
        yield transit
        quotas = service.quotas
        yield GaugeMetricFamily(
            "msgin5g_stored_messages",
            "items waiting in store and forward",
            value=quotas.total_items(),
        )
        yield GaugeMetricFamily(
            "msgin5g_stored_bytes",
            "payload octets waiting in store and forward",
            value=quotas.total_bytes,
        )
        refused = CounterMetricFamily(
            "msgin5g_refusals",
            "submissions refused by a storage quota or the submission rate",
            labels=("reason",),
        )
        refused.add_metric(("storage_quota",), quotas.refused_storage)
        refused.add_metric(("rate",), quotas.refused_rate)
        yield refused
        yield GaugeMetricFamily(
            "msgin5g_deliveries_in_memory",
            "deliveries waiting in memory",
            value=stats["pendingInMemory"],
        )
        yield CounterMetricFamily(
            "msgin5g_background_task_failures",
            "background tasks that failed (each was logged)",
            value=stats["taskFailures"],
        )

    def _coap_metrics(self, coap: CoapTransport) -> Iterator[Metric]:
        yield from binding_metrics(
            "msgin5g_",
            "",
            coap.uplink,
            coap.delivery_latency,
            "time from a downlink CON to the UE's answer",
        )
        secure = coap.secure
        if secure is not None:
            yield from _families(secure.dtls.stats(), _DTLS_COUNTERS, _DTLS_GAUGES)
        try:
            stats = coap.endpoint.stats()
        except RuntimeError:  # not started or already closed
            return
        yield from _families(stats, _COAP_COUNTERS, _COAP_GAUGES)


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition of ``registry`` (what ``GET /metrics`` answers)."""
    return generate_latest(registry)


_MESSAGE_UPLINKS = frozenset({"MSG", "AGGMSG"})


def traffic_counts(
    service: MessagingService,
    coap: CoapTransport,
    rest_requests: Callable[[], dict[tuple[str, str], int]],
) -> tuple[int, int]:
    """Cumulative (messages in, messages out) for the console's rate chart.

    In: ``MSG`` / ``AGGMSG`` uplinks answered ok plus ``msgs-msgdelivery``
    requests answered 2xx; out: items delivered (messages and reports).
    """
    received = sum(
        count
        for (kind, result), count in coap.uplink.items()
        if kind in _MESSAGE_UPLINKS and result == "ok"
    )
    received += sum(
        count
        for (api, code), count in rest_requests().items()
        if api == "msgs-msgdelivery" and code.startswith("2")
    )
    return received, service.delivery.delivered
