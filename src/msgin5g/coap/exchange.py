"""Sans-I/O CoAP message layer (RFC 7252 §4 and the matching rules of §5.3).

What: the state machine between the codec and the application.
:class:`MessageLayer` never touches a socket or the event loop: it is fed
datagrams (:meth:`MessageLayer.receive`) and application calls, reads time from
an injected ``clock`` and returns *actions* (:mod:`msgin5g.coap.actions`:
:class:`Send`, :class:`Dispatch`, :class:`Complete`, :class:`Fail`,
:class:`Rejected`) for the I/O shell (:mod:`msgin5g.coap.endpoint`) to carry
out. Tests drive it with a fake clock and never sleep.

A datagram walks down the floors: :meth:`MessageLayer.receive` decodes it
(:mod:`~msgin5g.coap.message`) and switches on its type; a request goes through
the duplicate cache (:mod:`~msgin5g.coap.dedup`) and becomes a
:class:`Dispatch`; an ACK, an RST or a response is matched against what we sent
(:mod:`~msgin5g.coap.outgoing`, which also owns retransmission, NSTART, Message
ID and token allocation).

RFC clauses handled here (the sending side is in :mod:`~msgin5g.coap.outgoing`):
    * §4.2: a malformed CON and an Empty CON (ping) are answered with RST.
    * §4.3: a malformed NON is dropped.
    * §4.5: duplicate detection keyed on (peer, Message ID); a duplicate CON
      gets the cached reply again (piggybacked response or empty ACK); a
      duplicate NON is silently ignored.
    * §5.2.1/§5.2.2: piggybacked and separate responses; empty ACK.
    * §5.3.2: an unmatched CON response is rejected (RST).
    * §5.4.1: a request with an unrecognised critical option gets 4.02 (CON)
      or is dropped (NON); a response carrying one is rejected.

Design choices:
    * NON entries live in the same duplicate cache as CON ones, i.e. for
      EXCHANGE_LIFETIME rather than NON_LIFETIME; that is allowed because §4.4
      forbids re-using *any* Message ID with the same endpoint within
      EXCHANGE_LIFETIME.
    * Everything is bounded: the cache by ``max_dedup_entries`` and
      ``max_dedup_bytes``, outstanding and queued requests together by
      ``max_pending``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from msgin5g.coap.actions import (
    Action,
    Complete,
    Dispatch,
    Fail,
    Rejected,
    Send,
)
from msgin5g.coap.address import Peer
from msgin5g.coap.dedup import (
    ANSWERED,
    DEFAULT_DEDUP_BYTES,
    NON_DONE,
    PROCESSING,
    SEPARATE,
    SEPARATE_DONE,
    DedupCache,
)
from msgin5g.coap.message import CoapDecodeError, CoapMessage
from msgin5g.coap.numbers import Code, TransmissionParameters
from msgin5g.coap.numbers import Type as _T
from msgin5g.coap.outgoing import Outgoing, unknown_critical

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

_CON = int(_T.CON)
_NON = int(_T.NON)
_ACK = int(_T.ACK)
_RST = int(_T.RST)
_BAD_OPTION = int(Code.BAD_OPTION)


def _empty(mtype: int, mid: int) -> bytes:
    """Encode an Empty message (ACK or RST) with Message ID ``mid``."""
    return bytes((0x40 | mtype << 4, 0, mid >> 8, mid & 0xFF))


def _reply_token(reply: bytes) -> bytes:
    """The token of an encoded message (RFC 7252 §3: TKL, then the 4-byte header)."""
    return reply[4 : 4 + (reply[0] & 0x0F)]


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
        self._cache = DedupCache(
            params.exchange_lifetime, max_dedup_entries, clock(), max_dedup_bytes
        )
        self._out = Outgoing(
            clock,
            params,
            rng if rng is not None else random.Random(),
            max_pending=max_pending,
            separate_response_timeout=(
                separate_response_timeout
                if separate_response_timeout is not None
                else params.exchange_lifetime
            ),
            non_response_timeout=(
                non_response_timeout
                if non_response_timeout is not None
                else params.max_transmit_wait
            ),
            max_non_entries=max(2, max_dedup_entries // 4),
            max_non_bytes=max_dedup_bytes // 4 if max_dedup_bytes else None,
        )
        self._received = 0
        self._sent = 0
        self._duplicates = 0
        self._resets_sent = 0
        self._malformed = 0

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, int]:
        """Return the counters and current sizes.

        Returns:
            received, sent, retransmissions, duplicates, resets_sent, timeouts,
            malformed, dedup_entries, dedup_bytes (charged to the duplicate
            cache), non_sent_entries, pending (outstanding + queued requests).
        """
        out = self._out
        return {
            "received": self._received,
            "sent": self._sent + out.sent,
            "retransmissions": out.retransmissions,
            "duplicates": self._duplicates,
            "resets_sent": self._resets_sent,
            "timeouts": out.timeouts,
            "malformed": self._malformed,
            "dedup_entries": len(self._cache),
            "dedup_bytes": self._cache.bytes,
            "non_sent_entries": len(out.non_sent),
            "pending": out.pending,
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
            return self._out.on_ack(msg, peer)
        if mtype == _RST:
            return self._out.on_rst(msg, peer)
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
        if isinstance(state, bytes) and _reply_token(state) != msg.token:
            # the Message ID is re-used with another token: a new request (a
            # client restarted on the same port within EXCHANGE_LIFETIME, its
            # Message IDs counting again), not a retransmission, which repeats
            # the token. RFC 7252 §4.5 alone would replay the old reply to it.
            cache.pop(key)
            state = None
        if state is not None:
            self._duplicates += 1
            if not con:
                return []
            if isinstance(state, bytes):
                self._sent += 1
                return [Send(state, peer)]
            if state in (SEPARATE, SEPARATE_DONE):
                self._sent += 1
                return [Send(_empty(_ACK, msg.mid), peer)]
            return []  # still being processed
        bad = unknown_critical(msg.options)
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
        cache.put(key, PROCESSING)
        return [Dispatch(msg, peer)]

    def _on_response(self, msg: CoapMessage, peer: Peer) -> list[Action]:
        """A separate response (CON or NON) to a request of ours."""
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
        out = self._out
        ex = out.match_response(msg, peer)
        if ex is None:
            return [self._rst(msg.mid, peer)] if con else []
        actions: list[Action] = []
        if con:
            ack = _empty(_ACK, msg.mid)
            cache.put(key, ack)
            self._sent += 1
            actions.append(Send(ack, peer))
        out.complete(ex, msg, actions)
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
            isinstance(state, bytes) or state in (SEPARATE_DONE, NON_DONE, ANSWERED)
        ):
            return []
        if request.mtype == _CON:
            if state == SEPARATE:
                mid = self._out.new_mid(peer)
                data = CoapMessage(
                    _CON, code, mid, request.token, response.options, response.payload
                ).encode()
                cache.update(key, SEPARATE_DONE)
                return [self._out.send_separate(peer, mid, request.token, data)]
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
                self._out.new_mid(peer),
                request.token,
                response.options,
                response.payload,
            ).encode()
            cache.update(key, NON_DONE)
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
        if state is not None and state != PROCESSING:
            return []
        self._cache.update(key, SEPARATE_DONE if final else SEPARATE)
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
        return self._out.send_notification(message, peer, handle)

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
        return self._out.send_request(message, peer, handle, mid=mid, token=token)

    def cancel(self, handle: object) -> None:
        """Forget an outstanding or queued request without any action for it."""
        self._out.cancel(handle)

    def abort_peer(self, peer: Peer, error: Exception) -> list[Action]:
        """Fail every outstanding and queued request to ``peer`` with ``error``.

        For a peer known to be gone (a device that re-registered from another
        address): its requests end now instead of after MAX_TRANSMIT_WAIT.
        Queued requests go first, so none of them is started by the release of
        an active one.

        Returns:
            one :class:`Fail` per request.
        """
        return self._out.abort_peer(peer, error)

    def abort_all(self, error: Exception) -> list[Action]:
        """Fail every outstanding and queued request with ``error`` and forget all.

        Used when the endpoint closes. The duplicate cache is kept.

        Returns:
            one :class:`Fail` per request.
        """
        return self._out.abort_all(error)

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """Return when :meth:`poll` should next be called, or None."""
        return self._out.next_deadline()

    def deadline_bound(self) -> float | None:
        """A lower bound of :meth:`next_deadline` in O(1) (None: no deadline)."""
        return self._out.deadline_bound()

    def poll(self) -> list[Action]:
        """Process due timers: retransmissions, give-ups, response timeouts.

        Returns:
            the actions (Send for retransmissions, Fail for exhausted requests).
        """
        now = self._clock()
        self._cache.expire(now)
        return self._out.poll(now)
