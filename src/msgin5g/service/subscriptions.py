"""Topic subscription procedures: ``TOPICSUB``, ``TOPICUNSUB`` and the AS's.

Specified in TS 23.554 §8.8.1 and digest §3.13.3 (a UE subscribes in the POST
form), §3.13.2 (a UE unsubscribes; an empty list means all its topics) and
§2.15.1 (an AS subscribes through the REST API, a project extension: its
publications then reach the AS's ``targetUri`` like P2A messages).

The subscriptions live in :class:`~msgin5g.service.topics.TopicRegistry`, and
the :class:`~msgin5g.service.topic_policy.TopicPolicy` decides who may
subscribe. The Observe form (digest §3.13.4) is served by the CoAP transport
directly on the registry.
"""

from datetime import UTC, datetime

from msgin5g.errors import InvalidRequest, NotAuthorized
from msgin5g.model.application import as_key
from msgin5g.model.messages import (
    TopicResult,
    TopicSub,
    TopicSubResp,
    TopicUnsub,
    TopicUnsubResp,
)
from msgin5g.model.registry import Contact
from msgin5g.runtime import Clock
from msgin5g.service.answers import topic_failures
from msgin5g.service.applications import ApplicationRegistry
from msgin5g.service.delivery import DeliveryEngine
from msgin5g.service.registry import Registry
from msgin5g.service.topic_policy import SUBSCRIBE, TopicPolicy
from msgin5g.service.topics import TopicRegistry, check_topic

__all__ = ["Subscriptions"]


class Subscriptions:
    """Topic subscriptions of UEs (``TOPICSUB``) and of ASs (REST)."""

    def __init__(
        self,
        clock: Clock,
        registry: Registry,
        applications: ApplicationRegistry,
        delivery: DeliveryEngine,
        *,
        topics: TopicRegistry,
        policy: TopicPolicy,
    ) -> None:
        self._clock = clock
        self._registry = registry
        self._applications = applications
        self._delivery = delivery
        self._topics = topics
        self._policy = policy

    def _granted(self, expiration: datetime | None) -> float:
        """The expiry granted for a requested ``expiration`` (epoch seconds).

        Raises:
            InvalidRequest: ``expiration`` is not in the future.
        """
        requested = expiration.timestamp() if expiration else None
        if requested is not None and requested <= self._clock.now():
            raise InvalidRequest("expiration must be in the future")
        return self._topics.granted_expiry(requested)

    # UEs ----------------------------------------------------------------------------

    def _refused(
        self, request: TopicSub | TopicUnsub, source: Contact
    ) -> list[TopicResult] | None:
        """One ``FAILURE`` per topic if the sender may not act from ``source``."""
        ue = request.originating_ue_service_id
        refusal = self._registry.refuse_sender(ue, source)
        if refusal is None:
            return None
        return topic_failures(request.messaging_topics, refusal.cause)

    async def subscribe(self, request: TopicSub, source: Contact) -> TopicSubResp:
        """Handle ``TOPICSUB`` (digest §3.13.3)."""
        ue = request.originating_ue_service_id
        failed = self._refused(request, source)
        if failed is not None:
            return TopicSubResp(originating_ue_service_id=ue, topic_results=failed)
        self._delivery.on_uplink(ue)
        expires_at = self._granted(request.expiration)
        results = await self._topics.subscribe(ue, request.messaging_topics, expires_at)
        return TopicSubResp(
            originating_ue_service_id=ue,
            topic_results=results,
            expiration=datetime.fromtimestamp(expires_at, UTC),
        )

    async def unsubscribe(self, request: TopicUnsub, source: Contact) -> TopicUnsubResp:
        """Handle ``TOPICUNSUB`` (digest §3.13.2; empty list = all topics)."""
        ue = request.originating_ue_service_id
        failed = self._refused(request, source)
        if failed is not None:
            return TopicUnsubResp(originating_ue_service_id=ue, topic_results=failed)
        results = await self._topics.unsubscribe(ue, list(request.messaging_topics))
        return TopicUnsubResp(originating_ue_service_id=ue, topic_results=results)

    # Application Servers (REST) -------------------------------------------------------

    async def subscribe_as(
        self,
        as_service_id: str,
        topics: list[str],
        expiration: datetime | None,
        *,
        client: str | None = None,
    ) -> float:
        """An AS subscribes to Messaging Topics (digest §2.15.1; REST extension).

        Publications then reach the AS's ``targetUri`` like P2A messages (its
        mailbox ``as/<id>``). Returns the granted expiry (epoch seconds).

        Raises:
            NotRegistered / NotAuthorized: as for any AS request.
            NotAuthorized: the topic policy refuses one of the topics (none is
                subscribed then).
            InvalidRequest: bad topic name, expiration in the past, or an AS
                without ``targetUri`` (it could not receive publications).
        """
        self._applications.check_acting(as_service_id, client)
        registration = self._applications.get(as_service_id)
        if registration is None or registration.target_uri is None:
            raise InvalidRequest(
                f"AS {as_service_id} registered without targetUri: it cannot "
                "receive topic messages"
            )
        key = as_key(as_service_id)
        for topic in topics:
            check_topic(topic)
        refused = [t for t in topics if not await self._policy.may(t, key, SUBSCRIBE)]
        if refused:
            raise NotAuthorized(
                f"AS {as_service_id} may not subscribe to {', '.join(refused)}"
            )
        expires_at = self._granted(expiration)
        await self._topics.subscribe(key, topics, expires_at)
        return expires_at

    async def unsubscribe_as(
        self, as_service_id: str, topics: list[str], *, client: str | None = None
    ) -> list[str]:
        """End an AS's topic subscriptions (all when ``topics`` is empty).

        Returns the topics the AS was subscribed to among those asked for.
        """
        self._applications.check_acting(as_service_id, client)
        key = as_key(as_service_id)
        had = self._topics.topics_of(key)
        wanted = topics or had
        await self._topics.unsubscribe(key, list(wanted))
        return [t for t in wanted if t in had]

    def topics_of_as(
        self, as_service_id: str, *, client: str | None = None
    ) -> list[str]:
        """Topics an AS is subscribed to."""
        self._applications.check_acting(as_service_id, client)
        return self._topics.topics_of(as_key(as_service_id))
