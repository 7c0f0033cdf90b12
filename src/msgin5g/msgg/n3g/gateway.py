"""The Non-3GPP Message Gateway process (``msgin5g n3g``; embeddable).

Devices are plain MQTT clients; a device's identity is its UE Service ID. The
conventions (docs/gateways.md), with ``P`` the ``--prefix`` (default ``n3g``):

* **MT** — ``POST deliver-message`` for device ``D`` is stored in the outbox and
  answered ``204``; it is then published at QoS 1 on ``P/D/down`` with the raw
  payload (no envelope);
* **reports** — with ``--ack puback`` (default) the broker's PUBACK produces
  ``REPT_DELY_SUCCESS``: the broker took the message for the device (which
  must hold a persistent session, ``clean_session = false``, to receive it
  after a disconnection: QoS 1 is broker-to-device as well); with
  ``--ack app`` the report waits until the device publishes the msgId (UTF-8,
  alone) on ``P/D/ack``, and becomes ``REPT_DELY_FAILED`` /
  ``RECIPIENT_NOT_REACHABLE`` after ``--ack-timeout`` seconds;
* **MO** — what ``D`` publishes on ``P/D/up`` becomes ``deliver-ue-message``
  from ``D`` to ``--uplink-to`` (``ue:ID`` or ``as:ID``), or, without it, to
  the last originator that wrote to ``D``.

Broker: ``mqtt://HOST:PORT`` or ``mqtts://HOST:PORT`` (TLS, the system's CA
certificates), with ``USER[:PASSWORD]@`` for brokers that require a login (the
password may come from ``MSGIN5G_MQTT_PASSWORD`` instead, to keep it out of
``ps``). The MQTT client (``aiomqtt``) reconnects with back-off (1 s doubling to 30 s);
the outbox keeps every MT message until its PUBACK arrived, so a broker
outage loses nothing acknowledged (a PUBACK lost in the outage means the
message is published again: at-least-once, like QoS 1 itself).
"""

import asyncio
import base64
import binascii
import logging
import os
import ssl
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from msgin5g.codec.openapi_json import DeliveryStatusReport
from msgin5g.errors import ConfigError, InvalidRequest, NotRegistered
from msgin5g.msgg.api import GatewayMessageDelivery
from msgin5g.msgg.base import GatewayConfig, GatewayProcess, GatewayRuntime, cancel
from msgin5g.spec.causes import FailureCause

__all__ = ["N3GConfig", "NonGateway", "parse_target"]

log = logging.getLogger(__name__)

MQTT = "mqtt"
"""Outbox queue of MT messages to publish."""
_ROUTE_TTL = 7 * 86_400.0


def parse_target(text: str) -> tuple[str, str]:
    """``ue:ID`` / ``as:ID`` → ("UE" | "AS", ID)."""
    kind, _, ident = text.partition(":")
    if kind not in {"ue", "as"} or not ident:
        raise ConfigError(f"--uplink-to {text!r}: expected ue:ID or as:ID")
    return kind.upper(), ident


@dataclass
class N3GConfig:
    """``msgin5g n3g`` settings."""

    gateway: GatewayConfig
    broker: str = "mqtt://127.0.0.1:1883"
    prefix: str = "n3g"
    devices: list[str] = field(default_factory=list)
    uplink_to: tuple[str, str] | None = None
    ack: str = "puback"
    ack_timeout: float = 300.0


