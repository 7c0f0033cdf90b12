"""Parsers of ``msgin5g ue import`` and ``msgin5g ue export`` (standard library only).

Built on every start of ``msgin5g``, so this module imports nothing beyond the
standard library, :mod:`.common` and :mod:`.progress`; what the commands run lives in
:mod:`msgin5g.cli.ue_bulk`, imported when one of them runs.
"""

import argparse
from typing import Any

from msgin5g.cli.common import add_storage
from msgin5g.cli.progress import add_progress_flag

__all__ = ["IMPORT_EXPORT", "add_import_export"]

IMPORT_EXPORT = frozenset({"import", "export"})
"""The ``ue`` actions of this module (dispatched to :mod:`msgin5g.cli.ue_bulk`)."""

_IMPORT_HELP = """\
Provision many UEs from FILE ('-' for stdin) in a stream of transactions.

CSV with a header row: ueServiceId,secret (the secret as given to the UE) or
ueServiceId,digest (SHA-256 of the UE's PSK_TOKEN as the server stores it, 64 hex
digits or base64, e.g. the output of 'msgin5g ue export'). JSON Lines with the
same keys, one object per line, also works (detected from the first line).

Each bad line (invalid ID, missing secret/digest, duplicate in the file, ID
already provisioned without --force) is reported on stderr as 'line N: reason'
and skipped; the good lines are imported. Exit status 1 if any line was bad.
"""


def add_import_export(ue_commands: Any) -> None:
    """Add ``ue import`` and ``ue export`` to the ``ue`` subparsers."""
    imp = ue_commands.add_parser(
        "import",
        help="provision many UEs from a CSV or JSON Lines file",
        description=_IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument(
        "file", metavar="FILE", help="CSV or JSON Lines file, '-' for stdin"
    )
    imp.add_argument(
        "--force",
        action="store_true",
        help="replace the credential of an ID that is already provisioned",
    )
    imp.add_argument(
        "--format",
        choices=["csv", "jsonl"],
        help="input format (default: detected from the first line)",
    )
    add_progress_flag(imp)
    add_storage(imp)
    exp = ue_commands.add_parser(
        "export",
        help="write every provisioned UE as ueServiceId,digest",
        description="Write every provisioned UE Service ID with the digest of its "
        "PSK_TOKEN (hex), never a secret (the server has none). The output is "
        "accepted by 'msgin5g ue import'.",
    )
    exp.add_argument(
        "file",
        metavar="FILE",
        nargs="?",
        default="-",
        help="output file (default stdout)",
    )
    exp.add_argument(
        "--format", choices=["csv", "jsonl"], default="csv", help="output format"
    )
    add_storage(exp)
