"""The Gateway UE's MSGin5G-1 side: an MSGin5G Client used, not subclassed (digest §3.17).

Towards the server the gateway is an ordinary :class:`~msgin5g.client.Client`
(its own ``REG``, re-registration on ``NOT_REGISTERED``, segmentation of long
payloads). :class:`Upstream` owns one and adds what only a gateway does with it,
through the client's public request API:

* its own registration, retried while the server is away, then its own
  configuration document (digest §3.1.2) — :meth:`Upstream.register_self`;
* ``BULKREG``/``BULKDEREG`` and relayed ``REG``/``DEREG``/``MSG``/``IMDN``
  requests (they must leave from the socket the gateway registered from: the
  server accepts requests on behalf of constrained UEs only from there);
* bulk configuration on the server's ``/msgin5g/config``;
* server ``MSG``/``IMDN`` addressed to a constrained UE (or to one of the
  gateway's application registrations) go to the ``claim`` hook instead of the
  gateway's own inbox; ``claim`` stores them durably and the server gets its 2.04
  only then (acknowledged means stored, as on the server).
"""

import logging

import msgspec

from msgin5g.client import Client
from msgin5g.client.inbox import Claim
from msgin5g.errors import DecodeError, NotAuthorized, TransportError
from msgin5g.model.messages import ConfReq, ConfResp, Msg, MsgResp, UECredentialInfo
from msgin5g.runtime import Clock
from msgin5g.spec.coap import CONFIG_RESOURCE

__all__ = ["Claim", "Upstream"]

log = logging.getLogger(__name__)


class Upstream:
    """The gateway's client towards the MSGin5G Server.

    Args:
        ue_service_id: the gateway's UE Service ID.
        secret: its secret.
        server: the server's ``coap://`` URI.
        bind: local address of the gateway's MSGin5G-1 socket.
        clock: the gateway's clock.
        claim: takes server downlink meant for constrained UEs (module doc).
        client: a ready client to use instead (tests: one on a
            :class:`~msgin5g.client.MockTransport`).
    """

    def __init__(
        self,
        ue_service_id: str,
        secret: str | None,
        *,
        server: str,
        bind: tuple[str, int],
        clock: Clock,
        claim: Claim,
        client: Client | None = None,
    ) -> None:
        self.client = client or Client(
            ue_service_id, secret, server=server, bind=bind, clock=clock, claim=claim
        )
        self._clock = clock

    @property
    def ue_service_id(self) -> str:
        """The gateway's own UE Service ID."""
        return self.client.ue_service_id

    @property
    def registered(self) -> bool:
        """The server holds the gateway's registration (as far as we know)."""
        return self.client.registered

    def lost_registration(self) -> None:
        """The server no longer accepts the gateway: register again before bulk."""
        self.client.registered = False

    @property
    def credential_info(self) -> UECredentialInfo:
        """The gateway's own ``ueCredentialInfo`` (for bulk requests)."""
        return self.client.credential_info

    async def register_self(self, retry_interval: float) -> None:
        """Register the gateway itself, retrying while the server is away."""
        while True:
            try:
                await self.client.register()
                break
            except NotAuthorized as exc:
                log.error("the server refuses the gateway: %s", exc)
            except TransportError as exc:
                log.info("server not reachable yet (%s); retrying", exc)
            await self._clock.sleep(retry_interval)
        log.info("gateway %s registered with the server", self.ue_service_id)

    async def apply_own_configuration(self) -> None:
        """Fetch the gateway's own configuration document and apply it (§3.1.2)."""
        request = ConfReq(
            ue_service_id=self.ue_service_id,
            ue_credential_info=self.credential_info,
        )
        try:
            document = await self.client.request(
                request, ConfResp, resource=CONFIG_RESOURCE
            )
        except (TransportError, DecodeError) as exc:
            log.info("no configuration document from the server: %s", exc)
            return
        if document.segment_size:
            self.client.segment_size = document.segment_size

    async def relay(self, item: msgspec.Struct) -> None:
        """Forward a request whose answer carries nothing to relay (``IMDN``)."""
        await self.client.request(item)

    async def relay_msg(self, msg: Msg) -> MsgResp:
        """Send a message on behalf of a constrained UE (segmented if long)."""
        return await self.client.submit(msg)
