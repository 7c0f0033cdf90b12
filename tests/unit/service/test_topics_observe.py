"""TopicRegistry, Observe form (digest §3.13.4).

Memory backend, fake clock, fake notifier; no sockets.
"""

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.errors import InvalidRequest, RecipientUnreachable
from msgin5g.model.messages import Msg, TopicUnsubResp
from msgin5g.model.registry import Contact
from msgin5g.service.topics import (
    OBSERVE_FORM,
    POST_FORM,
    TopicRegistry,
    check_topic,
)
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock

A = Contact("10.0.0.1", 40001)
B = Contact("10.0.0.2", 40002)


class FakeNotifier:
    """Records notifications; observers in ``gone`` fail like an RST would.

    With ``hold`` set, CON notifications stay in flight (their futures
    unresolved) until :meth:`release`; observers in ``dead`` never answer.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[Contact, bytes, Msg, bool]] = []
        self.started: list[tuple[Contact, bytes, Msg, bool]] = []
        self.ended: list[tuple[Contact, bytes, TopicUnsubResp]] = []
        self.gone: set[Contact] = set()
        self.dead: set[Contact] = set()
        self.hold = False
        self._held: list[
            tuple[asyncio.Future[None], tuple[Contact, bytes, Msg, bool]]
        ] = []

    def notify_nowait(
        self, observer: Contact, token: bytes, item: Msg, *, confirmable: bool
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (observer, token, item, confirmable)
        self.started.append(entry)
        if observer in self.dead:
            return future  # never acknowledged (until cancelled)
        if self.hold and confirmable:
            self._held.append((future, entry))
        else:
            self._settle(future, entry)
        return future

    def _settle(
        self, future: asyncio.Future[None], entry: tuple[Contact, bytes, Msg, bool]
    ) -> None:
        if future.done():
            return
        if entry[0] in self.gone:
            future.set_exception(RecipientUnreachable("observer answered RST"))
        else:
            self.sent.append(entry)
            future.set_result(None)

    def release(self) -> None:
        self.hold = False
        held, self._held = self._held, []
        for future, entry in held:
            self._settle(future, entry)

    def end_nowait(self, observer: Contact, token: bytes, body: TopicUnsubResp) -> None:
        self.ended.append((observer, token, body))


async def turns(condition: Callable[[], bool], limit: int = 1000) -> None:
    """Let the loop run until ``condition`` holds (bounded in turns, not time)."""
    for _ in range(limit):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    backend = MemoryBackend()
    await backend.start()
    yield backend
    await backend.aclose()


@pytest.fixture
def notifier() -> FakeNotifier:
    return FakeNotifier()


async def make(
    backend: MemoryBackend,
    clock: ManualClock,
    notifier: FakeNotifier,
    **config: int,
) -> TopicRegistry:
    settings = DeliveryConfig(**config)  # type: ignore[arg-type]
    topics = TopicRegistry(backend, clock, settings)
    await topics.load()
    topics.attach_notifier(notifier)
    return topics


@pytest.fixture
async def topics(
    backend: MemoryBackend, clock: ManualClock, notifier: FakeNotifier
) -> AsyncIterator[TopicRegistry]:
    registry = await make(backend, clock, notifier)
    yield registry
    await registry.aclose()


def publication(topic: str = "alerts", originator: str = "pub", n: int = 1) -> Msg:
    return Msg(
        message_id=f"m{n}",
        originating_ue_service_id=originator,
        messaging_topic=topic,
        payload=b"storm",
    )


async def test_observer_receives_publication_with_recipient_set(
    topics: TopicRegistry, notifier: FakeNotifier, clock: ManualClock
) -> None:
    expiry = topics.granted_expiry(clock.now() + 60)
    record = await topics.observe("ue1", "alerts", A, b"tk", expiry)
    assert (record.form, record.observer, record.token) == (OBSERVE_FORM, A, b"tk")
    assert topics.subscribers("alerts") == []  # POST form only
    assert topics.topics_of("ue1") == ["alerts"]
    assert await topics.notify_observers(publication(), exclude="pub") == 1
    await topics.drain()
    ((contact, token, item, con),) = notifier.sent
    assert (contact, token, con) == (A, b"tk", True)
    assert item.messaging_topic == "alerts"
    assert item.recipient_ue_service_id == "ue1"
    assert item.payload == b"storm"


async def test_publisher_gets_no_copy_and_other_topics_nothing(
    topics: TopicRegistry, notifier: FakeNotifier, clock: ManualClock
) -> None:
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 60)
    assert (
        await topics.notify_observers(publication(originator="ue1"), exclude="ue1") == 0
    )
    assert await topics.notify_observers(publication("other"), exclude="pub") == 0
    await topics.drain()
    assert notifier.sent == []


async def test_notifications_do_not_block_the_publisher(
    topics: TopicRegistry, notifier: FakeNotifier, clock: ManualClock
) -> None:
    notifier.hold = True
    for i in range(5):
        await topics.observe(
            f"ue{i}", "alerts", Contact("10.0.1.1", 1000 + i), b"t", clock.now() + 60
        )
    assert await topics.notify_observers(publication(), exclude="pub") == 5
    assert notifier.started == []  # queued: sent once the publisher yields
    await turns(lambda: len(notifier.started) == 5)
    assert notifier.sent == []  # in flight, none acknowledged
    notifier.release()
    await topics.drain()
    assert sorted(i.recipient_ue_service_id or "" for _, _, i, _ in notifier.sent) == [
        f"ue{i}" for i in range(5)
    ]


async def test_one_con_in_flight_per_observer_address(
    topics: TopicRegistry, notifier: FakeNotifier, clock: ManualClock
) -> None:
    """RFC 7252 NSTART = 1: the next notification waits for the ACK."""
    notifier.hold = True
    await topics.observe("ue1", "alerts", A, b"t1", clock.now() + 60)
    await topics.observe("ue1", "news", A, b"t2", clock.now() + 60)
    await topics.notify_observers(publication("alerts", n=1), exclude="pub")
    await topics.notify_observers(publication("news", n=2), exclude="pub")
    await topics.notify_observers(publication("alerts", n=3), exclude="pub")
    await turns(lambda: len(notifier.started) == 1)
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(notifier.started) == 1
    for expected in (2, 3):
        notifier.release()
        notifier.hold = True
        await turns(lambda n=expected: len(notifier.started) == n)  # type: ignore[misc]
    notifier.release()
    await topics.drain()
    assert [i.message_id for _, _, i, _ in notifier.sent] == ["m1", "m2", "m3"]
    assert [t for _, t, _, _ in notifier.sent] == [b"t1", b"t2", b"t1"]


async def test_dead_observers_do_not_starve_others(
    topics: TopicRegistry, notifier: FakeNotifier, clock: ManualClock
) -> None:
    """Issue 10 item 12: observers that never ACK hold nothing but their own."""
    dead = [Contact("10.0.9.9", 2000 + i) for i in range(200)]
    notifier.dead.update(dead)
    for i, contact in enumerate(dead):
        await topics.observe(f"dead{i}", "a", contact, b"t", clock.now() + 60)
    await topics.observe("good", "b", B, b"t", clock.now() + 60)
    assert await topics.notify_observers(publication("a"), exclude="pub") == 200
    await turns(lambda: len(notifier.started) == 200)
    assert await topics.notify_observers(publication("b"), exclude="pub") == 1
    await turns(lambda: any(c == B for c, *_ in notifier.sent))
    assert len(notifier.started) == 201  # the dead are still in flight
    await topics.aclose()  # cancels the exchanges still in flight


async def test_a_newer_notification_supersedes_the_oldest_waiting(
    topics: TopicRegistry, notifier: FakeNotifier, clock: ManualClock
) -> None:
    notifier.hold = True
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 60)
    await topics.notify_observers(publication(n=0), exclude="pub")
    await turns(lambda: len(notifier.started) == 1)
    for n in range(1, 70):
        await topics.notify_observers(publication(n=n), exclude="pub")
    notifier.release()
    await topics.drain()
    ids = [i.message_id for _, _, i, _ in notifier.sent]
    # m0 was in flight; 64 wait at most, so m1..m5 were superseded
    assert ids == ["m0", *(f"m{n}" for n in range(6, 70))]
    assert topics.superseded_notifications == 5


async def test_every_nth_notification_is_con(
    backend: MemoryBackend, clock: ManualClock, notifier: FakeNotifier
) -> None:
    topics = await make(backend, clock, notifier, observe_con_every=3)
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 3600)
    for n in range(7):
        await topics.notify_observers(publication(n=n), exclude="pub")
        await topics.drain()
    assert [con for *_, con in notifier.sent] == [
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    # RFC 7641 §4.5: at least one CON every 24 hours
    clock.advance(86_400)
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 3600)
    await topics.notify_observers(publication(n=8), exclude="pub")
    await topics.drain()
    assert notifier.sent[-1][3] is True


async def test_lost_observer_is_removed_with_its_record(
    topics: TopicRegistry,
    notifier: FakeNotifier,
    backend: MemoryBackend,
    clock: ManualClock,
) -> None:
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 60)
    await topics.observe("ue2", "alerts", B, b"tk", clock.now() + 60)
    notifier.gone.add(A)
    await topics.notify_observers(publication(), exclude="pub")
    await topics.drain()
    assert [s.subscriber for s in topics.observers("alerts")] == ["ue2"]
    records = await backend.load_records(
        "topic-sub", type(topics.observers("alerts")[0])
    )
    assert [r.subscriber for r in records] == ["ue2"]
    assert notifier.ended == []  # the client ended it: no final notification


async def test_observer_gone_by_token(
    topics: TopicRegistry, clock: ManualClock, backend: MemoryBackend
) -> None:
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 60)
    assert not await topics.observer_gone(A, b"other")
    assert not await topics.observer_gone(B, b"tk")
    assert await topics.observer_gone(A, b"tk")
    assert topics.observers("alerts") == []
    assert topics.subscription("alerts", "ue1") is None
    fresh = TopicRegistry(backend, clock, DeliveryConfig())
    assert await fresh.load() == 0


async def test_observations_survive_a_restart(
    backend: MemoryBackend, clock: ManualClock, notifier: FakeNotifier
) -> None:
    first = await make(backend, clock, notifier)
    await first.observe("ue1", "alerts", A, b"tk", clock.now() + 60)
    await first.subscribe("ue2", ["alerts"], clock.now() + 60)
    await first.aclose()
    again = await make(backend, clock, notifier)
    assert again.subscribers("alerts") == ["ue2"]
    (obs,) = again.observers("alerts")
    assert (obs.subscriber, obs.observer, obs.token) == ("ue1", A, b"tk")
    await again.notify_observers(publication(), exclude="pub")
    await again.drain()
    assert [(c, t) for c, t, _, _ in notifier.sent] == [(A, b"tk")]


async def test_later_form_replaces_the_earlier(
    topics: TopicRegistry,
    notifier: FakeNotifier,
    backend: MemoryBackend,
    clock: ManualClock,
) -> None:
    await topics.subscribe("ue1", ["alerts"], clock.now() + 60)
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 120)
    assert topics.subscribers("alerts") == []
    sub = topics.subscription("alerts", "ue1")
    assert sub is not None and sub.form == OBSERVE_FORM
    # POST form again: the observation ends with a final notification
    await topics.subscribe("ue1", ["alerts"], clock.now() + 60)
    await topics.drain()
    assert topics.observers("alerts") == []
    assert topics.subscribers("alerts") == ["ue1"]
    ((contact, token, body),) = notifier.ended
    assert (contact, token) == (A, b"tk")
    assert body.topic_results[0].messaging_topic == "alerts"
    fresh = TopicRegistry(backend, clock, DeliveryConfig())
    await fresh.load()
    sub = fresh.subscription("alerts", "ue1")
    assert sub is not None and sub.form == POST_FORM


async def test_new_token_replaces_and_same_token_refreshes(
    topics: TopicRegistry, notifier: FakeNotifier, clock: ManualClock
) -> None:
    await topics.observe("ue1", "alerts", A, b"t1", clock.now() + 60)
    await topics.observe("ue1", "alerts", A, b"t1", clock.now() + 600)
    await topics.drain()
    assert notifier.ended == []
    (obs,) = topics.observers("alerts")
    assert obs.expires_at == clock.now() + 600
    await topics.observe("ue1", "alerts", A, b"t2", clock.now() + 60)
    await topics.drain()
    assert [t for _, t, _ in notifier.ended] == [b"t1"]
    assert [o.token for o in topics.observers("alerts")] == [b"t2"]
    assert not await topics.observer_gone(A, b"t1")


async def test_unsubscribe_all_ends_observations_too(
    topics: TopicRegistry,
    notifier: FakeNotifier,
    backend: MemoryBackend,
    clock: ManualClock,
) -> None:
    """De-registration calls ``unsubscribe(ue, [])``: both forms end."""
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 60)
    await topics.subscribe("ue1", ["news"], clock.now() + 60)
    results = await topics.unsubscribe("ue1", [])
    assert sorted(r.messaging_topic for r in results) == ["alerts", "news"]
    await topics.drain()
    assert topics.topics_of("ue1") == []
    assert [t for _, t, _ in notifier.ended] == [b"tk"]
    await topics.notify_observers(publication(), exclude="pub")
    await topics.drain()
    assert notifier.sent == []
    assert await TopicRegistry(backend, clock, DeliveryConfig()).load() == 0


async def test_expiry_sends_a_final_notification_and_deletes(
    topics: TopicRegistry,
    notifier: FakeNotifier,
    backend: MemoryBackend,
    clock: ManualClock,
) -> None:
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 60)
    await topics.observe("ue2", "alerts", B, b"tk", clock.now() + 600)
    assert topics.next_observation_expiry() == clock.now() + 60
    assert await topics.expire_observations() == 0
    clock.advance(61)
    assert await topics.expire_observations() == 1
    await topics.drain()
    assert [(c, t) for c, t, _ in notifier.ended] == [(A, b"tk")]
    assert [o.subscriber for o in topics.observers("alerts")] == ["ue2"]
    assert await TopicRegistry(backend, clock, DeliveryConfig()).load() == 1
    # lazily on publication too
    clock.advance(600)
    assert await topics.notify_observers(publication(), exclude="pub") == 0
    await topics.drain()
    assert len(notifier.ended) == 2 and notifier.sent == []


async def test_granted_expiry_is_capped_like_topicsub(
    topics: TopicRegistry, clock: ManualClock
) -> None:
    config = DeliveryConfig()
    assert topics.granted_expiry(None) == clock.now() + config.topic_default_lifetime
    far = clock.now() + 10 * config.topic_max_lifetime
    assert topics.granted_expiry(far) == clock.now() + config.topic_max_lifetime


async def test_without_notifier_nothing_is_sent(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    topics = TopicRegistry(backend, clock, DeliveryConfig())
    await topics.observe("ue1", "alerts", A, b"tk", clock.now() + 60)
    assert await topics.notify_observers(publication(), exclude="pub") == 0


def test_topic_names_are_checked() -> None:
    check_topic("weather/zone-3")
    for bad in ("", "a+b", "#", "x" * 256):
        with pytest.raises(InvalidRequest) as info:
            check_topic(bad)
        assert info.value.cause is FailureCause.INVALID_TOPIC
