"""ICMP port unreachable fails an exchange at once; real loss still retransmits.

A CON to a closed loopback UDP port used to retransmit for MAX_TRANSMIT_WAIT
(~93 s with the RFC 7252 defaults) although the kernel answered every datagram
with ICMP port unreachable. These tests use the default transmission
parameters: without the fast failure they would wait for the outer bound.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest

from msgin5g.coap import CoapMessage, Code, Endpoint, Type, uri_path_options
from msgin5g.coap.udp import use_uvloop
from msgin5g.errors import PortUnreachable, RequestTimeout, TransportError

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="IP_RECVERR is Linux only"
)


def closed_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def con_post() -> CoapMessage:
    return CoapMessage(
        Type.CON, Code.POST, options=uri_path_options(("reg",)), payload=b"{}"
    )


async def test_con_to_closed_port_fails_fast() -> None:
    port = closed_udp_port()
    async with await Endpoint.create(("0.0.0.0", 0)) as client:
        with pytest.raises(PortUnreachable) as info:
            async with asyncio.timeout(5):
                await client.request(con_post(), ("127.0.0.1", port))
    assert isinstance(info.value, TransportError)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "ICMP port unreachable" in str(info.value)
    assert info.value.hint()


async def test_nowait_fan_out_to_closed_port_fails_fast() -> None:
    ports = [closed_udp_port() for _ in range(3)]
    async with await Endpoint.create(("127.0.0.1", 0)) as client:
        futures = [client.request_nowait(con_post(), ("127.0.0.1", p)) for p in ports]
        async with asyncio.timeout(5):
            done = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(d, PortUnreachable) for d in done)


async def test_open_but_silent_peer_still_retransmits() -> None:
    """A bound socket that never answers sends no ICMP: that is real loss."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        async with await Endpoint.create(("127.0.0.1", 0)) as client:
            with pytest.raises(RequestTimeout):
                await client.request(con_post(), silent.getsockname(), timeout=0.5)
        silent.setblocking(False)
        assert silent.recv(64)  # the CON did arrive


def test_fails_fast_on_uvloop_too() -> None:
    if not use_uvloop():
        pytest.skip("uvloop not installed")
    try:
        asyncio.run(test_con_to_closed_port_fails_fast())
    finally:
        asyncio.set_event_loop_policy(None)


def test_the_whole_error_queue_is_drained() -> None:
    """More ICMP errors than one read used to take (64): all are reported and the
    queue is left empty (uvloop 0.23's libuv crashes on a queue left to it)."""
    from msgin5g.coap.udp import DatagramProtocol, enable_icmp_errors

    dead = [closed_udp_port() for _ in range(150)]
    refused: list[object] = []
    sent: set[int] = set()

    async def scenario() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            assert enable_icmp_errors(sock)
            sock.setblocking(False)
            for port in dead:
                try:
                    sock.sendto(b"x", ("127.0.0.1", port))
                    sent.add(port)
                except ConnectionRefusedError:  # the error held for the one before:
                    pass  # this datagram was not sent
            protocol = DatagramProtocol(
                lambda data, addr: None, sock=sock, on_refused=refused.append
            )
            protocol.error_received(ConnectionRefusedError())
            with pytest.raises(BlockingIOError):  # nothing left in the queue
                sock.recvmsg(1, 512, socket.MSG_ERRQUEUE)

    asyncio.run(scenario())
    assert len(sent) > 64
    assert {addr[1] for addr in refused} == sent  # type: ignore[index]
