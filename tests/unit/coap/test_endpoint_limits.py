"""Flood control in the endpoint, over real loopback UDP (no timing assertions).

The limiter's clock is frozen, so no token is refilled during the test: what a
source may send is exactly its burst, whatever the speed of the machine.
"""

from __future__ import annotations

import asyncio
import socket

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
from msgin5g.coap.limits import SourceLimiter

FAST = TransmissionParameters(ack_timeout=0.2, max_retransmit=2)
BURST = 10
FLOOD = 300


async def test_a_flooding_source_is_throttled_while_another_is_served() -> None:
    handled: list[object] = []

    async def handler(req: Request) -> CoapMessage:
        handled.append(req.peer)
        return make_response(req.message, Code.CHANGED, b"ok")

    site = Site()
    site.add(("r",), handler)
    limiter = SourceLimiter(lambda: 0.0, rate=1.0, burst=BURST)
    server = await Endpoint.create(site=site, source_limiter=limiter, params=FAST)
    client = await Endpoint.create(params=FAST)
    flooder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        flooder.bind(("127.0.0.1", 0))
        flooder_addr = flooder.getsockname()
        for mid in range(FLOOD):
            flooder.sendto(
                CoapMessage(
                    Type.NON, Code.POST, mid, b"f", uri_path_options(("r",)), b"x"
                ).encode(),
                server.local_address,
            )
        # a second source (same host, other port) is answered during the flood
        response = await client.request(
            CoapMessage(Type.CON, Code.POST, options=uri_path_options(("r",))),
            server.local_address,
            timeout=5.0,
        )
        assert response.code == Code.CHANGED
        # the flood was received before the request (one socket, FIFO)
        for _ in range(100):
            if len(handled) >= BURST + 1:
                break
            await asyncio.sleep(0.01)
        from_flooder = [p for p in handled if p[1] == flooder_addr[1]]  # type: ignore[index]
        assert len(from_flooder) == BURST  # the rest got no processing at all
        stats = server.stats()
        assert stats["dropped"] == FLOOD - BURST
        # dropped datagrams never reached the message layer
        assert stats["received"] == BURST + 1
        assert stats["sources"] == 2
    finally:
        flooder.close()
        await client.aclose()
        await server.aclose()


async def test_a_trusted_source_gets_the_high_limit() -> None:
    handled = 0

    async def handler(req: Request) -> CoapMessage:
        nonlocal handled
        handled += 1
        return make_response(req.message, Code.CHANGED)

    site = Site()
    site.add(("r",), handler)
    trusted: set[object] = set()
    limiter = SourceLimiter(
        lambda: 0.0,
        rate=1.0,
        burst=2,
        trusted_burst=1000,
        is_trusted=lambda peer: peer in trusted,
    )
    server = await Endpoint.create(site=site, source_limiter=limiter, params=FAST)
    client = await Endpoint.create(params=FAST)
    try:
        trusted.add(("127.0.0.1", client.local_address[1]))
        for _ in range(50):
            response = await client.request(
                CoapMessage(Type.CON, Code.POST, options=uri_path_options(("r",))),
                server.local_address,
                timeout=5.0,
            )
            assert response.code == Code.CHANGED
        assert handled == 50
        assert server.stats()["dropped"] == 0
    finally:
        await client.aclose()
        await server.aclose()


async def test_endpoints_without_a_limiter_drop_nothing() -> None:
    site = Site()

    async def handler(req: Request) -> CoapMessage:
        return make_response(req.message, Code.CHANGED)

    site.add(("r",), handler)
    server = await Endpoint.create(site=site, params=FAST)
    client = await Endpoint.create(params=FAST)
    try:
        for _ in range(30):
            response = await client.request(
                CoapMessage(Type.CON, Code.POST, options=uri_path_options(("r",))),
                server.local_address,
                timeout=5.0,
            )
            assert response.code == Code.CHANGED
        assert "dropped" not in server.stats()
    finally:
        await client.aclose()
        await server.aclose()
