"""Topic access control (issue 10 item 4): matching, rule order, owners, cache.

Memory backend and a fake clock; the registry-level checks (TOPICSUB results,
Observe refusal, per-delivery verdict) with a fake notifier.
"""

from collections.abc import AsyncIterator

import pytest

from msgin5g.config import DeliveryConfig, TopicsConfig
from msgin5g.errors import ConfigError, InvalidRequest, NotAuthorized
from msgin5g.model.messages import Msg
from msgin5g.model.registry import Contact
from msgin5g.service.topic_policy import (
    PUBLISH,
    SUBSCRIBE,
    TopicPolicy,
    TopicRule,
    check_pattern,
    check_principal,
    decide,
    matches,
    owner_candidate,
)
from msgin5g.service.topics import TopicRegistry
from msgin5g.spec.causes import FailureCause, Result
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock
from tests.unit.service.test_topics_observe import FakeNotifier

UES = {"alice", "bob", "carol"}


async def is_ue(name: str) -> bool:
    return name in UES


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    backend = MemoryBackend()
    await backend.start()
    yield backend
    await backend.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def policy(
    backend: MemoryBackend, clock: ManualClock, **config: bool | float
) -> TopicPolicy:
    return TopicPolicy(backend, clock, TopicsConfig(**config), is_ue=is_ue)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("alice/private", "alice/private", True),
        ("alice/private", "alice/private/x", False),
        ("alice/+", "alice/private", True),
        ("alice/+", "alice/a/b", False),
        ("alice/+", "alice", False),
        ("alice/#", "alice", True),  # MQTT: '#' also matches the parent
        ("alice/#", "alice/a/b", True),
        ("alice/#", "alicex/a", False),
        ("#", "anything/at/all", True),
        ("+/status", "bob/status", True),
        ("+/status", "bob/other", False),
    ],
)
def test_mqtt_matching(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


def test_patterns_and_principals_are_checked() -> None:
    for good in ("a", "a/+/b", "a/#", "#", "+"):
        check_pattern(good)
    for bad in ("", "a/b#", "a+/b", "a/#/b", "x" * 256):
        with pytest.raises(InvalidRequest) as info:
            check_pattern(bad)
        assert info.value.cause is FailureCause.INVALID_TOPIC
    for good in ("bob", "as/news", "*"):
        check_principal(good)
    for bad in ("", "as/", "a/b", "b+", "#", "as/x/y"):
        with pytest.raises(InvalidRequest):
            check_principal(bad)


def test_owner_candidates() -> None:
    assert owner_candidate("alice/private") == "alice"
    assert owner_candidate("alice") == "alice"
    assert owner_candidate("as/news/today") == "as/news"
    assert owner_candidate("as/") is None


def test_rule_order() -> None:
    rules = [
        TopicRule("alice/#", subscribe=["bob"], deny_subscribe=["carol"]),
        TopicRule("news", publish=["as/desk"], deny_publish=["*"]),
        TopicRule("+/status", subscribe=["*"]),
    ]
    # owned topic: owner and granted only
    verdict = decide(
        rules, "alice/private", SUBSCRIBE, owner="alice", open_namespace=True
    )
    assert [verdict(p) for p in ("alice", "bob", "carol", "dave")] == [
        True,
        True,
        False,
        False,
    ]
    # explicit deny beats ownership
    denied = decide(
        [TopicRule("alice/x", deny_publish=["alice"])],
        "alice/x",
        PUBLISH,
        owner="alice",
        open_namespace=True,
    )
    assert not denied("alice")
    # '*' denied, one principal allowed explicitly
    news = decide(rules, "news", PUBLISH, owner=None, open_namespace=True)
    assert news("as/desk") and not news("bob") and not news("as/other")
    # subscribing to news stays open (no subscribe rule)
    assert decide(rules, "news", SUBSCRIBE, owner=None, open_namespace=True)("bob")
    # '*' granted on an owned topic
    status = decide(rules, "bob/status", SUBSCRIBE, owner="bob", open_namespace=False)
    assert status("carol")
    # closed namespace: only grants
    closed = decide([], "weather", SUBSCRIBE, owner=None, open_namespace=False)
    assert not closed("bob")


async def test_owner_prefix_default(backend: MemoryBackend, clock: ManualClock) -> None:
    p = policy(backend, clock)
    assert await p.may("alice/private", "alice", SUBSCRIBE)
    assert await p.may("alice/private", "alice", PUBLISH)
    assert not await p.may("alice/private", "bob", SUBSCRIBE)
    assert not await p.may("alice/private", "bob", PUBLISH)
    assert not await p.may("alice", "bob", SUBSCRIBE)
    assert not await p.may("alice/private", "as/news", SUBSCRIBE)
    # first level not a UE: open namespace
    assert await p.may("weather/zone-3", "bob", SUBSCRIBE)
    assert await p.may("weather/zone-3", "as/news", PUBLISH)
    # AS namespace
    assert await p.may("as/news/today", "as/news", PUBLISH)
    assert not await p.may("as/news/today", "bob", PUBLISH)
    assert not await p.may("as/news/today", "as/other", SUBSCRIBE)


async def test_switches(backend: MemoryBackend, clock: ManualClock) -> None:
    no_owner = policy(backend, clock, owner_prefix=False)
    assert await no_owner.may("alice/private", "bob", SUBSCRIBE)
    closed = policy(backend, clock, open_namespace=False)
    assert not await closed.may("weather", "bob", SUBSCRIBE)
    assert await closed.may("bob/x", "bob", SUBSCRIBE)
    with pytest.raises(ConfigError):
        TopicsConfig(policy_cache_ttl=-1)


async def test_allow_deny_remove_persist(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    admin = policy(backend, clock)
    rule = await admin.allow("alice/private", publish=[], subscribe=["bob", "carol"])
    assert rule.subscribe == ["bob", "carol"]
    rule = await admin.deny("alice/private", publish=["bob"], subscribe=["carol"])
    assert (rule.subscribe, rule.deny_subscribe, rule.deny_publish) == (
        ["bob"],
        ["carol"],
        ["bob"],
    )
    rule = await admin.allow("alice/private", publish=[], subscribe=["carol"])
    assert (rule.subscribe, rule.deny_subscribe) == (["bob", "carol"], [])
    with pytest.raises(InvalidRequest):
        await admin.allow("a/#/b", publish=["bob"], subscribe=[])
    with pytest.raises(InvalidRequest):
        await admin.allow("a", publish=["a/b"], subscribe=[])
    # another process (the server) sees it after its cache TTL
    server = policy(backend, clock, policy_cache_ttl=5.0)
    assert await server.may("alice/private", "bob", SUBSCRIBE)
    await admin.remove("alice/private")
    assert await server.may("alice/private", "bob", SUBSCRIBE)  # cached
    clock.advance(5)
    assert not await server.may("alice/private", "bob", SUBSCRIBE)
    assert not await admin.remove("alice/private")
    assert await admin.rules() == []


async def test_registry_enforces_subscribe_and_observe(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    p = policy(backend, clock)
    topics = TopicRegistry(backend, clock, DeliveryConfig(), policy=p)
    await topics.load()  # opens its task supervisor
    notifier = FakeNotifier()
    topics.attach_notifier(notifier)
    results = await topics.subscribe("bob", ["alice/private", "news"], clock.now() + 60)
    assert [(r.result, r.failure_cause) for r in results] == [
        (Result.FAILURE, FailureCause.NOT_AUTHORIZED.value),
        (Result.SUCCESS, None),
    ]
    assert topics.topics_of("bob") == ["news"]
    with pytest.raises(NotAuthorized):
        await topics.observe(
            "bob", "alice/private", Contact("10.0.0.2", 1), b"t", clock.now() + 60
        )
    assert topics.observers("alice/private") == []
    # granted, observing; the grant is revoked: no more notifications
    await p.allow("alice/private", publish=[], subscribe=["bob"])
    await topics.observe(
        "bob", "alice/private", Contact("10.0.0.2", 1), b"t", clock.now() + 60
    )
    msg = Msg(
        message_id="m1",
        originating_ue_service_id="alice",
        messaging_topic="alice/private",
        payload=b"x",
    )
    readers = await p.verdict("alice/private", SUBSCRIBE)
    assert await topics.notify_observers(msg, exclude="alice", allowed=readers) == 1
    await p.deny("alice/private", publish=[], subscribe=["bob"])
    readers = await p.verdict("alice/private", SUBSCRIBE)
    assert await topics.notify_observers(msg, exclude="alice", allowed=readers) == 0
    await topics.drain()
    assert len(notifier.sent) == 1
    await topics.aclose()
