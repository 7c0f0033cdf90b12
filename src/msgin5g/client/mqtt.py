"""A :class:`~msgin5g.client.transport.ClientTransport` over MQTT 5 (docs/mqtt.md).

``Client(ue, secret, server="mqtt://broker:1883")`` uses it: the UE connects to
the broker with client identifier and user name = its UE Service ID and
password = its ``PSK_TOKEN`` credential (unless another password is given),
subscribes to its own topic ``{prefix}/ue/{ue}``, and then speaks exactly the
CoAP client's language to the :class:`~msgin5g.client.Client` above it:

* :meth:`MqttTransport.request`: the request's JSON is published QoS 1 on the
  uplink topic its content names (:func:`~msgin5g.mqtt_binding.route_of_payload`)
  with fresh 8-octet Correlation Data; the server's answer on the UE's topic
  (same Correlation Data, user property ``msgin5g-code``) comes back as a CoAP
  response with that code, so error handling, re-registration and duplicate
  handling are the client's, unchanged;
* a PUBLISH of the server carrying a Response Topic is a request of the server
  (``MSG``, ``IMDN`` …): it is handed to the client's handler as a CoAP POST,
  and the handler's answer is published on that Response Topic (the server's
  delivery succeeds only with this answer: an application-level ack).

Needs the ``mqtt`` extra (``pip install 'msgin5g[mqtt]'``).
"""

import asyncio
import logging
import os

import aiomqtt

from msgin5g.client.transport import Serve
from msgin5g.client.wire import post_options
from msgin5g.coap.message import CoapMessage
from msgin5g.coap.numbers import Code, Type
from msgin5g.errors import ConnectError, DecodeError, RequestTimeout
from msgin5g.mqtt.link import Broker, BrokerLink, publish_properties, user_property
from msgin5g.mqtt_binding import (
    CODE_PROPERTY,
    DEFAULT_PREFIX,
    code_of,
    code_text,
    downlink_topic,
    route_of_payload,
    uplink_topic,
    valid_level,
)
from msgin5g.spec.coap import MSGIN5G_PATH

__all__ = ["MqttTransport"]

log = logging.getLogger(__name__)


class MqttTransport:
    """The UE's MQTT 5 session with the broker.

    Args:
        url: ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]`` of the broker.
        ue_service_id: this UE (client identifier, user name, topic level).
        password: the broker password (the client passes its credential).
        prefix: the topic prefix (the server's ``mqtt.topic_prefix``).
        timeout: seconds to wait for the server's answer to a request.
        session_expiry: seconds the broker keeps this UE's session while it is
            disconnected (0: none; the server's store and forward then holds
            what arrives meanwhile).
        ca_file, cert_file, key_file, tls_insecure: TLS (``mqtts://``).
    """

    def __init__(
        self,
        url: str,
        ue_service_id: str,
        *,
        password: str | None = None,
        username: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        timeout: float = 30.0,
        session_expiry: int = 0,
        connect_timeout: float = 10.0,
        ca_file: str = "",
        cert_file: str = "",
        key_file: str = "",
        tls_insecure: bool = False,
    ) -> None:
        if not valid_level(ue_service_id):
            raise ConnectError(
                f"UE Service ID {ue_service_id!r} cannot be an MQTT topic level"
            )
        self.ue_service_id = ue_service_id
        self._prefix = prefix
        self._timeout = timeout
        self._topic = downlink_topic(prefix, ue_service_id)
        broker = Broker(
            url,
            username=username or ue_service_id,
            password=password,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            tls_insecure=tls_insecure,
            connect_timeout=connect_timeout,
        )
        self._link = BrokerLink(
            broker,
            ue_service_id,
            (self._topic,),
            self._on_message,
            session_expiry=session_expiry,
            publish_timeout=timeout,
        )
        self._serve: Serve | None = None
        self._pending: dict[bytes, asyncio.Future[CoapMessage]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._base_path = MSGIN5G_PATH

    async def open(self, serve: Serve) -> None:
        """Connect, subscribe to the UE's topic, answer the server's requests.

        Raises:
            ConnectError: the broker is not there or refused us.
        """
        self._serve = serve
        await self._link.start()

    async def aclose(self) -> None:
        """Disconnect (outstanding requests fail)."""
        await self._link.aclose()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectError("transport closed"))
        self._pending.clear()
        self._serve = None

    @property
    def local_address(self) -> tuple[str, int]:
        """No socket address: the UE is reached on its topic (host ``mqtt``)."""
        return ("mqtt", 0)

    async def request(
        self, message: CoapMessage, *, token: bytes | None = None
    ) -> CoapMessage:
        """Publish ``message`` on its uplink topic; return the server's answer.

        Raises:
            RequestTimeout: no answer in time; ConnectError: not connected.
        """
        if tuple(message.uri_path) != self._base_path:
            return CoapMessage(
                Type.ACK, Code.NOT_FOUND, token=message.token, payload=b""
            )
        try:
            route = route_of_payload(message.payload)
        except DecodeError as exc:
            raise ConnectError(str(exc)) from None
        correlation = token if token and token not in self._pending else None
        while correlation is None or correlation in self._pending:
            correlation = os.urandom(8)
        future: asyncio.Future[CoapMessage] = asyncio.get_running_loop().create_future()
        self._pending[correlation] = future
        try:
            await self._link.publish(
                uplink_topic(self._prefix, self.ue_service_id, route),
                message.payload,
                publish_properties(correlation=correlation),
                qos=0 if message.mtype == Type.NON else 1,
            )
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise RequestTimeout(
                f"no answer from the MSGin5G server within {self._timeout:g} s"
            ) from None
        finally:
            self._pending.pop(correlation, None)

    def _on_message(self, message: aiomqtt.Message) -> None:
        if message.topic.value != self._topic:
            return
        props = message.properties
        correlation = getattr(props, "CorrelationData", None)
        payload = message.payload if isinstance(message.payload, bytes) else b""
        response_topic = getattr(props, "ResponseTopic", None)
        if response_topic:  # a request of the server
            task = asyncio.get_running_loop().create_task(
                self._answer(response_topic, correlation, payload)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        if not isinstance(correlation, bytes):
            return
        future = self._pending.get(correlation)
        if future is None or future.done():
            return  # late or duplicate answer
        code = code_of(user_property(message, CODE_PROPERTY)) or int(Code.CHANGED)
        future.set_result(
            CoapMessage(
                Type.ACK,
                code,
                token=correlation,
                options=post_options(()) if payload else [],
                payload=payload,
            )
        )

    async def _answer(
        self, response_topic: str, correlation: bytes | None, payload: bytes
    ) -> None:
        serve = self._serve
        if serve is None:
            return
        request = CoapMessage(
            Type.CON,
            Code.POST,
            token=correlation or b"",
            options=post_options(self._base_path),
            payload=payload,
        )
        try:
            response = await serve(request)
        except Exception:  # the handler's bug: the server hears 5.00, retries later
            log.exception("%s: request of the server failed", self.ue_service_id)
            response = CoapMessage(Type.ACK, Code.INTERNAL_SERVER_ERROR, payload=b"")
        try:
            await self._link.publish(
                response_topic,
                response.payload,
                publish_properties(
                    correlation=correlation,
                    user=(CODE_PROPERTY, code_text(response.code)),
                    json=bool(response.payload),
                ),
            )
        except ConnectError as exc:
            # the server times out and delivers again (duplicates are dropped)
            log.warning("%s: answer to the server lost: %s", self.ue_service_id, exc)
