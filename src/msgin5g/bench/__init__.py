"""msgin5g.bench: load generators for a running MSGin5G server (``msgin5g bench``).

Device side, like :mod:`msgin5g.client`: it talks to a server over the wire
(CoAP through :mod:`msgin5g.coap`'s codec, HTTP/1.1 or h2c for the REST API)
and never imports the server stack; msgspec and uvloop are all it needs (``h2``
for ``--h2c``).

* :mod:`~msgin5g.bench.options`: :class:`BenchOptions`, :class:`BenchFailed`;
* :mod:`~msgin5g.bench.stats`: histogram, counts, summary (sans-I/O);
* :mod:`~msgin5g.bench.peer`: :class:`~msgin5g.bench.peer.RawUe`, a lean
  simulated UE on one UDP socket;
* :mod:`~msgin5g.bench.load`: the generator processes' work (``p2p``, ``reg``,
  ``fanout``);
* :mod:`~msgin5g.bench.http`, :mod:`~msgin5g.bench.a2p`: the REST side
  (``a2p``, AS registration, the bench group);
* :mod:`~msgin5g.bench.runner`: :func:`run`, the coordinator.

docs/performance.md ("msgin5g bench") says what each mode measures.
"""

from msgin5g.bench.options import MODES, BenchFailed, BenchOptions
from msgin5g.bench.runner import run
from msgin5g.bench.stats import Counts, Histogram, Summary, format_table, summarize

__all__ = [
    "MODES",
    "BenchFailed",
    "BenchOptions",
    "Counts",
    "Histogram",
    "Summary",
    "format_table",
    "run",
    "summarize",
]
