"""The MSGin5G Client (digest §3.2.2, §3.3.2, §3.7.4, §3.7.7, §3.9.3).

One :class:`Client` is one UE: a :class:`~msgin5g.client.transport.ClientTransport`
(by default one UDP socket on our CoAP engine) that sends requests to the server
and serves the server's requests on ``/msgin5g``. Received messages and delivery
reports are queued and read with ``async for`` or :meth:`Client.receive`.

Two levels of API:

* procedures: :meth:`Client.register`, :meth:`~Client.send`, :meth:`~Client.subscribe`
  … build the request, send it and check the answer;
* :meth:`Client.request`: send any MSGin5G-1 request ``Struct`` and get the
  decoded response ``Struct`` (a 4.xx/5.xx raises
  :class:`~msgin5g.errors.RemoteError` with code, failure cause and body);
  :meth:`Client.submit` sends a prebuilt ``MSG`` with segmentation and
  re-registration. A Gateway UE uses these for its bulk and relayed requests.

Behaviour a device needs and the standard leaves to the client:

* every received ``MSG`` is acknowledged 2.04 at once; duplicates (same
  originator and Message ID, e.g. a redelivery after a server crash) are
  acknowledged but not queued twice;
* when a message asks for a delivery status report, the client sends the
  ``IMDN`` (``REPT_DELY_SUCCESS``) as soon as the message is queued for the
  application (``auto_report=True``), in a POST that re-uses the Token of the
  server's ``MSG`` POST (digest §3.9.3 step 2, §2.2 rule 5);
* if the server answers ``NOT_REGISTERED`` or resets an exchange (it lost the
  registration, or the client's address changed), the client registers again and
  repeats the request once.
"""

import logging
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TypeVar, overload
from urllib.parse import parse_qsl, urlsplit

import msgspec

from msgin5g.client.inbox import Claim, Inbox, Received
from msgin5g.client.messaging import Messaging
from msgin5g.client.transport import ClientTransport, CoapTransport
from msgin5g.client.wire import post_options, raise_for_code, ue_credential_info
from msgin5g.coap.message import CoapMessage
from msgin5g.coap.numbers import Code, Type
from msgin5g.codec.ue_payload import (
    decode_config_response,
    decode_response,
    encode,
)
from msgin5g.errors import (
    ConfigError,
    ConnectError,
    DecodeError,
    NotAuthorized,
    NotRegistered,
    RemoteReset,
)
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import (
    CommAvailability,
    Dereg,
    DeregResp,
    Msg,
    MsgResp,
    Reg,
    RegResp,
    TriggeringInfo,
    UECredentialInfo,
    UeLocation,
)
from msgin5g.model.segmentation import DEFAULT_SEGMENT_SIZE, Reassembler, split
from msgin5g.runtime import Clock, Supervisor, SystemClock, wait_for
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.coap import CONFIG_RESOURCE, DEFAULT_COAP_PORT, MSGIN5G_PATH
from msgin5g.spec.delivery import (
    DeliveryStatus,
    ReportDeliveryStatus,
)

__all__ = ["Client", "Received"]

log = logging.getLogger(__name__)

_SEG_BUFFER_TTL = 600.0
"""Seconds a sent segmented message is kept for ``SEGREC`` (SEG_BUFFER_TTL)."""

R = TypeVar("R", bound=msgspec.Struct)


def _cause(text: str | None) -> FailureCause:
    try:
        return FailureCause(text or "INTERNAL_ERROR")
    except ValueError:
        return FailureCause.INTERNAL_ERROR


def _mqtt_transport(
    server: str, ue_service_id: str, credential: str | None
) -> ClientTransport:
    """The MQTT transport (imported only when used: the ``mqtt`` extra)."""
    try:
        from msgin5g.client.mqtt import MqttTransport
    except ModuleNotFoundError as exc:
        raise ConnectError(
            f"{server}: the MQTT binding needs aiomqtt (pip install 'msgin5g[mqtt]')"
        ) from exc
    query = dict(parse_qsl(urlsplit(server).query))
    unknown = set(query) - {"prefix", "session_expiry"}
    if unknown:
        raise ConnectError(
            f"{server}: unknown parameter(s) {', '.join(sorted(unknown))} "
            "(known: prefix, session_expiry)"
        )
    try:
        session_expiry = int(query.get("session_expiry", "0"))
    except ValueError:
        raise ConnectError(f"{server}: session_expiry must be seconds") from None
    return MqttTransport(
        server.split("?", 1)[0],
        ue_service_id,
        password=credential,
        prefix=query.get("prefix", "msgin5g"),
        session_expiry=session_expiry,
    )