class NonGateway(GatewayProcess):
    """One N3G: MSGG_N3GDelivery server, MQTT client, server registration."""

    def __init__(self, config: N3GConfig) -> None:
        self.config = config
        url = urlsplit(config.broker)
        if url.scheme not in {"mqtt", "mqtts"} or not url.hostname:
            raise ConfigError(
                "--broker: expected mqtt://[USER[:PASSWORD]@]HOST[:PORT] or mqtts://…"
            )
        self._host = url.hostname
        self._tls = ssl.create_default_context() if url.scheme == "mqtts" else None
        self._port = url.port or (8883 if self._tls else 1883)
        self._username = unquote(url.username) if url.username else None
        password = unquote(url.password) if url.password else None
        self._password = password or os.environ.get("MSGIN5G_MQTT_PASSWORD")
        self.broker = f"{url.scheme}://{self._host}:{self._port}"
        """The broker without credentials (for logs)."""
        self._devices = sorted(set(config.devices))
        for device in self._devices:
            if not device or any(c in device for c in "/+#"):
                raise ConfigError(f"device {device!r}: no '/', '+' or '#' allowed")
        self._known = set(self._devices)
        self.runtime = GatewayRuntime(config.gateway, self, lambda: self._devices)
        self._wake = asyncio.Event()
        self.connected = asyncio.Event()
        self.published = 0

    # lifecycle -------------------------------------------------------------------

    async def _open(self, stack: AsyncExitStack) -> None:
        """Connect to the broker (reconnecting in the background)."""
        task = asyncio.create_task(self._mqtt_loop(), name="mqtt")
        stack.push_async_callback(cancel, task)

    def topic(self, device: str, leaf: str) -> str:
        """``PREFIX/DEVICE/LEAF``."""
        return f"{self.config.prefix}/{device}/{leaf}"

    # MSGG_N3GDelivery (GatewayHandler) -----------------------------------------------

    async def deliver(self, body: GatewayMessageDelivery) -> None:
        """Store a message for a device (see the module docstring)."""
        if body.dest_addr.addr_type != "UE":
            raise InvalidRequest("destAddr.addrType must be UE")
        device = body.dest_addr.addr
        if device not in self._known:
            raise NotRegistered(
                f"{device} is not a device of this gateway",
                cause=FailureCause.RECIPIENT_UNKNOWN,
            )
        try:
            base64.b64decode(body.payload or "", validate=True)
        except binascii.Error:
            raise InvalidRequest("payload is not base64") from None
        outbox = self.runtime.box
        originator = body.ori_addr.wire()
        outbox.put(
            MQTT,
            {
                "device": device,
                "payload": body.payload or "",
                "msgId": body.msg_id,
                "report": bool(body.deliv_st_req_ind),
                "ori": originator,
            },
        )
        outbox.remember(f"reply:{device}", originator, _ROUTE_TTL)
        self._wake.set()

    async def report(self, body: DeliveryStatusReport) -> None:
        """A report for a message a device sent: logged (a plain device has no
        place to receive it)."""
        log.info(
            "report for %s: %s %s", body.dest_addr.addr, body.msg_id, body.deliv_st
        )

    # MQTT --------------------------------------------------------------------------

    async def _mqtt_loop(self) -> None:
        failures = 0
        while True:
            try:
                async with aiomqtt.Client(
                    self._host,
                    self._port,
                    identifier=f"msgin5g-{self.config.gateway.gateway_id}",
                    clean_session=False,
                    username=self._username,
                    password=self._password if self._username else None,
                    tls_context=self._tls,
                ) as client:
                    failures = 0
                    await client.subscribe(self.topic("+", "up"), qos=1)
                    await client.subscribe(self.topic("+", "ack"), qos=1)
                    self.connected.set()
                    log.info("connected to MQTT broker %s", self.broker)
                    async with asyncio.TaskGroup() as group:
                        group.create_task(self._publish_loop(client))
                        group.create_task(self._receive_loop(client))
            except* aiomqtt.MqttError as errors:
                self.connected.clear()
                failures += 1
                delay = min(30.0, 2.0 ** min(failures - 1, 5))
                log.warning(
                    "MQTT broker %s: %s; reconnecting in %.0f s",
                    self.broker,
                    errors.exceptions[0],
                    delay,
                )
                await asyncio.sleep(delay)

    async def _publish_loop(self, client: aiomqtt.Client) -> None:
        outbox = self.runtime.box
        while True:
            self._expire_acks()
            rows = outbox.ready(MQTT, exclude=set(), limit=100)
            if not rows:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                except TimeoutError:
                    pass
                continue
            for row in rows:
                await self._publish(client, row.id, row.body)

    async def _publish(
        self, client: aiomqtt.Client, row_id: int, row: dict[str, Any]
    ) -> None:
        outbox = self.runtime.box
        device = row["device"]
        await client.publish(
            self.topic(device, "down"),
            payload=base64.b64decode(row["payload"]),
            qos=1,
        )
        # aiomqtt returns once the broker's PUBACK arrived
        outbox.remove(row_id)
        self.published += 1
        if not row["report"]:
            return
        if self.config.ack == "puback":
            self.runtime.send_report(device, row["ori"], row["msgId"], delivered=True)
        else:
            outbox.remember(
                f"ack:{device}:{row['msgId']}", row, self.config.ack_timeout
            )

    async def _receive_loop(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            parts = str(message.topic).split("/")
            if len(parts) < 3:
                continue
            device, leaf = parts[-2], parts[-1]
            if device not in self._known:
                log.warning("MQTT %s from unknown device dropped", message.topic)
                continue
            payload = message.payload
            data = (
                payload
                if isinstance(payload, bytes | bytearray)
                else str(payload).encode()
            )
            if leaf == "up":
                self._uplink(device, bytes(data))
            elif leaf == "ack":
                self._acked(device, bytes(data).decode("utf-8", "replace").strip())

    def _uplink(self, device: str, payload: bytes) -> None:
        target = self.config.uplink_to
        if target is None:
            outbox = self.runtime.box
            last = outbox.recall(f"reply:{device}")
            if last is None:
                log.warning(
                    "uplink from %s: no --uplink-to and nobody to reply to", device
                )
                return
            target = (str(last["addrType"]), str(last["addr"]))
        msg_id = self.runtime.send_ue_message(device, target, payload)
        log.info("uplink from %s → %s %s as %s", device, *target, msg_id)

    def _acked(self, device: str, msg_id: str) -> None:
        outbox = self.runtime.box
        row = outbox.recall(f"ack:{device}:{msg_id}", forget=True)
        if row is None:
            log.info("ack from %s for unknown message %s", device, msg_id[:64])
            return
        self.runtime.send_report(device, row["ori"], row["msgId"], delivered=True)

    def _expire_acks(self) -> None:
        if self.config.ack != "app":
            return
        outbox = self.runtime.box
        for row in outbox.take_expired("ack:", time.time()):
            self.runtime.send_report(
                row["device"],
                row["ori"],
                row["msgId"],
                delivered=False,
                cause=FailureCause.RECIPIENT_NOT_REACHABLE.value,
            )
