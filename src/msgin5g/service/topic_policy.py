"""Topic access control: who may publish to and subscribe to a Messaging Topic.

Issue 10, item 4: without it any registered UE could subscribe to (or observe)
any topic, e.g. ``alice/private``. The digest leaves the policy to the project
(§3.13.2 "any registered UE may publish unless the topic is configured as
restricted"; §3.13.3 step 2 "check policy → ``FAILURE`` / ``NOT_AUTHORIZED``").

Principals are the keys the topic registry already uses: a UE Service ID, or
``as/<AS Service ID>`` for an Application Server; ``*`` in a rule means any
registered UE or AS. Two actions: **publish** (a ``MSG`` with
``messagingTopic``, or an A2P message to a topic) and **subscribe** (``TOPICSUB``,
the Observe registration ``GET /msgin5g/topics/{topic}``, an AS's
``/msgs-topicsub/v1`` subscription, and every later delivery).

Ownership (``[topics] owner_prefix``, on by default): a topic whose first level
(the text before the first ``/``, or the whole name) is the Service ID of a
provisioned or registered UE belongs to that UE; ``as/<id>/…`` belongs to the AS
``<id>``. Only the owner publishes to and subscribes to its topics unless a rule
grants more. Topics without an owner are open to every registered UE and AS
(``[topics] open_namespace = true``, the default, so the README quick start and
topics such as ``alerts`` or ``weather/zone-3`` keep working) or closed to all
but the granted (``false``).

Rules (records of kind ``"topic-policy"`` keyed by pattern, managed with
``msgin5g topic allow|deny|remove|policies``): a pattern in MQTT filter syntax
(``+`` one level, ``#`` the rest, also the parent: ``alice/#`` matches
``alice``) with four principal lists, ``publish`` / ``subscribe`` (allowed) and
``deny_publish`` / ``deny_subscribe``. For one topic, action and principal, over
every rule whose pattern matches, the first of these that applies decides:

1. the principal is named in a deny list → refused (also the owner);
2. the principal is the owner, or named in an allow list → allowed;
3. ``*`` is in a deny list → refused;
4. ``*`` is in an allow list → allowed;
5. default: refused for an owned topic, ``open_namespace`` for the others.

Design choices:
    * The verdict is checked when subscribing *and* at every delivery
      (:meth:`TopicPolicy.verdict` resolves the matching rules once per
      publication into a :class:`Verdict` that answers per subscriber with two
      set look-ups), so a revoked grant, or a UE provisioned after someone
      subscribed to its namespace, stops deliveries without a sweep.
    * All rules are held in memory and re-read from storage at most every
      ``policy_cache_ttl`` seconds, like groups and Broadcast Areas, so the CLI
      can change them while a server runs on the same storage.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from msgin5g.config import TopicsConfig
from msgin5g.errors import InvalidRequest
from msgin5g.runtime import Clock
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.base import Backend

__all__ = [
    "ANYONE",
    "POLICY_KIND",
    "PUBLISH",
    "SUBSCRIBE",
    "TopicPolicy",
    "TopicRule",
    "Verdict",
    "check_pattern",
    "check_principal",
    "decide",
    "matches",
    "owner_candidate",
]

log = logging.getLogger(__name__)

POLICY_KIND = "topic-policy"
"""Record kind of topic rules in the :class:`~msgin5g.storage.base.RecordStore`."""

ANYONE = "*"
"""The principal that stands for every registered UE and AS."""

PUBLISH = "publish"
SUBSCRIBE = "subscribe"
_AS_PREFIX = "as/"


class TopicRule(msgspec.Struct, frozen=True):
    """Grants and denials for the topics matching one pattern.

    Attributes:
        pattern: MQTT-style topic filter (``+``, ``#``).
        publish: principals allowed to publish.
        subscribe: principals allowed to subscribe and observe.
        deny_publish: principals refused publishing.
        deny_subscribe: principals refused subscribing.
    """

    pattern: str
    publish: list[str] = []
    subscribe: list[str] = []
    deny_publish: list[str] = []
    deny_subscribe: list[str] = []


@dataclass(frozen=True, slots=True)
class Verdict:
    """The policy of one topic and action, resolved; call it with a principal."""

    owner: str | None
    allow: frozenset[str]
    deny: frozenset[str]
    default: bool

    def __call__(self, principal: str) -> bool:
        """Whether ``principal`` may (see the rule order in the module docstring)."""
        if principal in self.deny:
            return False
        if principal == self.owner or principal in self.allow:
            return True
        return self.default


def check_pattern(pattern: str) -> None:
    """Validate a topic filter: 1-255 chars, ``+`` / ``#`` only as whole levels.

    Raises:
        InvalidRequest: with cause ``INVALID_TOPIC``.
    """
    levels = pattern.split("/")
    bad = not 1 <= len(pattern) <= 255
    for i, level in enumerate(levels):
        if level in {"+", "#"}:
            bad = bad or (level == "#" and i != len(levels) - 1)
        elif "+" in level or "#" in level:
            bad = True
    if bad:
        raise InvalidRequest(
            f"invalid topic pattern {pattern!r}: 1-255 characters; '+' and '#' "
            "only as a whole level, '#' only last",
            cause=FailureCause.INVALID_TOPIC,
        )


def check_principal(principal: str) -> None:
    """Validate a principal: ``*``, a UE Service ID or ``as/<AS Service ID>``.

    Raises:
        InvalidRequest: anything else.
    """
    name = principal.removeprefix(_AS_PREFIX)
    if principal != ANYONE and (
        not name or len(name) > 255 or any(c in name for c in "/+#*")
    ):
        raise InvalidRequest(
            f"invalid principal {principal!r}: a UE Service ID, as/<AS Service ID> or *"
        )


def matches(pattern: str, topic: str) -> bool:
    """MQTT filter matching (``+`` one level, ``#`` any rest including none)."""
    if pattern == topic:
        return True
    levels = topic.split("/")
    parts = pattern.split("/")
    for i, part in enumerate(parts):
        if part == "#":
            return True
        if i >= len(levels) or (part != "+" and part != levels[i]):
            return False
    return len(parts) == len(levels)


def owner_candidate(topic: str) -> str | None:
    """Who would own ``topic`` by prefix: ``as/<id>`` or the first level."""
    if topic.startswith(_AS_PREFIX):
        name = topic[len(_AS_PREFIX) :].split("/", 1)[0]
        return f"{_AS_PREFIX}{name}" if name else None
    return topic.split("/", 1)[0] or None


def decide(
    rules: list[TopicRule],
    topic: str,
    action: str,
    *,
    owner: str | None,
    open_namespace: bool,
) -> Verdict:
    """Resolve the rules matching ``topic`` for ``action`` (pure function).

    Args:
        rules: every rule.
        topic: the topic name.
        action: :data:`PUBLISH` or :data:`SUBSCRIBE`.
        owner: the topic's owner, or None.
        open_namespace: the default for topics without an owner.
    """
    allow: set[str] = set()
    deny: set[str] = set()
    for rule in rules:
        if matches(rule.pattern, topic):
            if action == PUBLISH:
                allow.update(rule.publish)
                deny.update(rule.deny_publish)
            else:
                allow.update(rule.subscribe)
                deny.update(rule.deny_subscribe)
    if ANYONE in deny:
        default = False
    elif ANYONE in allow:
        default = True
    else:
        default = owner is None and open_namespace
    return Verdict(owner, frozenset(allow), frozenset(deny), default)


def _merged(values: list[str], added: list[str]) -> list[str]:
    return list(dict.fromkeys([*values, *added]))


def _without(values: list[str], removed: list[str]) -> list[str]:
    gone = set(removed)
    return [v for v in values if v not in gone]


class TopicPolicy:
    """The rules (durable records, cached) and the owner-prefix default.

    Args:
        backend: where the rules live.
        clock: wall clock (cache expiry).
        config: the ``[topics]`` section.
        is_ue: whether a name is a provisioned or registered UE (the owner
            test); None: no UE owns a topic.
    """

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        config: TopicsConfig | None = None,
        *,
        is_ue: Callable[[str], Awaitable[bool]] | None = None,
    ) -> None:
        self._backend = backend
        self._clock = clock
        self._config = config or TopicsConfig()
        self._is_ue = is_ue
        self._rules: list[TopicRule] = []
        self._fresh_until = float("-inf")

    async def rules(self) -> list[TopicRule]:
        """Every rule, by pattern (re-read when older than the cache TTL)."""
        now = self._clock.now()
        if now >= self._fresh_until:
            self._rules = await self._backend.load_records(POLICY_KIND, TopicRule)
            self._fresh_until = now + self._config.policy_cache_ttl
        return self._rules

    async def owner(self, topic: str) -> str | None:
        """The topic's owner by prefix (see the module docstring), or None."""
        if not self._config.owner_prefix:
            return None
        candidate = owner_candidate(topic)
        if candidate is None or candidate.startswith(_AS_PREFIX):
            return candidate
        if self._is_ue is not None and await self._is_ue(candidate):
            return candidate
        return None

    async def verdict(self, topic: str, action: str) -> Verdict:
        """The policy of ``topic`` for ``action``, to ask per principal."""
        return decide(
            await self.rules(),
            topic,
            action,
            owner=await self.owner(topic),
            open_namespace=self._config.open_namespace,
        )

    async def may(self, topic: str, principal: str, action: str) -> bool:
        """Whether ``principal`` may ``action`` (publish/subscribe) ``topic``."""
        allowed = (await self.verdict(topic, action))(principal)
        if not allowed:
            log.info("topic %s: %s may not %s", topic, principal, action)
        return allowed

    # administration (msgin5g topic ...) ---------------------------------------

    async def get(self, pattern: str) -> TopicRule | None:
        """The rule stored for exactly ``pattern``."""
        return await self._backend.get_record(POLICY_KIND, pattern, TopicRule)

    async def allow(
        self, pattern: str, *, publish: list[str], subscribe: list[str]
    ) -> TopicRule:
        """Grant publishing / subscribing (lifting a denial in the same rule)."""
        return await self._change(pattern, publish, subscribe, grant=True)

    async def deny(
        self, pattern: str, *, publish: list[str], subscribe: list[str]
    ) -> TopicRule:
        """Refuse publishing / subscribing (dropping a grant in the same rule)."""
        return await self._change(pattern, publish, subscribe, grant=False)

    async def remove(self, pattern: str) -> bool:
        """Delete the rule of ``pattern``; True if there was one."""
        self._fresh_until = float("-inf")
        return await self._backend.delete_record(POLICY_KIND, pattern)

    async def _change(
        self, pattern: str, publish: list[str], subscribe: list[str], *, grant: bool
    ) -> TopicRule:
        check_pattern(pattern)
        for principal in (*publish, *subscribe):
            check_principal(principal)
        rule = await self.get(pattern) or TopicRule(pattern)
        # a grant adds to the allow lists and lifts denials; a denial the reverse
        allow, deny = (_merged, _without) if grant else (_without, _merged)
        rule = TopicRule(
            pattern,
            publish=allow(rule.publish, publish),
            subscribe=allow(rule.subscribe, subscribe),
            deny_publish=deny(rule.deny_publish, publish),
            deny_subscribe=deny(rule.deny_subscribe, subscribe),
        )
        await self._backend.put_record(POLICY_KIND, pattern, rule)
        self._fresh_until = float("-inf")
        return rule
