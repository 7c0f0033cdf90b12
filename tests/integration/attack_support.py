"""A bare UDP attacker for the attack tests: hand-built CoAP, no client library."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from msgin5g.coap.message import CoapMessage, uri_path_options
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.config import load_config
from msgin5g.server import Server, provision_ue


async def attack_server(
    tmp_path: Path, ues: tuple[str, ...] = ("ue1", "ue2"), **settings: str
) -> AsyncIterator[Server]:
    """A server on a real SQLite file and loopback UDP; UEs provisioned.

    ``settings`` are extra ``section.key`` overrides, passed as
    ``**{"coap.max_payload": "64000"}``.
    """
    url = f"sqlite:///{tmp_path / 'msgin5g.db'}"
    for ue in ues:
        await provision_ue(url, ue, f"secret-{ue}")
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "coap.ack_timeout": "0.2",
            "coap.max_retransmit": "1",
            "rest.enabled": "false",
            **settings,
        },
    )
    async with Server(config) as srv:
        yield srv


def server_uri(server: Server) -> str:
    host, port = server.coap_address
    return f"coap://{host}:{port}"


def post(body: dict[str, object] | bytes, mid: int) -> bytes:
    """A CON POST /msgin5g datagram with Content-Format 50."""
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return CoapMessage(
        mtype=Type.CON,
        code=Code.POST,
        mid=mid & 0xFFFF,
        token=(mid & 0xFFFF).to_bytes(2, "big"),
        options=[
            *uri_path_options(("msgin5g",)),
            (OptionNumber.CONTENT_FORMAT, bytes([50])),
        ],
        payload=payload,
    ).encode()


async def raw_post(
    server: Server, body: dict[str, object] | bytes, mid: int
) -> CoapMessage:
    """One CON POST /msgin5g from a fresh socket; the piggybacked answer."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        await loop.sock_sendto(sock, post(body, mid), server.coap_address)
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
    return CoapMessage.decode(data)
