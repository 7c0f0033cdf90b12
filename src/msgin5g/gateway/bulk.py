"""When and how big: the bulk trigger of a Gateway UE (digest §3.4.3 G4/G5, §3.5).

Pure logic, no I/O, no clock of its own (``now`` is passed in), so the rules are
unit-tested without sockets:

* a cached request must be in a bulk request by its ``send_by`` =
  arrival + ``min(waitTime, max_wait)`` - ``guard`` ("when the smallest waitTime is
  about to expire"); when the earliest ``send_by`` of a kind is reached, **every**
  cached request of that kind goes (fewer bulk requests, nobody waits longer);
* as soon as ``batch_size`` requests of a kind are cached (or their encoded size
  passes ``max_octets``), full batches go at once and the remainder keeps waiting;
* a batch never has more than ``batch_size`` entries nor more than
  ``max_octets`` encoded octets (the server's ``coap.max_payload`` applies to
  the whole CoAP payload, and CoAP over UDP has no fragmentation: a 1000-entry
  ``BULKREG`` is ~150 kB, beyond any UDP datagram). A single entry larger
  than the cap is sent alone.

URGENT requests never enter the batcher (they are forwarded individually, G2).
"""

import heapq
from dataclasses import dataclass, field
from typing import overload

import msgspec

from msgin5g.model.messages import Dereg, Reg

__all__ = ["Batch", "Batcher", "strip"]


@overload
def strip(request: Reg) -> Reg: ...
@overload
def strip(request: Dereg) -> Dereg: ...
@overload
def strip(request: Reg | Dereg) -> Reg | Dereg: ...


def strip(request: Reg | Dereg) -> Reg | Dereg:
    """The request as it goes into a bulk (G5): without the gateway-only members.

    ``registrationUrgentDegree``, ``waitTime`` and ``msgin5gServiceId`` concern the
    constrained UE ↔ gateway link only.
    """
    return msgspec.structs.replace(
        request,
        registration_urgent_degree=None,
        wait_time=None,
        msgin5g_service_id=None,
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """Keys of cached requests of one kind to send in one bulk request."""

    kind: str
    keys: list[str]


@dataclass(slots=True)
class _Entry:
    key: str
    size: int
    send_by: float


@dataclass(slots=True)
class Batcher:
    """Cached requests waiting for a bulk request, per kind (``REG``/``DEREG``).

    Args:
        batch_size: BULK_MAX_SIZE.
        max_octets: largest encoded bulk payload.
        overhead: octets of the bulk request without entries (header, the
            gateway's credential, counts).
    """

    batch_size: int
    max_octets: int
    overhead: int = 256
    _waiting: dict[str, dict[str, _Entry]] = field(default_factory=dict)

    def add(self, kind: str, key: str, size: int, send_by: float) -> None:
        """Add (or replace) a cached request; ``size`` = its encoded octets."""
        self._waiting.setdefault(kind, {})[key] = _Entry(key, size, send_by)

    def discard(self, kind: str, key: str) -> None:
        """Remove a request (answered, or replaced by an urgent one)."""
        self._waiting.get(kind, {}).pop(key, None)

    def __len__(self) -> int:
        return sum(len(entries) for entries in self._waiting.values())

    def next_deadline(self) -> float | None:
        """Earliest ``send_by`` of anything waiting, or None."""
        deadlines = [
            min(e.send_by for e in entries.values())
            for entries in self._waiting.values()
            if entries
        ]
        return min(deadlines) if deadlines else None

    def expected(self, kind: str, key: str) -> float | None:
        """When the request ``key`` will be sent (expectedRegistrationTime)."""
        entries = self._waiting.get(kind, {})
        if key not in entries:
            return None
        return min(e.send_by for e in entries.values())

    def due(self, now: float) -> list[Batch]:
        """Remove and return the batches to send now."""
        out: list[Batch] = []
        for kind, entries in self._waiting.items():
            if not entries:
                continue
            ordered = heapq.nsmallest(
                len(entries), entries.values(), key=lambda e: (e.send_by, e.key)
            )
            batches = self._pack(ordered)
            if ordered[0].send_by > now and len(batches[-1]) < self.batch_size:
                # nobody is due: only full batches go (every batch but the last
                # is full by count or size); the last one keeps waiting
                batches = batches[:-1]
            for batch in batches:
                for entry in batch:
                    del entries[entry.key]
                out.append(Batch(kind, [entry.key for entry in batch]))
        return out

    def _pack(self, ordered: list[_Entry]) -> list[list[_Entry]]:
        budget = self.max_octets - self.overhead
        batches: list[list[_Entry]] = [[]]
        used = 0
        for entry in ordered:
            current = batches[-1]
            if current and (
                len(current) >= self.batch_size or used + entry.size + 1 > budget
            ):
                batches.append([])
                current, used = batches[-1], 0
            current.append(entry)
            used += entry.size + 1
        return batches
