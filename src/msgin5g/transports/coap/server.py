"""The server side of MSGin5G-1 on our CoAP engine (TS 24.538 §6, digest §2, §3).

(Over 500 lines: the uplink pipeline and the downlink port
share the transport's state; the DTLS wiring lives in :mod:`.secure`.)

Pipeline for every request to ``/msgin5g`` (digest §3 "common behaviour"):

1. method must be POST (the engine's router answers 4.05) and the path known (4.04);
2. a payload must carry Content-Format 50 → else 4.15;
3. an over-size payload is refused by the engine with 4.13 + Size1, and so is a
   block-wise (Block1) request: MSGin5G segments large payloads itself (digest §2.1);
4. the JSON is decoded and validated → 4.00 with ``{"messageType", "failureCause",
   "detail"}`` naming the offending member;
5. one dispatch table (:data:`~msgin5g.transports.dispatch.PROCEDURES`, shared
   with MQTT) maps the decoded message class, one per Message Type, to the
   service procedure; its response message is piggybacked on the ACK with 2.01 (new
   registration) or 2.04, Content-Format 50.

Errors become CoAP codes only here, through :mod:`.codes`; each is logged once
(INFO for a client's mistake, ERROR with traceback for our bug). A client's
mistakes are logged through a :class:`~msgin5g.logsafe.LogThrottle` per kind, so
a flood of bad requests writes a few lines per minute, not one per datagram.

Flood control: the endpoint gets a :class:`~msgin5g.coap.limits.SourceLimiter`
built from ``coap.source_*``/``trusted_*`` (docs/security-coap.md); a source
that a UE is registered from (the registry's ``by_source``) is trusted.

:class:`CoapTransport` also implements the service's ``Deliverer`` port: a
server-originated CON POST to the client's ``/msgin5g`` (digest §3.7.6), whose
2.xx means delivered; RST, 5.xx or exhausted retransmissions mean unreachable
(store and forward, §3.8), 4.xx means the client refused the item.

Security: with ``coap.secure_bind`` a second endpoint serves the same site over
DTLS 1.2 PSK (:mod:`.secure`); requests there are authorised by the session's
PSK identity. Plain CoAP on ``coap.bind`` is then off unless
``coap.allow_insecure`` is true; whenever it is on, start-up logs a WARNING.
Downlink goes over the secure endpoint to a contact that names a session
(``psk:<identity>``), over the plain one otherwise.

Topic subscription in the Observe form (``GET /msgin5g/topics/{topic}``, digest
§3.13.4) is served by :mod:`.observe`, which also notifies observers.
"""

import asyncio
import logging
from functools import partial
from urllib.parse import urlsplit

import msgspec

from msgin5g.coap.address import Peer
from msgin5g.coap.dtls_records import identity_of
from msgin5g.coap.endpoint import Endpoint, Request, Site
from msgin5g.coap.limits import SourceLimiter
from msgin5g.coap.message import CoapMessage, encode_uint, make_response
from msgin5g.coap.numbers import (
    Code,
    OptionNumber,
    TransmissionParameters,
    Type,
    code_str,
)
from msgin5g.coap_binding import (
    error_response,
    json_response,
    post_options,
    require_json,
)
from msgin5g.codec.ue_payload import decode_uplink, encode
from msgin5g.config import CoapConfig
from msgin5g.errors import (
    ConfigError,
    DecodeError,
    DeliveryRejected,
    InvalidRequest,
    MSGin5GError,
    RecipientUnreachable,
    RemoteReset,
    RequestTimeout,
    TransportError,
)
from msgin5g.logsafe import LogThrottle
from msgin5g.model.messages import (
    BulkDereg,
    BulkReg,
    Dereg,
    DownlinkItem,
    Reg,
)
from msgin5g.model.registry import Contact
from msgin5g.runtime.histogram import Histogram
from msgin5g.service.messaging import MessagingService
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.coap import CONFIG_PATH, MSGIN5G_PATH
from msgin5g.transports.coap.codes import code_for
from msgin5g.transports.coap.configuration import ConfigurationResource
from msgin5g.transports.coap.identity import originator
from msgin5g.transports.coap.observe import TOPICS_PATH, ObserveResource
from msgin5g.transports.coap.oscore import OscoreEdge
from msgin5g.transports.coap.secure import (
    SecureEndpoint,
    bind_identity,
    is_secure_contact,
    open_secure,
)
from msgin5g.transports.dispatch import PROCEDURES, TAGS

__all__ = ["CoapTransport"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)

_CON_ONLY = (Reg, Dereg, BulkReg, BulkDereg)
"""Requests whose answer carries the procedure's outcome: the CR requires CON
(digest §2.2 rule 1, §3.2.2 step 1, §3.3 step 1); sent NON they are refused with
4.00 ``INVALID_MESSAGE`` (digest §5.1) and the procedure does not run."""

