"""The MSGin5G Client on our CoAP engine (digest §3.2.2, §3.3.2, §3.7.4, §3.7.7, §3.9.3).

One :class:`Client` is one UE: one UDP socket that sends requests to the server
and serves the server's requests on ``/msgin5g``. Received messages and delivery
reports are queued and read with ``async for`` or :meth:`Client.receive`.

Behaviour a device needs and the standard leaves to the client:

* every received ``MSG`` is acknowledged 2.04 at once; duplicates (same
  originator and Message ID, e.g. a redelivery after a server crash) are
  acknowledged but not queued twice;
* when a message asks for a delivery status report, the client sends the
  ``IMDN`` (``REPT_DELY_SUCCESS``) as soon as the message is queued for the
  application (``auto_report=True``), re-using nothing but the Message ID;
* if the server answers ``NOT_REGISTERED`` or resets an exchange (it lost the
  registration, or the client's address changed), the client registers again and
  repeats the request once.
"""

import asyncio
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from urllib.parse import urlsplit

from msgin5g.client.inbox import Inbox, Received
from msgin5g.coap.endpoint import Endpoint, Site
from msgin5g.coap.exchange import Peer
from msgin5g.coap.message import (
    CoapMessage,
    encode_uint,
    uri_path_options,
)
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.codec.ue_payload import (
    decode_error_body,
    decode_response,
    encode,
)
from msgin5g.errors import (
    ConnectError,
    DecodeError,
    NotAuthorized,
    NotRegistered,
    RemoteError,
    RemoteReset,
)
from msgin5g.model.aggregation import bundle
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import (
    Dereg,
    DeregResp,
    ErrorBody,
    Msg,
    MsgResp,
    MsgUpd,
    Reg,
    RegResp,
    StoreAndForwardParams,
    TopicSub,
    TopicSubResp,
    TopicUnsub,
    TopicUnsubResp,
    UECredentialInfo,
    UeLocation,
)
from msgin5g.model.segmentation import (
    DEFAULT_SEGMENT_SIZE,
    Reassembler,
    split,
)
from msgin5g.spec.causes import FailureCause, Result
from msgin5g.spec.coap import CONTENT_FORMAT_JSON, DEFAULT_COAP_PORT, MSGIN5G_PATH
from msgin5g.spec.delivery import (
    AuthType,
    DeliveryStatus,
    PriorityType,
    ReportDeliveryStatus,
)

__all__ = ["Client", "Received"]

log = logging.getLogger(__name__)

_SEG_BUFFER_TTL = 600.0
"""Seconds a sent segmented message is kept for ``SEGREC`` (SEG_BUFFER_TTL)."""

_CF: list[tuple[int, bytes]] = [
    (OptionNumber.CONTENT_FORMAT, encode_uint(CONTENT_FORMAT_JSON))
]


def _cause(text: str | None) -> FailureCause:
    try:
        return FailureCause(text or "INTERNAL_ERROR")
    except ValueError:
        return FailureCause.INTERNAL_ERROR


