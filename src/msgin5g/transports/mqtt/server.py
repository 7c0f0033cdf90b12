"""The server side of MSGin5G-1 over MQTT 5 (digest §7, as built in docs/mqtt.md).

Uplink: every PUBLISH below ``{prefix}/up/{sender}/…`` (shared subscription,
so several server processes share the load) goes through the pipeline

1. the topic names the sender (:func:`~msgin5g.mqtt_binding.parse_uplink`);
   a topic of another shape is logged and dropped (there is nobody to answer);
2. payload size (``4.13``), Content Type when present (``4.15``), then the same
   JSON decode and validation as on CoAP (``4.00`` naming the member);
3. the topic must agree with the body: ``MSG``/``AGGMSG`` on the topic of its
   recipient, every other request on ``…/server``; ``REG``/``DEREG`` only for
   the sender itself (``4.03 NOT_AUTHORIZED``); no ``clientAddress`` (the UE is
   reached through the broker);
4. the service procedure runs with the sender's MQTT contact
   (:func:`~msgin5g.model.registry.mqtt_contact`) as source, so the service's
   originator check (registered from this source, or through a gateway
   registered from it) applies exactly as on CoAP;
5. the answer (the response message, an empty body, or the digest §5.1 error
   body) is published QoS 1 on ``{prefix}/ue/{sender}`` with the request's
   Correlation Data and the CoAP code it stands for in user property
   ``msgin5g-code``.

Errors become codes only here, through the CoAP transport's one table
(:func:`msgin5g.transports.coap.codes.code_for`): an MQTT UE and a CoAP UE get
the same code and failure cause for the same mistake.

Downlink (the service's ``Deliverer`` port for MQTT contacts): the item is
published QoS 1 on the UE's topic with a Response Topic
``{prefix}/ack/{instance}/{ue}`` and fresh Correlation Data; it counts as
delivered only when the UE answers there (2.xx), like a CoAP ACK. A broker's
PUBACK alone is not enough: a broker drops a QoS 1 message for a UE without a
session, and one without persistence loses what it held when it restarts. No
answer within ``mqtt.ack_timeout`` → unreachable (store and forward); 4.xx →
refused; 5.xx → unreachable.
"""

import asyncio
import itertools
import logging
import os

import aiomqtt

from msgin5g.coap.numbers import Code
from msgin5g.codec.ue_payload import decode_uplink, encode, message_type_of
from msgin5g.config import MqttConfig
from msgin5g.errors import (
    ConnectError,
    DecodeError,
    DeliveryRejected,
    InvalidRequest,
    MSGin5GError,
    NotAuthorized,
    Overloaded,
    PayloadTooLarge,
    RecipientUnreachable,
)
from msgin5g.logsafe import LogThrottle
from msgin5g.model.messages import (
    Dereg,
    DownlinkItem,
    ErrorBody,
    Reg,
)
from msgin5g.model.registry import Contact, mqtt_contact
from msgin5g.mqtt.link import Broker, BrokerLink, publish_properties, user_property
from msgin5g.mqtt_binding import (
    CODE_PROPERTY,
    CONTENT_TYPE,
    ack_topic,
    code_of,
    code_text,
    downlink_topic,
    parse_ack,
    parse_uplink,
    route_of,
    server_filters,
)
from msgin5g.runtime.histogram import Histogram
from msgin5g.service.messaging import MessagingService
from msgin5g.transports.coap.codes import code_for
from msgin5g.transports.dispatch import PROCEDURES

__all__ = ["MqttTransport", "broker_for"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)

_Answer = tuple[int, bytes]
"""(CoAP code, payload) of an answer."""


def broker_for(config: MqttConfig, *, connect_timeout: float | None = None) -> Broker:
    """The broker the ``[mqtt]`` settings name (``connect_timeout`` overrides)."""
    return Broker(
        config.url,
        username=config.username or None,
        password=config.password or None,
        ca_file=config.ca_file,
        cert_file=config.cert_file,
        key_file=config.key_file,
        tls_insecure=config.tls_insecure,
        keepalive=config.keepalive,
        connect_timeout=(
            config.connect_timeout if connect_timeout is None else connect_timeout
        ),
    )


