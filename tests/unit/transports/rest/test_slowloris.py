"""Slow-header connections (slowloris, issue 10 item 13) on real loopback TCP.

The embedded ASGI server closes a connection that has not sent a complete
request head within ``rest.header_timeout``, and answers legitimate requests
while slow connections are held. Bounded: 40 slow connections, 1 s timeout.
"""

import asyncio
import contextlib

import httpx
import pytest

from msgin5g.config import RestConfig
from msgin5g.transports.rest.runner import AsgiServer

from .conftest import make_rig

pytestmark = pytest.mark.timeout(60)

SLOW = 40
HEAD = b"POST /msgs-asregistration/v1/registrations HTTP/1.1\r\nHost: x\r\n"


async def closed_by_server(reader: asyncio.StreamReader, limit: float) -> bool:
    """Whether the server closed the connection (EOF or reset) within ``limit`` s."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


@pytest.mark.parametrize("kind", ["granian", "hypercorn"])
async def test_slow_headers_are_cut_off_and_others_are_served(kind: str) -> None:
    rig, backend = await make_rig(RestConfig())
    app = rig.http._transport.app  # type: ignore[attr-defined]
    server = AsgiServer(app, "127.0.0.1", 0, kind, header_timeout=1.0)
    await server.start()
    slow: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(SLOW):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(HEAD)  # the head never ends
            slow.append((reader, writer))
        await asyncio.gather(*(w.drain() for _, w in slow))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as c:
            resp = await c.post(
                "/msgs-asregistration/v1/registrations", json={"asSvcId": "as1"}
            )
        assert resp.status_code == 201, resp.text
        # every slow connection is closed by the server (well within 10 s)
        closed = await asyncio.gather(*(closed_by_server(r, 10.0) for r, _ in slow))
        assert all(closed), closed.count(False)
    finally:
        for _, writer in slow:
            writer.close()
        await server.aclose()
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


async def test_a_trickling_head_is_cut_off_at_the_header_timeout() -> None:
    """One header line every 0.3 s never lets the 1 s head deadline restart (Granian)."""
    rig, backend = await make_rig(RestConfig())
    app = rig.http._transport.app  # type: ignore[attr-defined]
    server = AsgiServer(app, "127.0.0.1", 0, "granian", header_timeout=1.0)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(HEAD)
        closed = False
        for _ in range(40):  # 12 s of trickling at most
            with contextlib.suppress(ConnectionError):
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
            if await closed_by_server(reader, 0.3):
                closed = True
                break
        writer.close()
        assert closed
    finally:
        await server.aclose()
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()
