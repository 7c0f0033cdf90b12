"""Sans-I/O bookkeeping of the messages *we* send and must track (RFC 7252 §4, §5.3).

What: :class:`Outgoing` keeps every exchange this endpoint started and still
waits on: requests (client role), separate CON responses and Observe
notifications (server role). It allocates Message IDs and tokens, enforces
NSTART, retransmits CONs with exponential back-off, matches ACK/RST/responses
to what it sent and reports outcomes as :class:`~msgin5g.coap.actions.Complete`
/ :class:`~msgin5g.coap.actions.Fail` / :class:`~msgin5g.coap.actions.Rejected`.
It is one half of :class:`~msgin5g.coap.exchange.MessageLayer`, which feeds it
the ACKs, RSTs and responses it receives; the other half (requests we
receive, duplicate detection) stays in the message layer.

RFC clauses:
    * §4.2: CON retransmission, initial timeout uniform in
      ``[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]``, doubled after each of
      MAX_RETRANSMIT retransmissions; give up when the last timeout expires.
    * §4.3: NON messages are sent once.
    * §4.4: Message IDs are allocated sequentially from a random start,
      skipping IDs of exchanges still outstanding with the same peer.
    * §4.7: NSTART outstanding CON requests per peer; further requests wait in
      a per-peer FIFO.
    * §5.2.2: an empty ACK stops the retransmission; the separate response is
      awaited for ``separate_response_timeout``.
    * §5.3.2: responses matched by (peer, token); a piggybacked response must
      also match the Message ID.
    * RFC 7641 §3.6, §4.2: a CON notification ends in an ACK (Complete), an RST
      or a timeout (Fail); an RST answering a NON notification within
      NON_LIFETIME is reported as Rejected.

Design choices:
    * Timers: one heap of ``(deadline, seq, exchange)`` with lazy deletion (a
      popped entry whose ``seq`` is no longer the exchange's current one is
      stale). The heap is rebuilt when stale entries dominate it.
    * One slotted :class:`Exchange` per outstanding message, indexed by
      (peer, mid), (peer, token) for requests, and ``id(handle)``; handles
      must be unique among outstanding exchanges (they need not be hashable).
    * Separate responses that we send as CON are retransmitted like requests
      (handle None); their failure is dropped silently. They and
      notifications do not count towards NSTART.
    * NON notifications sent are remembered ((peer, Message ID) -> token) in
      a two-generation :class:`~msgin5g.coap.dedup.DedupCache`; the request
      path pays nothing for it.
    * Bounded: outstanding and queued exchanges together by ``max_pending``.

Size (~600 lines, over the ~500 aim): one class whose indexes (by Message
ID, by token, by handle, NSTART queues, the timer heap) must change together;
cutting it would spread one invariant over two modules. The per-peer Message
ID generations (issue 13) and the encode-once path of a request sent at once
added the last ~50 lines.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Callable
from heapq import heapify, heappop, heappush

from msgin5g.coap.actions import Action, Complete, Fail, Rejected, Send
from msgin5g.coap.address import Peer
from msgin5g.coap.dedup import DedupCache
from msgin5g.coap.message import CoapMessage
from msgin5g.coap.numbers import KNOWN_OPTIONS, TransmissionParameters
from msgin5g.coap.numbers import Type as _T
from msgin5g.errors import RemoteReset, RequestTimeout

__all__ = ["Exchange", "Outgoing", "unknown_critical"]

log = logging.getLogger(__name__)

_CON = int(_T.CON)
_NON = int(_T.NON)

# Exchange states.
_QUEUED = 0
_WAIT_ACK = 1
_WAIT_RESPONSE = 2
_DONE = 3


def unknown_critical(options: list[tuple[int, bytes]]) -> int | None:
    """Return the first unrecognised critical option number, or None (§5.4.1)."""
    for number, _ in options:
        if number & 1 and number not in KNOWN_OPTIONS:
            return number
    return None


class Exchange:
    """One message we sent and still track (a request, a separate CON response, a notification)."""

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


class Outgoing:
    """The exchanges we started; see the module docstring.

    Args:
        clock: monotonic time in seconds.
        params: transmission parameters (RFC 7252 §4.8).
        rng: randomness for tokens, the first Message ID and the initial
            retransmission timeout.
        max_pending: bound on outstanding plus queued exchanges with a handle.
        separate_response_timeout: wait for a separate response after an
            empty ACK.
        non_response_timeout: wait for the response to a NON request.
        max_non_entries: bound on the NON notifications remembered.
        max_non_bytes: byte bound of that table (None: none).
    """

    def __init__(
        self,
        clock: Callable[[], float],
        params: TransmissionParameters,
        rng: random.Random,
        *,
        max_pending: int,
        separate_response_timeout: float,
        non_response_timeout: float,
        max_non_entries: int,
        max_non_bytes: int | None,
    ) -> None:
        self._clock = clock
        self._rng = rng
        self._random = rng.random
        self._max_pending = max_pending
        self._separate_timeout = separate_response_timeout
        self._non_timeout = non_response_timeout
        self._ack_timeout = params.ack_timeout
        self._ack_timeout_max = params.ack_timeout * params.ack_random_factor
        self._ack_span = self._ack_timeout_max - self._ack_timeout
        self._max_retransmit = params.max_retransmit
        self._nstart = params.nstart
        self.non_sent = DedupCache(
            params.non_lifetime, max_non_entries, clock(), max_non_bytes
        )
        # next Message ID per peer (§4.4: never reuse one with the same peer
        # within EXCHANGE_LIFETIME); two generations, rotated every lifetime,
        # so a peer's entry lives at least a lifetime after its last use
        self._mids: dict[Peer, int] = {}
        self._old_mids: dict[Peer, int] = {}
        self._mid_lifetime = params.exchange_lifetime
        self._mids_rotated = clock()
        self._by_mid: dict[tuple[Peer, int], Exchange] = {}
        self._by_token: dict[tuple[Peer, bytes], Exchange] = {}
        self._by_handle: dict[int, Exchange] = {}
        self._active: dict[Peer, int] = {}
        self._queues: dict[Peer, deque[Exchange]] = {}
        self._heap: list[tuple[float, int, Exchange]] = []
        self._seq = itertools.count()
        self._outbox: list[Action] = []
        self.sent = 0
        self.retransmissions = 0
        self.timeouts = 0

    @property
    def pending(self) -> int:
        """Outstanding and queued exchanges with a handle."""
        return len(self._by_handle)

    # ------------------------------------------------------------------ send

    def send_request(
        self,
        message: CoapMessage,
        peer: Peer,
        handle: object,
        *,
        mid: int | None = None,
        token: bytes | None = None,
    ) -> list[Action]:
        """See :meth:`msgin5g.coap.exchange.MessageLayer.send_request`."""
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
        queued = con and self._active.get(peer, 0) >= self._nstart
        if mid is None and not queued:
            # sent now: allocate its Message ID first and encode once (a
            # queued request gets one when it starts, see _start)
            mid = self.new_mid(peer)
        data = CoapMessage(
            mtype,
            message.code,
            mid if mid is not None else 0,
            token,
            message.options,
            message.payload,
        ).encode()
        ex = Exchange(handle, peer, con, token, mid=mid, data=data, is_request=True)
        self._by_handle[hid] = ex
        self._by_token[(peer, token)] = ex
        if queued:
            queue = self._queues.get(peer)
            if queue is None:
                queue = self._queues[peer] = deque()
            queue.append(ex)
            return []
        actions: list[Action] = []
        self._start(ex, actions)
        return actions

    def send_notification(
        self, message: CoapMessage, peer: Peer, handle: object | None
    ) -> tuple[int, list[Action]]:
        """See :meth:`msgin5g.coap.exchange.MessageLayer.send_notification`."""
        mtype = message.mtype
        if not 64 <= message.code <= 191:
            raise ValueError(f"{message.code} is not a response code")
        mid = self.new_mid(peer)
        data = CoapMessage(
            mtype, message.code, mid, message.token, message.options, message.payload
        ).encode()
        if mtype == _NON:
            non_sent = self.non_sent
            non_sent.expire(self._clock())
            non_sent.put((peer, mid), message.token)
            self.sent += 1
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
        ex = Exchange(
            handle, peer, True, message.token, mid=mid, data=data, is_request=False
        )
        self._by_handle[hid] = ex
        self._start_con(ex)  # counts as sent
        return mid, [Send(data, peer)]

    def send_separate(self, peer: Peer, mid: int, token: bytes, data: bytes) -> Send:
        """Start retransmitting a separate CON response (no handle; §5.2.2)."""
        ex = Exchange(None, peer, True, token, mid=mid, data=data, is_request=False)
        self._start_con(ex)  # counts as sent
        return Send(data, peer)

    def new_mid(self, peer: Peer) -> int:
        """Allocate a Message ID not used with ``peer`` within EXCHANGE_LIFETIME (§4.4).

        One sequence per peer, starting at a random value: a peer sees its
        Message IDs repeat only after 65,536 messages to it, not after 65,536
        messages to anybody (a single counter shared by all peers wrapped in
        ~25 s at 2,600 msgs/s, and a UE that deduplicates by Message ID, as
        §4.5 describes, silently dropped the new message). A peer silent for a
        lifetime is forgotten; it then starts at a new random value.
        """
        mid = self._mids.get(peer)
        if mid is None:
            mid = self._old_mids.pop(peer, None)
            if mid is None:
                mid = self._rng.getrandbits(16)
        by_mid = self._by_mid
        while (peer, mid) in by_mid:
            mid = (mid + 1) & 0xFFFF
        self._mids[peer] = (mid + 1) & 0xFFFF
        return mid

    def _rotate_mids(self, now: float) -> None:
        if now - self._mids_rotated >= self._mid_lifetime:
            self._mids_rotated = now
            self._old_mids = self._mids
            self._mids = {}

    # --------------------------------------------------------------- receive

    def on_ack(self, msg: CoapMessage, peer: Peer) -> list[Action]:
        """An ACK arrived: piggybacked response, empty ACK, or ACK of our CON."""
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
        bad = unknown_critical(msg.options)
        if bad is not None:
            log.warning(
                "response from %r with unrecognised critical option %d", peer, bad
            )
            return []
        actions.append(Complete(ex.handle, msg))
        self._finish(ex, actions)
        return actions

    def on_rst(self, msg: CoapMessage, peer: Peer) -> list[Action]:
        """An RST arrived: it fails our CON, or rejects a NON notification."""
        if msg.code != 0:
            return []
        ex = self._by_mid.get((peer, msg.mid))
        if ex is None:
            non_sent = self.non_sent
            if non_sent:
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

    def match_response(self, msg: CoapMessage, peer: Peer) -> Exchange | None:
        """The request a separate (CON/NON) response answers, or None to reject it."""
        ex = self._by_token.get((peer, msg.token))
        if ex is None or ex.state in (_QUEUED, _DONE):
            if log.isEnabledFor(logging.DEBUG):
                log.debug("unmatched response from %r", peer)
            return None
        bad = unknown_critical(msg.options)
        if bad is not None:
            log.warning(
                "response from %r with unrecognised critical option %d", peer, bad
            )
            return None
        return ex

    def complete(self, ex: Exchange, msg: CoapMessage, actions: list[Action]) -> None:
        """Deliver ``msg`` as the outcome of ``ex`` and forget it."""
        actions.append(Complete(ex.handle, msg))
        self._finish(ex, actions)

    # ------------------------------------------------------------ application

    def cancel(self, handle: object) -> None:
        """Forget an outstanding or queued exchange without any action for it."""
        ex = self._by_handle.get(id(handle))
        if ex is None or ex.handle is not handle:
            return
        self._finish(ex, self._outbox)

    def abort_peer(self, peer: Peer, error: Exception) -> list[Action]:
        """Fail every outstanding and queued exchange with ``peer``; see the layer."""
        mine = [ex for ex in self._by_handle.values() if ex.peer == peer]
        mine.sort(key=lambda ex: ex.state != _QUEUED)
        actions: list[Action] = []
        for ex in mine:
            self._finish(ex, actions)
            actions.append(Fail(ex.handle, error))
        return actions

    def abort_all(self, error: Exception) -> list[Action]:
        """Fail every outstanding and queued exchange with ``error``; forget all."""
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

    # ----------------------------------------------------------------- timers

    def deadline_bound(self) -> float | None:
        """A lower bound of :meth:`next_deadline` (None: no deadline), in O(1).

        The heap's top may be stale (lazy deletion), so it is never later than
        the true next deadline: a timer armed no later than it is early
        enough, and nothing needs popping to know that.
        """
        if self._outbox:
            return self._clock()
        heap = self._heap
        return heap[0][0] if heap else None

    def next_deadline(self) -> float | None:
        """When :meth:`poll` should next be called, or None."""
        if self._outbox:
            return self._clock()
        heap = self._heap
        while heap:
            _, seq, ex = heap[0]
            if ex.seq == seq and ex.state != _DONE:
                return heap[0][0]
            heappop(heap)
        return None

    def poll(self, now: float) -> list[Action]:
        """Process due timers: retransmissions, give-ups, response timeouts."""
        self._rotate_mids(now)
        actions = self._outbox
        self._outbox = []
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
                    self.retransmissions += 1
                    self.sent += 1
                    actions.append(Send(ex.data, ex.peer))
                    continue
                what = "no ACK after retransmissions"
            else:
                what = "no response"
            self.timeouts += 1
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

    # -------------------------------------------------------------- internals

    def _schedule(self, ex: Exchange, deadline: float) -> None:
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

    def _new_token(self, peer: Peer) -> bytes:
        getrandbits = self._rng.getrandbits
        by_token = self._by_token
        while True:
            token = getrandbits(32).to_bytes(4, "big")
            if (peer, token) not in by_token:
                return token

    def _start(self, ex: Exchange, actions: list[Action]) -> None:
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
            ex.mid = mid = self.new_mid(peer)
            data = ex.data
            ex.data = data[:2] + bytes((mid >> 8, mid & 0xFF)) + data[4:]
        if ex.con:
            self._active[peer] = self._active.get(peer, 0) + 1
            self._start_con(ex)
        else:
            self._by_mid[(peer, ex.mid)] = ex
            ex.state = _WAIT_RESPONSE
            self._schedule(ex, self._clock() + self._non_timeout)
            self.sent += 1
        actions.append(Send(ex.data, peer))

    def _start_con(self, ex: Exchange) -> None:
        self._by_mid[(ex.peer, ex.mid)] = ex
        ex.state = _WAIT_ACK
        # rng.uniform(lo, hi) is lo + (hi - lo) * random(): the same draw
        ex.timeout = self._ack_timeout + self._ack_span * self._random()
        self._schedule(ex, self._clock() + ex.timeout)
        self.sent += 1

    def _finish(self, ex: Exchange, actions: list[Action]) -> None:
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