class MqttTransport:
    """MSGin5G-1 over an MQTT broker: uplink consumer and downlink deliverer."""

    def __init__(self, config: MqttConfig, *, service_id: str) -> None:
        self.config = config
        self.service_id = service_id
        self.prefix = config.topic_prefix
        self.instance = os.urandom(6).hex()
        client_id = config.client_id or f"msgin5g-server-{self.instance}"
        self._service: MessagingService | None = None
        broker = broker_for(config)
        self.link = BrokerLink(
            broker,
            client_id,
            server_filters(self.prefix, config.share_group, self.instance),
            self._on_message,
            publish_timeout=config.ack_timeout,
        )
        self._handlers: set[asyncio.Task[None]] = set()
        self._pending: dict[bytes, tuple[asyncio.Future[None], Contact, float]] = {}
        self._by_contact: dict[Contact, set[bytes]] = {}
        self._ids = itertools.count(1)
        self.uplink: dict[tuple[str, str], int] = {}
        """Uplink requests by (Message Type, ``ok`` or failure cause), for metrics."""
        self.delivery_latency = Histogram()
        """Seconds from a downlink publication to the UE's answer."""

    @property
    def pending_deliveries(self) -> int:
        """Downlink publications waiting for the UE's answer."""
        return len(self._pending)

    async def start(self, service: MessagingService) -> None:
        """Connect to the broker and consume the uplink topics for ``service``.

        Raises:
            ConnectError: the broker is not there (within ``connect_timeout``).
        """
        self._service = service
        await self.link.start()

    async def aclose(self) -> None:
        """Disconnect; pending deliveries fail as unreachable (they stay stored)."""
        await self.link.aclose()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        for future, _, _ in self._pending.values():
            if not future.done():
                future.set_exception(RecipientUnreachable("MQTT transport closed"))
        self._pending.clear()
        self._by_contact.clear()

    # uplink ---------------------------------------------------------------------

    def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        acked = parse_ack(self.prefix, topic)
        if acked is not None:
            if acked[0] == self.instance:
                self._on_ack(acked[1], message)
            return
        if len(self._handlers) >= self.config.max_concurrent_requests:
            task = asyncio.get_running_loop().create_task(
                self._refuse_busy(topic, message)
            )
        else:
            task = asyncio.get_running_loop().create_task(self._handle(topic, message))
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _refuse_busy(self, topic: str, message: aiomqtt.Message) -> None:
        try:
            sender, _ = parse_uplink(self.prefix, topic)
        except DecodeError:
            return
        await self._answer(sender, message, self._error(message, Overloaded("busy")))

    async def _handle(self, topic: str, message: aiomqtt.Message) -> None:
        try:
            sender, route = parse_uplink(self.prefix, topic)
        except DecodeError as exc:
            _throttled.log("bad-topic", logging.INFO, "MQTT uplink dropped: %s", exc)
            return
        try:
            answer = await self._run(sender, route, message)
        except Exception:  # a bug of ours: the request gets 5.00, we keep serving
            log.exception("MQTT request from %s failed", sender)
            answer = self._code_error(
                message, Code.INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error"
            )
        await self._answer(sender, message, answer)

    async def _run(
        self, sender: str, route: tuple[str, str | None], message: aiomqtt.Message
    ) -> _Answer:
        payload = _payload(message)
        kind = "unknown"
        uplink: object = None
        try:
            if len(payload) > self.config.max_payload:
                raise PayloadTooLarge(
                    f"payload of {len(payload)} octets exceeds {self.config.max_payload}"
                )
            content_type = getattr(message.properties, "ContentType", None)
            if content_type not in (None, CONTENT_TYPE):
                return self._code_error(
                    message,
                    Code.UNSUPPORTED_CONTENT_FORMAT,
                    "INVALID_MESSAGE",
                    f"Content Type must be {CONTENT_TYPE}",
                )
            uplink = decode_uplink(payload, service_id=self.service_id)
            kind = _tag(uplink)
            _check_topic(sender, route, uplink)
            service = self._service
            assert service is not None  # noqa: S101 - set in start()
            status, body = await PROCEDURES[type(uplink)](
                service, uplink, mqtt_contact(sender)
            )
            answer = int(status), b"" if body is None else encode(body)
        except MSGin5GError as exc:
            code, cause = code_for(exc)
            counted = (kind, str(cause))
            self.uplink[counted] = self.uplink.get(counted, 0) + 1
            detail = getattr(exc, "detail", None) or str(exc)
            _throttled.log(
                f"mqtt-refused-{cause}",
                logging.INFO,
                "MQTT %s from %s refused: %s %s",
                kind,
                sender,
                cause,
                detail,
                extra={
                    "event": "uplink_refused",
                    "cause": str(cause),
                    "message_type": kind,
                    "ue_service_id": sender,
                    "message_id": getattr(uplink, "message_id", None),
                },
            )
            return self._code_error(message, code, str(cause), detail)
        counted = (kind, "ok")
        self.uplink[counted] = self.uplink.get(counted, 0) + 1
        return answer

    def _error(self, message: aiomqtt.Message, exc: MSGin5GError) -> _Answer:
        code, cause = code_for(exc)
        return self._code_error(message, code, str(cause), str(exc))

    @staticmethod
    def _code_error(
        message: aiomqtt.Message, code: int, cause: str, detail: str
    ) -> _Answer:
        body = ErrorBody(
            message_type=message_type_of(_payload(message)) or "ERROR",
            failure_cause=cause,
            detail=detail[:300],
        )
        return code, encode(body)

    async def _answer(
        self, sender: str, request: aiomqtt.Message, answer: _Answer
    ) -> None:
        code, body = answer
        props = publish_properties(
            correlation=getattr(request.properties, "CorrelationData", None),
            user=(CODE_PROPERTY, code_text(code)),
            json=bool(body),
        )
        try:
            await self.link.publish(downlink_topic(self.prefix, sender), body, props)
        except ConnectError as exc:
            # the UE repeats the request (same Message ID: the dedup answers it)
            log.warning("MQTT answer to %s not sent: %s", sender, exc)

    # downlink (Deliverer port) --------------------------------------------------

    def deliver_nowait(
        self, contact: Contact, item: DownlinkItem
    ) -> asyncio.Future[None]:
        """Publish ``item`` to the UE; the future ends with the UE's answer."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[None] = loop.create_future()
        if not contact.path or not self.link.connected.is_set():
            outcome.set_exception(
                RecipientUnreachable(f"MQTT broker {self.config.url} not connected")
            )
            return outcome
        ue = contact.path[0]
        correlation = next(self._ids).to_bytes(8, "big")
        self._pending[correlation] = (outcome, contact, loop.time())
        self._by_contact.setdefault(contact, set()).add(correlation)
        timer = loop.call_later(
            self.config.ack_timeout, self._expire, correlation, "no answer from the UE"
        )
        outcome.add_done_callback(lambda _: timer.cancel())
        props = publish_properties(
            correlation=correlation,
            response_topic=ack_topic(self.prefix, self.instance, ue),
        )
        publishing = loop.create_task(
            self.link.publish(downlink_topic(self.prefix, ue), encode(item), props)
        )
        publishing.add_done_callback(lambda done: self._published(correlation, done))
        return outcome

    async def deliver(self, contact: Contact, item: DownlinkItem) -> None:
        """Publish ``item`` to the UE and wait for its answer."""
        await self.deliver_nowait(contact, item)

    def abandon(self, contact: Contact) -> None:
        """Fail the outstanding deliveries to ``contact`` now (it registered again)."""
        for correlation in list(self._by_contact.get(contact, ())):
            self._expire(correlation, "the UE registered again")

    def _published(self, correlation: bytes, done: "asyncio.Task[None]") -> None:
        if done.cancelled():
            self._expire(correlation, "publication cancelled")
            return
        exc = done.exception()
        if exc is not None:
            self._expire(correlation, str(exc))

    def _take(self, correlation: bytes) -> asyncio.Future[None] | None:
        entry = self._pending.pop(correlation, None)
        if entry is None:
            return None
        future, contact, _ = entry
        waiting = self._by_contact.get(contact)
        if waiting is not None:
            waiting.discard(correlation)
            if not waiting:
                del self._by_contact[contact]
        return None if future.done() else future

    def _expire(self, correlation: bytes, why: str) -> None:
        future = self._take(correlation)
        if future is not None:
            future.set_exception(RecipientUnreachable(why))

    def _on_ack(self, ue: str, message: aiomqtt.Message) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        if not isinstance(correlation, bytes):
            return
        entry = self._pending.get(correlation)
        if entry is None or entry[1].path[:1] != (ue,):
            return  # late, duplicate, or not this UE's delivery
        start = entry[2]
        future = self._take(correlation)
        if future is None:
            return
        code = code_of(user_property(message, CODE_PROPERTY)) or int(Code.CHANGED)
        if 64 <= code < 128:
            self.delivery_latency.observe(asyncio.get_running_loop().time() - start)
            future.set_result(None)
        elif 128 <= code < 160:
            future.set_exception(DeliveryRejected(f"UE answered {code_text(code)}"))
        else:
            future.set_exception(RecipientUnreachable(f"UE answered {code_text(code)}"))


def _payload(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    return str(payload).encode() if payload is not None else b""


def _tag(uplink: object) -> str:
    return str(type(uplink).__struct_config__.tag)  # type: ignore[attr-defined]


def _check_topic(sender: str, route: tuple[str, str | None], uplink: object) -> None:
    """The topic must agree with the body (module docstring, step 3)."""
    expected = route_of(uplink)
    if expected != route:
        kind, target = expected
        raise InvalidRequest(
            f"{_tag(uplink)} published on the wrong topic: expected …/up/{sender}/"
            f"{kind}{'' if target is None else '/' + target}"
        )
    if isinstance(uplink, Reg | Dereg):
        if uplink.ue_service_id != sender:
            raise NotAuthorized(
                f"{_tag(uplink)} for {uplink.ue_service_id} published as {sender}"
            )
        if isinstance(uplink, Reg) and uplink.client_address:
            raise InvalidRequest(
                "clientAddress is not used on the MQTT binding "
                "(the UE is reached on its topic)"
            )
