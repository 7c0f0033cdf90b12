"""``msgin5g cluster status``: the nodes of a cluster and what each holds.

Reads the heartbeats the nodes write to the ``<prefix>_nodes`` bucket of their
NATS JetStream storage (docs/cluster.md), without opening the storage for
writing: one connection, one read, closed again.
"""

import argparse
import json
import time
from typing import Any

from msgin5g.cli.common import add_storage, server_config

__all__ = ["add_cluster_parser", "run_cluster"]

_DESCRIPTION = """\
Show the nodes of a msgin5g cluster on NATS JetStream: each node's ID, whether
its lease is alive, the UEs registered at it, the stored items it is
responsible for, its CoAP and HTTP addresses, and the total stored in the
stream. Reads the storage given by --storage / --config (a nats:// URL).
"""

_EXAMPLE = """\
example:
  msgin5g cluster status --storage nats://127.0.0.1:4222
  msgin5g cluster status --config node1.toml --json
"""


def add_cluster_parser(commands: Any) -> None:
    """Add the ``cluster`` sub-command to the top-level sub-parsers."""
    cluster = commands.add_parser(
        "cluster",
        help="the nodes of a cluster on NATS JetStream (docs/cluster.md)",
        description=_DESCRIPTION,
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = cluster.add_subparsers(
        dest="cluster_command", required=True, metavar="ACTION"
    )
    status = sub.add_parser(
        "status",
        help="nodes, their UE counts and queue depths",
        description=_DESCRIPTION,
        epilog=_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_storage(status)
    status.add_argument("--json", action="store_true", help="one JSON document")


async def run_cluster(args: argparse.Namespace) -> int:
    """Print the cluster's nodes; exit 1 if a node's lease ran out."""
    from msgin5g.errors import ConfigError

    config = server_config(args)
    if not config.storage.url.startswith(("nats://", "tls://")):
        raise ConfigError(
            f"cluster status needs a nats:// storage URL, not {config.storage.url!r}"
            " (give --storage nats://HOST:4222)"
        )
    from msgin5g.storage.nats.cluster import cluster_status

    nodes, stored = await cluster_status(config.storage.url)
    now = time.time()
    rows = [
        {
            "node": n.node,
            "alive": now - n.heartbeat < n.lease,
            "lastHeartbeat": round(now - n.heartbeat, 1),
            "registeredUes": n.registered_ues,
            "storedItems": n.stored_items,
            "coap": n.coap,
            "http": n.http,
            "host": n.host,
            "pid": n.pid,
        }
        for n in nodes
    ]
    if args.json:
        print(json.dumps({"nodes": rows, "storedInStream": stored}, indent=2))
    else:
        _print_table(rows, stored)
    return 0 if all(row["alive"] for row in rows) else 1


def _print_table(rows: list[dict[str, Any]], stored: int) -> None:
    if not rows:
        print(
            "no node has joined this cluster (is a server running with "
            "--set cluster.node_id=ID on this storage?)"
        )
    header = ("NODE", "STATE", "HEARTBEAT", "UES", "STORED", "COAP", "HTTP")
    table = [
        (
            r["node"],
            "alive" if r["alive"] else "DEAD",
            f"{r['lastHeartbeat']:.1f}s ago",
            str(r["registeredUes"]),
            str(r["storedItems"]),
            r["coap"] or "-",
            r["http"] or "-",
        )
        for r in rows
    ]
    widths = [
        max(len(str(c)) for c in col) for col in zip(header, *table, strict=False)
    ]
    for line in (header, *table):
        print(
            "  ".join(
                str(c).ljust(w) for c, w in zip(line, widths, strict=True)
            ).rstrip()
        )
    print(f"stored in the stream: {stored} items (all nodes)")
