"""``msgin5g area create|show|list|delete|assign|unassign|import``: Broadcast Areas.

The operator's side of broadcast messaging (TS 23.554 §8.6, digest §2.14): the
areas live in the server's storage (:mod:`msgin5g.server.areas`), a running
server sees changes within ``delivery.group_cache_ttl`` seconds.
"""

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from msgin5g.cli.common import add_storage, server_config
from msgin5g.cli.progress import add_progress_flag

if TYPE_CHECKING:
    from msgin5g.service.broadcast import BroadcastArea

__all__ = ["add_area_parser", "area_json", "run_area"]

_DESCRIPTION = """\
Broadcast Areas of this server (TS 23.554 broadcast messaging). A message sent
to a Broadcast Area ID (A2P destAddr.addrType BC, POST
/msgg-bgdelivery/v1/deliver-message, or a UE's MSG with recipientBroadcastAreaId)
goes to every UE in the area:

  * located UEs: registered UEs whose REG carried ueLocation with one of the
    area's cells (--cell, e.g. an NCGI) or tracking areas (--tracking-area,
    e.g. a TAI). Register a device with: msgin5g ue register ID --cell C;
  * assigned UEs: UE Service IDs the operator puts in the area (--ue, or
    'area assign'), wherever they are. They receive while registered; when
    offline they get the message later if the sender asked for
    store-and-forward (an unprovisioned assigned UE is skipped).

Policy: any registered Application Server may broadcast (or only those given
with --allow-as); UEs may broadcast only with --ue-may-send.
A running server sees changes within delivery.group_cache_ttl seconds.
"""

_EXAMPLE = """\
example:
  msgin5g area create downtown --cell 001010000000001 --tracking-area 00101-0001
  msgin5g area assign downtown siren-17 siren-18
  msgin5g area show downtown
  msgin5g area import areas.jsonl --progress
"""


def add_area_parser(commands: Any) -> None:
    """Add the ``area`` sub-command to the top-level sub-parsers."""
    area = commands.add_parser(
        "area",
        help="manage Broadcast Areas (cells, tracking areas, assigned UEs)",
        description=_DESCRIPTION,
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = area.add_subparsers(dest="area_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create",
        help="create or replace an area",
        description="Create the Broadcast Area AREA, or replace it entirely\n"
        "(cells, tracking areas, assigned UEs and policy are all reset to what\n"
        "this command gives). Prints the stored area as JSON.",
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    create.add_argument("area_id", metavar="AREA", help="the Broadcast Area ID")
    create.add_argument(
        "--cell",
        action="append",
        default=[],
        metavar="CELL",
        help="a cell of the area: registered UEs reporting ueLocation.cellId "
        "CELL are in it (repeatable)",
    )
    create.add_argument(
        "--tracking-area",
        action="append",
        default=[],
        metavar="TA",
        help="a tracking area of the area: registered UEs reporting "
        "ueLocation.trackingAreaId TA are in it (repeatable)",
    )
    create.add_argument(
        "--ue",
        action="append",
        default=[],
        metavar="UE",
        help="assign a UE Service ID to the area whatever its location "
        "(repeatable; see also 'area assign')",
    )
    create.add_argument(
        "--ue-may-send",
        action="store_true",
        help="let UEs broadcast to this area (default: Application Servers only)",
    )
    create.add_argument(
        "--allow-as",
        action="append",
        default=[],
        metavar="AS_ID",
        help="only these AS Service IDs may broadcast here (repeatable; "
        "default: every registered AS)",
    )
    add_storage(create)

    for name, text, what in (
        ("assign", "assign UEs to an area", "Add"),
        ("unassign", "remove assigned UEs from an area", "Remove"),
    ):
        parser = actions.add_parser(
            name,
            help=text,
            description=f"{what} operator-assigned UE Service IDs: assigned "
            "UEs are in the area wherever they are located (and get broadcasts "
            "by store-and-forward while offline). UEs located in the area by "
            "cell or tracking area are not affected. Prints the area as JSON.",
        )
        parser.add_argument("area_id", metavar="AREA")
        parser.add_argument("ues", nargs="+", metavar="UE", help="UE Service ID")
        add_storage(parser)
    for name, text in (
        ("show", "print one area as JSON"),
        ("delete", "delete an area"),
    ):
        parser = actions.add_parser(name, help=text, description=text)
        parser.add_argument("area_id", metavar="AREA")
        add_storage(parser)
    imp = actions.add_parser(
        "import",
        help="create or replace many areas from a JSON Lines file",
        description="Create or replace Broadcast Areas from FILE ('-' for "
        "stdin): JSON Lines, one area per line in the JSON 'area show' prints, "
        'e.g. {"areaId": "a1", "cells": ["c1"], "trackingAreas": [], "ues": [], '
        '"ueMaySend": false, "allowedAs": []} (omitted members are empty). Bad '
        "lines are reported on stderr as 'line N: reason' and skipped; exit "
        "status 1 if any line was bad. Progress on stderr on a terminal or with "
        "--progress.",
    )
    imp.add_argument("file", metavar="FILE", help="JSON Lines file, '-' for stdin")
    add_progress_flag(imp)
    add_storage(imp)
    add_storage(
        actions.add_parser(
            "list",
            help="list areas",
            description="One line per area: ID, counts of cells, tracking "
            "areas and assigned UEs, and who may send.",
        )
    )


def area_json(area: "BroadcastArea") -> dict[str, Any]:
    """The JSON the CLI prints for an area."""
    return {
        "areaId": area.area_id,
        "cells": list(area.cells),
        "trackingAreas": list(area.tracking_areas),
        "ues": list(area.ues),
        "ueMaySend": area.ue_may_send,
        "allowedAs": list(area.allowed_as),
    }


def _senders(area: "BroadcastArea") -> str:
    senders = ",".join(area.allowed_as) if area.allowed_as else "any AS"
    return senders + (" + UEs" if area.ue_may_send else "")


async def run_area(args: argparse.Namespace) -> int:
    """Execute an ``area`` action; returns the exit status."""
    from msgin5g.server.areas import (
        assign_ues,
        delete_area,
        get_area,
        list_areas,
        put_area,
        unassign_ues,
    )
    from msgin5g.service.broadcast import BroadcastArea

    command = args.area_command
    if command == "import":
        from msgin5g.cli.doc_import import run_area_import

        return await run_area_import(args)
    storage = server_config(args).storage
    url = storage.url
    if command == "list":
        for area in await list_areas(url):
            print(
                f"{area.area_id}\t{len(area.cells)} cells\t"
                f"{len(area.tracking_areas)} tracking areas\t"
                f"{len(area.ues)} assigned UEs\t{_senders(area)}"
            )
        return 0
    if command == "delete":
        if await delete_area(url, args.area_id):
            return 0
        print(f"msgin5g: no area {args.area_id}", file=sys.stderr)
        return 1
    result: BroadcastArea | None
    if command == "create":
        area = BroadcastArea(
            args.area_id,
            cells=args.cell,
            tracking_areas=args.tracking_area,
            ues=args.ue,
            ue_may_send=args.ue_may_send,
            allowed_as=args.allow_as,
        )
        result = await put_area(url, area, synchronous=storage.synchronous)
    elif command == "assign":
        result = await assign_ues(url, args.area_id, args.ues)
    elif command == "unassign":
        result = await unassign_ues(url, args.area_id, args.ues)
    else:
        result = await get_area(url, args.area_id)
    if result is None:
        print(f"msgin5g: no area {args.area_id}", file=sys.stderr)
        return 1
    print(json.dumps(area_json(result)))
    return 0
