"""Messaging topics in the CoAP Observe form: ``GET /msgin5g/topics/{topic}``.

Digest §3.13.4 (discussion paper; details PROJECT CHOICE) on RFC 7641:

* ``GET`` with **Observe = 0** registers: the subscriber is the UE Service ID
  registered (directly, not through a gateway) from the request's source address;
  ``?exp=<seconds>`` asks for a lifetime, granted like ``TOPICSUB``'s
  (``granted_expiry``: default 24 h, capped at 30 days). Answer: **2.05** with
  Observe = sequence number and a ``TOPICSUBRESP`` (with the granted
  ``expiration``). Publications then arrive as 2.05 notifications with the same
  token, carrying the ``MSG`` JSON (``messagingTopic``, ``recipientUeServiceId``).
* ``GET`` with **Observe = 1** deregisters the observation with that token:
  **2.05** ``TOPICUNSUBRESP`` (SUCCESS, also when there was none), no Observe.
* ``GET`` without Observe: **2.05** ``TOPICSUBRESP`` with the ``expiration`` of
  the UE's subscription to the topic (either form), or **4.04** (no payload)
  when it has none.

Errors (JSON body ``{"messageType": "TOPICSUB", "failureCause", "detail"}``):

* source address not registered → **4.03** ``NOT_REGISTERED`` (the POST form
  answers 2.04 with per-topic failures, but a GET answer has no room for that,
  and a non-2.xx answer tells an RFC 7641 client that no observation exists);
* the topic policy refuses the UE (docs/security-topics.md, e.g. another UE's
  ``alice/private``) → **4.03** ``NOT_AUTHORIZED``;
* invalid topic name (digest §1.2), a bad ``exp`` query or Uri-Path not UTF-8 →
  **4.00** (``INVALID_TOPIC`` / ``INVALID_MESSAGE``);
* a path other than exactly ``/msgin5g/topics/{topic}`` → **4.04**; a method
  other than GET → **4.05** (the engine's router).

:class:`ObserveResource` also implements the service's ``TopicNotifier`` port
(notifications through :meth:`~msgin5g.coap.endpoint.Endpoint.notify_nowait`:
a future per notification and no task waiting for an ACK; RST and
unacknowledged CON fail it with ``RecipientUnreachable``), relays RSTs to NON
notifications to the service, and periodically ends expired observations.
"""

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from functools import partial

from msgin5g.coap.address import Peer
from msgin5g.coap.endpoint import Endpoint
from msgin5g.coap.message import CoapMessage, encode_uint, make_response
from msgin5g.coap.numbers import Code, OptionNumber
from msgin5g.coap.resource import Request
from msgin5g.coap_binding import error_response, json_response
from msgin5g.codec.ue_payload import encode
from msgin5g.errors import (
    InvalidRequest,
    MSGin5GError,
    NotRegistered,
    Overloaded,
    RecipientUnreachable,
    RemoteReset,
    RequestTimeout,
    ServiceError,
    TransportError,
)
from msgin5g.model.messages import (
    Msg,
    TopicResult,
    TopicSubResp,
    TopicUnsubResp,
)
from msgin5g.model.registry import Contact
from msgin5g.service.messaging import MessagingService
from msgin5g.service.topics import check_topic
from msgin5g.spec.causes import Result
from msgin5g.spec.coap import MSGIN5G_PATH
from msgin5g.transports.coap.codes import code_for

__all__ = ["TOPICS_PATH", "ObserveResource"]

log = logging.getLogger(__name__)

TOPICS_PATH: tuple[str, ...] = (*MSGIN5G_PATH, "topics")
"""Prefix of the observable topic resources (digest §2.3)."""

SWEEP_INTERVAL = 30.0
"""Longest wait (s) between two searches for expired observations."""

_OBSERVE = int(OptionNumber.OBSERVE)
_URI_QUERY = int(OptionNumber.URI_QUERY)


