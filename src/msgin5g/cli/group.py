"""``msgin5g group create|add|remove|show|list|delete|import``: the group store.

The same store is served by a running server as the TS 29.549 SEAL group
management API (``{apiRoot}/ss-gm/v1/group-documents``, docs/groups.md); the
CLI edits the ``valUserId`` (UE Service ID) members of its VAL group documents
and keeps their other content.
"""

import argparse
import json
import sys
from typing import Any

from msgin5g.cli.common import add_storage, server_config
from msgin5g.cli.progress import add_progress_flag

__all__ = ["add_group_parser", "run_group"]


def add_group_parser(commands: Any) -> None:
    """Add the ``group`` sub-command to the top-level sub-parsers."""
    group = commands.add_parser(
        "group",
        help="manage MSGin5G groups (TS 23.554 §8.7.4) in the server's storage",
        description="Groups hosted by this server: a UE's MSG with "
        "recipientGroupServiceId is fanned out to every member but the sender. "
        "Only members may send from UEs; any registered AS may send. A running "
        "server sees changes made here within delivery.group_cache_ttl seconds. "
        "The alternative is the server's TS 29.549 SEAL group management API "
        "over HTTP, {apiRoot}/ss-gm/v1/group-documents (POST, GET, PUT, PATCH, "
        "DELETE VALGroupDocuments): changes made there take effect at once and "
        "may also name members by MSGin5G UE ID (valUeId). With seal.gm_url set, "
        "groups come from that external SEAL server and this store is unused.",
        epilog="See docs/groups.md.",
    )
    actions = group.add_subparsers(
        dest="group_command", required=True, metavar="ACTION"
    )
    for name, text in (
        ("create", "create a group, or replace its UE members"),
        ("add", "add UE members"),
        ("remove", "remove UE members"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("group_id", metavar="GROUP")
        parser.add_argument(
            "members", nargs="*" if name == "create" else "+", metavar="UE"
        )
        add_storage(parser)
    for name, text in (
        ("show", "print one group (UE members, valUeIds) as JSON"),
        ("delete", "delete a group"),
    ):
        parser = actions.add_parser(name, help=text)
        parser.add_argument("group_id", metavar="GROUP")
        add_storage(parser)
    add_storage(actions.add_parser("list", help="list groups and member counts"))
    imp = actions.add_parser(
        "import",
        help="create or replace many groups from a JSON Lines file",
        description="Create groups, or replace their UE members, from FILE ('-' "
        "for stdin): JSON Lines, one group per line in the JSON 'group show' "
        'prints, e.g. {"groupId": "g1", "members": ["ue1", "ue2"]}. Bad lines '
        "are reported on stderr as 'line N: reason' and skipped; exit status 1 "
        "if any line was bad. Progress on stderr on a terminal or with --progress.",
    )
    imp.add_argument("file", metavar="FILE", help="JSON Lines file, '-' for stdin")
    add_progress_flag(imp)
    add_storage(imp)


async def run_group(args: argparse.Namespace) -> int:
    """Execute a ``group`` action; returns the exit status."""
    from msgin5g.server.admin import put_group, remove_group_members

    config = server_config(args)
    url = config.storage.url
    if config.seal.gm_url:
        print(
            f"msgin5g: note: seal.gm_url is set: the server resolves groups at "
            f"{config.seal.gm_url}, not in this store",
            file=sys.stderr,
        )
    command = args.group_command
    if command == "import":
        from msgin5g.cli.doc_import import run_group_import

        return await run_group_import(args)
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
    if command == "show":
        return await _show(url, args.group_id)
    from msgin5g.server.admin import group_documents

    for document in await group_documents(url):
        print(f"{document.group_id}\t{len(document.member_targets)} members")
    return 0


async def _show(url: str, group_id: str) -> int:
    from msgin5g.server.admin import group_documents

    found = await group_documents(url, group_id)
    if not found:
        print(f"msgin5g: no group {group_id}")
        return 1
    [document] = found
    shown: dict[str, object] = {"groupId": group_id, "members": document.members}
    ue_ids = [t.val_ue_id for t in document.member_targets if t.val_ue_id]
    if ue_ids:
        shown["valUeIds"] = ue_ids
    print(json.dumps(shown))
    return 0
