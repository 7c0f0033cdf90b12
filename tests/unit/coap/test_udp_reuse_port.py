"""``bind_socket(reuse_port=True)``: the UDP sockets of ``serve --workers`` share a port.

Real loopback sockets: two endpoints in the group both receive datagrams from
many source ports (the kernel hashes each 4-tuple to one of them), replies from
one source always reach the same endpoint, and a socket without the option
cannot join the group.
"""

import asyncio
import socket

import pytest

from msgin5g.coap.udp import bind_socket
from msgin5g.errors import ConnectError

pytestmark = pytest.mark.timeout(30)


async def test_sockets_with_reuse_port_share_a_port_by_4_tuple() -> None:
    loop = asyncio.get_running_loop()
    a = await bind_socket(loop, ("127.0.0.1", 0), 65536, 65536, reuse_port=True)
    port = a.getsockname()[1]
    b = await bind_socket(loop, ("127.0.0.1", port), 65536, 65536, reuse_port=True)
    senders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(32)]
    try:
        for i, s in enumerate(senders):
            s.bind(("127.0.0.1", 0))
            for _ in range(3):  # the same source three times
                s.sendto(b"%d" % i, ("127.0.0.1", port))
        got: dict[str, list[bytes]] = {"a": [], "b": []}
        for name, sock in (("a", a), ("b", b)):
            sock.setblocking(False)
            for _ in range(200):
                try:
                    got[name].append(sock.recv(64))
                except BlockingIOError:
                    break
        assert len(got["a"]) + len(got["b"]) == 96
        assert got["a"] and got["b"]  # 32 sources: both sockets get some
        # one source (4-tuple) always reaches the same socket
        assert not set(got["a"]) & set(got["b"])
        with pytest.raises(ConnectError, match="Address already in use"):
            await bind_socket(loop, ("127.0.0.1", port), 65536, 65536)
    finally:
        for s in (*senders, a, b):
            s.close()
