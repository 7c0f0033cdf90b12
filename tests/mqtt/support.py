"""Helpers of the MQTT binding tests: servers and clients on a private mosquitto.

Everything is real: a ``mosquitto`` process on a free loopback port (never the
machine's broker on 1883), the server's SQLite file, CoAP over UDP for the CoAP
UEs, and paho-mqtt / mosquitto_pub / mosquitto_sub as foreign MQTT clients.
"""

import asyncio
import json
import queue
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.server import Server, provision_ue
from tests.mosquitto import Mosquitto

UES = ("m1", "m2", "m3", "c1", "c2")
"""m*: MQTT UEs; c*: CoAP UEs (all provisioned with secret-<id>)."""


async def provisioned(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mqtt.db'}"
    for ue in UES:
        await provision_ue(url, ue, f"secret-{ue}")
    return url


@asynccontextmanager
async def running_server(
    url: str, broker_url: str, **settings: str
) -> AsyncIterator[Server]:
    overrides = {
        "coap.bind": "127.0.0.1:0",
        "storage.url": url,
        "rest.enabled": "false",
        "mqtt.url": broker_url,
        **settings,
    }
    async with Server(load_config(None, {}, overrides)) as server:
        yield server


def coap_ue(server: Server, ue: str) -> Client:
    host, port = server.coap_address
    return Client(
        ue, f"secret-{ue}", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0)
    )


def mqtt_ue(broker: Mosquitto, ue: str) -> Client:
    return Client(ue, f"secret-{ue}", server=broker.url)


class Paho:
    """A foreign MQTT 5 client (paho-mqtt, its own network thread)."""

    def __init__(
        self, broker: Mosquitto, client_id: str, *, username: str | None = None,
        password: str | None = None,
    ) -> None:  # fmt: skip
        self.received: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.acks: queue.Queue[Any] = queue.Queue()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_message = lambda _c, _u, msg: self.received.put(msg)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self.acks.put((mid, rc))
        connected: queue.Queue[Any] = queue.Queue()
        self.client.on_connect = lambda _c, _u, _f, rc, _p: connected.put(rc)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.connect_code = connected.get(timeout=10)

    def subscribe(self, topic: str) -> Any:
        """SUBSCRIBE QoS 1; returns the SUBACK reason code."""
        done: queue.Queue[Any] = queue.Queue()
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: done.put(codes)
        self.client.subscribe(topic, qos=1)
        return done.get(timeout=10)[0]

    def publish(
        self, topic: str, body: bytes | dict[str, Any], *, correlation: bytes = b"c1"
    ) -> Any:
        """Publish QoS 1 with Correlation Data; returns the PUBACK reason code."""
        props = Properties(PacketTypes.PUBLISH)
        props.CorrelationData = correlation
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        info = self.client.publish(topic, payload, qos=1, properties=props)
        while True:
            mid, code = self.acks.get(timeout=10)
            if mid == info.mid:
                return code

    async def next(self, timeout: float = 10.0) -> paho.MQTTMessage:
        return await asyncio.to_thread(self.received.get, timeout=timeout)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def user_property(message: paho.MQTTMessage, name: str) -> str | None:
    for key, value in getattr(message.properties, "UserProperty", None) or ():
        if key == name:
            return str(value)
    return None