_NON = int(Type.NON)
_CON = int(Type.CON)
_POST = int(Code.POST)
_BLOCK1 = int(OptionNumber.BLOCK1)


class CoapTransport:
    """MSGin5G-1 server endpoint and downlink deliverer."""

    def __init__(self, config: CoapConfig) -> None:
        self.config = config
        self._service: MessagingService | None = None
        self._endpoint: Endpoint | None = None
        self._secure: SecureEndpoint | None = None
        self._paths: dict[tuple[str, ...], list[tuple[int, bytes]]] = {}
        self._observe: ObserveResource | None = None
        self.oscore: OscoreEdge | None = None
        """OSCORE contexts and their use (``coap.oscore``), once started."""
        self.uplink: dict[tuple[str, str], int] = {}
        """Uplink requests by (Message Type, ``ok`` or failure cause), for metrics."""
        self.delivery_latency = Histogram()
        """Seconds from a downlink CON to its acknowledged answer."""
        # the running loop, once (asyncio.get_running_loop() costs a getpid())
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def endpoint(self) -> Endpoint:
        """The running plain CoAP endpoint (the secure one when it is alone)."""
        if self._endpoint is not None:
            return self._endpoint
        if self._secure is not None:
            return self._secure.endpoint
        raise RuntimeError("CoapTransport not started")

    @property
    def secure(self) -> SecureEndpoint | None:
        """The ``coaps://`` listener, when ``coap.secure_bind`` is set."""
        return self._secure

    @property
    def local_address(self) -> tuple[str, int]:
        """Address and port actually bound (plain CoAP's when it is on)."""
        return self.endpoint.local_address

    @property
    def plain_address(self) -> tuple[str, int] | None:
        """Address and port of plain CoAP, None when it is off."""
        return None if self._endpoint is None else self._endpoint.local_address

    @property
    def secure_address(self) -> tuple[str, int] | None:
        """Address and port of ``coaps://``, None when it is off."""
        return None if self._secure is None else self._secure.endpoint.local_address

    def _endpoint_for(self, contact: Contact) -> Endpoint:
        if self._secure is not None and is_secure_contact(contact.host):
            return self._secure.endpoint
        return self.endpoint

    async def start(self, service: MessagingService) -> None:
        """Bind the socket and serve ``/msgin5g`` for ``service``."""
        self._service = service
        self._loop = asyncio.get_running_loop()
        secure = self.config.secure_address is not None
        if not secure and not self.config.insecure_allowed:
            raise ConfigError(
                "coap.allow_insecure is false and coap.secure_bind is not set: "
                "nothing would serve MSGin5G-1"
            )
        site = self._site(service)
        if self.config.oscore:  # on the plain site: over DTLS it would add nothing
            oscore = self.oscore = OscoreEdge(
                service, max_contexts=self.config.oscore_max_contexts
            )
            oscore.serve(site)
            site.add((), oscore.render, methods=frozenset({Code.POST, Code.FETCH}))
        observe = self._observe = ObserveResource(service)
        params = TransmissionParameters(
            ack_timeout=self.config.ack_timeout,
            max_retransmit=self.config.max_retransmit,
        )
        if secure:
            secure_site = self._site(service)
            secure_site.add(
                TOPICS_PATH,
                observe.render_get,
                methods=frozenset({Code.GET}),
                prefix=True,
            )
            self._secure = await open_secure(
                self.config, secure_site, params, observe.on_reset
            )
        else:
            site.add(
                TOPICS_PATH,
                observe.render_get,
                methods=frozenset({Code.GET}),
                prefix=True,
            )
        if self.config.insecure_allowed:
            try:
                await self._start_plain(site, params, observe)
            except BaseException:
                if self._secure is not None:
                    await self._secure.aclose()
                    self._secure = None
                raise
        observe.start(self.endpoint if self._secure is None else self._secure.endpoint)

    def _site(self, service: MessagingService) -> Site:
        site = Site()
        site.add(MSGIN5G_PATH, self.render_post)
        site.add(
            CONFIG_PATH,
            ConfigurationResource(
                service, self, service_id=self.config.service_id
            ).render_post,
        )
        return site

    async def _start_plain(
        self,
        site: Site,
        params: TransmissionParameters,
        observe: ObserveResource,
    ) -> None:
        """Serve plain CoAP on ``coap.bind`` (lab use: loudly warned)."""
        limiter = None
        if self.config.source_rate > 0:
            limiter = SourceLimiter(
                asyncio.get_running_loop().time,
                rate=self.config.source_rate,
                burst=self.config.source_burst,
                trusted_rate=self.config.trusted_rate,
                trusted_burst=self.config.trusted_burst,
                max_sources=self.config.max_sources,
                is_trusted=self._is_trusted,
            )
        self._endpoint = await Endpoint.create(
            self.config.address,
            site=site,
            params=params,
            max_request_payload=self.config.max_payload,
            max_concurrent_requests=self.config.max_concurrent_requests,
            recv_buffer=self.config.recv_buffer,
            send_buffer=self.config.recv_buffer,
            observe_reset=observe.on_reset,
            source_limiter=limiter,
            max_dedup_bytes=self.config.dedup_max_bytes,
            reuse_port=self.config.reuse_port,
            send_thread=self.config.send_thread,
            native_socket=self.config.native_socket,
        )
        log.info("MSGin5G-1 CoAP listening on %s:%d", *self._endpoint.local_address)
        log.warning(
            "INSECURE: plain CoAP (no DTLS) on %s:%d - the PSK_TOKEN travels in "
            "clear and requests are authorised by source address; for lab use "
            "only (set coap.secure_bind, docs/security-dtls.md)",
            *self._endpoint.local_address,
        )

    def _is_trusted(self, peer: Peer) -> bool:
        """Whether a UE (or a gateway) is registered from ``peer``."""
        service = self._service
        return (
            service is not None
            and service.registry.by_source(_contact(peer)) is not None
        )

    async def aclose(self) -> None:
        """Stop notifying observers and close the socket."""
        if self._observe is not None:
            await self._observe.aclose()
            self._observe = None
        if self._endpoint is not None:
            await self._endpoint.aclose()
            self._endpoint = None
        if self._secure is not None:
            await self._secure.aclose()
            self._secure = None

    # uplink ---------------------------------------------------------------------

    async def render_post(self, request: Request) -> CoapMessage:
        """Handle a POST to ``/msgin5g``."""
        message = request.message
        kind = "unknown"
        uplink: object = None
        try:
            if message.opt(_BLOCK1) is not None:
                _throttled.log(
                    "block-wise",
                    logging.INFO,
                    "4.13 from %s: block-wise request",
                    request.peer,
                )
                return error_response(
                    message,
                    Code.REQUEST_ENTITY_TOO_LARGE,
                    FailureCause.PAYLOAD_TOO_LARGE,
                    "block-wise transfer is not supported; MSGin5G segments large "
                    "payloads instead (TS 23.554 §8.5)",
                    options=[
                        (OptionNumber.SIZE1, encode_uint(self.config.max_payload))
                    ],
                )
            refused = require_json(message)
            if refused is not None:
                _throttled.log(
                    "content-format",
                    logging.INFO,
                    "4.15 from %s: Content-Format %s",
                    request.peer,
                    message.content_format,
                )
                return refused
            uplink = decode_uplink(message.payload, service_id=self.config.service_id)
            kind = TAGS[type(uplink)]
            if self._secure is not None and identity_of(request.peer) is not None:
                uplink = bind_identity(uplink, request.peer, self._secure.keys)
            if message.mtype == _NON and isinstance(uplink, _CON_ONLY):
                raise InvalidRequest(
                    f"{type(uplink).__struct_config__.tag} must be sent Confirmable "
                    "(T = 0): its "
                    "answer is the procedure's outcome (TS 24.538 §6.1, §6.3.1.1.1)"
                )
            service = self._service
            assert service is not None  # noqa: S101 - set in start()
            procedure = PROCEDURES[type(uplink)]
            source = _contact(request.peer)
            oscore = self.oscore
            if oscore is not None:
                source = oscore.admit(request, uplink, source)
            status, body = await procedure(service, uplink, source)
            answer = _render(message, uplink, status, body)
            if oscore is not None:
                oscore.after(request, uplink)
            counted = (kind, "ok")
            self.uplink[counted] = self.uplink.get(counted, 0) + 1
            return answer
        except MSGin5GError as exc:
            code, cause = code_for(exc)
            counted = (kind, str(cause))
            self.uplink[counted] = self.uplink.get(counted, 0) + 1
            detail = getattr(exc, "detail", None) or str(exc)
            if isinstance(exc, DecodeError):
                _throttled.log(
                    "decode-error",
                    logging.INFO,
                    "4.00 from %s: %s",
                    request.peer,
                    detail,
                )
            else:
                _throttled.log(
                    f"refused-{cause}",
                    logging.INFO,
                    "%s from %s: %s",
                    cause,
                    request.peer,
                    detail,
                    extra={
                        "event": "uplink_refused",
                        "cause": str(cause),
                        "message_type": kind,
                        "peer": f"{request.peer[0]}:{request.peer[1]}",
                        "ue_service_id": originator(uplink),
                        "message_id": getattr(uplink, "message_id", None),
                    },
                )
            return error_response(message, code, cause, detail)

    # downlink (Deliverer port) ------------------------------------------------------

    def abandon(self, contact: Contact) -> None:
        """Fail the outstanding CONs to ``contact`` now (the UE re-registered)."""
        if self._endpoint is not None or self._secure is not None:
            self._endpoint_for(contact).abandon((contact.host, contact.port))

    async def deliver(self, contact: Contact, item: DownlinkItem) -> None:
        """CON POST ``item`` to the client at ``contact`` and wait for its answer.

        To a UE that registered over OSCORE the POST is protected.
        """
        request = self._request_for(contact, item)
        loop = self._loop or asyncio.get_running_loop()
        start = loop.time()
        peer = (contact.host, contact.port)
        oscore = self.oscore
        ue = oscore.protected_recipient(item) if oscore is not None else None
        try:
            endpoint = self._endpoint_for(contact)
            if ue is not None and oscore is not None:
                response = await oscore.exchange(
                    ue, request, partial(endpoint.request, peer=peer)
                )
            else:
                response = await endpoint.request(request, peer)
        except TransportError as exc:
            raise _unreachable(exc) from exc
        self.delivery_latency.observe(loop.time() - start)
        _check(response.code)

    def deliver_nowait(
        self, contact: Contact, item: DownlinkItem
    ) -> asyncio.Future[None]:
        """Start the CON POST of ``item``; the future ends as :meth:`deliver` would.

        No task per delivery (a fan-out starts thousands); cancelling the
        future does not stop the exchange.
        """
        loop = self._loop or asyncio.get_running_loop()
        if self.oscore is not None and self.oscore.protected_recipient(item):
            return asyncio.ensure_future(self.deliver(contact, item))
        outcome: asyncio.Future[None] = loop.create_future()
        try:
            self._endpoint_for(contact).request_callback(
                self._request_for(contact, item),
                (contact.host, contact.port),
                partial(_settle, outcome, self.delivery_latency, loop.time()),
            )
        except (TransportError, ValueError, RuntimeError) as exc:
            outcome.set_exception(RecipientUnreachable(str(exc)))
        return outcome

    def _request_for(self, contact: Contact, item: DownlinkItem) -> CoapMessage:
        options = self._paths.get(contact.path)
        if options is None:
            options = post_options(contact.path)
            self._paths[contact.path] = options
        return CoapMessage(_CON, _POST, options=options, payload=encode(item))


