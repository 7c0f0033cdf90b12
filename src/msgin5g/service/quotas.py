"""Storage quotas and the per-originator submission rate (``[limits]``).

Issue 10 item 10: one UE stored 260k messages (1.17 GB) for an offline UE in
53 s, and when the disk filled every UE's writes failed. The limits here keep
one sender, or one mailbox, from taking the server's storage:

* ``stored_per_recipient`` / ``stored_bytes_per_recipient``: what may wait for
  one recipient key (UE Service ID or ``as/<AS Service ID>``);
* ``stored_bytes_total``: what may wait for all recipients together;
* ``submit_rate`` / ``submit_burst``: a token bucket per originator.

Beyond a limit the message is refused with ``failureCause =
SERVER_CONGESTION`` (digest §5.2 "temporary overload"): the whole message for
the rate and for a point-to-point recipient, the member alone in a fan-out.
Reports (``IMDN``) are never refused but count towards the usage.

Usage is counted in memory so a check costs a dict lookup: loaded from
storage at start (:meth:`Quotas.load`, ``stored_usage``), then kept up to date
by the delivery engine on every store and removal. Sizes come from
:func:`msgin5g.storage.base.stored_size` (payload + 256 octets per item), the
function the backend uses for ``stored_usage`` too. A fan-out copy counts its
full size for its member and for the total, although the payload is stored
once: the total is an upper bound of what is on disk.
"""

import logging

from msgin5g.config import LimitsConfig
from msgin5g.model.application import AS_KEY_PREFIX
from msgin5g.storage.base import Backend

__all__ = ["Quotas"]

log = logging.getLogger(__name__)

_PRUNE_MIN = 10_000
"""Buckets kept before idle (full) ones are pruned."""


class Quotas:
    """Per-recipient and total stored usage, and per-originator token buckets."""

    def __init__(self, limits: LimitsConfig | None = None) -> None:
        self.limits = limits or LimitsConfig()
        self._usage: dict[str, list[int]] = {}
        self.total_bytes = 0
        self._buckets: dict[str, list[float]] = {}
        self._prune_at = _PRUNE_MIN
        self.refused_storage = 0
        self.refused_rate = 0

    async def load(self, backend: Backend) -> None:
        """Replace the counters with what ``backend`` holds (at start-up)."""
        usage = await backend.stored_usage()
        self._usage = {r: [count, size] for r, (count, size) in usage.items()}
        self.total_bytes = sum(size for _, size in usage.values())
        log.info(
            "stored usage: %d items for %d recipients, %d octets",
            sum(count for count, _ in usage.values()),
            len(usage),
            self.total_bytes,
        )

    def total_items(self) -> int:
        """Stored items of every recipient (O(recipients); for metrics)."""
        return sum(entry[0] for entry in self._usage.values())

    def usage(self, recipient: str) -> tuple[int, int]:
        """(stored items, octets) of ``recipient``."""
        entry = self._usage.get(recipient)
        return (0, 0) if entry is None else (entry[0], entry[1])

    # storage ------------------------------------------------------------------------

    def storage_full(self, recipient: str, size: int, planned: int = 0) -> bool:
        """Whether storing ``size`` more octets for ``recipient`` exceeds a limit.

        ``planned`` octets are about to be stored for others in the same write
        (a fan-out) and count towards the total.
        """
        limits = self.limits
        total = limits.stored_bytes_total
        if total and self.total_bytes + planned + size > total:
            self._refused(recipient, "stored_bytes_total")
            return True
        entry = self._usage.get(recipient)
        if entry is None:
            return False
        if limits.stored_per_recipient and entry[0] >= limits.stored_per_recipient:
            self._refused(recipient, "stored_per_recipient")
            return True
        per = limits.stored_bytes_per_recipient
        if per and entry[1] + size > per:
            self._refused(recipient, "stored_bytes_per_recipient")
            return True
        return False

    def _refused(self, recipient: str, limit: str) -> None:
        self.refused_storage += 1
        if self.refused_storage & (self.refused_storage - 1) == 0:  # 1, 2, 4, ...
            log.warning(
                "storage limit %s reached for %s: message refused "
                "(SERVER_CONGESTION; %d refusals so far)",
                limit,
                recipient,
                self.refused_storage,
            )

    def added(self, recipient: str, size: int) -> None:
        """An item of ``size`` octets was stored for ``recipient``."""
        entry = self._usage.get(recipient)
        if entry is None:
            self._usage[recipient] = [1, size]
        else:
            entry[0] += 1
            entry[1] += size
        self.total_bytes += size

    def removed(self, recipient: str, size: int) -> None:
        """An item of ``size`` octets of ``recipient`` left storage."""
        entry = self._usage.get(recipient)
        if entry is None:
            return
        entry[0] -= 1
        entry[1] -= size
        self.total_bytes = max(0, self.total_bytes - size)
        if entry[0] <= 0:
            del self._usage[recipient]

    # submission rate ------------------------------------------------------------------

    def take_token(self, originator: str, now: float) -> bool:
        """Whether ``originator`` may submit one more message now.

        Application Servers (keys ``as/<id>``) are not limited here: the REST
        transport limits each API client (``rest.rate_limit``).
        """
        rate = self.limits.submit_rate
        if rate <= 0 or originator.startswith(AS_KEY_PREFIX):
            return True
        burst = float(self.limits.submit_burst)
        bucket = self._buckets.get(originator)
        if bucket is None:
            if len(self._buckets) >= self._prune_at:
                self._prune(now, rate, burst)
            self._buckets[originator] = [burst - 1.0, now]
            return True
        tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            self.refused_rate += 1
            if self.refused_rate & (self.refused_rate - 1) == 0:
                log.warning(
                    "%s exceeds limits.submit_rate (%g/s): message refused "
                    "(SERVER_CONGESTION; %d refusals so far)",
                    originator,
                    rate,
                    self.refused_rate,
                )
            return False
        bucket[0] = tokens - 1.0
        return True

    def _prune(self, now: float, rate: float, burst: float) -> None:
        """Forget buckets that are full again (their originators are idle)."""
        self._buckets = {
            key: bucket
            for key, bucket in self._buckets.items()
            if bucket[0] + (now - bucket[1]) * rate < burst
        }
        self._prune_at = max(_PRUNE_MIN, 2 * len(self._buckets))
