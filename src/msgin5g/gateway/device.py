"""A constrained UE behind a Gateway UE (MSGin5G-6 client or MSGin5G-5 app client).

The device side of the gateway procedures, on our CoAP engine, for the CLI
(``msgin5g ue register --via-gateway``), tests and benchmarks:

* :meth:`ConstrainedUE.register` / :meth:`~ConstrainedUE.deregister` (digest
  §3.4.2, §3.5): the ``REG`` is sent CON with a Message ID and Token chosen here;
  after the gateway's empty ACK the answer arrives as a CON **POST**
  ``REGRESP`` that re-uses both (TS 24.538-R18 §6.3.4.3.3); the UE answers it
  2.04 and returns a :class:`Registration` that records both pairs. A
  piggybacked answer (local failure, G1) is returned as well;
* :meth:`~ConstrainedUE.expected_registration_time` asks the gateway
  (``GET /msgin5g/pending?ue=ID``);
* Annex A.3 messaging (:meth:`~ConstrainedUE.send`, reports), ``APPREG``,
  ``GWREG`` and configuration through the gateway (:meth:`~ConstrainedUE.configure`,
  which applies the document: server address and packet/segment size).

Received ``MSG``/``IMDN`` are queued once (duplicates after a gateway restart are
acknowledged, not queued twice); a message asking for a report gets an A.3
``IMDN`` back when ``auto_report`` is on. Late or repeated ``REGRESP``s are
answered 2.04 and ignored (digest §5.4).
"""

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec

from msgin5g.client.wire import post_options, raise_for_code, ue_credential_info
from msgin5g.coap.endpoint import Endpoint, Request, Site
from msgin5g.coap.message import CoapMessage, make_response, uri_path_options
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.codec.ue_payload import (
    decode_config_response,
    decode_gateway_response,
    decode_local_downlink,
    encode,
)
from msgin5g.errors import ConnectError, DecodeError
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import (
    AppDereg,
    AppDeregResp,
    AppReg,
    AppRegResp,
    ConfReq,
    ConfResp,
    Dereg,
    DeregResp,
    GwReg,
    GwRegResp,
    Imdn,
    LocalImdn,
    LocalMsg,
    Msg,
    MsgResp,
    Reg,
    RegResp,
    UECredentialInfo,
)
from msgin5g.runtime import Supervisor
from msgin5g.spec.coap import (
    CONFIG_RESOURCE,
    DEFAULT_COAP_PORT,
    MSGIN5G_PATH,
    PENDING_RESOURCE,
)
from msgin5g.spec.delivery import MSGIN5G_SERVICE_ID, ReportDeliveryStatus

