"""Prometheus metrics of the MQTT binding (``GET /metrics``, beside server.metrics).

Read at scrape time from the counters the MQTT transport keeps (nothing on the
hot path but its ``+= 1``), as :class:`~msgin5g.server.metrics.ServerCollector`
does for CoAP; registered only when ``[mqtt] url`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from msgin5g.transports.mqtt import MqttTransport

__all__ = ["MqttCollector"]


class MqttCollector(Collector):
    """The MQTT transport's uplink counts, delivery latency and broker link."""

    def __init__(self, mqtt: MqttTransport) -> None:
        self._mqtt = mqtt

    def collect(self) -> Iterator[Metric]:
        """Metric families of one scrape."""
        mqtt = self._mqtt
        uplink = CounterMetricFamily(
            "msgin5g_mqtt_uplink_messages",
            "MSGin5G-1 requests from UEs over MQTT by Message Type and result "
            "(ok, or the failureCause)",
            labels=("type", "result"),
        )
        for (kind, result), count in sorted(mqtt.uplink.items()):
            uplink.add_metric((kind, result), count)
        yield uplink
        histogram = mqtt.delivery_latency
        latency = HistogramMetricFamily(
            "msgin5g_mqtt_delivery_latency_seconds",
            "time from a downlink publication to the UE's answer on its ack topic",
        )
        latency.add_metric([], histogram.cumulative(), histogram.sum)
        yield latency
        yield GaugeMetricFamily(
            "msgin5g_mqtt_broker_connected",
            "1 while the broker link is up",
            value=1 if mqtt.link.connected.is_set() else 0,
        )
        yield CounterMetricFamily(
            "msgin5g_mqtt_broker_connects",
            "connections to the broker (the first and every reconnect)",
            value=mqtt.link.connects,
        )
        yield GaugeMetricFamily(
            "msgin5g_mqtt_pending_deliveries",
            "downlink publications waiting for the UE's answer",
            value=mqtt.pending_deliveries,
        )
