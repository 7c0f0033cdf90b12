"""Sans-I/O CoAP message layer (RFC 7252 §4 and the matching rules of §5.3).

What: everything between the codec and the application that involves state:
duplicate detection, CON retransmission with exponential back-off, NSTART,
Message ID and token allocation, matching of piggybacked and separate
responses, RST handling. :class:`MessageLayer` never touches a socket or the
event loop: it is fed datagrams (:meth:`MessageLayer.receive`) and application
calls, reads time from an injected ``clock`` and returns *actions*
(:class:`Send`, :class:`Dispatch`, :class:`Complete`, :class:`Fail`) for the
I/O shell (:mod:`msgin5g.coap.endpoint`) to carry out. Tests drive it with a
fake clock and never sleep.

RFC clauses:
    * §4.2: CON retransmission, initial timeout uniform in
      ``[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]``, doubled after each of
      MAX_RETRANSMIT retransmissions; give up when the last timeout expires.
      A malformed CON and an Empty CON (ping) are answered with RST.
    * §4.3: NON messages are sent once; a malformed NON is dropped.
    * §4.4: Message IDs are allocated sequentially from a random start,
      skipping IDs of exchanges still outstanding with the same peer.
    * §4.5: duplicate detection keyed on (peer, Message ID); a duplicate CON
      gets the cached reply again (piggybacked response or empty ACK); a
      duplicate NON is silently ignored.
    * §4.7: NSTART outstanding CON requests per peer; further requests wait in
      a per-peer FIFO.
    * §5.2.1/§5.2.2: piggybacked and separate responses; empty ACK.
    * §5.3.2: responses matched by (peer, token); a piggybacked response must
      also match the Message ID; an unmatched CON response is rejected (RST).
    * §5.4.1: a request with an unrecognised critical option gets 4.02 (CON)
      or is dropped (NON); a response carrying one is rejected.

Design choices:
    * Duplicate cache: two generations of plain dicts, ``current`` and
      ``previous``; every EXCHANGE_LIFETIME ``previous`` is dropped and
      ``current`` becomes ``previous``, so an entry lives between one and two
      lifetimes, with no per-entry timer and O(1) bulk expiry. Values are the
      encoded reply (``bytes``) or a small ``int`` state; no message objects
      are kept. When ``current`` holds more than half of ``max_dedup_entries``
      the rotation happens early (memory bound wins over the lifetime).
      The cache is also bounded by bytes (``max_dedup_bytes``, 32 MiB by
      default: encoded replies plus ~160 B per entry), with the same early
      rotation; the figure is what the cache can cost in RSS, whatever the load.
      NON entries live in the same cache, i.e. for EXCHANGE_LIFETIME rather
      than NON_LIFETIME; that is allowed because §4.4 forbids re-using *any*
      Message ID with the same endpoint within EXCHANGE_LIFETIME.
    * Timers: one heap of ``(deadline, seq, exchange)`` with lazy deletion (a
      popped entry whose ``seq`` is no longer the exchange's current one is
      stale). The heap is rebuilt when stale entries dominate it.
    * Client state: one slotted :class:`_Exchange` per outstanding request,
      indexed by (peer, mid), (peer, token) and ``id(handle)``.
    * Separate responses that *we* send as CON are retransmitted like requests
      (handle None); their failure is dropped silently. They do not count
      towards NSTART.
    * Observe notifications (RFC 7641 §4.2, :meth:`MessageLayer.send_notification`)
      are non-request exchanges *with* a handle: a CON one ends in
      :class:`Complete` (ACK), or :class:`Fail` with ``RemoteReset`` (RST) or
      ``RequestTimeout`` (no ACK); a NON one is sent once, and its (peer,
      Message ID) -> token is remembered for NON_LIFETIME in a second
      two-generation cache so that an RST answering it is reported as
      :class:`Rejected` (RFC 7641 §3.6). Like separate responses, notifications
      do not count towards NSTART. The request path pays nothing for this.
    * Everything is bounded: the cache by ``max_dedup_entries`` and
      ``max_dedup_bytes``, outstanding
      and queued requests together by ``max_pending``.
    * Handles must be unique among outstanding requests (they are indexed by
      ``id()``, so they need not be hashable).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Callable, Hashable
from heapq import heapify, heappop, heappush

from msgin5g.coap.message import CoapDecodeError, CoapMessage
from msgin5g.coap.numbers import KNOWN_OPTIONS, Code, TransmissionParameters
from msgin5g.coap.numbers import Type as _T
from msgin5g.errors import RemoteReset, RequestTimeout

__all__ = [
    "DEFAULT_DEDUP_BYTES",
    "Action",
    "Complete",
    "Dispatch",
    "Fail",
    "MessageLayer",
    "Peer",
    "Rejected",
    "Send",
]

log = logging.getLogger(__name__)

Peer = Hashable
"""A transport address; opaque to this layer (asyncio gives (host, port, ...))."""

DEFAULT_DEDUP_BYTES = 32 * 1024 * 1024
"""Default byte bound of the duplicate-detection cache (32 MiB)."""

_CON = int(_T.CON)
_NON = int(_T.NON)
_ACK = int(_T.ACK)
_RST = int(_T.RST)
_BAD_OPTION = int(Code.BAD_OPTION)

# Exchange states (client side).
_QUEUED = 0
_WAIT_ACK = 1
_WAIT_RESPONSE = 2
_DONE = 3

# Duplicate-cache states for a request we received (bytes = final reply to replay).
_PROCESSING = 0
_SEPARATE = 1
_SEPARATE_DONE = 2
_NON_DONE = 3
_ANSWERED = 4  # answered, reply not kept (byte bound): duplicates are ignored


def _empty(mtype: int, mid: int) -> bytes:
    """Encode an Empty message (ACK or RST) with Message ID ``mid``."""
    return bytes((0x40 | mtype << 4, 0, mid >> 8, mid & 0xFF))


def _unknown_critical(options: list[tuple[int, bytes]]) -> int | None:
    """Return the first unrecognised critical option number, or None."""
    for number, _ in options:
        if number & 1 and number not in KNOWN_OPTIONS:
            return number
    return None


class Send:
    """Action: transmit ``data`` to ``peer``."""

    __slots__ = ("data", "peer")

    def __init__(self, data: bytes, peer: Peer) -> None:
        self.data = data
        self.peer = peer

    def __repr__(self) -> str:
        return f"Send({self.data!r}, {self.peer!r})"


class Dispatch:
    """Action: a new request for the application; answer with ``respond``."""

    __slots__ = ("peer", "request")

    def __init__(self, request: CoapMessage, peer: Peer) -> None:
        self.request = request
        self.peer = peer

    def __repr__(self) -> str:
        return f"Dispatch({self.request!r}, {self.peer!r})"


class Complete:
    """Action: the response to the request sent with ``handle`` arrived."""

    __slots__ = ("handle", "response")

    def __init__(self, handle: object, response: CoapMessage) -> None:
        self.handle = handle
        self.response = response

    def __repr__(self) -> str:
        return f"Complete({self.handle!r}, {self.response!r})"


class Fail:
    """Action: the request sent with ``handle`` failed with ``error``."""

    __slots__ = ("error", "handle")

    def __init__(self, handle: object, error: Exception) -> None:
        self.handle = handle
        self.error = error

    def __repr__(self) -> str:
        return f"Fail({self.handle!r}, {self.error!r})"


class Rejected:
    """Action: ``peer`` answered the NON notification ``mid`` (``token``) with RST."""

    __slots__ = ("mid", "peer", "token")

    def __init__(self, peer: Peer, mid: int, token: bytes) -> None:
        self.peer = peer
        self.mid = mid
        self.token = token

    def __repr__(self) -> str:
        return f"Rejected({self.peer!r}, {self.mid}, {self.token!r})"


Action = Send | Dispatch | Complete | Fail | Rejected
"""What :class:`MessageLayer` asks the I/O shell to do."""


class _Exchange:
    """One message we sent and still track (a request, or a separate CON response)."""

    __slots__ = (
        "con",
        "data",
        "explicit_mid",
        "handle",
        "is_request",
        "mid",
        "peer",
        "retries",
        "seq",
        "state",
        "timeout",
        "token",
    )

    def __init__(
        self,
        handle: object,
        peer: Peer,
        con: bool,
        token: bytes,
        *,
        mid: int | None,
        data: bytes,
        is_request: bool,
    ) -> None:
        self.handle = handle
        self.peer = peer
        self.con = con
        self.token = token
        self.mid = mid if mid is not None else 0
        self.explicit_mid = mid is not None
        self.data = data
        self.is_request = is_request
        self.state = _QUEUED
        self.retries = 0
        self.timeout = 0.0
        self.seq = -1


_ENTRY_OVERHEAD = 160
"""Bytes charged per duplicate-cache entry besides the encoded reply: the dict
slot, the (peer, Message ID) key tuple and its share of the peer tuple
(measured ~155 B on CPython 3.11)."""


class _DedupCache:
    """Two generations of dicts keyed on (peer, mid); see the module docstring.

    Bounded three ways: by time (two lifetimes at most), by entries
    (``max_entries``) and by bytes (``max_bytes``: the encoded replies plus
    :data:`_ENTRY_OVERHEAD` per entry). ``current`` is swapped out when it
    holds half of either bound (checked when an entry is added or a reply
    stored, so the bound holds to within one entry per generation). A reply
    that would grow ``previous`` beyond half the byte bound (it answers a
    request that was in flight at the swap) is sent but not kept: its
    duplicates are ignored, like those of a request still being processed, and
    the client's retransmission times out.
    """

    __slots__ = (
        "current",
        "half",
        "half_bytes",
        "lifetime",
        "nbytes",
        "prev_bytes",
        "previous",
        "rotate_at",
    )

    def __init__(
        self,
        lifetime: float,
        max_entries: int,
        now: float,
        max_bytes: int | None = None,
    ) -> None:
        self.current: dict[tuple[Peer, int], bytes | int] = {}
        self.previous: dict[tuple[Peer, int], bytes | int] = {}
        self.lifetime = lifetime
        self.half = max(1, max_entries // 2)
        self.half_bytes = (
            max(_ENTRY_OVERHEAD, max_bytes // 2) if max_bytes else float("inf")
        )
        self.nbytes = 0
        self.prev_bytes = 0
        self.rotate_at = now + lifetime

    def get(self, key: tuple[Peer, int]) -> bytes | int | None:
        value = self.current.get(key)
        if value is None:
            value = self.previous.get(key)
        return value

    def expire(self, now: float) -> None:
        if now >= self.rotate_at:
            if now >= self.rotate_at + self.lifetime:
                self.previous = {}
                self.prev_bytes = 0
            else:
                self.previous = self.current
                self.prev_bytes = self.nbytes
            self.current = {}
            self.nbytes = 0
            self.rotate_at = now + self.lifetime

    def _swap(self) -> None:
        self.previous = self.current
        self.prev_bytes = self.nbytes
        self.current = {}
        self.nbytes = 0

    def put(self, key: tuple[Peer, int], value: bytes | int) -> None:
        if len(self.current) >= self.half or self.nbytes >= self.half_bytes:
            self._swap()
        self.current[key] = value
        self.nbytes += (
            _ENTRY_OVERHEAD + len(value)
            if isinstance(value, bytes)
            else _ENTRY_OVERHEAD
        )

    def pop(self, key: tuple[Peer, int]) -> bytes | int | None:
        value = self.current.pop(key, None)
        if value is None:
            value = self.previous.pop(key, None)
        return value

    def update(self, key: tuple[Peer, int], value: bytes | int) -> None:
        size = len(value) if isinstance(value, bytes) else 0
        if key in self.current:
            if not size or self.nbytes + size <= self.half_bytes:
                self.current[key] = value
                self.nbytes += size
                return
            self._swap()  # the entry is now in ``previous``
        if key in self.previous:
            if size and self.prev_bytes + size > self.half_bytes:
                value = _ANSWERED
            else:
                self.prev_bytes += size
            self.previous[key] = value
        else:
            self.put(key, value)

    def __len__(self) -> int:
        return len(self.current) + len(self.previous)

    @property
    def bytes(self) -> int:
        """The bytes charged to both generations."""
        return self.nbytes + self.prev_bytes


class MessageLayer:
    """The RFC 7252 message layer as a state machine that returns actions.

    Args:
        clock: monotonic time in seconds (e.g. ``loop.time``).
        params: transmission parameters (RFC 7252 §4.8).
        rng: source of randomness for tokens, the first Message ID and the
            initial retransmission timeout.
        max_dedup_entries: bound on the duplicate-detection cache (entries).
        max_dedup_bytes: bound on the duplicate-detection cache (bytes of the
            encoded replies plus a fixed per-entry charge); None: no byte bound.
        max_pending: bound on outstanding plus queued requests.
        separate_response_timeout: how long to wait for a separate response
            after an empty ACK (default EXCHANGE_LIFETIME).
        non_response_timeout: how long to wait for the response to a NON
            request (default MAX_TRANSMIT_WAIT).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        params: TransmissionParameters = TransmissionParameters(),  # noqa: B008
        rng: random.Random | None = None,
        max_dedup_entries: int = 1_000_000,
        max_dedup_bytes: int | None = DEFAULT_DEDUP_BYTES,
        max_pending: int = 65_536,
        separate_response_timeout: float | None = None,
        non_response_timeout: float | None = None,
    ) -> None:
        self._clock = clock
        self._params = params
        self._rng = rng if rng is not None else random.Random()
        self._max_pending = max_pending
        self._separate_timeout = (
            separate_response_timeout
            if separate_response_timeout is not None
            else params.exchange_lifetime
        )
        self._non_timeout = (
            non_response_timeout
            if non_response_timeout is not None
            else params.max_transmit_wait
        )
        self._ack_timeout = params.ack_timeout
        self._ack_timeout_max = params.ack_timeout * params.ack_random_factor
        self._max_retransmit = params.max_retransmit
        self._nstart = params.nstart
        self._cache = _DedupCache(
            params.exchange_lifetime, max_dedup_entries, clock(), max_dedup_bytes
        )
        # NON notifications sent: (peer, mid) -> token, to recognise their RST
        self._non_sent = _DedupCache(
            params.non_lifetime,
            max(2, max_dedup_entries // 4),
            clock(),
            max_dedup_bytes // 4 if max_dedup_bytes else None,
        )
        self._next_mid = self._rng.getrandbits(16)
        self._by_mid: dict[tuple[Peer, int], _Exchange] = {}
        self._by_token: dict[tuple[Peer, bytes], _Exchange] = {}
        self._by_handle: dict[int, _Exchange] = {}
        self._active: dict[Peer, int] = {}
        self._queues: dict[Peer, deque[_Exchange]] = {}
        self._heap: list[tuple[float, int, _Exchange]] = []
        self._seq = itertools.count()
        self._outbox: list[Action] = []
        self._received = 0
        self._sent = 0
        self._retransmissions = 0
        self._duplicates = 0
        self._resets_sent = 0
        self._timeouts = 0
        self._malformed = 0

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, int]:
        """Return the counters and current sizes.

        Returns:
            received, sent, retransmissions, duplicates, resets_sent, timeouts,
            malformed, dedup_entries, dedup_bytes (charged to the duplicate
            cache), non_sent_entries, pending (outstanding + queued requests).
        """
        return {
            "received": self._received,
            "sent": self._sent,
            "retransmissions": self._retransmissions,
            "duplicates": self._duplicates,
            "resets_sent": self._resets_sent,
            "timeouts": self._timeouts,
            "malformed": self._malformed,
            "dedup_entries": len(self._cache),
            "dedup_bytes": self._cache.bytes,
            "non_sent_entries": len(self._non_sent),
            "pending": len(self._by_handle),
        }

    # ---------------------------------------------------------------- receive

    def receive(self, data: bytes, peer: Peer) -> list[Action]:
        """Process one datagram from ``peer``.

        Args:
            data: the datagram.
            peer: its source address.

        Returns:
            the actions to carry out (never raises on peer input).
        """
        self._received += 1
        try:
            msg = CoapMessage.decode(data)
        except CoapDecodeError as exc:
            self._malformed += 1
            header = exc.header
            if log.isEnabledFor(logging.DEBUG):
                log.debug("malformed datagram from %r: %s", peer, exc.detail)
            if header is not None and header[0] == _CON:
                return [self._rst(header[2], peer)]
            return []
        mtype = msg.mtype
        code = msg.code
        if mtype == _ACK:
            return self._on_ack(msg, peer)
        if mtype == _RST:
            return self._on_rst(msg, peer)
        if code == 0:
            # Empty CON is a ping (answer RST); Empty NON is meaningless.
            return [self._rst(msg.mid, peer)] if mtype == _CON else []
        if code < 32:
            return self._on_request(msg, peer)
        return self._on_response(msg, peer)

    def _rst(self, mid: int, peer: Peer) -> Send:
        self._resets_sent += 1
        self._sent += 1
        return Send(_empty(_RST, mid), peer)

    def _on_request(self, msg: CoapMessage, peer: Peer) -> list[Action]:
        cache = self._cache
        cache.expire(self._clock())
        key = (peer, msg.mid)
        state = cache.get(key)
        con = msg.mtype == _CON
        if state is not None:
            self._duplicates += 1
            if not con:
                return []
            if isinstance(state, bytes):
                self._sent += 1
                return [Send(state, peer)]
            if state in (_SEPARATE, _SEPARATE_DONE):
                self._sent += 1
                return [Send(_empty(_ACK, msg.mid), peer)]
            return []  # still being processed
        bad = _unknown_critical(msg.options)
        if bad is not None:
            log.warning(
                "request from %r with unrecognised critical option %d", peer, bad
            )
            if not con:
                return []
            reply = CoapMessage(_ACK, _BAD_OPTION, msg.mid, msg.token).encode()
            cache.put(key, reply)
            self._sent += 1
            return [Send(reply, peer)]
        cache.put(key, _PROCESSING)
        return [Dispatch(msg, peer)]

    def _on_ack(self, msg: CoapMessage, peer: Peer) -> list[Action]:
        ex = self._by_mid.get((peer, msg.mid))
        if ex is None or ex.state != _WAIT_ACK:
            return []
        actions: list[Action] = []
        code = msg.code
        if not ex.is_request:
            # our separate response or notification was acknowledged
            if ex.handle is not None:
                actions.append(Complete(ex.handle, msg))
            self._finish(ex, actions)
            return actions
        if code == 0:
            # Empty ACK: stop retransmitting, wait for the separate response.
            del self._by_mid[(peer, ex.mid)]
            ex.state = _WAIT_RESPONSE
            self._schedule(ex, self._clock() + self._separate_timeout)
            self._release(peer, actions)
            return actions
        if not 64 <= code <= 191:
            return []
        if msg.token != ex.token:
            return []
        bad = _unknown_critical(msg.options)
        if bad is not None:
            log.warning(
                "response from %r with unrecognised critical option %d", peer, bad
            )
            return []
        actions.append(Complete(ex.handle, msg))
        self._finish(ex, actions)
        return actions

    def _on_rst(self, msg: CoapMessage, peer: Peer) -> list[Action]:
        if msg.code != 0:
            return []
        ex = self._by_mid.get((peer, msg.mid))
        if ex is None:
            non_sent = self._non_sent
            if non_sent.current or non_sent.previous:
                non_sent.expire(self._clock())
                token = non_sent.pop((peer, msg.mid))
                if isinstance(token, bytes):
                    return [Rejected(peer, msg.mid, token)]
            return []
        actions: list[Action] = []
        if ex.is_request or ex.handle is not None:
            actions.append(Fail(ex.handle, RemoteReset(f"{peer!r} reset the request")))
        self._finish(ex, actions)
        return actions

    def _on_response(self, msg: CoapMessage, peer: Peer) -> list[Action]:
        con = msg.mtype == _CON
        key = (peer, msg.mid)
        cache = self._cache
        if con:
            cache.expire(self._clock())
            state = cache.get(key)
            if state is not None:
                self._duplicates += 1
                if isinstance(state, bytes):
                    self._sent += 1
                    return [Send(state, peer)]
                return []
        ex = self._by_token.get((peer, msg.token))
        if ex is None or ex.state in (_QUEUED, _DONE):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("unmatched response from %r", peer)
            return [self._rst(msg.mid, peer)] if con else []
        bad = _unknown_critical(msg.options)
        if bad is not None:
            log.warning(
                "response from %r with unrecognised critical option %d", peer, bad
            )
            return [self._rst(msg.mid, peer)] if con else []
        actions: list[Action] = []
        if con:
            ack = _empty(_ACK, msg.mid)
            cache.put(key, ack)
            self._sent += 1
            actions.append(Send(ack, peer))
        actions.append(Complete(ex.handle, msg))
        self._finish(ex, actions)
        return actions

    # ------------------------------------------------------ server-side calls

    def respond(
        self, request: CoapMessage, peer: Peer, response: CoapMessage
    ) -> list[Action]:
        """Answer a request previously returned in a :class:`Dispatch`.

        Type, Message ID and token are chosen here: piggybacked ACK for a CON
        not yet acknowledged, a new CON (retransmitted) after an empty ACK, a
        NON for a NON request. The encoded reply is cached for duplicates.

        Args:
            request: the dispatched request.
            peer: where it came from.
            response: code, options and payload to send (type/mid/token ignored).

        Returns:
            the actions (empty if the request was answered already).

        Raises:
            ValueError: ``response.code`` is not a response code.
            EncodeError: the response cannot be encoded.
        """
        code = response.code
        if not 64 <= code <= 191:
            raise ValueError(f"{code} is not a response code")
        key = (peer, request.mid)
        cache = self._cache
        state = cache.get(key)
        if state is not None and (
            isinstance(state, bytes) or state in (_SEPARATE_DONE, _NON_DONE, _ANSWERED)
        ):
            return []
        if request.mtype == _CON:
            if state == _SEPARATE:
                mid = self._new_mid(peer)
                data = CoapMessage(
                    _CON, code, mid, request.token, response.options, response.payload
                ).encode()
                cache.update(key, _SEPARATE_DONE)
                ex = _Exchange(
                    None,
                    peer,
                    True,
                    request.token,
                    mid=mid,
                    data=data,
                    is_request=False,
                )
                self._start_con(ex)  # counts as sent
                return [Send(data, peer)]
            data = CoapMessage(
                _ACK,
                code,
                request.mid,
                request.token,
                response.options,
                response.payload,
            ).encode()
            cache.update(key, data)
        else:
            data = CoapMessage(
                _NON,
                code,
                self._new_mid(peer),
                request.token,
                response.options,
                response.payload,
            ).encode()
            cache.update(key, _NON_DONE)
        self._sent += 1
        return [Send(data, peer)]

    def accept_empty(
        self, request: CoapMessage, peer: Peer, *, final: bool = False
    ) -> list[Action]:
        """Acknowledge a CON request now; the response will be separate.

        Args:
            request: the dispatched request.
            peer: where it came from.
            final: no separate response will follow: the answer is a new,
                matched request (TS 24.538-R18 §6.3.4.3.3, a gateway's
                ``REGRESP``); a later :meth:`respond` sends nothing, and
                duplicates of the request get the empty ACK again.

        Returns:
            ``[Send(empty ACK)]``, or ``[]`` for a NON request or one already
            acknowledged or answered.
        """
        if request.mtype != _CON:
            return []
        key = (peer, request.mid)
        state = self._cache.get(key)
        if state is not None and state != _PROCESSING:
            return []
        self._cache.update(key, _SEPARATE_DONE if final else _SEPARATE)
        self._sent += 1
        return [Send(_empty(_ACK, request.mid), peer)]

    def reset(self, message: CoapMessage, peer: Peer) -> list[Action]:
        """Reject ``message`` with an RST carrying its Message ID."""
        return [self._rst(message.mid, peer)]

    def send_notification(
        self, message: CoapMessage, peer: Peer, handle: object | None
    ) -> tuple[int, list[Action]]:
        """Send an Observe notification (RFC 7641 §4.2), a server-originated response.

        ``message.mtype`` selects CON or NON; its code, token, options and
        payload are sent as given; the Message ID is allocated here. A CON
        notification is retransmitted like a request and its outcome arrives as
        :class:`Complete` (ACK) or :class:`Fail` (``RemoteReset`` on RST,
        ``RequestTimeout`` when unacknowledged) with ``handle``. A NON one is sent
        once; an RST answering it within NON_LIFETIME comes back as
        :class:`Rejected`.

        Args:
            message: a CON or NON response (code 2.00-5.31).
            peer: the observer.
            handle: opaque and unique among outstanding exchanges; required for
                CON, ignored for NON.

        Returns:
            the Message ID used and the actions (``[Send]``, or ``[Fail]`` when
            ``max_pending`` is reached).

        Raises:
            ValueError: wrong type or code, missing or re-used handle.
            EncodeError: the message cannot be encoded.
        """
        mtype = message.mtype
        if not 64 <= message.code <= 191:
            raise ValueError(f"{message.code} is not a response code")
        mid = self._new_mid(peer)
        data = CoapMessage(
            mtype, message.code, mid, message.token, message.options, message.payload
        ).encode()
        if mtype == _NON:
            non_sent = self._non_sent
            non_sent.expire(self._clock())
            non_sent.put((peer, mid), message.token)
            self._sent += 1
            return mid, [Send(data, peer)]
        if mtype != _CON:
            raise ValueError("a notification is sent as CON or NON")
        if handle is None:
            raise ValueError("a CON notification needs a handle")
        if len(self._by_handle) >= self._max_pending:
            return mid, [Fail(handle, RequestTimeout("too many outstanding requests"))]
        hid = id(handle)
        if hid in self._by_handle:
            raise ValueError("handle already in use")
        ex = _Exchange(
            handle, peer, True, message.token, mid=mid, data=data, is_request=False
        )
        self._by_handle[hid] = ex
        self._start_con(ex)  # counts as sent
        return mid, [Send(data, peer)]

    # ------------------------------------------------------ client-side calls

    def send_request(
        self,
        message: CoapMessage,
        peer: Peer,
        handle: object,
        *,
        mid: int | None = None,
        token: bytes | None = None,
    ) -> list[Action]:
        """Send a request; its outcome arrives as Complete/Fail with ``handle``.

        ``message.mid`` and ``message.token`` are ignored: the Message ID is
        allocated (or ``mid``), the token is 4 random bytes (or ``token``; an
        explicit ``b""`` is allowed).

        Args:
            message: a CON or NON request.
            peer: destination.
            handle: opaque, unique among outstanding requests.
            mid: explicit Message ID (e.g. re-using a relayed device's one).
            token: explicit token.

        Returns:
            the actions: ``[Send]``, ``[]`` when queued behind NSTART, or
            ``[Fail(handle, RequestTimeout)]`` when ``max_pending`` is reached.

        Raises:
            ValueError: wrong type or code, handle/token/Message ID already in
                use with that peer, bad token length or Message ID.
            EncodeError: the message cannot be encoded.
        """
        mtype = message.mtype
        if mtype not in (_CON, _NON):
            raise ValueError("a request is sent as CON or NON")
        if not 1 <= message.code <= 31:
            raise ValueError(f"{message.code} is not a request code")
        if len(self._by_handle) >= self._max_pending:
            return [Fail(handle, RequestTimeout("too many outstanding requests"))]
        hid = id(handle)
        if hid in self._by_handle:
            raise ValueError("handle already in use")
        token = self._check_ids(peer, mid, token)
        con = mtype == _CON
        data = CoapMessage(
            mtype,
            message.code,
            mid if mid is not None else 0,
            token,
            message.options,
            message.payload,
        ).encode()
        ex = _Exchange(handle, peer, con, token, mid=mid, data=data, is_request=True)
        self._by_handle[hid] = ex
        self._by_token[(peer, token)] = ex
        if con and self._active.get(peer, 0) >= self._nstart:
            queue = self._queues.get(peer)
            if queue is None:
                queue = self._queues[peer] = deque()
            queue.append(ex)
            return []
        actions: list[Action] = []
        self._start(ex, actions)
        return actions

    def cancel(self, handle: object) -> None:
        """Forget an outstanding or queued request without any action for it."""
        ex = self._by_handle.get(id(handle))
        if ex is None or ex.handle is not handle:
            return
        self._finish(ex, self._outbox)

    def abort_peer(self, peer: Peer, error: Exception) -> list[Action]:
        """Fail every outstanding and queued request to ``peer`` with ``error``.

        For a peer known to be gone (a device that re-registered from another
        address): its requests end now instead of after MAX_TRANSMIT_WAIT.
        Queued requests go first, so none of them is started by the release of
        an active one.

        Returns:
            one :class:`Fail` per request.
        """
        mine = [ex for ex in self._by_handle.values() if ex.peer == peer]
        mine.sort(key=lambda ex: ex.state != _QUEUED)
        actions: list[Action] = []
        for ex in mine:
            self._finish(ex, actions)
            actions.append(Fail(ex.handle, error))
        return actions

    def abort_all(self, error: Exception) -> list[Action]:
        """Fail every outstanding and queued request with ``error`` and forget all.

        Used when the endpoint closes. The duplicate cache is kept.

        Returns:
            one :class:`Fail` per request.
        """
        actions: list[Action] = [
            Fail(ex.handle, error) for ex in self._by_handle.values()
        ]
        for ex in self._by_handle.values():
            ex.state = _DONE
        for ex in self._by_mid.values():
            ex.state = _DONE
        self._by_handle.clear()
        self._by_mid.clear()
        self._by_token.clear()
        self._active.clear()
        self._queues.clear()
        self._heap.clear()
        self._outbox.clear()
        return actions

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """Return when :meth:`poll` should next be called, or None."""
        if self._outbox:
            return self._clock()
        heap = self._heap
        while heap:
            _, seq, ex = heap[0]
            if ex.seq == seq and ex.state != _DONE:
                return heap[0][0]
            heappop(heap)
        return None

    def poll(self) -> list[Action]:
        """Process due timers: retransmissions, give-ups, response timeouts.

        Returns:
            the actions (Send for retransmissions, Fail for exhausted requests).
        """
        now = self._clock()
        actions = self._outbox
        self._outbox = []
        self._cache.expire(now)
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, ex = heappop(heap)
            if ex.seq != seq or ex.state == _DONE:
                continue
            if ex.state == _WAIT_ACK:
                if ex.retries < self._max_retransmit:
                    ex.retries += 1
                    ex.timeout *= 2
                    self._schedule(ex, now + ex.timeout)
                    self._retransmissions += 1
                    self._sent += 1
                    actions.append(Send(ex.data, ex.peer))
                    continue
                what = "no ACK after retransmissions"
            else:
                what = "no response"
            self._timeouts += 1
            if ex.is_request:
                log.info("request to %r timed out: %s", ex.peer, what)
                actions.append(Fail(ex.handle, RequestTimeout(what)))
            elif ex.handle is not None:
                log.info("notification to %r not acknowledged", ex.peer)
                actions.append(Fail(ex.handle, RequestTimeout(what)))
            else:
                log.info("separate response to %r not acknowledged", ex.peer)
            self._finish(ex, actions)
        return actions

    # --------------------------------------------------------------- internals

    def _schedule(self, ex: _Exchange, deadline: float) -> None:
        seq = next(self._seq)
        ex.seq = seq
        heap = self._heap
        heappush(heap, (deadline, seq, ex))
        if len(heap) > 4096 and len(heap) > 4 * (
            len(self._by_mid) + len(self._by_token)
        ):
            self._heap = [
                item
                for item in heap
                if item[2].seq == item[1] and item[2].state != _DONE
            ]
            heapify(self._heap)

    def _check_ids(self, peer: Peer, mid: int | None, token: bytes | None) -> bytes:
        """Validate explicit Message ID and token; return the token to use."""
        if token is None:
            token = self._new_token(peer)
        elif len(token) > 8:
            raise ValueError("token longer than 8 bytes")
        elif (peer, token) in self._by_token:
            raise ValueError("token already in use with this peer")
        if mid is not None:
            if not 0 <= mid <= 0xFFFF:
                raise ValueError(f"message ID {mid} out of range")
            if (peer, mid) in self._by_mid:
                raise ValueError("message ID already in use with this peer")
        return token

    def _new_mid(self, peer: Peer) -> int:
        mid = self._next_mid
        by_mid = self._by_mid
        while (peer, mid) in by_mid:
            mid = (mid + 1) & 0xFFFF
        self._next_mid = (mid + 1) & 0xFFFF
        return mid

    def _new_token(self, peer: Peer) -> bytes:
        getrandbits = self._rng.getrandbits
        by_token = self._by_token
        while True:
            token = getrandbits(32).to_bytes(4, "big")
            if (peer, token) not in by_token:
                return token

    def _start(self, ex: _Exchange, actions: list[Action]) -> None:
        """Transmit a request for the first time (from send_request or the queue)."""
        peer = ex.peer
        if ex.explicit_mid:
            if (peer, ex.mid) in self._by_mid:
                actions.append(
                    Fail(ex.handle, RequestTimeout("message ID already in use"))
                )
                self._finish(ex, actions)
                return
        else:
            ex.mid = mid = self._new_mid(peer)
            data = ex.data
            ex.data = data[:2] + bytes((mid >> 8, mid & 0xFF)) + data[4:]
        if ex.con:
            self._active[peer] = self._active.get(peer, 0) + 1
            self._start_con(ex)
        else:
            self._by_mid[(peer, ex.mid)] = ex
            ex.state = _WAIT_RESPONSE
            self._schedule(ex, self._clock() + self._non_timeout)
            self._sent += 1
        actions.append(Send(ex.data, peer))

    def _start_con(self, ex: _Exchange) -> None:
        self._by_mid[(ex.peer, ex.mid)] = ex
        ex.state = _WAIT_ACK
        ex.timeout = self._rng.uniform(self._ack_timeout, self._ack_timeout_max)
        self._schedule(ex, self._clock() + ex.timeout)
        self._sent += 1

    def _finish(self, ex: _Exchange, actions: list[Action]) -> None:
        """Forget ``ex``; free its NSTART slot (possibly starting queued requests)."""
        state = ex.state
        if state == _DONE:
            return
        ex.state = _DONE
        peer = ex.peer
        if state != _QUEUED:
            key = (peer, ex.mid)
            if self._by_mid.get(key) is ex:
                del self._by_mid[key]
        if ex.is_request:
            tkey = (peer, ex.token)
            if self._by_token.get(tkey) is ex:
                del self._by_token[tkey]
            self._by_handle.pop(id(ex.handle), None)
            if state == _QUEUED:
                queue = self._queues.get(peer)
                if queue is not None:
                    try:
                        queue.remove(ex)
                    except ValueError:  # popped by _release, failed in _start
                        pass
                    if not queue:
                        del self._queues[peer]
            elif ex.con and state == _WAIT_ACK:
                self._release(peer, actions)
        elif ex.handle is not None:
            self._by_handle.pop(id(ex.handle), None)

    def _release(self, peer: Peer, actions: list[Action]) -> None:
        """Free one NSTART slot of ``peer`` and start queued requests."""
        active = self._active
        count = active.get(peer, 0) - 1
        if count > 0:
            active[peer] = count
        else:
            active.pop(peer, None)
        queue = self._queues.get(peer)
        while queue and active.get(peer, 0) < self._nstart:
            ex = queue.popleft()
            if not queue:
                del self._queues[peer]
            self._start(ex, actions)
