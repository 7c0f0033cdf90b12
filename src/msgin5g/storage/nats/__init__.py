"""NATS JetStream storage backend (``nats://`` storage URLs), for clusters.

Imported only when a ``nats://`` URL is chosen (:func:`msgin5g.storage.open_backend`),
so ``nats-py`` is an optional dependency (extra ``nats``).

Modules: :mod:`~msgin5g.storage.nats.backend` (lifecycle, schema),
:mod:`~msgin5g.storage.nats.queue` (stored messages on one stream),
:mod:`~msgin5g.storage.nats.index` (their in-memory index and stream I/O),
:mod:`~msgin5g.storage.nats.kv` (KV buckets), :mod:`~msgin5g.storage.nats.codec`
(names, headers, bodies), :mod:`~msgin5g.storage.nats.driver` (URL, connection,
error mapping), :mod:`~msgin5g.storage.nats.handoff` (moving index entries between
cluster nodes) and :mod:`~msgin5g.storage.nats.cluster` (a node: lease, watches,
hand-off requests).
"""

from msgin5g.storage.nats.backend import NatsBackend
from msgin5g.storage.nats.cluster import NatsCluster, NodeInfo, read_nodes
from msgin5g.storage.nats.driver import NatsOptions, map_driver_errors, parse_url

__all__ = [
    "NatsBackend",
    "NatsCluster",
    "NatsOptions",
    "NodeInfo",
    "map_driver_errors",
    "parse_url",
    "read_nodes",
]