class ObserveResource:
    """The ``/msgin5g/topics/{topic}`` resource and the ``TopicNotifier`` port."""

    def __init__(self, service: MessagingService) -> None:
        self._service = service
        self._endpoint: Endpoint | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def start(self, endpoint: Endpoint) -> None:
        """Send through ``endpoint``, attach to the service and start the sweeper."""
        self._endpoint = endpoint
        self._service.topics.attach_notifier(self)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def aclose(self) -> None:
        """Detach from the service and stop background work."""
        self._service.topics.attach_notifier(None)
        await self._service.topics.aclose()
        tasks: list[asyncio.Task[object] | asyncio.Task[None]] = list(self._tasks)
        if self._sweeper is not None:
            tasks.append(self._sweeper)
            self._sweeper = None
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._endpoint = None

    # resource -----------------------------------------------------------------

    async def render_get(self, request: Request) -> CoapMessage:
        """Handle a GET below ``/msgin5g/topics``."""
        message = request.message
        try:
            path = message.uri_path
            if len(path) != len(TOPICS_PATH) + 1:
                return make_response(message, Code.NOT_FOUND)
            topic = path[-1]
            check_topic(topic)
            contact = _contact(request.peer)
            registration = self._service.registry.by_source(contact)
            if registration is None:
                raise NotRegistered(f"no UE is registered from {contact.host}")
            ue = registration.ue_service_id
            observe = message.observe
            if observe == 0:
                return await self._register(request, ue, topic, contact)
            if observe == 1:
                return await self._deregister(request, ue, topic, contact)
            return self._status(message, ue, topic)
        except MSGin5GError as exc:
            code, cause = code_for(exc)
            if isinstance(exc, ServiceError):
                cause = exc.cause
            detail = getattr(exc, "detail", None) or str(exc)
            log.info(
                "%s for GET %s from %s: %s",
                cause,
                _topic_of(message),
                request.peer,
                detail,
            )
            return error_response(message, code, cause, detail, message_type="TOPICSUB")

    async def _register(
        self, request: Request, ue: str, topic: str, contact: Contact
    ) -> CoapMessage:
        service = self._service
        lifetime = _requested_lifetime(request.message)
        requested = None if lifetime is None else service.clock.now() + lifetime
        expires_at = service.topics.granted_expiry(requested)
        token = request.message.token
        await service.topics.observe(ue, topic, contact, token, expires_at)
        service.delivery.on_uplink(ue)
        # no await from here to the answer: no notification can overtake it
        seq = request.endpoint.observe(request.peer, token)
        body = TopicSubResp(
            originating_ue_service_id=ue,
            topic_results=[TopicResult(messaging_topic=topic, result=Result.SUCCESS)],
            expiration=datetime.fromtimestamp(expires_at, UTC),
        )
        return json_response(
            request.message, Code.CONTENT, body, [(_OBSERVE, encode_uint(seq))]
        )

    async def _deregister(
        self, request: Request, ue: str, topic: str, contact: Contact
    ) -> CoapMessage:
        token = request.message.token
        request.endpoint.forget_observation(request.peer, token)
        await self._service.topics.observer_gone(contact, token)
        body = TopicUnsubResp(
            originating_ue_service_id=ue,
            topic_results=[TopicResult(messaging_topic=topic, result=Result.SUCCESS)],
        )
        return json_response(request.message, Code.CONTENT, body)

    def _status(self, message: CoapMessage, ue: str, topic: str) -> CoapMessage:
        subscription = self._service.topics.subscription(topic, ue)
        if subscription is None:
            return make_response(message, Code.NOT_FOUND)
        body = TopicSubResp(
            originating_ue_service_id=ue,
            topic_results=[TopicResult(messaging_topic=topic, result=Result.SUCCESS)],
            expiration=datetime.fromtimestamp(subscription.expires_at, UTC),
        )
        return json_response(message, Code.CONTENT, body)

    # TopicNotifier port ---------------------------------------------------------

    def notify_nowait(
        self, observer: Contact, token: bytes, item: Msg, *, confirmable: bool
    ) -> asyncio.Future[None]:
        """Start a 2.05 notification; the future fails with ``RecipientUnreachable``.

        That is on RST, an unacknowledged CON, or a stopped transport. No task
        waits for the ACK (:meth:`~msgin5g.coap.endpoint.Endpoint.notify_nowait`).
        """
        outcome: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        endpoint = self._endpoint
        if endpoint is None:
            outcome.set_exception(RecipientUnreachable("CoAP transport stopped"))
            return outcome
        try:
            sent = endpoint.notify_nowait(
                (observer.host, observer.port),
                token,
                encode(item),
                confirmable=confirmable,
            )
        except (TransportError, ValueError) as exc:
            outcome.set_exception(RecipientUnreachable(str(exc)))
            return outcome
        if sent.done() and not sent.cancelled() and sent.exception() is not None:
            # failed before anything was sent: the engine's max_pending is
            # reached, which says nothing about this observer
            outcome.set_exception(
                Overloaded(f"notification not sent: {sent.exception()}")
            )
        elif sent.done():
            _settle(outcome, sent)
        else:
            sent.add_done_callback(partial(_settle, outcome))
            # cancelling the outcome (the registry closing) stops the exchange
            outcome.add_done_callback(partial(_cancel_with, sent))
        return outcome

    def end_nowait(self, observer: Contact, token: bytes, body: TopicUnsubResp) -> None:
        """Final NON 2.05 without Observe (RFC 7641 §3.2); best effort."""
        endpoint = self._endpoint
        if endpoint is None:
            return
        with contextlib.suppress(MSGin5GError, ValueError):
            endpoint.notify_nowait(
                (observer.host, observer.port),
                token,
                encode(body),
                confirmable=False,
                final=True,
            )

    def on_reset(self, peer: Peer, token: bytes) -> None:
        """Engine callback: an RST answered a NON notification (RFC 7641 §3.6)."""
        task = asyncio.get_running_loop().create_task(
            self._service.topics.observer_gone(_contact(peer), token)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep(self) -> None:
        topics = self._service.topics
        clock = self._service.clock
        while True:
            upcoming = topics.next_observation_expiry()
            delay = SWEEP_INTERVAL
            if upcoming is not None:
                delay = min(SWEEP_INTERVAL, max(0.5, upcoming - clock.now()))
            await asyncio.sleep(delay)
            try:
                await topics.expire_observations()
            except MSGin5GError as exc:
                log.warning("expiring observations failed: %s", exc)


def _settle(outcome: asyncio.Future[None], sent: asyncio.Future[None]) -> None:
    """Resolve a :meth:`ObserveResource.notify_nowait` outcome from its exchange."""
    if outcome.done():
        return
    if sent.cancelled():
        outcome.set_exception(RecipientUnreachable("notification cancelled"))
        return
    exc = sent.exception()
    if exc is None:
        outcome.set_result(None)
    elif isinstance(exc, RequestTimeout):
        outcome.set_exception(RecipientUnreachable("notification not acknowledged"))
    elif isinstance(exc, RemoteReset):
        outcome.set_exception(RecipientUnreachable("observer answered RST"))
    else:
        outcome.set_exception(RecipientUnreachable(str(exc)))


def _cancel_with(sent: asyncio.Future[None], outcome: asyncio.Future[None]) -> None:
    if outcome.cancelled() and not sent.done():
        sent.cancel()


def _topic_of(message: CoapMessage) -> str:
    """The last Uri-Path segment, for logs (never raises)."""
    for number, value in reversed(message.options):
        if number == int(OptionNumber.URI_PATH):
            return value.decode(errors="replace")
    return ""


def _requested_lifetime(message: CoapMessage) -> float | None:
    """``?exp=<seconds>`` (digest §3.13.4 step 1); other queries are ignored.

    Raises:
        InvalidRequest: ``exp`` is not a positive integer.
    """
    for value in message.opts(_URI_QUERY):
        name, _, text = value.partition(b"=")
        if name != b"exp":
            continue
        if not text.isdigit() or int(text) <= 0:
            raise InvalidRequest("exp must be a positive number of seconds")
        return float(int(text))
    return None


def _contact(peer: Peer) -> Contact:
    return Contact(peer[0], peer[1])
