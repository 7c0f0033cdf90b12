"""DTLS 1.2 with pre-shared keys under the CoAP engine (``coaps://``, RFC 7925).

(Over 500 lines: the session tables, the receive paths and the bounds form
one state machine; the record checks are in :mod:`.dtls_records`.)

What: :class:`DtlsServer` owns the UDP socket of a secure endpoint and sits
between it and :class:`~msgin5g.coap.endpoint.Endpoint`
(:meth:`~msgin5g.coap.endpoint.Endpoint.create_on`). Below it are DTLS
records; above it plaintext CoAP datagrams whose *peer* is not the UDP source
but the session's authenticated PSK identity, ``("psk:<identity>", 0)``
(:func:`identity_peer`). So everything the engine keys on a peer (duplicate
detection, exchanges, observers) and everything the service keys on a source
(the registration's ``source``, ``refuse_sender``) is bound to the secure
channel, not to a spoofable address, and survives a change of address.

The record layer and handshake are Mbed TLS 2.28 through ``python-mbedtls``
(sans-I/O buffers, one ``TLSWrappedBuffer`` per session); this module only
moves datagrams, keeps the session tables and enforces the bounds. Why that
library and not tinydtls or OpenSSL: docs/security-dtls.md.

Profile (RFC 7925 §4.1): DTLS 1.2 only, ``TLS_PSK_WITH_AES_128_CCM_8`` first,
``TLS_PSK_WITH_AES_128_GCM_SHA256`` also offered; no renegotiation; anti-replay
window on. The PSK of identity *I* comes from a :data:`PskLookup` callback
(the server's key store, synchronous: it runs inside the handshake step).

Order of the checks for a datagram (cheapest first, docs/security-dtls.md):
    1. the per-source :class:`~msgin5g.coap.limits.SourceLimiter` (an address
       with an established session is trusted), before any DTLS work;
    2. a datagram from an address without a session must be a ClientHello
       (epoch 0); without a valid cookie it is answered with a
       HelloVerifyRequest from a throw-away context and **nothing is kept**
       (RFC 6347 §4.2.1), so a spoofed ClientHello flood costs no state;
    3. only a ClientHello with a valid cookie (the client proved it receives
       at its address) creates a handshake, within ``max_handshakes`` at once,
       ``max_sessions`` in total and ``max_per_host`` per IP address;
    4. an application-data record from an unknown port of an IP address that
       has sessions is tried against those sessions (at most ``max_per_host``):
       if one decrypts it (AEAD tag and anti-replay window checked by Mbed
       TLS), the session moved — NAT rebinding — and its address is updated.

Sessions: one per identity (the newest completed handshake replaces the
previous one), closed after ``idle_timeout`` without traffic; handshakes that
do not finish within ``handshake_timeout`` are dropped. Downlink to an
identity without a session fails at once (``on_refused``, like ICMP port
unreachable on plain UDP) so the service stores the message for later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from mbedtls.exceptions import TLSError
from mbedtls.tls import (
    DTLSConfiguration,
    DTLSVersion,
    HandshakeStep,
    HelloVerifyRequest,
    ServerContext,
    TLSWrappedBuffer,
    WantReadError,
    WantWriteError,
)

from msgin5g.coap.address import Peer
from msgin5g.coap.dtls_records import (
    APPLICATION,
    HANDSHAKE,
    PSK_PREFIX,
    RECORD_HEADER,
    framed,
    identity_of,
    identity_peer,
    is_client_hello,
    one_protected_record,
)
from msgin5g.coap.limits import SourceLimiter
from msgin5g.coap.udp import (
    DatagramProtocol,
    bind_socket,
    bound_address,
    open_endpoint,
)
from msgin5g.logsafe import LogThrottle

__all__ = [
    "CIPHERS",
    "PSK_PREFIX",
    "DtlsServer",
    "PskLookup",
    "identity_of",
    "identity_peer",
]

log = logging.getLogger(__name__)
_throttled = LogThrottle(log)

CIPHERS = ("TLS-PSK-WITH-AES-128-CCM-8", "TLS-PSK-WITH-AES-128-GCM-SHA256")
"""The cipher suites offered, in order of preference (RFC 7925 §4.1)."""

PskLookup = Callable[[str], "bytes | None"]
"""The pre-shared key of an identity, or None when it has none."""

_HANDSHAKE_OVER = HandshakeStep.HANDSHAKE_OVER
_READ_CHUNK = 16 * 1024 + 256
_TICK = 0.5  # seconds between sweeps: handshake retransmissions and expiry
_IDLE_SCAN = 10.0  # seconds between scans for idle sessions


class _Session:
    """One DTLS association: the Mbed TLS context and where it lives."""

    __slots__ = ("addr", "buffer", "identity", "last", "started")

    def __init__(self, buffer: TLSWrappedBuffer, addr: Peer, now: float) -> None:
        self.buffer = buffer
        self.addr = addr
        self.identity: str | None = None  # set by the PSK callback
        self.started = now
        self.last = now

    @property
    def established(self) -> bool:
        state: object = self.buffer._handshake_state
        return state is _HANDSHAKE_OVER


class _KeyStoreView(Mapping[str, bytes]):
    """The Mapping python-mbedtls asks for a PSK during a handshake step.

    The step runs synchronously for one session (:attr:`current`), so the
    identity the client named is recorded on that session here.
    """

    def __init__(self, lookup: PskLookup) -> None:
        self._lookup = lookup
        self.current: _Session | None = None

    def __getitem__(self, identity: str) -> bytes:
        if self.current is not None:
            self.current.identity = identity
        key = self._lookup(identity)
        if key is None:
            raise KeyError(identity)
        return key

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class DtlsServer:
    """DTLS 1.2 PSK server sessions between a UDP socket and a CoAP endpoint.

    Args:
        psk_lookup: the key of an identity (synchronous; see module docstring).
        limiter: per-source rate limits applied before any DTLS work.
        max_sessions: sessions (established or handshaking) held at once.
        max_per_host: sessions held for one IP address.
        max_handshakes: handshakes in progress at once.
        handshake_timeout: seconds a handshake may take.
        idle_timeout: seconds an established session may stay silent.
        mtu: largest datagram the handshake sends (RFC 7925 §4: small).
    """

    def __init__(
        self,
        psk_lookup: PskLookup,
        *,
        limiter: SourceLimiter | None = None,
        max_sessions: int = 10_000,
        max_per_host: int = 64,
        max_handshakes: int = 1_000,
        handshake_timeout: float = 30.0,
        idle_timeout: float = 3600.0,
        mtu: int = 1280,
    ) -> None:
        self._store = _KeyStoreView(psk_lookup)
        self._context = ServerContext(
            DTLSConfiguration(
                ciphers=CIPHERS,
                lowest_supported_version=DTLSVersion.DTLSv1_2,
                highest_supported_version=DTLSVersion.DTLSv1_2,
                validate_certificates=False,
                pre_shared_key_store=self._store,
                anti_replay=True,
                handshake_timeout_min=1.0,
                handshake_timeout_max=min(handshake_timeout, 60.0),
            )
        )
        self._limiter = limiter
        if limiter is not None:
            limiter.set_trust_check(self._has_session)
        self._max_sessions = max_sessions
        self._max_per_host = max_per_host
        self._max_handshakes = max_handshakes
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        self._mtu = mtu
        self._by_addr: dict[Peer, _Session] = {}
        self._by_identity: dict[str, _Session] = {}
        self._by_host: dict[str, set[_Session]] = {}
        self._handshaking: set[_Session] = set()
        self._on_datagram: Callable[[bytes, Any], None] = _discard
        self._on_refused: Callable[[Any], None] = _discard_peer
        self._transport: asyncio.DatagramTransport | None = None
        self._protocol: DatagramProtocol | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._idle_check_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.counters = dict.fromkeys(
            (
                "dropped",
                "hello_verify",
                "handshakes",
                "handshake_failures",
                "refused_full",
                "rebound",
                "bad_records",
                "closed",
            ),
            0,
        )
        """Events since start (docs/security-dtls.md lists them)."""

    # ------------------------------------------------------------ the floor

    family: int | None = None
    """Peers above this floor are identities, not socket addresses."""

    async def open(
        self, bind: tuple[str, int], recv_buffer: int, send_buffer: int
    ) -> None:
        """Bind the UDP socket (without delivering anything until :meth:`start`).

        Raises:
            ConnectError: the address cannot be resolved or bound.
        """
        loop = self._loop = asyncio.get_running_loop()
        sock = await bind_socket(loop, bind, recv_buffer, send_buffer)
        protocol = DatagramProtocol(self._on_udp)
        transport = await open_endpoint(loop, sock, protocol, bind)
        self._transport, self._protocol = transport, protocol
        self._sweeper = loop.call_later(_TICK, self._sweep)

    def start(
        self,
        on_datagram: Callable[[bytes, Any], None],
        on_refused: Callable[[Any], None],
    ) -> None:
        """Deliver decrypted datagrams to ``on_datagram(data, identity_peer)``."""
        self._on_datagram = on_datagram
        self._on_refused = on_refused

    @property
    def local_address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        return bound_address(self._transport)

    def sendto(self, data: bytes, peer: Any) -> None:
        """Encrypt ``data`` on the session of ``peer``'s identity and send it.

        Without a session the peer is reported refused (soon, not here: the
        engine is in the middle of an action list).
        """
        identity = identity_of(peer)
        session = None if identity is None else self._by_identity.get(identity)
        if session is None or self._loop is None:
            if self._loop is not None:
                self._loop.call_soon(self._on_refused, peer)
            return
        try:
            session.buffer.write(data)
        except TLSError as exc:
            _throttled.log(
                "dtls-write", logging.INFO, "DTLS write to %s failed: %s", peer, exc
            )
            self._close(session)
            self._loop.call_soon(self._on_refused, peer)
            return
        self._flush(session.buffer, session.addr)

    async def aclose(self) -> None:
        """Close every session (with close_notify) and the socket."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for session in list(self._by_addr.values()):
            self._close(session, notify=True)
        transport, protocol = self._transport, self._protocol
        self._transport = None
        if transport is not None and protocol is not None:
            transport.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await protocol.closed

    def stats(self) -> dict[str, int]:
        """Counters plus ``sessions`` and ``handshaking`` now."""
        return {
            **self.counters,
            "sessions": len(self._by_addr),
            "handshaking": len(self._handshaking),
        }

    def session_address(self, identity: str) -> Peer | None:
        """The UDP address the session of ``identity`` lives at now (or None)."""
        session = self._by_identity.get(identity)
        return None if session is None else session.addr

    # ------------------------------------------------------------ receiving

    def _has_session(self, addr: Peer) -> bool:
        session = self._by_addr.get(addr)
        return session is not None and session.established

    def _on_udp(self, data: bytes, addr: Any) -> None:
        limiter = self._limiter
        if limiter is not None and not limiter.allow(addr):
            self.counters["dropped"] += 1
            return
        if len(data) < RECORD_HEADER:
            self.counters["bad_records"] += 1
            return
        try:
            session = self._by_addr.get(addr)
            if session is not None and not is_client_hello(data):
                self._feed(session, data)
            elif data[0] == HANDSHAKE:
                self._hello(data, addr, session)
            elif data[0] == APPLICATION:
                self._maybe_moved(data, addr)
            else:
                self.counters["bad_records"] += 1
        except Exception:
            log.exception("internal error processing a DTLS record from %r", addr)

    def _hello(self, data: bytes, addr: Peer, old: _Session | None) -> None:
        """A ClientHello: answer with a cookie, or start a handshake."""
        if not is_client_hello(data):
            self.counters["bad_records"] += 1
            return
        assert self._loop is not None  # noqa: S101 - open() ran
        buffer = self._context.wrap_buffers()
        buffer.setcookieparam(_cookie_info(addr))
        buffer.setmtu(self._mtu)
        session = _Session(buffer, addr, self._loop.time())
        buffer.receive_from_network(data)
        if not self._step(session, new=True):
            return  # HelloVerifyRequest sent (nothing kept) or refused
        if not self._room_for(addr, old):
            self.counters["refused_full"] += 1
            _throttled.log(
                "dtls-full",
                logging.WARNING,
                "DTLS handshake from %r refused: session bounds reached "
                "(coap.dtls_max_sessions/dtls_max_per_host/dtls_max_handshakes)",
                addr,
            )
            return
        if old is not None:
            self._close(old)
        self._add(session)
        self._flush(buffer, addr)

    def _room_for(self, addr: Peer, replacing: _Session | None) -> bool:
        total = len(self._by_addr) - (replacing is not None)
        on_host = len(self._by_host.get(addr[0], ())) - (replacing is not None)
        return (
            total < self._max_sessions
            and on_host < self._max_per_host
            and len(self._handshaking) < self._max_handshakes
        )

    def _step(self, session: _Session, *, new: bool = False) -> bool:
        """Run the handshake as far as the input allows.

        Returns:
            False when the session is over (HelloVerifyRequest, failure).
        """
        self._store.current = session
        try:
            while not session.established:
                try:
                    session.buffer.do_handshake()
                except WantWriteError:
                    if not new:
                        self._flush(session.buffer, session.addr)
        except WantReadError:
            return True
        except HelloVerifyRequest:
            self.counters["hello_verify"] += 1
            self._flush(session.buffer, session.addr)
            return False
        except TLSError as exc:
            self.counters["handshake_failures"] += 1
            self._flush(session.buffer, session.addr)  # the alert, if any
            _throttled.log(
                "dtls-handshake",
                logging.INFO,
                "DTLS handshake with %r (identity %r) failed: %s",
                session.addr,
                session.identity,
                exc,
            )
            if not new:
                self._close(session)
            return False
        finally:
            self._store.current = None
        if not new:
            self._established(session)
        return True

    def _established(self, session: _Session) -> None:
        """The handshake finished: bind the identity to this session."""
        self._flush(session.buffer, session.addr)
        self._handshaking.discard(session)
        identity = session.identity
        if identity is None:  # Mbed TLS never finishes a PSK handshake without one
            self._close(session)
            return
        self.counters["handshakes"] += 1
        previous = self._by_identity.get(identity)
        if previous is not None and previous is not session:
            self._close(previous)
        self._by_identity[identity] = session
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "DTLS session of %r at %r (%s)",
                identity,
                session.addr,
                session.buffer.cipher(),
            )

    def _feed(self, session: _Session, data: bytes) -> None:
        """A record for a known session: continue its handshake or read it."""
        assert self._loop is not None  # noqa: S101 - open() ran
        if session.established and not framed(data):
            self.counters["bad_records"] += 1
            return
        session.last = self._loop.time()
        buffer = session.buffer
        buffer.receive_from_network(data)
        if not session.established:
            self._step(session)
            if session.established:
                self._read(session)
            return
        if not self._read(session):  # forged, replayed or garbage: dropped
            self.counters["bad_records"] += 1

    def _read(self, session: _Session) -> bool:
        """Hand every decrypted record up; False when nothing decrypted."""
        chunk = bytearray(_READ_CHUNK)
        view = memoryview(chunk)
        got = False
        peer = identity_peer(session.identity or "")
        while True:
            try:
                size = session.buffer.readinto(view, _READ_CHUNK)  # type: ignore[arg-type]
            except WantReadError:
                break
            except WantWriteError:
                self._flush(session.buffer, session.addr)
                continue
            except TLSError as exc:  # close_notify, fatal alert, ragged EOF
                self._flush(session.buffer, session.addr)
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("DTLS session of %s ended: %s", peer, exc)
                self._close(session)
                return got
            got = True
            self._on_datagram(bytes(view[:size]), peer)
        self._flush(session.buffer, session.addr)
        return got

    def _maybe_moved(self, data: bytes, addr: Peer) -> None:
        """A protected record from a new port: did a session's NAT binding move?"""
        candidates = self._by_host.get(addr[0])
        if not candidates or not one_protected_record(data):
            self.counters["bad_records"] += 1
            return
        for session in list(candidates):
            if not session.established or session.addr == addr:
                continue
            session.buffer.receive_from_network(data)
            old = session.addr
            self._move(session, addr)  # what it carries is answered at addr
            if self._read(session):
                self.counters["rebound"] += 1
                assert self._loop is not None  # noqa: S101 - open() ran
                session.last = self._loop.time()
                log.info(
                    "DTLS session of %r moved from %r to %r",
                    session.identity,
                    old,
                    addr,
                )
                return
            if self._by_addr.get(addr) is session:  # not closed by the read
                self._move(session, old)
        self.counters["bad_records"] += 1

    def _move(self, session: _Session, addr: Peer) -> None:
        """Re-key ``session`` to ``addr`` (same IP address: same host entry)."""
        if self._by_addr.get(session.addr) is session:
            del self._by_addr[session.addr]
        session.addr = addr
        self._by_addr[addr] = session

    # ---------------------------------------------------------- bookkeeping

    def _add(self, session: _Session) -> None:
        self._by_addr[session.addr] = session
        self._by_host.setdefault(session.addr[0], set()).add(session)
        self._handshaking.add(session)

    def _close(self, session: _Session, *, notify: bool = False) -> None:
        """Forget ``session``; with ``notify`` tell the peer (close_notify alert)."""
        if notify and session.established:
            with contextlib.suppress(TLSError, WantReadError, WantWriteError):
                session.buffer.shutdown()
            self._flush(session.buffer, session.addr)
        if self._by_addr.get(session.addr) is session:
            del self._by_addr[session.addr]
        on_host = self._by_host.get(session.addr[0])
        if on_host is not None:
            on_host.discard(session)
            if not on_host:
                del self._by_host[session.addr[0]]
        self._handshaking.discard(session)
        identity = session.identity
        if identity is not None and self._by_identity.get(identity) is session:
            del self._by_identity[identity]
        self.counters["closed"] += 1

    def _flush(self, buffer: TLSWrappedBuffer, addr: Peer) -> None:
        out = buffer.peek_outgoing(1 << 20)
        if out:
            buffer.consume_outgoing(len(out))
            transport = self._transport
            if transport is not None:
                transport.sendto(out, addr)

    def _sweep(self) -> None:
        """Retransmit handshake flights when due; expire stale sessions."""
        loop = self._loop
        if loop is None or self._transport is None:
            return
        now = loop.time()
        for session in list(self._handshaking):
            if now - session.started > self._handshake_timeout:
                self.counters["handshake_failures"] += 1
                self._close(session)
            else:
                self._step(
                    session
                )  # Mbed TLS resends the flight when its timer ran out
        if now >= self._idle_check_at:  # a full scan, so not every tick
            self._idle_check_at = now + min(_IDLE_SCAN, self._idle_timeout)
            idle = self._idle_timeout
            for session in [
                s for s in self._by_identity.values() if now - s.last > idle
            ]:
                self._close(session, notify=True)
        self._sweeper = loop.call_later(_TICK, self._sweep)


def _cookie_info(addr: Peer) -> bytes:
    """The client transport id the cookie is bound to (address and port)."""
    return f"{addr[0]}|{addr[1]}".encode()


def _discard(data: bytes, peer: Any) -> None:
    """Where datagrams go before :meth:`DtlsServer.start`."""


def _discard_peer(peer: Any) -> None:
    """Where refusals go before :meth:`DtlsServer.start`."""
