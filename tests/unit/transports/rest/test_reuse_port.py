"""Two embedded ASGI servers on one port (``rest.reuse_port``, ``serve --workers``).

Real loopback TCP: with ``reuse_port`` two servers (of each kind) bind the same
port and the kernel spreads new connections over both; without it the second
is refused, so a lone server never shares its port by accident.
"""

import asyncio
from typing import Any

import pytest

from msgin5g.errors import ConnectError
from msgin5g.transports.rest.runner import AsgiServer

pytestmark = pytest.mark.timeout(60)


def app_saying(word: bytes) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        length = str(len(word)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", length)],
            }
        )
        await send({"type": "http.response.body", "body": word})

    return app


async def fetch(port: int) -> bytes:
    """One request on a new connection (a new source port each time)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    return data.rpartition(b"\r\n\r\n")[2]


@pytest.mark.parametrize("kind", ["granian", "hypercorn"])
async def test_two_servers_share_one_port_and_both_serve(kind: str) -> None:
    first = AsgiServer(app_saying(b"one"), "127.0.0.1", 0, kind, reuse_port=True)
    await first.start()
    second = AsgiServer(
        app_saying(b"two"), "127.0.0.1", first.port, kind, reuse_port=True
    )
    try:
        await second.start()
        answers = {await fetch(first.port) for _ in range(40)}
        assert answers == {b"one", b"two"}
    finally:
        await second.aclose()
        await first.aclose()


@pytest.mark.parametrize("kind", ["granian", "hypercorn"])
async def test_without_reuse_port_a_taken_port_is_refused(kind: str) -> None:
    first = AsgiServer(app_saying(b"one"), "127.0.0.1", 0, kind, reuse_port=True)
    await first.start()
    try:
        second = AsgiServer(app_saying(b"two"), "127.0.0.1", first.port, kind)
        with pytest.raises(ConnectError, match="Address already in use"):
            await second.start()
        assert await fetch(first.port) == b"one"
    finally:
        await first.aclose()
