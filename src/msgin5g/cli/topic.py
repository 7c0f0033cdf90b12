"""``msgin5g topic allow|deny|remove|policies|check``: topic access rules.

The operator's side of topic access control (issue 10 item 4,
docs/security-topics.md): rules live in the server's storage as records of kind
``"topic-policy"`` (:mod:`msgin5g.service.topic_policy`); like ``msgin5g group``
and ``msgin5g area`` these commands work on the storage directly, also while a
server runs on it, which sees a change within ``topics.policy_cache_ttl``
seconds.
"""

import argparse
import json
from typing import TYPE_CHECKING, Any

from msgin5g.cli.common import add_storage, server_config

if TYPE_CHECKING:
    from msgin5g.config import TopicsConfig
    from msgin5g.service.topic_policy import TopicRule
    from msgin5g.storage.base import Backend

__all__ = ["add_topic_parser", "run_topic"]

_DESCRIPTION = """\
Who may publish to and subscribe to (or observe) a Messaging Topic.

Default (no rule): a topic whose first level (before the first '/') is the
Service ID of a provisioned or registered UE belongs to that UE, e.g.
alice/private to alice, and as/<AS Service ID>/... to that AS: only the owner
publishes and subscribes. Other topics are open to every registered UE and AS
(topics.open_namespace = true) or closed to all but the granted (false).

Rules add to that, per topic pattern (MQTT filter: '+' one level, '#' the
rest, so alice/# also matches alice). A principal is a UE Service ID,
as/<AS Service ID>, or '*' (every registered UE and AS). Over all matching
rules: a denied principal is refused (even the owner); then the owner and
allowed principals may; then a denied '*' refuses, an allowed '*' admits the
rest; otherwise the default above holds. A running server sees changes within
topics.policy_cache_ttl seconds and applies them to existing subscriptions at
the next publication.
"""

_EXAMPLE = """\
example:
  msgin5g topic allow alice/private --subscribe bob
  msgin5g topic allow 'fleet/#' --publish as/dispatch --subscribe '*'
  msgin5g topic deny news --publish '*'
  msgin5g topic check alice/private bob
"""


def add_topic_parser(commands: Any) -> None:
    """Add the ``topic`` sub-command to the top-level sub-parsers."""
    topic = commands.add_parser(
        "topic",
        help="topic access rules: who may publish / subscribe (docs/security-topics.md)",
        description=_DESCRIPTION,
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = topic.add_subparsers(
        dest="topic_command", required=True, metavar="ACTION"
    )
    for name, text in (
        ("allow", "grant publishing and/or subscribing on a pattern"),
        ("deny", "refuse publishing and/or subscribing on a pattern"),
    ):
        parser = actions.add_parser(
            name,
            help=text,
            description=f"{text.capitalize()}. Prints the pattern's rule as JSON.",
            epilog=_EXAMPLE,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        parser.add_argument("pattern", metavar="PATTERN", help="topic or filter")
        for flag in ("publish", "subscribe"):
            parser.add_argument(
                f"--{flag}",
                nargs="+",
                action="extend",
                default=[],
                metavar="ID",
                help=f"principals ({name} {flag}): UE Service IDs, as/<AS id>, '*'",
            )
        add_storage(parser)
    remove = actions.add_parser("remove", help="delete the rule of a pattern")
    remove.add_argument("pattern", metavar="PATTERN")
    add_storage(remove)
    policies = actions.add_parser("policies", help="list the rules as JSON lines")
    add_storage(policies)
    check = actions.add_parser(
        "check", help="may ID publish / subscribe to TOPIC? (JSON)"
    )
    check.add_argument("topic", metavar="TOPIC")
    check.add_argument("principal", metavar="ID", help="UE Service ID or as/<AS id>")
    add_storage(check)


def _json(rule: "TopicRule") -> str:
    import msgspec

    return json.dumps(msgspec.to_builtins(rule))


async def run_topic(args: argparse.Namespace) -> int:
    """Execute a ``topic`` action; returns the exit status."""
    from msgin5g.storage import open_backend

    config = server_config(args)
    backend = open_backend(config.storage.url, synchronous=config.storage.synchronous)
    await backend.start()
    try:
        return await _run(args, backend, config.topics)
    finally:
        await backend.aclose()


async def _run(
    args: argparse.Namespace, backend: "Backend", config: "TopicsConfig"
) -> int:
    from msgin5g.service.ports import SystemClock
    from msgin5g.service.topic_policy import PUBLISH, SUBSCRIBE, TopicPolicy

    async def is_ue(name: str) -> bool:
        return await backend.get_credential(name) is not None or any(
            r.ue_service_id == name for r in await backend.load_registrations()
        )

    policy = TopicPolicy(backend, SystemClock(), config, is_ue=is_ue)
    command = args.topic_command
    if command in {"allow", "deny"}:
        if not args.publish and not args.subscribe:
            print("msgin5g: give --publish and/or --subscribe")
            return 2
        change = policy.allow if command == "allow" else policy.deny
        rule = await change(
            args.pattern, publish=args.publish, subscribe=args.subscribe
        )
        print(_json(rule))
        return 0
    if command == "remove":
        if await policy.remove(args.pattern):
            return 0
        print(f"msgin5g: no rule for {args.pattern}")
        return 1
    if command == "check":
        verdict = {
            "topic": args.topic,
            "principal": args.principal,
            "owner": await policy.owner(args.topic),
            "publish": await policy.may(args.topic, args.principal, PUBLISH),
            "subscribe": await policy.may(args.topic, args.principal, SUBSCRIBE),
        }
        print(json.dumps(verdict))
        return 0
    for rule in await policy.rules():
        print(_json(rule))
    return 0
