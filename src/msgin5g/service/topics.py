"""Messaging topics, POST form (TS 23.554 §8.8.1, §8.8.3; digest §3.13.2, §3.13.3).

A registered UE subscribes to one or more topics with ``TOPICSUB`` (optional
``expiration``; absent → ``delivery.topic_default_lifetime``, capped at
``delivery.topic_max_lifetime`` — the "operator policy" of the digest) and stops
with ``TOPICUNSUB`` (an empty list means all its topics) or by de-registering.
Topics are created on first use. Subscriptions are records in storage (kind
``"topic-sub"``) so they survive a restart; an in-memory index
topic → {subscriber: expiry} serves publication, and expired entries are dropped
lazily when the topic is published to or listed.
"""

import logging

import msgspec

from msgin5g.config import DeliveryConfig
from msgin5g.model.messages import Msg, TopicResult
from msgin5g.service.ports import Clock
from msgin5g.spec.causes import Result
from msgin5g.storage.base import Backend

__all__ = ["TopicRegistry", "TopicSubscription"]

log = logging.getLogger(__name__)

_KIND = "topic-sub"


class TopicSubscription(msgspec.Struct, frozen=True):
    """One subscriber's subscription to one topic."""

    topic: str
    subscriber: str
    expires_at: float


def _key(topic: str, subscriber: str) -> str:
    return f"{topic}\x00{subscriber}"


class TopicRegistry:
    """Durable topic subscriptions with an in-memory index."""

    def __init__(self, backend: Backend, clock: Clock, config: DeliveryConfig) -> None:
        self._backend = backend
        self._clock = clock
        self._config = config
        self._topics: dict[str, dict[str, float]] = {}

    async def load(self) -> int:
        """Fill the index from storage (start-up)."""
        records = await self._backend.load_records(_KIND, TopicSubscription)
        for record in records:
            self._topics.setdefault(record.topic, {})[record.subscriber] = (
                record.expires_at
            )
        return len(records)

    def granted_expiry(self, requested: float | None) -> float:
        """The expiry the server grants for a requested one (epoch seconds)."""
        now = self._clock.now()
        limit = now + self._config.topic_max_lifetime
        if requested is None:
            return min(now + self._config.topic_default_lifetime, limit)
        return min(requested, limit)

    async def subscribe(
        self, subscriber: str, topics: list[str], expires_at: float
    ) -> list[TopicResult]:
        """Subscribe to every topic; returns one SUCCESS result per topic."""
        results = []
        for topic in topics:
            self._topics.setdefault(topic, {})[subscriber] = expires_at
            record = TopicSubscription(topic, subscriber, expires_at)
            await self._backend.put_record(_KIND, _key(topic, subscriber), record)
            results.append(TopicResult(messaging_topic=topic, result=Result.SUCCESS))
        return results

    async def unsubscribe(
        self, subscriber: str, topics: list[str]
    ) -> list[TopicResult]:
        """Unsubscribe (all topics of the subscriber when ``topics`` is empty)."""
        if not topics:
            topics = sorted(t for t, subs in self._topics.items() if subscriber in subs)
        results = []
        for topic in topics:
            subs = self._topics.get(topic, {})
            subs.pop(subscriber, None)
            if not subs:
                self._topics.pop(topic, None)
            await self._backend.delete_record(_KIND, _key(topic, subscriber))
            results.append(TopicResult(messaging_topic=topic, result=Result.SUCCESS))
        return results

    def subscribers(self, topic: str) -> list[str]:
        """Current subscribers of ``topic`` (expired ones are forgotten)."""
        subs = self._topics.get(topic)
        if not subs:
            return []
        now = self._clock.now()
        expired = [s for s, until in subs.items() if until <= now]
        for subscriber in expired:
            del subs[subscriber]
            log.info("subscription of %s to %s expired", subscriber, topic)
        return sorted(subs)

    async def notify_observers(self, msg: Msg, *, exclude: str | None) -> int:
        """Send ``msg`` to the Observe-form subscribers of its topic.

        Skeleton until the Observe form lands (issue #4): no observers yet.
        """
        return 0

    def topics_of(self, subscriber: str) -> list[str]:
        """Topics ``subscriber`` is subscribed to."""
        return sorted(t for t, subs in self._topics.items() if subscriber in subs)