def _unreachable(exc: BaseException) -> RecipientUnreachable:
    if isinstance(exc, RequestTimeout):
        return RecipientUnreachable("no acknowledgement")
    if isinstance(exc, RemoteReset):
        return RecipientUnreachable("client answered RST (no context)")
    return RecipientUnreachable(str(exc))


def _check(code: int) -> None:
    """2.xx: delivered; 4.xx: refused (futile to retry); else unreachable."""
    if 64 <= code < 128:
        return
    if 128 <= code < 160:
        raise DeliveryRejected(f"client answered {code_str(code)}")
    raise RecipientUnreachable(f"client answered {code_str(code)}")


def _settle(
    outcome: asyncio.Future[None],
    latency: Histogram,
    start: float,
    response: CoapMessage | None,
    exc: Exception | None,
) -> None:
    """Resolve a :meth:`CoapTransport.deliver_nowait` outcome from its exchange."""
    if outcome.done():
        return
    if response is None:
        outcome.set_exception(
            _unreachable(exc if exc is not None else RequestTimeout("no answer"))
        )
        return
    latency.observe(outcome.get_loop().time() - start)
    try:
        _check(response.code)
    except (DeliveryRejected, RecipientUnreachable) as error:
        outcome.set_exception(error)
    else:
        outcome.set_result(None)


def _contact(peer: Peer) -> Contact:
    return Contact(peer[0], peer[1])


def _location_path(address: str) -> list[tuple[int, bytes]] | None:
    try:
        path = urlsplit(address).path
    except ValueError:
        return None
    return [
        (OptionNumber.LOCATION_PATH, part.encode()) for part in path.split("/") if part
    ] or None


def _render(
    request: CoapMessage, uplink: object, code: int, body: msgspec.Struct | None
) -> CoapMessage:
    """The CoAP answer to a procedure's outcome (:mod:`..dispatch`).

    The response message (if any) is piggybacked as JSON; a successful ``REG``
    that names a ``clientAddress`` also gets its path as Location-Path.
    """
    if body is None:
        return make_response(request, code)
    extra = None
    if (
        isinstance(uplink, Reg)
        and uplink.client_address
        and getattr(body, "failure_cause", None) is None
    ):
        extra = _location_path(uplink.client_address)
    return json_response(request, code, body, extra)
