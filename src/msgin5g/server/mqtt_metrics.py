"""Prometheus metrics of the MQTT binding (``GET /metrics``, beside server.metrics).

Read at scrape time from the counters the MQTT transport keeps (nothing on the
hot path but its ``+= 1``), as :class:`~msgin5g.server.metrics.ServerCollector`
does for CoAP (the uplink and latency families through the same
:func:`~msgin5g.server.metrics.binding_metrics`); registered only when
``[mqtt] url`` is set.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from msgin5g.server.metrics import binding_metrics

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
        yield from binding_metrics(
            "msgin5g_mqtt_",
            " over MQTT",
            mqtt.uplink,
            mqtt.delivery_latency,
            "time from a downlink publication to the UE's answer on its ack topic",
        )
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
