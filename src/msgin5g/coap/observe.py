"""Sans-I/O server-side state for CoAP Observe (RFC 7641).

What: the little state the *engine* needs to act as an RFC 7641 server; which
resources are observed by whom, and until when, belongs to the application.
:class:`ObserverTable` keeps the last Observe sequence number sent per
observation, keyed on ``(peer, token)`` (RFC 7641 §3.2, §4.4). Matching an RST
or a missing ACK to a notification is message-layer work
(:meth:`msgin5g.coap.exchange.MessageLayer.send_notification`).

It never touches a socket or the event loop and reads time from an injected
wall clock, so tests drive it with a fake clock.

RFC clauses:
    * §3.4 / §4.4: sequence numbers are 24-bit and "fresh" when
      ``0 < (new - old) mod 2**24 < 2**23`` or when more than 128 s passed.

Design choice, sequence numbers (§4.4 leaves the source open): a value is
derived from the **wall clock** at 2**15 ticks per second, taken modulo
2**24, and forced to be larger (in the RFC's modular sense) than the value last
sent on the same observation (``previous + 1`` when the clock has not moved
on). So

* values increase per observation as the RFC requires;
* within the 128 s window a client compares numbers in, the clock adds at most
  2**22 to them, half the 2**23 the comparison tolerates;
* after a server restart (where every in-memory value is lost) the first
  notification is numbered from the clock again and is therefore newer than
  anything sent before the restart, unless the old process had sent more than
  32,768 notifications per second *on one observation* and restarts within the
  lead it built up (then the client may drop notifications for at most 128 s),
  or the wall clock was set back.

Nothing is persisted per notification; that is the point of the choice.
"""

from __future__ import annotations

from collections.abc import Callable

from msgin5g.coap.address import Peer
from msgin5g.coap.message import encode_uint
from msgin5g.coap.numbers import OptionNumber

__all__ = [
    "SEQUENCE_MODULUS",
    "TICKS_PER_SECOND",
    "ObserverTable",
    "is_newer",
    "next_sequence",
    "sequence_at",
]

SEQUENCE_MODULUS = 1 << 24
"""Observe values are 24-bit (RFC 7641 §3.2)."""

TICKS_PER_SECOND = 1 << 15
"""Clock ticks per second that drive the sequence numbers (see module docstring)."""

_MASK = SEQUENCE_MODULUS - 1
_OBSERVE = int(OptionNumber.OBSERVE)
_CONTENT_FORMAT = int(OptionNumber.CONTENT_FORMAT)
_HALF = 1 << 23


def sequence_at(wall: float) -> int:
    """The clock-derived sequence number at epoch time ``wall``."""
    return int(wall * TICKS_PER_SECOND) & _MASK


def is_newer(old: int, new: int) -> bool:
    """RFC 7641 §3.4 number test: is ``new`` fresher than ``old``?"""
    return (old < new and new - old < _HALF) or (old > new and old - new > _HALF)


def next_sequence(previous: int | None, wall: float) -> int:
    """The sequence number to send now on an observation.

    Args:
        previous: the value last sent on this observation, or None (first
            notification, or first one after a restart).
        wall: current epoch time in seconds.

    Returns:
        the clock-derived value, or ``previous + 1`` (mod 2**24) when the clock
        value would not be newer than ``previous``.
    """
    candidate = sequence_at(wall)
    if previous is None or is_newer(previous, candidate):
        return candidate
    return (previous + 1) & _MASK


class ObserverTable:
    """The last Observe sequence number sent per observation ``(peer, token)``.

    Entries are created by :meth:`next` (registration response or first
    notification, also the first one after a restart) and removed by
    :meth:`forget` (deregistration, RST, unacknowledged CON, final
    notification). An entry is one small int in a dict.

    Args:
        wall_clock: epoch seconds (e.g. ``time.time``).
    """

    __slots__ = ("_clock", "_seq")

    def __init__(self, wall_clock: Callable[[], float]) -> None:
        self._clock = wall_clock
        self._seq: dict[tuple[Peer, bytes], int] = {}

    def __len__(self) -> int:
        """Number of observations with a sequence state."""
        return len(self._seq)

    def __contains__(self, key: object) -> bool:
        return key in self._seq

    def next(self, peer: Peer, token: bytes) -> int:
        """Allocate the next sequence number of the observation (creating it)."""
        key = (peer, token)
        seq = next_sequence(self._seq.get(key), self._clock())
        self._seq[key] = seq
        return seq

    def last(self, peer: Peer, token: bytes) -> int | None:
        """The value last allocated for the observation, or None."""
        return self._seq.get((peer, token))

    def forget(self, peer: Peer, token: bytes) -> bool:
        """Drop the observation's state; True if it existed."""
        return self._seq.pop((peer, token), None) is not None

    def notification_options(
        self,
        peer: Peer,
        token: bytes,
        *,
        final: bool,
        content_format: int | None,
        options: list[tuple[int, bytes]] | None = None,
    ) -> tuple[int | None, list[tuple[int, bytes]]]:
        """The options of the next notification of ``(peer, token)`` (RFC 7641 §4.2).

        ``options``, then Observe with the next sequence number (none for a
        ``final`` notification, which also forgets the observation, §3.2), then
        Content-Format when given.

        Returns:
            the sequence number (None when ``final``) and the options.
        """
        opts = list(options) if options else []
        seq: int | None = None
        if final:
            self.forget(peer, token)
        else:
            seq = self.next(peer, token)
            opts.append((_OBSERVE, encode_uint(seq)))
        if content_format is not None:
            opts.append((_CONTENT_FORMAT, encode_uint(content_format)))
        return seq, opts
