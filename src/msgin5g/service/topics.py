"""Messaging topics (TS 23.554 §8.8.1, §8.8.3; digest §3.13.2 - §3.13.4).

Two forms of subscription, one record per (topic, subscriber):

* **POST form** (digest §3.13.3): a registered UE subscribes to one or more
  topics with ``TOPICSUB`` (optional ``expiration``; absent →
  ``delivery.topic_default_lifetime``, capped at ``delivery.topic_max_lifetime``
  — the "operator policy" of the digest) and stops with ``TOPICUNSUB`` (an empty
  list means all its topics) or by de-registering. Publications reach these
  subscribers through the ordinary mailbox path: messaging asks
  :meth:`TopicRegistry.subscribers` and fans out itself. Expired entries are
  dropped lazily when the topic is published to or listed.
* **Observe form** (digest §3.13.4, RFC 7641): the transport registers an
  observation (subscriber UE Service ID, its contact, the token of its GET,
  expiry) with :meth:`TopicRegistry.observe`; publications are pushed by
  :meth:`TopicRegistry.notify_observers` through the :class:`TopicNotifier` port
  as 2.05 notifications carrying the ``MSG`` JSON with ``messagingTopic`` and
  ``recipientUeServiceId`` set to the observer.

Access control: with a :class:`~msgin5g.service.topic_policy.TopicPolicy`
(the server always has one), ``subscribe`` answers ``FAILURE`` /
``NOT_AUTHORIZED`` for a refused topic and ``observe`` raises
:class:`NotAuthorized`; :meth:`TopicRegistry.notify_observers` takes the
policy's per-subscriber verdict so that a revoked grant stops notifications.

Design choices:
    * Both forms share the record kind ``"topic-sub"`` and the key
      ``topic NUL subscriber``: a later subscription of either form replaces the
      earlier one (digest §3.13.4 step 5) simply by overwriting the record, and
      ``TOPICUNSUB`` / de-registration (which calls ``unsubscribe(ue, [])``)
      delete both forms alike. Records written before the Observe form existed
      decode as POST form (the new fields have defaults).
    * Notifications never block the publisher, and a slow or dead observer
      costs only its own queue (issue 10, item 12): ``notify_observers``
      appends one job per observer to the queue of the observer's *address*
      and returns; a single pump task starts the jobs of ready addresses, 256
      per event-loop turn. Per address at most **one CON notification is in
      flight** (RFC 7252 NSTART = 1; RFC 7641 §4.5.1), and nothing waits for
      its ACK: :meth:`TopicNotifier.notify_nowait` returns a future whose
      done-callback releases the address and starts its next job. So 64 (or
      10,000) observers that never ACK hold 64 (10,000) exchanges that time
      out on their own, and an observer elsewhere is served in the next turn.
      An address keeps at most ``_PEER_BACKLOG`` waiting jobs: a newer
      notification supersedes the oldest waiting one (RFC 7641 §4.5.2 lets a
      server skip to the newest state; the POST form is the one with store and
      forward), counted in ``superseded_notifications``. At most
      ``_MAX_QUEUED`` jobs wait in all; beyond that new notifications are
      dropped with a warning (``dropped_notifications``).
    * CON/NON: the 1st, (N+1)th, (2N+1)th... notification of an observation is
      CON, the others NON, with N = ``delivery.observe_con_every`` (1 = all CON);
      a CON is also forced when the last one is 24 h old (RFC 7641 §4.5). The
      counter lives in memory, so the first notification after a restart is CON.
    * An RST (to a CON or NON notification) or an unacknowledged CON means the
      observer lost interest (RFC 7641 §3.6, §4.5): the observation and its
      record are deleted (:meth:`TopicRegistry.observer_gone`).
    * When the *server* ends an observation (expiry, ``TOPICUNSUB``,
      de-registration, replacement by the other form or by a new token) the
      observer gets a final 2.05 without Observe carrying a ``TOPICUNSUBRESP``
      (best effort, a NON through the same per-address queue). Expired observations are found
      by :meth:`TopicRegistry.expire_observations`, which the transport runs
      periodically, and lazily on publication.
    * Sequence numbers are not stored: the CoAP engine derives them from the
      wall clock (see :mod:`msgin5g.coap.observe`), so they stay fresh across a
      restart without a write per notification.

Why one module of ~700 lines (issue 11 asks for a reason above ~500): both
forms share one record and one pair of indexes, and the notification pump must
see a subscription end the moment either form replaces it (a job queued for an
observation that ended is skipped by identity, ``_by_token``); the pump's
background work runs under the service's :class:`~msgin5g.runtime.Supervisor`.
The procedures (``TOPICSUB``/``TOPICUNSUB``, AS subscriptions) are in
:mod:`.subscriptions`.
"""

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

