"""``msgin5g group create|add|remove|show|list|delete``: the server's group store."""

import argparse
import json
import os
from typing import Any

from msgin5g.config import load_config
from msgin5g.server.admin import list_groups, put_group, remove_group_members

__all__ = ["add_group_parser", "run_group"]


def add_group_parser(commands: Any) -> None:
    """Add the ``group`` sub-command to the top-level sub-parsers."""
    group = commands.add_parser(
        "group",
        help="manage MSGin5G groups (TS 23.554 §8.7.4) in the server's storage",
        description="Groups hosted by this server: a UE's MSG with "
        "recipientGroupServiceId is fanned out to every member but the sender. "
        "Only members may send. A running server sees changes within "
        "delivery.group_cache_ttl seconds.",
    )
    actions = group.add_subparsers(
        dest="group_command", required=True, metavar="ACTION"
    )
    for name, text in (
        ("create", "create or replace a group with these members"),
        ("add", "add members"),
        ("remove", "remove members"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("group_id", metavar="GROUP")
        parser.add_argument(
            "members", nargs="*" if name == "create" else "+", metavar="UE"
        )
        _storage(parser)
    for name, text in (
        ("show", "print one group as JSON"),
        ("delete", "delete a group"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("group_id", metavar="GROUP")
        _storage(parser)
    _storage(actions.add_parser("list", help="list groups and member counts"))


def _storage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML configuration file")
    parser.add_argument("--storage", metavar="URL", help="storage URL")


async def run_group(args: argparse.Namespace) -> int:
    """Execute a ``group`` action; returns the exit status."""
    environ = {k: v for k, v in os.environ.items() if k.startswith("MSGIN5G_")}
    overrides = {"storage.url": args.storage} if args.storage else {}
    url = load_config(args.config, environ, overrides).storage.url
    command = args.group_command
    if command in {"create", "add"}:
        members = await put_group(
            url, args.group_id, args.members, add=command == "add"
        )
        print(json.dumps({"groupId": args.group_id, "members": members}))
        return 0
    if command in {"remove", "delete"}:
        members = [] if command == "delete" else args.members
        if await remove_group_members(url, args.group_id, members):
            return 0
        print(f"msgin5g: no group {args.group_id}")
        return 1
    groups = dict(await list_groups(url))
    if command == "show":
        if args.group_id not in groups:
            print(f"msgin5g: no group {args.group_id}")
            return 1
        print(json.dumps({"groupId": args.group_id, "members": groups[args.group_id]}))
        return 0
    for group_id, members in groups.items():
        print(f"{group_id}\t{len(members)} members")
    return 0
