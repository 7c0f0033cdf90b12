"""The endpoint's native UDP socket (msgin5g.coap._udpio, C) on real sockets, under uvloop.

Built with the compiled hot path; a pure Python install has none and these tests
skip there (``.ci/run``'s compiled pass sets MSGIN5G_EXPECT_COMPILED=1: there a
missing extension fails).
"""

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

# read on import: the autouse fixture clean_environ (tests/conftest.py) hides MSGIN5G_*
if os.environ.get("MSGIN5G_EXPECT_COMPILED") == "1":
    from msgin5g.coap import _udpio
else:
    _udpio = pytest.importorskip("msgin5g.coap._udpio")

IP_RECVERR = 11


def _udp(family: int = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    sock.setblocking(False)
    sock.bind((host, 0))
    return sock


def _dead_ports(count: int) -> list[tuple[str, int]]:
    dead = []
    for _ in range(count):
        closed = _udp()
        dead.append(closed.getsockname())
        closed.close()
    return dead


class Native:
    """A Socket on a fresh UDP socket, watched by the running loop."""

    def __init__(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> None:
        self.sock = _udp(family, host)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        self.datagrams: list[tuple[bytes, Any]] = []
        self.refused: list[Any] = []
        self.errors: list[int] = []
        self.fallback: list[tuple[bytes, Any]] = []
        self.on_datagram: Callable[[bytes, Any], None] = self._keep
        self.arrived = asyncio.Event()
        self.want = 0
        self.native = _udpio.Socket(
            self.sock.fileno(),
            family,
            lambda data, addr: self.on_datagram(data, addr),
            self._refused,
            self.errors.append,
            lambda data, addr: self.fallback.append((data, addr)),
        )
        asyncio.get_running_loop().add_reader(
            self.native.poll_fileno(), self.native.read
        )

    def _keep(self, data: bytes, addr: Any) -> None:
        self.datagrams.append((data, addr))
        if len(self.datagrams) >= self.want:
            self.arrived.set()

    def _refused(self, addr: Any) -> None:
        self.refused.append(addr)
        if len(self.refused) >= self.want:
            self.arrived.set()

    async def wait(self, want: int) -> None:
        self.want = want
        if len(self.datagrams) < want and len(self.refused) < want:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 10)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.native.poll_fileno())
        self.native.close()
        self.sock.close()


def run(coro: Any) -> Any:
    return uvloop.run(coro)


def test_datagrams_arrive_whole_in_order_with_one_tuple_per_source() -> None:
    async def main() -> None:
        server = Native()
        client = _udp()
        sizes = [1, 4, 1472, 1473, 9000, 65507] + [20 + i % 300 for i in range(994)]
        try:
            for i, size in enumerate(sizes):
                client.sendto(
                    b"%06d" % i + b"x" * (size - 6 if size > 6 else 0),
                    server.sock.getsockname(),
                )
                if i % 200 == 199:
                    await asyncio.sleep(0)
            await server.wait(len(sizes))
            data = [d for d, _ in server.datagrams]
            assert [int(d[:6]) for d in data] == list(range(len(sizes)))
            assert [len(d) for d in data] == [max(s, 6) for s in sizes]
            addrs = {id(a) for _, a in server.datagrams}
            assert server.datagrams[0][1] == client.getsockname()
            assert len(addrs) == 1  # the cached tuple, every time
            stats = server.native.stats()
            assert stats["received"] == len(sizes)
            assert stats["batches"] < len(sizes)  # recvmmsg took several at once
        finally:
            client.close()
            server.close()

    run(main())


def test_ipv6_sources_are_four_tuples_and_answers_go_back() -> None:
    async def main() -> None:
        server = Native(socket.AF_INET6, "::1")
        client = _udp(socket.AF_INET6, "::1")
        client.settimeout(2)
        try:
            client.sendto(b"ping", server.sock.getsockname())
            await server.wait(1)
            data, addr = server.datagrams[0]
            assert data == b"ping"
            assert addr == client.getsockname() and len(addr) == 4
            server.native.sendto(b"pong", addr)
            client.setblocking(True)
            assert client.recv(100) == b"pong"
        finally:
            client.close()
            server.close()

    run(main())


def test_icmp_refusals_name_each_dead_port_and_do_not_poison_later_sends() -> None:
    async def main() -> None:
        server = Native()
        live = _udp()
        try:
            dead = _dead_ports(150)
            for address in dead:
                server.native.sendto(b"anyone?", address)
            await server.wait(150)
            assert sorted(server.refused) == sorted(dead)
            assert server.native.stats()["refused"] == 150
            # the error queue is empty and SO_ERROR cleared: these all go out
            for i in range(20):
                server.native.sendto(b"%d" % i, live.getsockname())
            live.setblocking(True)
            live.settimeout(2)
            assert sorted(live.recv(10) for _ in range(20)) == sorted(
                b"%d" % i for i in range(20)
            )
            assert server.errors == []
            assert server.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        finally:
            live.close()
            server.close()

    run(main())


