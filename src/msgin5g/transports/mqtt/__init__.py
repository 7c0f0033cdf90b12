"""MSGin5G-1 over MQTT 5 through an existing broker (docs/mqtt.md).

:class:`MqttTransport` consumes the uplink topics (shared subscription) and is
the ``Deliverer`` for UEs whose contact is an MQTT contact; it needs the
``mqtt`` extra (``pip install 'msgin5g[mqtt]'``, aiomqtt).
"""

from msgin5g.transports.mqtt.server import MqttTransport

__all__ = ["MqttTransport"]
