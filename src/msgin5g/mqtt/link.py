"""One MQTT 5 session to a broker, kept up (aiomqtt, docs/mqtt.md).

:class:`BrokerLink` connects as an ordinary client, subscribes its topic
filters (QoS 1), hands every received PUBLISH to a callback in the event loop,
and reconnects with back-off (1 s doubling to 30 s) when the broker goes away.
While it is down, :meth:`BrokerLink.publish` raises
:class:`~msgin5g.errors.ConnectError` at once: the server's delivery engine
then treats MQTT UEs as unreachable, so what is stored stays stored until the
link is back (nothing acknowledged is lost), and a device's request fails
instead of hanging.

:meth:`BrokerLink.start` waits for the first connection, bounded by
``connect_timeout``; the first attempt's failure (refused, bad credentials, no
such host) is reported at once with the broker's address and the reason, as
:class:`~msgin5g.errors.BrokerUnreachable`. Reconnecting is for a link that
was up.
"""

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from msgin5g.errors import BrokerUnreachable, ConnectError

__all__ = ["Broker", "BrokerLink", "Properties", "publish_properties", "user_property"]

log = logging.getLogger(__name__)

_BACKOFF_MIN = 1.0
_BACKOFF_MAX = 30.0


@dataclass(frozen=True, slots=True)
class Broker:
    """Where and how to connect: the URL plus credentials and TLS files.

    ``url`` is ``mqtt://HOST[:PORT]`` (1883) or ``mqtts://HOST[:PORT]`` (8883).
    """

    url: str
    username: str | None = None
    password: str | None = None
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    tls_insecure: bool = False
    keepalive: int = 30
    connect_timeout: float = 10.0

    def address(self) -> tuple[str, int, bool]:
        """(host, port, tls).

        Raises:
            ConnectError: not an mqtt:// or mqtts:// URL with a host.
        """
        try:
            parts = urlsplit(self.url)
            port = parts.port
        except ValueError as exc:
            raise ConnectError(f"bad broker URL {self.url!r}: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConnectError(
                f"broker must be an mqtt://HOST[:PORT] or mqtts:// URL, got {self.url!r}"
            )
        tls = parts.scheme == "mqtts"
        return parts.hostname, port or (8883 if tls else 1883), tls

    def tls_context(self) -> ssl.SSLContext:
        """The TLS context of an ``mqtts://`` broker (CA, client certificate)."""
        context = ssl.create_default_context(cafile=self.ca_file or None)
        if self.cert_file:
            context.load_cert_chain(self.cert_file, self.key_file or None)
        if self.tls_insecure:
            context.check_hostname = False
        return context


def publish_properties(
    *,
    correlation: bytes | None = None,
    response_topic: str | None = None,
    user: tuple[str, str] | None = None,
    json: bool = True,
) -> Properties:
    """MQTT 5 PUBLISH properties: JSON content type, correlation, reply topic."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if json:
        props.ContentType = "application/json"
        props.PayloadFormatIndicator = 1
    if correlation is not None:
        props.CorrelationData = correlation
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if user is not None:
        props.UserProperty = [user]
    return props


def user_property(message: aiomqtt.Message, name: str) -> str | None:
    """The first value of user property ``name`` of a received PUBLISH."""
    for key, value in getattr(message.properties, "UserProperty", None) or ():
        if key == name:
            return str(value)
    return None


class BrokerLink:
    """One MQTT 5 session, reconnected when it drops.

    Args:
        broker: where and how to connect.
        client_id: the MQTT client identifier.
        filters: topic filters subscribed (QoS 1) after every connect.
        on_message: called in the event loop for each received PUBLISH.
        session_expiry: seconds the broker keeps the session (and QoS 1
            messages for it) while disconnected; 0: clean start, no session.
        publish_timeout: bound of one PUBLISH (until its PUBACK).
    """

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        filters: tuple[str, ...],
        on_message: Callable[[aiomqtt.Message], None],
        *,
        session_expiry: int = 0,
        publish_timeout: float = 30.0,
    ) -> None:
        self._broker = broker
        self._client_id = client_id
        self._filters = filters
        self._on_message = on_message
        self._session_expiry = session_expiry
        self._publish_timeout = publish_timeout
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self._failed = asyncio.Event()
        self.connects = 0
        """How many times the link (re)connected."""
        self.last_error = ""

    def _new_client(self) -> aiomqtt.Client:
        broker = self._broker
        host, port, tls = broker.address()
        kwargs: dict[str, Any] = {}
        if tls:
            kwargs["tls_context"] = broker.tls_context()
            if broker.tls_insecure:
                kwargs["tls_insecure"] = True
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self._session_expiry:
            props.SessionExpiryInterval = self._session_expiry
        client = aiomqtt.Client(
            host,
            port,
            identifier=self._client_id,
            username=broker.username or None,
            password=broker.password or None,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=broker.keepalive,
            timeout=broker.connect_timeout,
            clean_start=not self._session_expiry,
            properties=props,
            max_inflight_messages=1000,
            # small request/answer packets: without it Nagle and delayed ACKs
            # add ~40 ms to each exchange
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=log,
            **kwargs,
        )
        # thousands of QoS 1 publications in flight are normal for the server
        # (a fan-out): aiomqtt would warn above 10
        client.pending_calls_threshold = 1 << 30
        return client

    async def start(self) -> None:
        """Connect (bounded by ``connect_timeout``), subscribe, keep the link up.

        Raises:
            ConnectError: the broker did not accept us in time.
        """
        self._broker.address()  # a bad URL fails here, not in the loop
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"mqtt link {self._client_id}"
        )
        waits = [
            asyncio.ensure_future(self.connected.wait()),
            asyncio.ensure_future(self._failed.wait()),
        ]
        try:
            await asyncio.wait(
                waits,
                timeout=self._broker.connect_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiting in waits:
                waiting.cancel()
        if not self.connected.is_set():
            await self.aclose()
            raise BrokerUnreachable(
                f"MQTT broker {self._broker.url} did not accept the connection"
                + (
                    f": {self.last_error}"
                    if self.last_error
                    else f" within {self._broker.connect_timeout:g} s"
                )
            )

    async def _run(self) -> None:
        backoff = _BACKOFF_MIN
        while True:
            try:
                async with self._new_client() as client:
                    for topic_filter in self._filters:
                        await client.subscribe(topic_filter, qos=1)
                    self._client = client
                    self.connects += 1
                    self.connected.set()
                    backoff = _BACKOFF_MIN
                    log.info(
                        "MQTT connected to %s as %s", self._broker.url, self._client_id
                    )
                    async for message in client.messages:
                        self._on_message(message)
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                if self.connects == 0:
                    self._failed.set()  # start() reports it; no retry before that
                    return
                if self.connected.is_set():
                    log.warning("MQTT broker %s lost: %s", self._broker.url, exc)
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def publish(
        self, topic: str, payload: bytes, properties: Properties, *, qos: int = 1
    ) -> None:
        """PUBLISH and wait for the broker's PUBACK (QoS 1).

        Raises:
            ConnectError: the link is down or the publication failed.
        """
        client = self._client
        if client is None:
            raise ConnectError(f"MQTT broker {self._broker.url} not connected")
        try:
            await client.publish(
                topic,
                payload,
                qos=qos,
                properties=properties,
                timeout=self._publish_timeout,
            )
        except aiomqtt.MqttError as exc:
            raise ConnectError(f"MQTT publish to {topic} failed: {exc}") from exc

    async def aclose(self) -> None:
        """Disconnect and stop reconnecting."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
