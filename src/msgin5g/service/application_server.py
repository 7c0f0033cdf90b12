"""Application Server procedures: AS (de-)registration, A2P, messages from gateways.

Specified in TS 29.538 (``MSGS_ASRegistration``, ``MSGS_MSGDelivery``,
``MSGG_BGDelivery``) and digest §2.5 (AS registration), §2.11
(Application-to-Point: an AS sends to a UE) and §2.12 / §3.11 (a Message
Gateway sends on behalf of a UE). The REST transport calls these with the
authenticated OAuth2 client id (None when OAuth2 is off).

A2P is not a second routing path: an AS's message is a model ``Msg`` with
``originatingAsServiceId`` and goes through
:meth:`~msgin5g.service.routing.Router.submit_deduplicated` like a UE's; an AS
is a mailbox keyed ``"as/<AS Service ID>"`` (:mod:`msgin5g.model.application`)
whose contact is its ``targetUri``. Refusals are raised as
:class:`~msgin5g.errors.ServiceError` subclasses, which the REST transport maps
to ProblemDetails.
"""

import logging

from msgin5g.errors import NotAuthorized, NotRegistered
from msgin5g.model.application import ASRegistration, as_key
from msgin5g.model.messages import Msg, MsgResp
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.message_gateways import MessageGatewayRegistry
from msgin5g.service.peers import Peers
from msgin5g.service.registry import Registry
from msgin5g.service.routing import Router
from msgin5g.service.topics import TopicRegistry
from msgin5g.spec.causes import FailureCause

__all__ = ["ApplicationServers"]

log = logging.getLogger(__name__)


class ApplicationServers:
    """What an Application Server (or a Message Gateway) asks of the server."""

    def __init__(
        self,
        registry: Registry,
        applications: ApplicationRegistry,
        delivery: DeliveryEngine,
        topics: TopicRegistry,
        router: Router,
        *,
        gateways: MessageGatewayRegistry | None = None,
    ) -> None:
        self._gateways = gateways
        self._registry = registry
        self._applications = applications
        self._delivery = delivery
        self._topics = topics
        self._router = router
        self.peers: Peers | None = None
        """MSGin5G-8: a peer's UEs may originate (set when configured)."""

    async def register_as(
        self,
        as_service_id: str,
        *,
        application_id: str | None = None,
        target_uri: str | None = None,
        profile: str = "{}",
        client: str | None = None,
    ) -> ASRegistration:
        """AS registration (digest §2.5): store it, then deliver what waits for it.

        Raises:
            InvalidRequest: unusable ``asSvcId`` or ``targetUri``.
            NotAuthorized: already registered, or ``client`` acts for another AS.
        """
        registration = await self._applications.register(
            as_service_id,
            application_id=application_id,
            target_uri=target_uri,
            profile=profile,
            owner=client,
        )
        log.info("AS %s registered (%s)", as_service_id, target_uri)
        self._delivery.on_as_registered(as_service_id)
        return registration

    async def deregister_as(
        self, registration_id: str, *, client: str | None = None
    ) -> ASRegistration:
        """AS de-registration (digest §2.5): stored items fail with reports.

        Raises:
            NotRegistered: unknown ``registrationId`` (``APPLICATION_NOT_FOUND``).
            NotAuthorized: the registration belongs to another client.
        """
        registration = self._applications.check_deregistration(registration_id, client)
        await self._applications.deregister(registration)
        key = as_key(registration.as_service_id)
        await self._topics.unsubscribe(key, [])
        for item in await self._delivery.forget(key):
            await self._delivery.report_failure(
                item, FailureCause.RECIPIENT_DEREGISTERED
            )
        log.info("AS %s de-registered", registration.as_service_id)
        return registration

    async def submit_from_as(self, msg: Msg, *, client: str | None = None) -> MsgResp:
        """Application-to-Point (digest §2.11): an AS's ``MSG`` into the router.

        Raises:
            NotAuthorized: ``client`` may not act for the originating AS.
            NotRegistered: the originating AS is not registered.
        """
        as_service_id = msg.originating_as_service_id or ""
        self._applications.check_acting(as_service_id, client)
        return await self._router.submit_deduplicated(msg, as_key(as_service_id))

    async def submit_for_ue(self, msg: Msg, *, client: str | None = None) -> MsgResp:
        """A message a gateway sends on behalf of a UE (``/deliver-ue-message``).

        The originating UE must be provisioned or registered, directly or by a
        Message Gateway (:mod:`.message_gateways`). With OAuth2 the
        client must be a Message Gateway serving that UE (TS 23.554 §8.6), or
        the operator.

        Raises:
            NotAuthorized: ``client`` does not serve the originating UE.
            NotRegistered: the originating UE is unknown.
        """
        ue = msg.originating_ue_service_id or ""
        if not self._applications.serves_ue(client, ue):
            raise NotAuthorized(f"client {client} does not serve UE {ue}")
        remote = self.peers is not None and self.peers.is_remote(ue)
        represented = (
            self._gateways is not None and self._gateways.gateway_of(ue) is not None
        )
        if not (remote or represented) and not await self._registry.is_known(ue):
            raise NotRegistered(
                f"UE {ue} is unknown", cause=FailureCause.NOT_REGISTERED
            )
        log.debug("message %s for %s via API client %s", msg.message_id, ue, client)
        return await self._router.submit_deduplicated(msg, ue)