__all__ = ["ConstrainedUE", "Registration"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Registration:
    """Outcome of a registration or de-registration through a gateway.

    Attributes:
        response: the ``REGRESP``/``DEREGRESP`` payload.
        request_mid: CoAP Message ID of our ``REG``/``DEREG``.
        request_token: its Token.
        response_mid: Message ID of the gateway's ``REGRESP`` POST (equal to
            ``request_mid`` when the gateway follows §6.3.4.3.3).
        response_token: its Token.
        piggybacked: the gateway answered at once in the ACK (no bulk).
    """

    response: RegResp | DeregResp
    request_mid: int
    request_token: bytes
    response_mid: int
    response_token: bytes
    piggybacked: bool = False

    @property
    def succeeded(self) -> bool:
        """``registrationResult``/``deregistrationResult`` is SUCCESS."""
        resp = self.response
        result = (
            resp.registration_result
            if isinstance(resp, RegResp)
            else resp.deregistration_result
        )
        return result == "SUCCESS"


class ConstrainedUE:
    """One constrained UE talking to a Gateway UE.

    Args:
        ue_service_id: this UE's Service ID.
        secret: its provisioned secret (PSK_TOKEN derived from it).
        gateway: ``coap://host[:port][/path]`` of the gateway.
        bind: local (host, port); port 0 picks one.
        credential: a PSK_TOKEN to present instead of deriving one.
        auto_report: answer report requests with an ``IMDN``.
        service_id: the MSGin5G service identifier (``msgin5gServiceId``) it
            sends and expects: the gateway's ``GatewayConfig.service_id``.
    """

    def __init__(
        self,
        ue_service_id: str,
        secret: str | None = None,
        *,
        gateway: str = "coap://127.0.0.1:5693",
        bind: tuple[str, int] = ("127.0.0.1", 0),
        credential: str | None = None,
        auto_report: bool = True,
        service_id: str = MSGIN5G_SERVICE_ID,
    ) -> None:
        self.ue_service_id = ue_service_id
        self.service_id = service_id
        if credential is None and secret is not None:
            credential = psk_token(secret, ue_service_id)
        self._credential = credential
        parts = urlsplit(gateway)
        if parts.scheme != "coap" or not parts.hostname:
            raise ConnectError(f"gateway must be a coap:// URI, got {gateway!r}")
        self._gateway = (parts.hostname, parts.port or DEFAULT_COAP_PORT)
        self._path = tuple(p for p in parts.path.split("/") if p) or MSGIN5G_PATH
        self._bind = bind
        self._auto_report = auto_report
        self._endpoint: Endpoint | None = None
        self._answers: dict[
            bytes, asyncio.Future[tuple[CoapMessage, RegResp | DeregResp]]
        ] = {}
        self._queue: asyncio.Queue[Msg | Imdn] = asyncio.Queue()
        self._seen: set[tuple[str, str, bool]] = set()
        self._tasks = Supervisor(f"constrained UE {ue_service_id}")
        self.server_address: str | None = None
        self.packet_size: int | None = None

    # lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the UE's socket."""
        site = Site()
        site.add(MSGIN5G_PATH, self._render_post)
        self._endpoint = await Endpoint.create(self._bind, site=site)
        await self._tasks.start()

    async def aclose(self) -> None:
        """Close the socket."""
        await self._tasks.aclose()
        if self._endpoint is not None:
            await self._endpoint.aclose()
            self._endpoint = None

    async def __aenter__(self) -> "ConstrainedUE":
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
            raise ConnectError("constrained UE not started")
        return self._endpoint

    def _credential_info(self) -> UECredentialInfo:
        return ue_credential_info(self._credential)

    async def _post(
        self, payload: bytes, *extra: str, confirmable: bool = True
    ) -> CoapMessage:
        mtype = Type.CON if confirmable else Type.NON
        options = post_options((*self._path, *extra))
        request = CoapMessage(mtype, Code.POST, options=options, payload=payload)
        return raise_for_code(await self._require().request(request, self._gateway))

    # registration through the gateway ------------------------------------------------

    async def register(
        self,
        *,
        urgent: bool = False,
        wait_time: int | None = None,
        timeout: float = 120.0,  # noqa: ASYNC109 - bounds the whole procedure
    ) -> Registration:
        """Register through the gateway and wait for the ``REGRESP`` (digest §3.4.2).

        Raises:
            TimeoutError: no answer within ``timeout`` seconds.
            RemoteError, TransportError: the gateway refused or is unreachable.
        """
        reg = Reg(
            ue_service_id=self.ue_service_id,
            ue_credential_info=self._credential_info(),
            msgin5g_service_id=self.service_id,
            registration_urgent_degree="URGENT" if urgent else None,
            wait_time=wait_time,
        )
        return await self._matched(encode(reg), timeout)

    async def deregister(
        self,
        *,
        urgent: bool = False,
        wait_time: int | None = None,
        timeout: float = 120.0,  # noqa: ASYNC109 - bounds the whole procedure
    ) -> Registration:
        """De-register through the gateway and wait for the ``DEREGRESP`` (§3.5)."""
        dereg = Dereg(
            ue_service_id=self.ue_service_id,
            ue_credential_info=self._credential_info(),
            msgin5g_service_id=self.service_id,
            registration_urgent_degree="URGENT" if urgent else None,
            wait_time=wait_time,
        )
        return await self._matched(encode(dereg), timeout)

    async def _matched(self, payload: bytes, timeout: float) -> Registration:  # noqa: ASYNC109
        endpoint = self._require()
        mid = int.from_bytes(os.urandom(2), "big")
        token = os.urandom(4)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[tuple[CoapMessage, RegResp | DeregResp]] = (
            loop.create_future()
        )
        self._answers[token] = answer
        request = CoapMessage(
            Type.CON, Code.POST, options=post_options(self._path), payload=payload
        )
        sent = asyncio.create_task(
            endpoint.request(request, self._gateway, mid=mid, token=token)
        )
        both: set[asyncio.Future[Any]] = {sent, answer}
        try:
            async with asyncio.timeout(timeout):
                done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
                if answer not in done:
                    response = raise_for_code(sent.result())  # or a transport error
                    item = decode_local_downlink(
                        response.payload, service_id=self.service_id
                    )
                    if not isinstance(item, (RegResp, DeregResp)):
                        raise DecodeError("expected REGRESP", member="messageType")
                    return Registration(item, mid, token, mid, token, piggybacked=True)
                message, item = answer.result()
        finally:
            self._answers.pop(token, None)
            sent.cancel()
            await asyncio.gather(sent, return_exceptions=True)
        return Registration(item, mid, token, message.mid, message.token)

    async def expected_registration_time(self) -> datetime | None:
        """Ask the gateway when its bulk request will be sent (TS 23.554 §8.2.7)."""
        query = (OptionNumber.URI_QUERY, f"ue={self.ue_service_id}".encode())
        request = CoapMessage(
            Type.CON,
            Code.GET,
            options=[*uri_path_options((*self._path, PENDING_RESOURCE)), query],
        )
        response = await self._require().request(request, self._gateway)
        if response.code != Code.CONTENT:
            return None
        body = msgspec.json.decode(response.payload, type=dict[str, str])
        text = body.get("expectedRegistrationTime", "").replace("Z", "+00:00")
        return datetime.fromisoformat(text) if text else None

    # MSGin5G-5 / -6 procedures ---------------------------------------------------------

    async def app_register(
        self,
        application_id: str,
        layer2_id: str,
        *,
        own_identity: bool = False,
    ) -> AppRegResp:
        """``APPREG`` (digest §3.6.1); with ``own_identity`` as this UE's Service ID."""
        reg = AppReg(
            application_id=application_id,
            layer2_id=layer2_id,
            ue_service_id=self.ue_service_id if own_identity else None,
            ue_credential_info=self._credential_info() if own_identity else None,
            msgin5g_service_id=self.service_id,
        )
        answer = decode_gateway_response((await self._post(encode(reg))).payload)
        if not isinstance(answer, AppRegResp):
            raise DecodeError("expected APPREGRESP", member="messageType")
        return answer

    async def app_deregister(
        self, application_id: str, *, own_identity: bool = False
    ) -> AppDeregResp:
        """``APPDEREG``."""
        dereg = AppDereg(
            application_id=application_id,
            ue_service_id=self.ue_service_id if own_identity else None,
            msgin5g_service_id=self.service_id,
        )
        answer = decode_gateway_response((await self._post(encode(dereg))).payload)
        if not isinstance(answer, AppDeregResp):
            raise DecodeError("expected APPDEREGRESP", member="messageType")
        return answer

    async def gw_register(self, layer2_id: str, required_packet_size: int) -> GwRegResp:
        """``GWREG`` (digest §3.6.2); applies the allowed packet size."""
        reg = GwReg(
            layer2_id=layer2_id,
            ue_service_id=self.ue_service_id,
            required_packet_size=required_packet_size,
            msgin5g_service_id=self.service_id,
        )
        answer = decode_gateway_response((await self._post(encode(reg))).payload)
        if not isinstance(answer, GwRegResp):
            raise DecodeError("expected GWREGRESP", member="messageType")
        self.packet_size = answer.allowed_packet_size
        return answer

    async def configure(self) -> ConfResp:
        """Ask the gateway for this UE's configuration document and apply it."""
        request = ConfReq(
            ue_service_id=self.ue_service_id,
            ue_credential_info=self._credential_info(),
            msgin5g_service_id=self.service_id,
        )
        response = await self._post(encode(request), CONFIG_RESOURCE)
        answer = decode_config_response(response.payload)
        if not isinstance(answer, ConfResp):
            raise DecodeError("expected CONFRESP", member="messageType")
        if answer.result == "SUCCESS":
            self.server_address = answer.msgin5g_server_address
            if answer.segment_size is not None:
                self.packet_size = min(
                    answer.segment_size, self.packet_size or answer.segment_size
                )
        return answer

    async def send(
        self,
        target: str,
        payload: bytes | str,
        *,
        target_type: str = "UE",
        application_id: str | None = None,
        report: bool = False,
        message_id: str | None = None,
    ) -> MsgResp | None:
        """Send an Annex A.3 ``MSG``; CON when a report is asked for, else NON.

        Returns:
            the ``MSGRESP`` the gateway piggybacked, or None (stored at the
            gateway, or NON).
        """
        msg = LocalMsg(
            target_address=target,
            target_type=target_type,
            message_id=message_id or str(uuid.uuid4()),
            payload=payload.encode() if isinstance(payload, str) else payload,
            application_id=application_id,
            delivery_status_required=report,
            msgin5g_service_id=self.service_id,
        )
        if not report:
            self._tasks.spawn(self._post_quietly(encode(msg), confirmable=False))
            return None
        response = await self._post(encode(msg))
        if not response.payload:
            return None
        answer = decode_gateway_response(response.payload)
        return answer if isinstance(answer, MsgResp) else None

    async def send_report(
        self,
        message: Msg,
        status: ReportDeliveryStatus = ReportDeliveryStatus.REPT_DELY_SUCCESS,
    ) -> None:
        """Send an A.3 ``IMDN`` about ``message`` to its originator."""
        await self._post(encode(self._imdn(message, status)))

    def _imdn(self, message: Msg, status: ReportDeliveryStatus) -> LocalImdn:
        to_as = message.originating_ue_service_id is None
        return LocalImdn(
            target_address=message.originator or "",
            target_type="AS" if to_as else "UE",
            message_id=message.message_id,
            delivery_status=status,
            application_id=message.application_id,
            msgin5g_service_id=self.service_id,
        )

    async def receive(self, timeout: float | None = None) -> Msg | Imdn:  # noqa: ASYNC109
        """The next message or report relayed by the gateway.

        Raises:
            TimeoutError: nothing arrived in time.
        """
        return await asyncio.wait_for(self._queue.get(), timeout)

    # reception --------------------------------------------------------------------------

    async def _render_post(self, request: Request) -> CoapMessage:
        message = request.message
        try:
            item = decode_local_downlink(message.payload, service_id=self.service_id)
        except DecodeError as exc:
            log.info("%s: bad request from the gateway: %s", self.ue_service_id, exc)
            return make_response(message, Code.BAD_REQUEST)
        if isinstance(item, (RegResp, DeregResp)):
            answer = self._answers.get(message.token)
            if (
                answer is not None
                and not answer.done()
                and item.ue_service_id == self.ue_service_id
            ):
                answer.set_result((message, item))
            return make_response(message, Code.CHANGED)
        key = (item.originator or "", item.message_id, isinstance(item, Imdn))
        if key not in self._seen:
            self._seen.add(key)
            self._queue.put_nowait(item)
            if (
                isinstance(item, Msg)
                and item.delivery_status_required
                and self._auto_report
            ):
                report = self._imdn(item, ReportDeliveryStatus.REPT_DELY_SUCCESS)
                self._tasks.spawn(self._post_quietly(encode(report)))
        return make_response(message, Code.CHANGED)

    async def _post_quietly(self, payload: bytes, *, confirmable: bool = True) -> None:
        try:
            await self._post(payload, confirmable=confirmable)
        except Exception as exc:
            log.warning("%s: could not send: %s", self.ue_service_id, exc)