class Client(Messaging, Inbox):
    """One MSGin5G UE talking to an MSGin5G Server over CoAP.

    Args:
        ue_service_id: this UE's Service ID.
        secret: the provisioned secret; the ``PSK_TOKEN`` credential is derived
            from it. Give ``credential`` instead to present a token directly.
        server: ``coap://host[:port][/path]`` of the server (path default
            msgin5g), or ``mqtt://broker[:port]`` / ``mqtts://…`` of the broker
            the server consumes (docs/mqtt.md; the ``mqtt`` extra; the broker
            password is the credential; ``?prefix=P`` for a server's
            ``mqtt.topic_prefix``, ``?session_expiry=S`` for a persistent
            broker session), or ``coaps://`` (DTLS 1.2 PSK, port 5684 by default): PSK
            identity = ``ue_service_id``, key = the first ``dtls_key_length``
            characters of the credential (docs/security-dtls.md).
        bind: local (host, port) of the UE's socket; port 0 picks a free one.
        auto_report: send ``IMDN`` success reports automatically.
        queue_size: bound of the receive queue (the server's retransmissions
            apply back-pressure when the application does not read).
        segment_size: largest payload sent in one ``MSG``; larger payloads are
            segmented (TS 23.554 §8.5; default 2048 octets).
        gap_timer: seconds without a new downlink segment before the client
            asks for the missing ones with ``SEGREC`` (REASSEMBLY_GAP_TIMER).
        transport: how to reach the server (default: a CoAP socket to
            ``server`` bound to ``bind``; tests pass a
            :class:`~msgin5g.client.transport.MockTransport`).
        clock: time source and timers (default: the system clock).
        claim: takes received ``MSG``/``IMDN`` before the inbox does (a Gateway
            UE stores those meant for its constrained UEs): returns None (not
            claimed), True (taken: 2.04) or False (cannot take it now: 5.03).
        oscore: protect every exchange with OSCORE (RFC 8613), the context
            derived from the credential (docs/security-oscore.md).
        oscore_state: file keeping the OSCORE sequence reservation across
            restarts (strongly advised with ``oscore``).
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
        transport: ClientTransport | None = None,
        clock: Clock | None = None,
        claim: Claim | None = None,
        oscore: bool = False,
        oscore_state: str | None = None,
        dtls_key_length: int = 32,
    ) -> None:
        self.ue_service_id = ue_service_id
        if credential is None and secret is not None:
            credential = psk_token(secret, ue_service_id)
        self._credential = credential
        parts = urlsplit(server)
        if parts.scheme not in ("coap", "coaps", "mqtt", "mqtts") or not parts.hostname:
            raise ConnectError(
                "server must be a coap://, coaps:// (or mqtt://, mqtts://) URI, "
                f"got {server!r}"
            )
        if parts.scheme in ("coap", "coaps"):
            self._path = tuple(p for p in parts.path.split("/") if p) or MSGIN5G_PATH
            psk = None
            if parts.scheme == "coaps":
                if not credential:
                    raise ConnectError("coaps:// needs the UE's secret or credential")
                psk = (ue_service_id, credential[:dtls_key_length].encode())
            transport = transport or CoapTransport(
                parts.hostname,
                parts.port or (5684 if psk else DEFAULT_COAP_PORT),
                bind=bind,
                psk=psk,
            )
        else:
            self._path = MSGIN5G_PATH
            transport = transport or _mqtt_transport(server, ue_service_id, credential)
        self._transport: ClientTransport = transport
        if oscore:
            if parts.scheme != "coap":
                raise ConfigError("OSCORE is a CoAP option: use a coap:// server")
            if credential is None:
                raise ConfigError("OSCORE needs the UE's secret or credential")
            from msgin5g.client.oscore import OscoreTransport

            self._transport = OscoreTransport(
                self._transport, ue_service_id, credential, state_file=oscore_state
            )
        self._clock: Clock = clock or SystemClock()
        self._claim = claim
        self._auto_report = auto_report
        self._init_inbox(queue_size, gap_timer)
        self._tasks = Supervisor(f"client {ue_service_id}")
        self._started = False
        self._registration: Reg | None = None
        self.registered = False
        self.segment_size = segment_size
        self._outbox: dict[tuple[str, str], tuple[float, list[Msg]]] = {}

    # lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Open the transport (socket) and start the reassembly timers.

        Raises:
            ConnectError: the server cannot be resolved or the socket bound;
                nothing stays open.
        """
        await self._transport.open(self._render_post)
        try:
            await self._tasks.start()
        except BaseException:
            await self._transport.aclose()
            raise
        self._reassembler = Reassembler(
            self._clock.monotonic,
            gap_timer=self._gap_timer,
            timeout=10 * self._gap_timer,
        )
        self._started = True
        self._tasks.spawn(self._housekeeping(), name="client housekeeping")

    async def aclose(self) -> None:
        """Stop the tasks and close the transport (does not de-register)."""
        self._started = False
        await self._tasks.aclose()
        await self._transport.aclose()

    async def __aenter__(self) -> "Client":
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def local_address(self) -> tuple[str, int]:
        """The UE socket's address."""
        return self._transport.local_address

    @property
    def task_failures(self) -> int:
        """Background tasks that failed (each was logged)."""
        return self._tasks.failures

    @property
    def credential_info(self) -> UECredentialInfo:
        """This UE's ``ueCredentialInfo`` (``PSK_TOKEN``, or ``NONE``)."""
        return ue_credential_info(self._credential)

    # the request API -----------------------------------------------------------------

    @overload
    async def request(
        self,
        item: msgspec.Struct,
        expect: None = None,
        *,
        resource: str | None = None,
        token: bytes | None = None,
    ) -> None: ...

    @overload
    async def request(
        self,
        item: msgspec.Struct,
        expect: type[R],
        *,
        resource: str | None = None,
        token: bytes | None = None,
    ) -> R: ...

    async def request(
        self,
        item: msgspec.Struct,
        expect: type[R] | None = None,
        *,
        resource: str | None = None,
        token: bytes | None = None,
    ) -> R | None:
        """Send one MSGin5G-1 request and return the server's answer.

        One CoAP exchange, no re-registration (see :meth:`submit` for that).

        Args:
            item: the request (``REG``, ``BULKREG``, ``IMDN``, ``CONFREQ`` …).
            expect: the response type to decode and return; None ignores the
                answer's body (e.g. for an ``IMDN``).
            resource: a sub-resource of the server's path (``"config"``).
            token: the CoAP Token to use (a matched request, digest §2.2 rule 5).

        Returns:
            the decoded response, or None when ``expect`` is None.

        Raises:
            RemoteError: a 4.xx/5.xx answer (``code``, ``cause``, ``body``).
            RequestTimeout, RemoteReset, ConnectError: no usable exchange.
            DecodeError: the answer is not an ``expect``.
        """
        if not self._started:
            raise ConnectError("client not started (use 'async with Client(...)')")
        path = self._path if resource is None else (*self._path, resource)
        message = CoapMessage(
            Type.CON, Code.POST, options=post_options(path), payload=encode(item)
        )
        response = raise_for_code(await self._transport.request(message, token=token))
        if expect is None:
            return None
        decode = (
            decode_config_response if resource == CONFIG_RESOURCE else decode_response
        )
        answer = decode(response.payload)
        if not isinstance(answer, expect):
            raise DecodeError(
                f"expected {expect.__name__}, got {type(answer).__name__}",
                member="messageType",
            )
        return answer

    async def _emit(self, item: msgspec.Struct, token: bytes | None = None) -> None:
        await self.request(item, token=token)

    async def _call(self, item: msgspec.Struct, expect: type[R]) -> R:
        return await self.request(item, expect)

    async def submit(
        self, msg: Msg, progress: Callable[[int, int], None] | None = None
    ) -> MsgResp:
        """Send a prebuilt ``MSG`` (segmented when long), re-registering if need be.

        A payload above ``segment_size`` is sent as segments (digest §3.12), one
        outstanding at a time; ``progress(sent, total)`` is called after each.

        Returns:
            the ``MSGRESP`` (for a segmented message: the answer to the last
            segment, which carries the outcome of the whole message).
        """
        segments = split(msg, self.segment_size)
        if len(segments) > 1:
            key = (msg.message_id, segments[0].segmentation_set_id or "")
            until = self._clock.monotonic() + _SEG_BUFFER_TTL
            self._outbox[key] = (until, segments)
        resp: MsgResp | None = None
        for index, segment in enumerate(segments, 1):
            resp = await self._submit(segment)
            if progress is not None:
                progress(index, len(segments))
            if resp.delivery_status in (
                DeliveryStatus.DELY_FAILED,
                DeliveryStatus.DELY_REJECTED,
            ):
                break
        assert resp is not None  # noqa: S101 - split() returns at least one
        return resp

    async def _submit(self, item: msgspec.Struct) -> MsgResp:
        for attempt in (1, 2):
            try:
                resp = await self.request(item, MsgResp)
            except RemoteReset:
                if attempt == 2 or not await self._reregister():
                    raise
                continue
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

    async def refresh_registration(self) -> bool:
        """Send the last ``REG`` again (after a device trigger, digest §3.15).

        A client that never registered sends a plain one. The server then
        delivers what it stored. False when the server refused.
        """
        try:
            if self._registration is None:
                await self.register()
            else:
                await self._send_reg(self._registration)
        except NotAuthorized:
            return False
        return True

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

    # procedures -----------------------------------------------------------------------

    async def register(
        self,
        *,
        client_address: str | None = None,
        max_segment_size: int | None = None,
        refuse_store_and_forward: bool = False,
        msgin5g_ue_id: str | None = None,
        location: UeLocation | None = None,
        triggering: TriggeringInfo | None = None,
        availability: CommAvailability | None = None,
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
            triggering: ``triggeringInfo`` (``externalId``/``msisdn`` and the
                ports where device triggers arrive, docs/nef.md): lets the
                server monitor reachability and trigger this UE via a NEF.
            availability: ``commAvailability`` (scheduled communication time,
                duration, period): the server delivers inside those windows.

        Raises:
            NotAuthorized: the server answered ``registrationResult = FAILURE``
                (``.cause`` holds its ``failureCause``).
            RemoteError, RequestTimeout: CoAP-level failure.
        """
        avail = availability
        if refuse_store_and_forward:
            avail = CommAvailability(
                scheduled_comm_time=datetime.fromtimestamp(
                    self._clock.now()
                ).astimezone(),
                comm_duration_time=0,
                store_and_forward_option="NOT_REQUESTED",
            )
        reg = Reg(
            ue_service_id=self.ue_service_id,
            ue_credential_info=self.credential_info,
            client_address=client_address,
            max_segment_size=max_segment_size,
            comm_availability=avail,
            msgin5g_ue_id=msgin5g_ue_id,
            ue_location=location,
            triggering_info=triggering,
        )
        self._registration = reg
        return await self._send_reg(reg)

    async def _send_reg(self, reg: Reg) -> RegResp:
        resp = await self.request(reg, RegResp)
        if resp.registration_result != "SUCCESS":
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
            ue_service_id=self.ue_service_id, ue_credential_info=self.credential_info
        )
        resp = await self.request(dereg, DeregResp)
        if resp.deregistration_result == "SUCCESS":
            self.registered = False
            self._registration = None
        return resp

    async def send_report(
        self,
        message: Msg,
        status: ReportDeliveryStatus = ReportDeliveryStatus.REPT_DELY_SUCCESS,
        cause: FailureCause | None = None,
    ) -> None:
        """Send an ``IMDN`` about ``message`` to its originator (digest §3.9.3).

        The POST re-uses the Token of the server's ``MSG`` POST when this client
        received that message (§3.9.3 step 2).
        """
        report = self._imdn(message, status, cause)
        await self.request(report, token=self._token_of(message))

    # reception ------------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> Received:  # noqa: ASYNC109
        """The next received message or report.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        return await wait_for(self._clock, self._queue.get(), timeout)

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Received]:
        while True:
            yield await self._queue.get()