def test_a_callback_that_raises_loses_no_other_datagram() -> None:
    async def main() -> None:
        server = Native()
        client = _udp()
        unraisable: list[Any] = []
        hook, sys.unraisablehook = sys.unraisablehook, unraisable.append
        seen: list[bytes] = []

        def picky(data: bytes, addr: Any) -> None:
            seen.append(data)
            if data.endswith(b"3"):
                raise ValueError("a handler bug")
            server._keep(data, addr)

        server.on_datagram = picky
        try:
            for i in range(100):
                client.sendto(b"%d" % i, server.sock.getsockname())
            server.want = 90
            await asyncio.wait_for(server.arrived.wait(), 10)
            while len(seen) < 100:
                await asyncio.sleep(0.01)
            assert len(server.datagrams) == 90
            assert len(unraisable) == 10
            assert isinstance(unraisable[0].exc_value, ValueError)
        finally:
            sys.unraisablehook = hook
            client.close()
            server.close()

    run(main())


def test_names_go_to_the_fallback_and_a_closed_socket_refuses_to_send() -> None:
    async def main() -> None:
        server = Native()
        server.native.sendto(b"x", ("localhost", 9))
        server.native.sendto(bytearray(b"y"), ("127.0.0.1", 9))
        assert server.fallback == [
            (b"x", ("localhost", 9)),
            (bytearray(b"y"), ("127.0.0.1", 9)),
        ]
        server.close()
        server.native.close()  # idempotent
        server.native.read()  # nothing to do
        with pytest.raises(OSError, match="Bad file descriptor"):
            server.native.sendto(b"x", ("127.0.0.1", 9))

    run(main())


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="family"):
        _udpio.Socket(0, socket.AF_UNIX, print, None, None, print)
    with pytest.raises(TypeError, match="callable"):
        _udpio.Socket(0, socket.AF_INET, None, None, None, print)


STORM = textwrap.dedent(
    """
    import asyncio, socket, uvloop
    from msgin5g.coap import (CoapMessage, Code, Endpoint, Request, Site,
        TransmissionParameters, Type, make_response, uri_path_options)
    from msgin5g.errors import PortUnreachable, RequestTimeout

    async def echo(request: Request) -> CoapMessage:
        return make_response(request.message, Code.CHANGED, request.message.payload)

    async def main() -> None:
        site = Site()
        site.add(("echo",), echo)
        params = TransmissionParameters(ack_timeout=1.0, max_retransmit=2, nstart=4096)
        server = await Endpoint.create(("127.0.0.1", 0), site=site, params=params,
                                       send_thread=SEND_THREAD)
        client = await Endpoint.create(("127.0.0.1", 0), params=params)
        dead = []
        for _ in range(1000):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", 0))
            dead.append(s.getsockname())
            s.close()
        echo_path = uri_path_options(("echo",))

        async def echoes(n: int) -> int:
            replies = await asyncio.gather(*(
                client.request(CoapMessage(Type.CON, Code.POST, options=echo_path,
                                           payload=b"%d" % i),
                               server.local_address, timeout=20)
                for i in range(n)))
            return len(replies)

        async def probes() -> list[object]:
            return await asyncio.gather(*(
                server.request(CoapMessage(Type.CON, Code.GET), d, timeout=20)
                for d in dead), return_exceptions=True)

        for _ in range(3):  # ICMP errors interleaved with traffic both ways
            got, outcomes = await asyncio.gather(echoes(1500), probes())
            assert got == 1500
            odd = [o for o in outcomes if not isinstance(o, PortUnreachable)]; assert not odd, (len(odd), odd[:3])
        await client.aclose()
        await server.aclose()
        print("survived", server.stats()["socket_refused"])

    uvloop.run(main())
    """
)


@pytest.mark.parametrize("send_thread", [False, True])
def test_a_storm_of_icmp_errors_under_load_leaves_the_server_serving(
    send_thread: bool,
) -> None:
    """The uvloop 0.23 crash (libuv reading the error queue, issue #5242): with
    the loop's transport and the send thread this killed servers with SIGSEGV.
    In a child process, so a crash fails the test instead of the run."""
    result = subprocess.run(
        [sys.executable, "-c", STORM.replace("SEND_THREAD", str(send_thread))],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("survived"), result.stdout
    assert int(result.stdout.split()[1]) >= 3000


@pytest.mark.parametrize("native_socket", [True, False])
def test_the_endpoint_serves_on_either_socket(native_socket: bool) -> None:
    """``coap.native_socket``: C by default, the loop's transport when False."""
    from msgin5g.coap import CoapMessage, Code, Endpoint, Type
    from msgin5g.errors import PortUnreachable

    async def main() -> None:
        server = await Endpoint.create(("127.0.0.1", 0), native_socket=native_socket)
        client = await Endpoint.create(("127.0.0.1", 0))
        try:
            assert type(server._socket).__name__ == (
                "_NativeSocket" if native_socket else "_LoopSocket"
            )
            reply = await client.request(
                CoapMessage(Type.CON, Code.GET), server.local_address, timeout=5
            )
            assert reply.code == Code.NOT_FOUND  # no site: every path 4.04
            with pytest.raises(PortUnreachable):
                await server.request(
                    CoapMessage(Type.CON, Code.GET), _dead_ports(1)[0], timeout=30
                )
            assert ("socket_received" in server.stats()) is native_socket
        finally:
            await client.aclose()
            await server.aclose()

    run(main())
