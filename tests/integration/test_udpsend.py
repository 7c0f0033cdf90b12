"""The CoAP listener's send thread (msgin5g.coap._udpsend, C) on real UDP sockets.

The extension is built by ``pip install`` with the compiled hot path; a pure Python
install has none, and these tests skip there (``.ci/run``'s compiled pass sets
MSGIN5G_EXPECT_COMPILED=1: there a missing extension fails).
"""

import asyncio
import errno
import os
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from msgin5g.coap import (
    CoapMessage,
    Code,
    Endpoint,
    Request,
    Site,
    TransmissionParameters,
    Type,
    make_response,
    uri_path_options,
)
from msgin5g.errors import PortUnreachable

# read on import: the autouse fixture clean_environ (tests/conftest.py) hides MSGIN5G_*
if os.environ.get("MSGIN5G_EXPECT_COMPILED") == "1":
    from msgin5g.coap import _udpsend
else:
    _udpsend = pytest.importorskip("msgin5g.coap._udpsend")

SLOTS = 4096  # the ring's size in _udpsend.c
ECHO = uri_path_options(("echo",))


def _udp(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.bind((host, 0))
    return sock


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    sender, receiver = _udp(), _udp()
    sender.setblocking(False)
    receiver.settimeout(2.0)
    yield sender, receiver
    sender.close()
    receiver.close()


def _receive(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(70000) for _ in range(count)]


def test_datagrams_arrive_whole_and_in_order(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sock, receiver = pair
    fallback: list[tuple[bytes, Any]] = []
    sender = _udpsend.Sender(
        sock.fileno(), sock.family, lambda d, a: fallback.append((d, a))
    )
    big = bytes(range(256)) * 40  # 10,240 bytes: beyond a slot, copied to the heap
    datagrams = [b"%05d" % i for i in range(500)] + [big, b"last"]
    for data in datagrams:
        sender.send(data, receiver.getsockname())
    assert _receive(receiver, len(datagrams)) == datagrams
    sender.close()
    stats = sender.stats()
    assert stats["sent"] == len(datagrams)
    assert stats["failed"] == stats["fallbacks"] == stats["queued"] == 0
    assert fallback == []


def test_a_full_ring_and_a_host_name_go_to_the_fallback(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Back-pressure, not loss: what the ring cannot take the caller sends.

    The thread is held still inside ``on_error`` (an ICMP error it reports)
    while the ring fills up."""
    sock, receiver = pair
    sock.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
    fallback: list[tuple[bytes, Any]] = []
    release = threading.Event()

    def direct(data: bytes, addr: Any) -> None:
        fallback.append((data, addr))
        sock.sendto(data, addr)

    def hold(err: int) -> None:  # the send thread, with the GIL (Event.wait drops it)
        release.wait(10)

    sender = _udpsend.Sender(sock.fileno(), sock.family, direct, hold)
    port = receiver.getsockname()[1]
    sender.send(b"by name", ("localhost", port))
    assert fallback == [(b"by name", ("localhost", port))]
    assert receiver.recv(100) == b"by name"
    closed = _udp()
    dead = closed.getsockname()
    closed.close()
    sender.send(b"to nobody", dead)
    time.sleep(0.2)  # the ICMP error is held by the socket; the next send meets it
    total = SLOTS + 100
    for i in range(total):
        sender.send(b"%06d" % i, ("127.0.0.1", port))
    overflow = len(fallback) - 1
    release.set()
    sender.close()
    assert overflow >= 99  # the ring held SLOTS less the one being sent
    got = set(_receive(receiver, total))
    assert got == {b"%06d" % i for i in range(total)}
    stats = sender.stats()
    assert stats["sent"] + stats["fallbacks"] == total + 2
    assert stats["depth_max"] == SLOTS


def test_close_sends_what_is_queued_and_later_sends_use_the_fallback(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sock, receiver = pair
    fallback: list[bytes] = []
    sender = _udpsend.Sender(
        sock.fileno(), sock.family, lambda d, a: fallback.append(d)
    )
    for i in range(1000):
        sender.send(b"q%d" % i, receiver.getsockname())
    sender.close()
    sender.close()  # idempotent
    assert len(_receive(receiver, 1000)) == 1000
    sender.send(b"after close", receiver.getsockname())
    assert fallback == [b"after close"]


def test_a_quiet_loop_sends_itself_and_a_busy_one_hands_over_per_turn(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """With ``schedule`` (the loop's call_soon), a turn of at most 4 datagrams
    while the thread sleeps is sent by the caller; a longer turn is queued and
    the thread woken once, by flush() after the turn; the turn after a busy one
    is queued too."""
    sock, receiver = pair
    turns: list[int] = []
    sender = _udpsend.Sender(
        sock.fileno(), sock.family, sock.sendto, None, lambda: turns.append(1)
    )
    to = receiver.getsockname()

    def settle() -> None:  # the thread sent everything and sleeps
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = sender.stats()
            if stats["sleeping"] and not stats["queued"]:
                return
            time.sleep(0.005)
        raise AssertionError(f"the send thread does not go to sleep: {stats}")

    settle()
    for i in range(4):  # a quiet turn: sent at once, in order
        sender.send(b"q%d" % i, to)
    assert _receive(receiver, 4) == [b"q0", b"q1", b"q2", b"q3"]
    assert sender.stats()["direct"] == 4
    sender.send(b"fifth", to)  # more than 4 in this turn: queued until the flush
    assert sender.stats()["queued"] == 1  # the thread sleeps: nobody woke it
    assert len(turns) == 1  # one flush asked for per turn
    sender.flush()
    assert receiver.recv(100) == b"fifth"
    settle()
    sender.send(b"after a busy turn", to)  # queued again
    assert sender.stats()["queued"] == 1
    sender.flush()
    assert receiver.recv(100) == b"after a busy turn"
    settle()
    sender.send(b"quiet again", to)
    assert sender.stats()["direct"] == 5
    assert receiver.recv(100) == b"quiet again"
    sender.close()
    assert sender.stats()["wakeups"] == 2


def test_an_icmp_error_met_by_a_direct_send_is_reported_too(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A quiet turn's own sendto can meet the held ICMP error of an earlier
    datagram: it is reported (else the loop never hears of it and epoll keeps
    reporting the error queue) and the datagram is sent again."""
    sock, receiver = pair
    sock.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
    closed = _udp()
    dead = closed.getsockname()
    closed.close()
    errors: list[int] = []
    fallback: list[bytes] = []

    def direct(data: bytes, addr: Any) -> None:
        fallback.append(data)
        sock.sendto(data, addr)

    turns: list[int] = []
    sender = _udpsend.Sender(
        sock.fileno(), sock.family, direct, errors.append, lambda: turns.append(1)
    )
    deadline = time.monotonic() + 10
    while not sender.stats()["sleeping"] and time.monotonic() < deadline:
        time.sleep(0.005)
    sender.send(b"to nobody", dead)  # direct: the thread sleeps
    time.sleep(0.2)  # the ICMP error comes back and is held by the socket
    sender.send(b"alive", receiver.getsockname())  # the same turn: direct again
    assert receiver.recv(100) == b"alive"
    assert errors == [errno.ECONNREFUSED]
    assert fallback == [b"alive"]
    assert sender.stats()["direct"] == 1
    sender.close()


def test_ipv6_with_flow_info_and_scope() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        sock, receiver = _udp(socket.AF_INET6, "::1"), _udp(socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("no IPv6 loopback here")
    receiver.settimeout(2.0)
    with sock, receiver:
        sender = _udpsend.Sender(sock.fileno(), sock.family, sock.sendto)
        address = receiver.getsockname()  # ('::1', port, 0, 0)
        assert len(address) == 4
        sender.send(b"six", address)
        sender.send(b"two", address[:2])
        assert _receive(receiver, 2) == [b"six", b"two"]
        sender.close()
        assert sender.stats()["fallbacks"] == 0


def test_an_icmp_error_is_reported_and_the_next_datagram_still_leaves(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """IP_RECVERR: the kernel holds the ICMP error and returns it from a later
    send; the thread reports it and retries the datagram it failed."""
    sock, receiver = pair
    sock.setsockopt(socket.IPPROTO_IP, 11, 1)  # IP_RECVERR
    closed = _udp()
    dead = closed.getsockname()
    closed.close()
    errors: list[int] = []
    sender = _udpsend.Sender(sock.fileno(), sock.family, sock.sendto, errors.append)
    sender.send(b"to nobody", dead)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # the ICMP error comes back
        sender.send(b"alive", receiver.getsockname())
        assert receiver.recv(100) == b"alive"
        if errors:
            break
        time.sleep(0.01)
    sender.close()
    assert errors and errors[0] in (errno.ECONNREFUSED, 0)  # 0: a batch sent in part
    assert sender.stats()["failed"] == 0


def test_the_constructor_refuses_what_it_cannot_use() -> None:
    with pytest.raises(ValueError, match="family"):
        _udpsend.Sender(0, socket.AF_UNIX, print)
    with pytest.raises(TypeError, match="callable"):
        _udpsend.Sender(0, socket.AF_INET, None)


# -------------------------------------------------------- the endpoint uses it


async def _echo(request: Request) -> CoapMessage:
    return make_response(request.message, Code.CHANGED, request.message.payload)


async def test_an_endpoint_with_the_send_thread_answers_and_fails_dead_peers_fast() -> (
    None
):
    """With the thread the socket still reads ICMP errors: the native socket
    (:mod:`msgin5g.coap._udpio`) drains the error queue itself, libuv never
    sees it. Requests to closed ports fail at once (no retransmissions), and
    the endpoint keeps serving."""
    site = Site()
    site.add(("echo",), _echo)
    fast = TransmissionParameters(ack_timeout=2.0, max_retransmit=4, nstart=64)
    server = await Endpoint.create(
        ("127.0.0.1", 0), site=site, params=fast, send_thread=True
    )
    client = await Endpoint.create(("127.0.0.1", 0))
    native = server._socket
    try:
        assert native._sender is not None
        assert native._sock.getsockopt(socket.IPPROTO_IP, 11) == 1  # IP_RECVERR on

        async def echo_round(count: int) -> None:
            replies = await asyncio.gather(
                *(
                    client.request(
                        CoapMessage(
                            Type.CON, Code.POST, options=ECHO, payload=b"%d" % i
                        ),
                        server.local_address,
                        timeout=5,
                    )
                    for i in range(count)
                )
            )
            assert sorted(r.payload for r in replies) == sorted(
                b"%d" % i for i in range(count)
            )

        await echo_round(200)
        stats = native._sender.stats()
        assert stats["sent"] + stats["direct"] >= 200
        counters = server.stats()
        assert counters["send_thread_queued"] == 0
        assert counters["send_thread_fallbacks"] == counters["send_thread_failed"] == 0
        dead = []
        for _ in range(50):
            closed = _udp()
            dead.append(closed.getsockname())
            closed.close()
        outcomes = await asyncio.gather(
            *(
                server.request(CoapMessage(Type.CON, Code.GET), d, timeout=30)
                for d in dead
            ),
            return_exceptions=True,
        )
        # the first retransmission would come after 2-3 s: ICMP failed them
        assert all(isinstance(o, PortUnreachable) for o in outcomes), outcomes
        assert server.stats()["socket_refused"] >= 50
        await echo_round(20)  # still serving
    finally:
        await client.aclose()
        await server.aclose()
    assert native._sender.stats()["queued"] == 0
