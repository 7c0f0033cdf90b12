"""OSCORE on the server's CoAP port (RFC 8613; profile in ``oscore_profile``).

What: :class:`OscoreEdge` holds one :class:`~msgin5g.coap.oscore.SecurityContext`
per UE, derived on first use from the UE's stored credential digest, and

* serves OSCORE-protected requests (outer POST/FETCH without Uri-Path, routed
  here as the empty path): the OSCORE option's kid context names the UE, the
  request is verified and decrypted, the *inner* request is routed through the
  same :class:`~msgin5g.coap.resource.Site` as plain requests (so the same
  procedures run), handed over as an :class:`OscoreRequest` that carries the
  authenticated UE Service ID, and the answer is protected;
* protects the server's own requests to a UE that registered over OSCORE
  (downlink ``MSG``/``IMDN`` …) and verifies their answers.

Error answers (RFC 8613 §8.2): malformed OSCORE option 4.02, unknown UE or
kid 4.01 "Security context not found", failed decryption 4.00, replay 4.01
"Replay detected" — unprotected, with a diagnostic payload, one throttled log
line per kind. After a restart (or after a context was dropped from memory)
the first request of a UE is answered with a *protected* 4.01 carrying an Echo
option (Appendix B.1.2, RFC 9175); aiocoap and ``client.oscore`` resend with it
automatically, and the replay window starts at that request.

Sequence numbers of the server's own Partial IVs (downlink requests and Echo
answers) are reserved in steps of :data:`RESERVATION_STEP` in a storage record
(kind ``oscore-seq``, key = UE Service ID) *before* they are used, so a restart
never reuses a nonce (Appendix B.1.1).
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable

from msgin5g.coap.endpoint import Request, Site
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.oscore import (
    ECHO,
    EchoRequired,
    OscoreError,
    RequestBinding,
    SecurityContext,
    UnknownContext,
    binding_of,
    protect_request,
    protect_response,
    request_option,
    unprotect_request,
    unprotect_response,
)
from msgin5g.errors import ConfigError, NotAuthorized, RecipientUnreachable
from msgin5g.logsafe import LogThrottle
from msgin5g.model.messages import BulkDereg, BulkReg, Dereg, Reg
from msgin5g.model.registry import Contact
from msgin5g.oscore_profile import server_context, ue_of
from msgin5g.service.messaging import MessagingService
from msgin5g.transports.coap.identity import originator
from msgin5g.transports.coap.oscore_types import OscoreRequest, OscoreSequence

__all__ = ["RESERVATION_STEP", "OscoreEdge", "OscoreRequest", "OscoreSequence"]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)

RESERVATION_STEP = 256
"""Sender Sequence Numbers reserved per storage write (Appendix B.1.1's K)."""
SEQUENCE_KIND = "oscore-seq"
_UNAUTHORIZED = 0x81
_TEXT_PLAIN = (12, b"")


_Send = Callable[[CoapMessage], Awaitable[CoapMessage]]
"""Carries one outer request, returns the outer response."""


class OscoreEdge:
    """Security contexts of the server and their use on the CoAP port.

    Args:
        service: the service (credential digests, storage records).
        max_contexts: contexts held in memory; the oldest is dropped beyond.
    """

    def __init__(self, service: MessagingService, *, max_contexts: int) -> None:
        self._service = service
        self._max = max_contexts
        self._contexts: dict[str, SecurityContext] = {}
        self._deriving: dict[str, asyncio.Future[SecurityContext | None]] = {}
        self._reserving: dict[str, asyncio.Future[None]] = {}
        self._bound: set[str] = set()
        self._site: Site | None = None
        self.refused = 0
        """OSCORE requests refused (bad option, unknown context, replay …)."""

    def __len__(self) -> int:
        return len(self._contexts)

    # contexts ------------------------------------------------------------------

    async def context_of(self, ue_service_id: str) -> SecurityContext | None:
        """The context of a provisioned UE (derived on first use), or None."""
        ctx = self._contexts.get(ue_service_id)
        if ctx is not None:
            return ctx
        pending = self._deriving.get(ue_service_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[SecurityContext | None] = (
            asyncio.get_running_loop().create_future()
        )
        self._deriving[ue_service_id] = future
        try:
            ctx = await self._derive(ue_service_id)
            future.set_result(ctx)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._deriving[ue_service_id]
        return ctx

    async def _derive(self, ue_service_id: str) -> SecurityContext | None:
        digest = await self._service.registry.credential(ue_service_id)
        if digest is None:
            return None
        stored = await self._service.backend.get_record(
            SEQUENCE_KIND, ue_service_id, OscoreSequence
        )
        start = stored.next if stored is not None else 0
        try:
            ctx = server_context(
                ue_service_id, digest, sender_sequence=start, reserved_until=start
            )
        except ConfigError:
            return None
        if len(self._contexts) >= self._max:
            oldest = next(iter(self._contexts))
            del self._contexts[oldest]
        self._contexts[ue_service_id] = ctx
        return ctx

    async def reserve(self, ctx: SecurityContext, count: int = 1) -> None:
        """Make sure ``count`` Sender Sequence Numbers may be used now."""
        if not ctx.reservation_needed(count):
            return
        owner = ctx.owner or ""
        pending = self._reserving.get(owner)
        if pending is None:
            pending = asyncio.ensure_future(self._store_reservation(ctx, owner))
            self._reserving[owner] = pending
            pending.add_done_callback(lambda _: self._reserving.pop(owner, None))
        await asyncio.shield(pending)
        if ctx.reservation_needed(count):
            await self.reserve(ctx, count)

    async def _store_reservation(self, ctx: SecurityContext, owner: str) -> None:
        until = max(ctx.sender_sequence, ctx.reserved_until or 0) + RESERVATION_STEP
        await self._service.backend.put_record(
            SEQUENCE_KIND, owner, OscoreSequence(until)
        )
        ctx.reserve(until)

    # identity binding ----------------------------------------------------------

    def bind(self, ue_service_id: str) -> None:
        """The UE registered over OSCORE: its downlink is protected, and plain
        requests claiming to come from it are refused from now on."""
        self._bound.add(ue_service_id)

    def unbind(self, ue_service_id: str) -> None:
        """The UE de-registered: forget the binding."""
        self._bound.discard(ue_service_id)

    def is_bound(self, ue_service_id: str | None) -> bool:
        """Whether ``ue_service_id`` registered over OSCORE."""
        return ue_service_id is not None and ue_service_id in self._bound

    def admit(self, request: Request, uplink: object, source: Contact) -> Contact:
        """The source address to authorise ``uplink`` with.

        An OSCORE request is authorised by its context's UE, not by its
        address: the message must be that UE's own, and for anything but a
        registration the UE's registered source is used, so a new address
        (NAT rebinding, a proxy, the Gateway UE) does not make it foreign. A
        plain request may not act for a UE that registered over OSCORE.

        Raises:
            NotAuthorized: the message names another UE than the context's,
                is a bulk request, or is plain for an OSCORE UE.
        """
        claimed = originator(uplink)
        if not isinstance(request, OscoreRequest):
            if self.is_bound(claimed):
                raise NotAuthorized(
                    f"{claimed} registered over OSCORE: a plain request cannot "
                    "act for it"
                )
            return source
        identity = request.ue_service_id
        if isinstance(uplink, (BulkReg, BulkDereg)) or (
            claimed is not None and claimed != identity
        ):
            raise NotAuthorized(
                f"the OSCORE context of {identity} cannot act for {claimed}"
            )
        registration = self._service.registry.get(identity)
        if isinstance(uplink, Reg) or registration is None:
            return source
        if registration.gateway is None and registration.source != source:
            # NAT rebinding (or a new path): the verified context says who it
            # is, so downlink follows the new address (issue 14 item 3)
            self._service.tasks.spawn(
                self._rebind(identity, source), name="OSCORE rebinding"
            )
        return registration.source

    async def _rebind(self, identity: str, source: Contact) -> None:
        previous = self._service.registry.get(identity)
        moved = await self._service.registry.rebind(identity, source)
        if previous is None or moved is None or moved.contact == previous.contact:
            return
        log.info(
            "%s (OSCORE) moved from %s:%d to %s:%d",
            identity,
            previous.contact.host,
            previous.contact.port,
            moved.contact.host,
            moved.contact.port,
        )
        self._service.delivery.on_moved(identity, previous.contact)
        self._service.delivery.on_uplink(identity)

    def after(self, request: Request, uplink: object) -> None:
        """Bind (``REG``) or unbind (``DEREG``) after an OSCORE procedure ran."""
        if not isinstance(request, OscoreRequest):
            return
        identity = request.ue_service_id
        registered = self._service.registry.get(identity) is not None
        if isinstance(uplink, Reg) and registered:
            self.bind(identity)
        elif isinstance(uplink, Dereg) and not registered:
            self.unbind(identity)

    def protected_recipient(self, item: object) -> str | None:
        """The recipient UE of a downlink item if it registered over OSCORE."""
        ue = getattr(item, "recipient_ue_service_id", None)
        return ue if isinstance(ue, str) and ue in self._bound else None

    # uplink --------------------------------------------------------------------

    def serve(self, site: Site) -> None:
        """Route inner requests through ``site`` (the plain requests' routes)."""
        self._site = site

    async def render(self, request: Request) -> CoapMessage:
        """Handle one OSCORE-protected request (the empty-path route)."""
        message = request.message
        try:
            option = request_option(message)
            ue = ue_of(option)
            ctx = await self.context_of(ue) if ue is not None else None
            if ctx is None:
                raise UnknownContext
            try:
                inner, binding = unprotect_request(ctx, message, option)
            except EchoRequired as exc:
                return await self._echo(ctx, message, exc.echo, binding_of(option))
        except OscoreError as exc:
            self.refused += 1
            _throttled.log(
                f"oscore-{exc.code}",
                logging.INFO,
                "OSCORE request from %s refused: %s",
                request.peer,
                exc.detail,
            )
            return make_response(
                message, exc.code, exc.detail.encode(), options=[_TEXT_PLAIN]
            )
        response = await self._dispatch(
            OscoreRequest(inner, request.peer, request.endpoint, ctx.owner or "")
        )
        return protect_response(ctx, response, binding)

    async def _echo(
        self,
        ctx: SecurityContext,
        message: CoapMessage,
        echo: bytes,
        binding: RequestBinding,
    ) -> CoapMessage:
        """The protected 4.01 with Echo, under a Partial IV of ours (B.1.2)."""
        await self.reserve(ctx)
        answer = make_response(message, _UNAUTHORIZED, options=[(ECHO, echo)])
        return protect_response(ctx, answer, binding, new_piv=True)

    async def _dispatch(self, inner: OscoreRequest) -> CoapMessage:
        site = self._site
        target = site.resolve(inner.message) if site is not None else 0x84
        if isinstance(target, int):
            return make_response(inner.message, target)
        return await target(inner)

    # downlink ------------------------------------------------------------------

    async def exchange(
        self,
        ue_service_id: str,
        request: CoapMessage,
        send: _Send,
    ) -> CoapMessage:
        """Send ``request`` to the UE protected; return the verified answer.

        ``send`` carries one outer request and returns the outer response. A
        4.01 with Echo (the UE restarted) is answered by one resend with it.

        Raises:
            RecipientUnreachable: no context, or the answer does not verify.
        """
        ctx = await self.context_of(ue_service_id)
        if ctx is None:
            raise RecipientUnreachable(f"no OSCORE context for {ue_service_id}")
        echo: bytes | None = None
        for _ in range(2):
            plain = request
            if echo is not None:
                plain = CoapMessage(
                    request.mtype,
                    request.code,
                    request.mid,
                    request.token,
                    [*request.options, (ECHO, echo)],
                    request.payload,
                )
            await self.reserve(ctx)
            outer, binding = protect_request(ctx, plain)
            response = await send(outer)
            try:
                inner = unprotect_response(ctx, response, binding)
            except OscoreError as exc:
                raise RecipientUnreachable(f"OSCORE answer refused: {exc}") from exc
            echo = _echo_of(inner)
            if echo is None:
                return inner
        return inner


def _echo_of(response: CoapMessage) -> bytes | None:
    if response.code != _UNAUTHORIZED:
        return None
    for number, value in response.options:
        if number == ECHO:
            return value
    return None