import msgspec

from msgin5g.config import DeliveryConfig
from msgin5g.errors import (
    InvalidRequest,
    MSGin5GError,
    NotAuthorized,
    RecipientUnreachable,
)
from msgin5g.model.messages import Msg, TopicName, TopicResult, TopicUnsubResp
from msgin5g.model.registry import Contact
from msgin5g.runtime import Clock, Supervisor
from msgin5g.service.ports import TopicNotifier
from msgin5g.service.topic_policy import SUBSCRIBE, TopicPolicy
from msgin5g.spec.causes import FailureCause, Result
from msgin5g.storage.base import Backend

__all__ = [
    "OBSERVE_FORM",
    "POST_FORM",
    "TOPIC_SUBSCRIPTION_KIND",
    "TopicRegistry",
    "TopicSubscription",
    "check_topic",
]

log = logging.getLogger(__name__)

TOPIC_SUBSCRIPTION_KIND = "topic-sub"
_KIND = TOPIC_SUBSCRIPTION_KIND
_MAX_QUEUED = 100_000
_PEER_BACKLOG = 64  # jobs waiting per observer address; a newer one drops the oldest
_SLICE = 256  # jobs started per event-loop turn
_CON_AT_LEAST_EVERY = 86_400.0  # RFC 7641 §4.5: a CON at least every 24 h

POST_FORM = "post"
"""``TOPICSUB`` subscription (digest §3.13.3)."""
OBSERVE_FORM = "observe"
"""CoAP Observe registration (digest §3.13.4)."""


class TopicSubscription(msgspec.Struct, frozen=True):
    """One subscriber's subscription to one topic (the stored record).

    Attributes:
        topic: the Messaging Topic.
        subscriber: the UE Service ID (or ``as/<id>`` for an AS, POST form).
        expires_at: epoch seconds.
        form: :data:`POST_FORM` or :data:`OBSERVE_FORM`.
        observer: Observe form: where notifications go (the GET's source).
        token: Observe form: the token of the registration GET.
    """

    topic: str
    subscriber: str
    expires_at: float
    form: str = POST_FORM
    observer: Contact | None = None
    token: bytes = b""


class _Observation:
    """In-memory state of one Observe-form subscription."""

    __slots__ = (
        "contact",
        "expires_at",
        "last_con",
        "sent",
        "subscriber",
        "token",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        subscriber: str,
        contact: Contact,
        token: bytes,
        expires_at: float,
        *,
        now: float,
    ) -> None:
        self.topic = topic
        self.subscriber = subscriber
        self.contact = contact
        self.token = token
        self.expires_at = expires_at
        self.sent = 0
        self.last_con = now

    def record(self) -> TopicSubscription:
        return TopicSubscription(
            self.topic,
            self.subscriber,
            self.expires_at,
            OBSERVE_FORM,
            self.contact,
            self.token,
        )


class _PeerQueue:
    """Notifications waiting for one observer address; at most one CON in flight."""

    __slots__ = ("busy", "contact", "pending", "ready")

    def __init__(self, contact: Contact) -> None:
        self.contact = contact
        self.pending: deque[tuple[_Observation, Msg | None]] = deque()
        self.busy = False
        """A CON notification to this address awaits its ACK."""
        self.ready = False
        """The address is in the registry's ready queue."""


def _key(topic: str, subscriber: str) -> str:
    return f"{topic}\x00{subscriber}"


def check_topic(topic: str) -> None:
    """Validate a Messaging Topic name (digest §1.2: 1-255 chars, no ``+``/``#``).

    Raises:
        InvalidRequest: with cause ``INVALID_TOPIC``.
    """
    try:
        msgspec.convert(topic, TopicName)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(
            f"invalid topic name: {exc}", cause=FailureCause.INVALID_TOPIC
        ) from None


