"""Our MQTT 5 session keeper on aiomqtt; it knows nothing of MSGin5G.

The server's transport (:mod:`msgin5g.transports.mqtt`) and the device's
(:mod:`msgin5g.client.mqtt`) both keep one session to the broker with
:class:`~msgin5g.mqtt.link.BrokerLink`; the MSGin5G topic layout is
:mod:`msgin5g.mqtt_binding`. Needs the ``mqtt`` extra (aiomqtt).
"""