class Client(Inbox):
    """One MSGin5G UE talking to an MSGin5G Server over CoAP.

    Args:
        ue_service_id: this UE's Service ID.
        secret: the provisioned secret; the ``PSK_TOKEN`` credential is derived
            from it. Give ``credential`` instead to present a token directly.
        server: ``coap://host[:port][/path]`` of the server (path default msgin5g).
        bind: local (host, port) of the UE's socket; port 0 picks a free one.
        auto_report: send ``IMDN`` success reports automatically.
        queue_size: bound of the receive queue (the server's retransmissions
            apply back-pressure when the application does not read).
        segment_size: largest payload sent in one ``MSG``; larger payloads are
            segmented (TS 23.554 §8.5; default 2048 octets).
        gap_timer: seconds without a new downlink segment before the client
            asks for the missing ones with ``SEGREC`` (REASSEMBLY_GAP_TIMER).
    """

    def __init__(
        self,
        ue_service_id: str,
        secret: str | None = None,
        *,
        server: str = "coap://127.0.0.1:5683",
        bind: tuple[str, int] = ("0.0.0.0", 0),
        credential: str | None = None,
        auto_report: bool = True,
        queue_size: int = 10_000,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        gap_timer: float = 30.0,
    ) -> None:
        self.ue_service_id = ue_service_id
        if credential is None and secret is not None:
            credential = psk_token(secret, ue_service_id)
        self._credential = credential
        parts = urlsplit(server)
        if parts.scheme != "coap" or not parts.hostname:
            raise ConnectError(f"server must be a coap:// URI, got {server!r}")
        self._server_host = parts.hostname
        self._server_port = parts.port or DEFAULT_COAP_PORT
        path = tuple(p for p in parts.path.split("/") if p) or MSGIN5G_PATH
        self._options = uri_path_options(path) + _CF
        self._bind = bind
        self._auto_report = auto_report
        self._queue: asyncio.Queue[Received] = asyncio.Queue(queue_size)
        self._seen: dict[tuple[str, str, bool], None] = {}
        self._endpoint: Endpoint | None = None
        self._server: Peer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._registration: Reg | None = None
        self.registered = False
        self.segment_size = segment_size
        self._gap_timer = gap_timer
        self._reassembler: Reassembler | None = None
        self._outbox: dict[tuple[str, str], tuple[float, list[Msg]]] = {}
        self._timer: asyncio.Task[None] | None = None

    # lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the UE's socket and resolve the server address."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(
                self._server_host,
                self._server_port,
                type=2,  # SOCK_DGRAM
            )
        except OSError as exc:
            raise ConnectError(f"cannot resolve {self._server_host}: {exc}") from exc
        family, _, _, _, sockaddr = infos[0]
        self._server = tuple(sockaddr)
        bind = self._bind
        if family == socket.AF_INET6 and bind[0] == "0.0.0.0":
            bind = ("::", bind[1])
        site = Site()
        site.add(MSGIN5G_PATH, self._render_post)
        try:
            self._endpoint = await Endpoint.create(bind, site=site)
        except OSError as exc:
            raise ConnectError(f"cannot bind {bind[0]}:{bind[1]}: {exc}") from exc
        self._reassembler = Reassembler(
            loop.time, gap_timer=self._gap_timer, timeout=10 * self._gap_timer
        )
        self._timer = asyncio.create_task(self._housekeeping())

    async def aclose(self) -> None:
        """Close the socket (does not de-register)."""
        if self._timer is not None:
            self._timer.cancel()
            await asyncio.gather(self._timer, return_exceptions=True)
            self._timer = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._endpoint is not None:
            await self._endpoint.aclose()
            self._endpoint = None

    async def __aenter__(self) -> "Client":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def local_address(self) -> tuple[str, int]:
        """The UE socket's address."""
        return self._require().local_address

    def _require(self) -> Endpoint:
        if self._endpoint is None:
            raise ConnectError("client not started (use 'async with Client(...)')")
        return self._endpoint

    # requests -----------------------------------------------------------------------

    async def _post(self, payload: bytes) -> CoapMessage:
        endpoint = self._require()
        request = CoapMessage(
            Type.CON, Code.POST, options=self._options, payload=payload
        )
        assert self._server is not None  # noqa: S101 - set in start()
        response = await endpoint.request(request, self._server)
        if response.code >= 128:
            body = decode_error_body(response.payload)
            raise RemoteError(_code_text(response.code), response.payload) from (
                None if body is None else _BodyError(body)
            )
        return response

    def _credential_info(self) -> UECredentialInfo:
        if self._credential is None:
            return UECredentialInfo(auth_type=AuthType.NONE)
        return UECredentialInfo(
            auth_type=AuthType.PSK_TOKEN, credential=self._credential
        )

    async def register(
        self,
        *,
        client_address: str | None = None,
        max_segment_size: int | None = None,
        refuse_store_and_forward: bool = False,
        msgin5g_ue_id: str | None = None,
        location: UeLocation | None = None,
    ) -> RegResp:
        """Register with the server (``REG``, digest §3.2.2).

        Args:
            client_address: where the server sends downlink (default: the
                address the REG comes from).
            max_segment_size: the largest segment this UE accepts.
            refuse_store_and_forward: ask the server not to store for this UE.
            msgin5g_ue_id: the MSGin5G UE ID, if different.
            location: serving cell and/or tracking area (``ueLocation``): the
                UE is then in the Broadcast Areas listing them. Kept for
                re-registrations.

        Raises:
            NotAuthorized: the server answered ``registrationResult = FAILURE``
                (``.cause`` holds its ``failureCause``).
            RemoteError, RequestTimeout: CoAP-level failure.
        """
        from msgin5g.model.messages import CommAvailability

        avail = None
        if refuse_store_and_forward:
            avail = CommAvailability(
                scheduled_comm_time=datetime.now().astimezone(),
                comm_duration_time=0,
                store_and_forward_option="NOT_REQUESTED",
            )
        reg = Reg(
            ue_service_id=self.ue_service_id,
            ue_credential_info=self._credential_info(),
            client_address=client_address,
            max_segment_size=max_segment_size,
            comm_availability=avail,
            msgin5g_ue_id=msgin5g_ue_id,
            ue_location=location,
        )
        self._registration = reg
        return await self._send_reg(reg)

    async def _send_reg(self, reg: Reg) -> RegResp:
        response = await self._post(encode(reg))
        resp = decode_response(response.payload)
        if not isinstance(resp, RegResp):
            raise DecodeError("expected REGRESP", member="messageType")
        if resp.registration_result != Result.SUCCESS:
            self.registered = False
            raise NotAuthorized(
                f"registration refused: {resp.failure_cause}",
                cause=_cause(resp.failure_cause),
            )
        self.registered = True
        return resp

    async def deregister(self) -> DeregResp:
        """De-register (``DEREG``, digest §3.3.2)."""
        dereg = Dereg(
            ue_service_id=self.ue_service_id, ue_credential_info=self._credential_info()
        )
        response = await self._post(encode(dereg))
        resp = decode_response(response.payload)
        if not isinstance(resp, DeregResp):
            raise DecodeError("expected DEREGRESP", member="messageType")
        if resp.deregistration_result == Result.SUCCESS:
            self.registered = False
            self._registration = None
        return resp

    async def send(
        self,
        to: str,
        payload: bytes | str,
        *,
        application_id: str | None = None,
        report: bool = False,
        priority: PriorityType | str | None = None,
        store_and_forward: bool = True,
        expires: datetime | None = None,
        message_id: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> MsgResp:
        """Send a point-to-point message to another UE (``MSG``, digest §3.7.4).

        ``store_and_forward`` defaults to True in this library (the wire default
        is False): a device usually wants its message kept for a sleeping peer.
        A payload above ``segment_size`` is sent as segments (digest §3.12), one
        outstanding at a time; ``progress(sent, total)`` is called after each.

        Returns:
            The server's ``MSGRESP`` (for a segmented message: the answer to the
            last segment, which carries the outcome of the whole message);
            ``DELY_ACCEPTED``/``DELY_STORED`` are not proof of delivery — only an
            ``IMDN`` is.
        """
        data = payload.encode() if isinstance(payload, str) else payload
        msg = Msg(
            message_id=message_id or str(uuid.uuid4()),
            originating_ue_service_id=self.ue_service_id,
            recipient_ue_service_id=to,
            delivery_status_required=report,
            application_id=application_id,
            payload=data,
            priority_type=PriorityType(priority) if priority else None,
            store_and_forward_flag=store_and_forward,
            store_and_forward_params=(
                StoreAndForwardParams(message_expiration_time=expires)
                if expires
                else None
            ),
        )
        return await self._send_segmented(msg, progress)

    async def _send_segmented(
        self, msg: Msg, progress: Callable[[int, int], None] | None = None
    ) -> MsgResp:
        segments = split(msg, self.segment_size)
        if len(segments) > 1:
            key = (msg.message_id, segments[0].segmentation_set_id or "")
            loop = asyncio.get_running_loop()
            self._outbox[key] = (loop.time() + _SEG_BUFFER_TTL, segments)
        resp: MsgResp | None = None
        for index, segment in enumerate(segments, 1):
            resp = await self._submit(encode(segment))
            if progress is not None:
                progress(index, len(segments))
            if resp.delivery_status in (
                DeliveryStatus.DELY_FAILED,
                DeliveryStatus.DELY_REJECTED,
            ):
                break
        assert resp is not None  # noqa: S101 - split() returns at least one
        return resp

    async def send_aggregated(
        self,
        to: str,
        payloads: list[bytes | str],
        *,
        application_id: str | None = None,
        report: bool = False,
        store_and_forward: bool = True,
    ) -> MsgResp:
        """Send several small messages to one UE in one ``AGGMSG`` (digest §3.10).

        Returns:
            The server's ``MSGRESP`` for the aggregate; ``itemResponses`` lists
            items whose outcome differs from the aggregate's.
        """
        messages = [
            Msg(
                message_id=str(uuid.uuid4()),
                originating_ue_service_id=self.ue_service_id,
                recipient_ue_service_id=to,
                delivery_status_required=report,
                application_id=application_id,
                payload=p.encode() if isinstance(p, str) else p,
                store_and_forward_flag=store_and_forward,
            )
            for p in payloads
        ]
        return await self._submit(encode(bundle(messages)))

    async def subscribe(
        self, topics: str | list[str], *, expiration: datetime | None = None
    ) -> TopicSubResp:
        """Subscribe to Messaging Topics (``TOPICSUB``, digest §3.13.3).

        ``topics`` is one topic or a list. Publications then arrive as ordinary
        received ``MSG`` items carrying ``messagingTopic``. The response has one
        result per topic and the expiration the server granted.
        """
        request = TopicSub(
            originating_ue_service_id=self.ue_service_id,
            messaging_topics=[topics] if isinstance(topics, str) else list(topics),
            expiration=expiration,
        )
        resp = decode_response((await self._post(encode(request))).payload)
        if not isinstance(resp, TopicSubResp):
            raise DecodeError("expected TOPICSUBRESP", member="messageType")
        return resp

    async def unsubscribe(
        self, topics: str | list[str] | None = None
    ) -> TopicUnsubResp:
        """Stop topic subscriptions (``TOPICUNSUB``; None = all of them)."""
        if isinstance(topics, str):
            topics = [topics]
        request = TopicUnsub(
            originating_ue_service_id=self.ue_service_id,
            messaging_topics=topics or [],
        )
        resp = decode_response((await self._post(encode(request))).payload)
        if not isinstance(resp, TopicUnsubResp):
            raise DecodeError("expected TOPICUNSUBRESP", member="messageType")
        return resp

    async def send_to_group(
        self,
        group: str,
        payload: bytes | str,
        *,
        application_id: str | None = None,
        report: bool = False,
        store_and_forward: bool = True,
        message_id: str | None = None,
    ) -> MsgResp:
        """Send to every member of a group (TS 23.554 §8.7.4; reports per member)."""
        return await self._send_one(
            payload,
            application_id,
            report,
            store_and_forward,
            message_id,
            recipient_group_service_id=group,
        )

    async def send_to_area(
        self,
        area: str,
        payload: bytes | str,
        *,
        application_id: str | None = None,
        report: bool = False,
        store_and_forward: bool = True,
        message_id: str | None = None,
    ) -> MsgResp:
        """Broadcast to every UE in a Broadcast Area (digest §2.14).

        The area's policy decides whether UEs may broadcast (docs/broadcast.md);
        otherwise the answer is ``DELY_REJECTED`` / ``NOT_AUTHORIZED``.
        """
        return await self._send_one(
            payload,
            application_id,
            report,
            store_and_forward,
            message_id,
            recipient_broadcast_area_id=area,
        )

    async def send_to_as(
        self,
        as_service_id: str,
        payload: bytes | str,
        *,
        application_id: str | None = None,
        report: bool = False,
        store_and_forward: bool = True,
        message_id: str | None = None,
    ) -> MsgResp:
        """Point-to-Application: send to an Application Server (digest §2.12)."""
        return await self._send_one(
            payload,
            application_id,
            report,
            store_and_forward,
            message_id,
            recipient_as_service_id=as_service_id,
        )

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        *,
        application_id: str | None = None,
        store_and_forward: bool = True,
        message_id: str | None = None,
    ) -> MsgResp:
        """Publish to a Messaging Topic: every subscriber gets a copy (§3.13.2)."""
        return await self._send_one(
            payload,
            application_id,
            False,
            store_and_forward,
            message_id,
            messaging_topic=topic,
        )

    async def _send_one(
        self,
        payload: bytes | str,
        application_id: str | None,
        report: bool,
        store_and_forward: bool,
        message_id: str | None,
        **recipient: str,
    ) -> MsgResp:
        """One unsegmented ``MSG`` to the recipient member given as keyword."""
        msg = Msg(
            message_id=message_id or str(uuid.uuid4()),
            originating_ue_service_id=self.ue_service_id,
            delivery_status_required=report,
            application_id=application_id,
            payload=payload.encode() if isinstance(payload, str) else payload,
            store_and_forward_flag=store_and_forward,
            **recipient,  # type: ignore[arg-type]
        )
        return await self._submit(encode(msg))

    async def update_stored(
        self, to: str, message_id: str, *, expires: datetime | None
    ) -> MsgResp:
        """Change the expiry of a stored message, or discard it (``expires=None``)."""
        upd = MsgUpd(
            originating_ue_service_id=self.ue_service_id,
            recipient_ue_service_id=to,
            message_id=message_id,
            store_and_forward_params=(
                StoreAndForwardParams(message_expiration_time=expires)
                if expires
                else None
            ),
        )
        return await self._submit(encode(upd))

    async def _submit(self, body: bytes) -> MsgResp:
        for attempt in (1, 2):
            try:
                response = await self._post(body)
            except RemoteReset:
                if attempt == 2 or not await self._reregister():
                    raise
                continue
            resp = decode_response(response.payload)
            if not isinstance(resp, MsgResp):
                raise DecodeError("expected MSGRESP", member="messageType")
            if (
                attempt == 1
                and resp.delivery_status == DeliveryStatus.DELY_REJECTED
                and resp.failure_cause
                in (FailureCause.NOT_REGISTERED, FailureCause.NOT_AUTHORIZED)
                and await self._reregister()
            ):
                continue
            return resp
        raise NotRegistered("server keeps refusing this UE")  # pragma: no cover

    async def _reregister(self) -> bool:
        if self._registration is None:
            return False
        log.info(
            "%s: server lost our registration; registering again", self.ue_service_id
        )
        try:
            await self._send_reg(self._registration)
        except NotAuthorized:
            return False
        return True

    async def send_report(
        self,
        message: Msg,
        status: ReportDeliveryStatus = ReportDeliveryStatus.REPT_DELY_SUCCESS,
        cause: FailureCause | None = None,
    ) -> None:
        """Send an ``IMDN`` about ``message`` to its originator (digest §3.9.3)."""
        await self._post(encode(self._imdn(message, status, cause)))

    # reception ------------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> Received:  # noqa: ASYNC109
        """The next received message or report.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        if timeout is None:
            return await self._queue.get()
        return await asyncio.wait_for(self._queue.get(), timeout)

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Received]:
        while True:
            yield await self._queue.get()


class _BodyError(Exception):
    """Carries a decoded error body as the cause of a RemoteError."""

    def __init__(self, body: ErrorBody) -> None:
        super().__init__(f"{body.failure_cause}: {body.detail}")
        self.body = body


def _code_text(code: int) -> str:
    return f"{code >> 5}.{code & 31:02d}"