class TopicRegistry:
    """Durable topic subscriptions of both forms with in-memory indexes.

    Args:
        backend: where subscription records live.
        clock: wall clock.
        config: lifetimes and the CON/NON policy.
        policy: who may subscribe (:mod:`msgin5g.service.topic_policy`); None
            lets everyone (unit tests of the registry alone).
        tasks: the supervisor the notification pump and record clean-ups run
            under (the service's); None: the registry keeps its own, opened
            by :meth:`load` and closed by :meth:`aclose`.
    """

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        config: DeliveryConfig,
        *,
        policy: TopicPolicy | None = None,
        tasks: Supervisor | None = None,
    ) -> None:
        self._backend = backend
        self._own_supervisor = tasks is None
        self._supervisor = tasks if tasks is not None else Supervisor("topics")
        self._supervisor_open = False
        self._policy = policy
        self._clock = clock
        self._config = config
        self._topics: dict[str, dict[str, float]] = {}
        self._observers: dict[str, dict[str, _Observation]] = {}
        self._by_token: dict[tuple[Contact, bytes], _Observation] = {}
        self._notifier: TopicNotifier | None = None
        self._peers: dict[Contact, _PeerQueue] = {}
        self._ready: deque[_PeerQueue] = deque()
        self._queued = 0
        self._pump: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Future[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.dropped_notifications = 0
        """Notifications not sent because the queue was full."""
        self.superseded_notifications = 0
        """Waiting notifications replaced by newer ones (``_PEER_BACKLOG``)."""

    async def load(self) -> int:
        """Fill the indexes from storage (start-up)."""
        if self._own_supervisor and not self._supervisor_open:
            await self._supervisor.start()
            self._supervisor_open = True
        records = await self._backend.load_records(_KIND, TopicSubscription)
        now = self._clock.now()
        for record in records:
            if record.form == OBSERVE_FORM and record.observer is not None:
                obs = _Observation(
                    record.topic,
                    record.subscriber,
                    record.observer,
                    record.token,
                    record.expires_at,
                    now=now,
                )
                self._add_observation(obs)
            else:
                self._topics.setdefault(record.topic, {})[record.subscriber] = (
                    record.expires_at
                )
        return len(records)

    async def refresh(self, key: str) -> None:
        """Re-read one POST-form subscription another cluster node changed.

        Observe-form subscriptions stay with the node that holds the observer's
        CoAP exchange (docs/cluster.md, "What is per node").
        """
        topic, sep, subscriber = key.partition("\x00")
        if not sep or (
            topic in self._observers and subscriber in self._observers[topic]
        ):
            return
        record = await self._backend.get_record(_KIND, key, TopicSubscription)
        if record is None or record.form == OBSERVE_FORM:
            subs = self._topics.get(topic)
            if subs is not None:
                subs.pop(subscriber, None)
                if not subs:
                    del self._topics[topic]
            return
        self._topics.setdefault(topic, {})[subscriber] = record.expires_at

    def granted_expiry(self, requested: float | None) -> float:
        """The expiry the server grants for a requested one (epoch seconds)."""
        now = self._clock.now()
        limit = now + self._config.topic_max_lifetime
        if requested is None:
            return min(now + self._config.topic_default_lifetime, limit)
        return min(requested, limit)

    # POST form ----------------------------------------------------------------

    async def subscribe(
        self, subscriber: str, topics: list[str], expires_at: float
    ) -> list[TopicResult]:
        """Subscribe to every topic the policy allows; one result per topic.

        ``SUCCESS``, or ``FAILURE`` / ``NOT_AUTHORIZED`` for a topic the topic
        policy refuses to ``subscriber`` (digest §3.13.3 step 2). An
        Observe-form subscription of ``subscriber`` to one of the topics is
        replaced (its observer gets a final notification).
        """
        results = []
        for topic in topics:
            if self._policy is not None and not await self._policy.may(
                topic, subscriber, SUBSCRIBE
            ):
                results.append(
                    TopicResult(
                        messaging_topic=topic,
                        result=Result.FAILURE,
                        failure_cause=FailureCause.NOT_AUTHORIZED.value,
                    )
                )
                continue
            self._end_observation(topic, subscriber)
            self._topics.setdefault(topic, {})[subscriber] = expires_at
            record = TopicSubscription(topic, subscriber, expires_at)
            await self._backend.put_record(_KIND, _key(topic, subscriber), record)
            results.append(TopicResult(messaging_topic=topic, result=Result.SUCCESS))
        return results

    async def unsubscribe(
        self, subscriber: str, topics: list[str]
    ) -> list[TopicResult]:
        """Unsubscribe, both forms (all topics of the subscriber if ``topics`` empty).

        De-registration calls this with an empty list, so it ends observations
        too; each ended observer gets a final notification.
        """
        if not topics:
            topics = self.topics_of(subscriber)
        results = []
        for topic in topics:
            subs = self._topics.get(topic, {})
            subs.pop(subscriber, None)
            if not subs:
                self._topics.pop(topic, None)
            self._end_observation(topic, subscriber)
            await self._backend.delete_record(_KIND, _key(topic, subscriber))
            results.append(TopicResult(messaging_topic=topic, result=Result.SUCCESS))
        return results

    def subscribers(self, topic: str) -> list[str]:
        """Current POST-form subscribers of ``topic`` (expired ones are forgotten)."""
        subs = self._topics.get(topic)
        if not subs:
            return []
        now = self._clock.now()
        expired = [s for s, until in subs.items() if until <= now]
        for subscriber in expired:
            del subs[subscriber]
            log.info("subscription of %s to %s expired", subscriber, topic)
        return sorted(subs)

    def topics_of(self, subscriber: str) -> list[str]:
        """Topics ``subscriber`` is subscribed to, either form."""
        topics = {t for t, subs in self._topics.items() if subscriber in subs}
        topics.update(t for t, obs in self._observers.items() if subscriber in obs)
        return sorted(topics)

    def subscription(self, topic: str, subscriber: str) -> TopicSubscription | None:
        """The live subscription of ``subscriber`` to ``topic`` (either form)."""
        now = self._clock.now()
        obs = self._observers.get(topic, {}).get(subscriber)
        if obs is not None:
            return obs.record() if obs.expires_at > now else None
        until = self._topics.get(topic, {}).get(subscriber)
        if until is None or until <= now:
            return None
        return TopicSubscription(topic, subscriber, until)

    # Observe form ---------------------------------------------------------------

    def attach_notifier(self, notifier: TopicNotifier | None) -> None:
        """Set the port that sends notifications (the CoAP transport)."""
        self._notifier = notifier

    async def observe(
        self,
        subscriber: str,
        topic: str,
        observer: Contact,
        token: bytes,
        expires_at: float,
    ) -> TopicSubscription:
        """Register (or refresh) an Observe-form subscription (digest §3.13.4).

        Replaces a POST-form subscription of ``subscriber`` to ``topic``, and an
        observation of it with another contact or token (which gets a final
        notification). The same contact and token refresh the expiry.

        Args:
            subscriber: the UE Service ID bound to ``observer``.
            topic: a valid topic name (see :func:`check_topic`).
            observer: the source address of the GET.
            token: the token of the GET.
            expires_at: the granted expiry (see :meth:`granted_expiry`).

        Returns:
            the stored subscription.

        Raises:
            NotAuthorized: the topic policy refuses ``subscriber``.
        """
        if self._policy is not None and not await self._policy.may(
            topic, subscriber, SUBSCRIBE
        ):
            raise NotAuthorized(f"{subscriber} may not subscribe to {topic}")
        previous = self._by_token.get((observer, token))
        if previous is not None and (previous.topic, previous.subscriber) != (
            topic,
            subscriber,
        ):  # the same token re-used for another topic
            self._remove(previous)
            await self._backend.delete_record(
                _KIND, _key(previous.topic, previous.subscriber)
            )
        record = TopicSubscription(
            topic, subscriber, expires_at, OBSERVE_FORM, observer, token
        )
        await self._backend.put_record(_KIND, _key(topic, subscriber), record)
        # the indexes change only now, with no await until the caller answers:
        # no notification can be sent before the registration response
        subs = self._topics.get(topic)
        if subs is not None and subs.pop(subscriber, None) is not None and not subs:
            del self._topics[topic]
        current = self._observers.get(topic, {}).get(subscriber)
        if current is not None and (current.contact, current.token) == (
            observer,
            token,
        ):
            current.expires_at = expires_at
        else:
            self._end_observation(topic, subscriber)
            now = self._clock.now()
            self._add_observation(
                _Observation(topic, subscriber, observer, token, expires_at, now=now)
            )
        return record

    async def observer_gone(self, observer: Contact, token: bytes) -> bool:
        """The observer deregistered, reset a notification or stopped answering.

        Deletes the observation and its record, without a final notification.

        Returns:
            True if there was such an observation.
        """
        obs = self._by_token.get((observer, token))
        if obs is None:
            return False
        await self._drop(obs)
        return True

    def observers(self, topic: str) -> list[TopicSubscription]:
        """The live Observe-form subscriptions of ``topic``."""
        now = self._clock.now()
        return [
            obs.record()
            for obs in self._observers.get(topic, {}).values()
            if obs.expires_at > now
        ]

    async def notify_observers(
        self,
        msg: Msg,
        *,
        exclude: str | None,
        allowed: Callable[[str], bool] | None = None,
    ) -> int:
        """Queue ``msg`` for the Observe-form subscribers of its topic.

        Returns at once; the notifications go out in the background (see the
        module docstring). Expired observations are ended instead.

        Args:
            msg: the publication (``messagingTopic`` set).
            exclude: the publisher, who gets no copy.
            allowed: the topic policy's verdict per subscriber (a revoked
                grant stops notifications at once); None: everyone.

        Returns:
            the number of notifications queued.
        """
        topic = msg.messaging_topic
        if topic is None:
            return 0
        observers = self._observers.get(topic)
        if not observers:
            return 0
        now = self._clock.now()
        queued = 0
        for obs in list(observers.values()):
            if obs.expires_at <= now:
                await self._expire(obs)
            elif obs.subscriber == exclude:
                continue
            elif allowed is not None and not allowed(obs.subscriber):
                log.debug("observer %s may no longer read %s", obs.subscriber, topic)
            elif self._submit(obs, msg):
                queued += 1
        return queued

    async def expire_observations(self) -> int:
        """End every expired observation (final notification, record deleted).

        Returns:
            how many ended.
        """
        now = self._clock.now()
        expired = [obs for obs in self._by_token.values() if obs.expires_at <= now]
        for obs in expired:
            await self._expire(obs)
        return len(expired)

    def next_observation_expiry(self) -> float | None:
        """The earliest expiry among observations (epoch seconds), or None."""
        return min((o.expires_at for o in self._by_token.values()), default=None)

    async def drain(self) -> None:
        """Wait until every queued notification has been sent or has failed."""
        while True:
            waits: list[asyncio.Future[Any]] = [*self._in_flight, *self._tasks]
            if self._pump is not None:
                waits.append(self._pump)
            if not waits:
                return
            await asyncio.wait(waits)

    async def aclose(self) -> None:
        """Stop sending: forget queued notifications, stop those in flight."""
        for peer in self._peers.values():
            peer.pending.clear()
        self._peers.clear()
        self._ready.clear()
        self._queued = 0
        if self._pump is not None:
            self._pump.cancel()
        for future in list(self._in_flight):
            future.cancel()
        tasks = [*self._tasks, *([self._pump] if self._pump is not None else [])]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._in_flight.clear()
        if self._own_supervisor:
            await self._supervisor.aclose()
            self._supervisor_open = False

    # internals ----------------------------------------------------------------

    def _add_observation(self, obs: _Observation) -> None:
        self._observers.setdefault(obs.topic, {})[obs.subscriber] = obs
        self._by_token[(obs.contact, obs.token)] = obs

    def _remove(self, obs: _Observation) -> bool:
        """Take ``obs`` out of the indexes; False if it was no longer current."""
        observers = self._observers.get(obs.topic)
        if observers is None or observers.get(obs.subscriber) is not obs:
            return False
        del observers[obs.subscriber]
        if not observers:
            del self._observers[obs.topic]
        if self._by_token.get((obs.contact, obs.token)) is obs:
            del self._by_token[(obs.contact, obs.token)]
        return True

    async def _drop(self, obs: _Observation) -> None:
        if self._remove(obs):
            await self._backend.delete_record(_KIND, _key(obs.topic, obs.subscriber))
            log.info("observation of %s by %s ended", obs.topic, obs.subscriber)

    async def _expire(self, obs: _Observation) -> None:
        if self._remove(obs):
            await self._backend.delete_record(_KIND, _key(obs.topic, obs.subscriber))
            log.info("observation of %s by %s expired", obs.topic, obs.subscriber)
            self._submit(obs, None)

    def _end_observation(self, topic: str, subscriber: str) -> None:
        """Remove the observation (not its record) and queue a final notification."""
        obs = self._observers.get(topic, {}).get(subscriber)
        if obs is not None and self._remove(obs):
            self._submit(obs, None)

    def _submit(self, obs: _Observation, item: Msg | None) -> bool:
        """Queue a notification (``item``) or a final one (None) for its address."""
        if self._notifier is None:
            return False
        if self._queued >= _MAX_QUEUED:
            self.dropped_notifications += 1
            if self.dropped_notifications % 1000 == 1:
                log.warning("notification queue full; dropping notifications")
            return False
        peer = self._peers.get(obs.contact)
        if peer is None:
            peer = self._peers[obs.contact] = _PeerQueue(obs.contact)
        pending = peer.pending
        if len(pending) >= _PEER_BACKLOG:
            pending.popleft()  # the newest supersedes the oldest (RFC 7641 §4.5.2)
            self._queued -= 1
            self.superseded_notifications += 1
        pending.append((obs, item))
        self._queued += 1
        if not peer.busy and not peer.ready:
            self._make_ready(peer)
        return True

    def _make_ready(self, peer: _PeerQueue) -> None:
        peer.ready = True
        self._ready.append(peer)
        if self._pump is None:
            self._pump = self._supervisor.spawn(self._run_pump(), name="topic pump")

    async def _run_pump(self) -> None:
        """Start the jobs of ready addresses, ``_SLICE`` per event-loop turn."""
        ready = self._ready
        try:
            while ready:
                for _ in range(min(_SLICE, len(ready))):
                    peer = ready.popleft()
                    peer.ready = False
                    self._start(peer)
                if ready:
                    await asyncio.sleep(0)
        finally:
            self._pump = None

    def _start(self, peer: _PeerQueue) -> None:
        """Send the address's jobs until one is a CON awaiting its ACK."""
        pending = peer.pending
        while pending:
            obs, item = pending.popleft()
            self._queued -= 1
            notifier = self._notifier
            if notifier is None:
                continue
            if item is None:
                notifier.end_nowait(obs.contact, obs.token, _end_body(obs))
                continue
            if self._by_token.get((obs.contact, obs.token)) is not obs:
                continue  # ended while queued
            try:
                future = self._send(notifier, obs, item)
            except Exception:  # a bug in the notifier must not stop the pump
                log.exception("notification to %s failed", obs.subscriber)
                continue
            if future.done():  # NON, or refused at once
                self._outcome(obs, future)
                continue
            peer.busy = True
            self._in_flight.add(future)
            future.add_done_callback(partial(self._acked, peer, obs))
            return
        if self._peers.get(peer.contact) is peer:
            del self._peers[peer.contact]

    def _send(
        self, notifier: TopicNotifier, obs: _Observation, msg: Msg
    ) -> asyncio.Future[None]:
        now = self._clock.now()
        every = max(1, self._config.observe_con_every)
        confirmable = obs.sent % every == 0 or now - obs.last_con >= _CON_AT_LEAST_EVERY
        obs.sent += 1
        if confirmable:
            obs.last_con = now
        item = msgspec.structs.replace(
            msg, messaging_topic=obs.topic, recipient_ue_service_id=obs.subscriber
        )
        return notifier.notify_nowait(
            obs.contact, obs.token, item, confirmable=confirmable
        )

    def _acked(
        self, peer: _PeerQueue, obs: _Observation, future: asyncio.Future[None]
    ) -> None:
        """Done-callback of a CON notification: release the address."""
        self._in_flight.discard(future)
        peer.busy = False
        self._outcome(obs, future)
        if self._peers.get(peer.contact) is not peer:
            return  # closed meanwhile
        if peer.pending:
            if not peer.ready:
                self._make_ready(peer)
        else:
            del self._peers[peer.contact]

    def _outcome(self, obs: _Observation, future: asyncio.Future[None]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            return
        if isinstance(exc, RecipientUnreachable):
            log.info(
                "observer %s of %s is gone (%s)", obs.subscriber, obs.topic, exc.detail
            )
            if self._remove(obs):
                self._background(self._forget(obs))
        elif isinstance(exc, MSGin5GError):
            log.warning("notification to %s failed: %s", obs.subscriber, exc)
        else:
            log.error("notification to %s failed", obs.subscriber, exc_info=exc)

    async def _forget(self, obs: _Observation) -> None:
        """Delete the record of an observation already out of the indexes."""
        topic, subscriber = obs.topic, obs.subscriber
        if subscriber in self._observers.get(topic, {}) or subscriber in (
            self._topics.get(topic, {})
        ):
            return  # subscribed again meanwhile: the record is the new one's
        try:
            await self._backend.delete_record(_KIND, _key(obs.topic, obs.subscriber))
        except MSGin5GError as exc:
            log.warning("forgetting observation of %s failed: %s", obs.topic, exc)
        else:
            log.info("observation of %s by %s ended", obs.topic, obs.subscriber)

    def _background(self, work: Coroutine[Any, Any, None]) -> None:
        task = self._supervisor.spawn(work, name="topic record")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _end_body(obs: _Observation) -> TopicUnsubResp:
    return TopicUnsubResp(
        originating_ue_service_id=obs.subscriber,
        topic_results=[TopicResult(messaging_topic=obs.topic, result=Result.SUCCESS)],
    )
