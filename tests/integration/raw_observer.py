"""A bare-UDP MSGin5G UE for topic tests: REG, TOPICSUB and Observe by hand.

No CoAP engine on the client side, so the test decides exactly what is
acknowledged: an observer that stops reading its socket never ACKs a CON
notification (the "dead observer" of issue 10, item 12).
"""

import asyncio
import json
import socket
from typing import Any

from msgin5g.coap import (
    CoapMessage,
    Code,
    OptionNumber,
    Type,
    encode_uint,
    uri_path_options,
)
from msgin5g.model.credentials import psk_token

_CF_JSON = (OptionNumber.CONTENT_FORMAT, encode_uint(50))


class RawUE:
    """One UDP socket speaking just enough CoAP to register and observe."""

    def __init__(self, ue: str, secret: str, server: tuple[str, int]) -> None:
        self.ue = ue
        self.secret = secret
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self._mid = 1

    def close(self) -> None:
        self.sock.close()

    async def _exchange(self, message: CoapMessage, limit: float = 5.0) -> CoapMessage:
        """Send a CON request; return the piggybacked answer (same Message ID)."""
        loop = asyncio.get_running_loop()
        self._mid += 1
        message.mid = self._mid
        await loop.sock_sendto(self.sock, message.encode(), self.server)
        async with asyncio.timeout(limit):
            while True:
                answer = CoapMessage.decode(await loop.sock_recv(self.sock, 4096))
                if answer.mid == message.mid and answer.mtype == Type.ACK:
                    return answer

    async def post(self, body: dict[str, Any]) -> CoapMessage:
        """CON POST a JSON message to ``/msgin5g``."""
        return await self._exchange(
            CoapMessage(
                Type.CON,
                Code.POST,
                token=b"p" + self._mid.to_bytes(2, "big"),
                options=[*uri_path_options(("msgin5g",)), _CF_JSON],
                payload=json.dumps(body).encode(),
            )
        )

    async def register(self) -> None:
        answer = await self.post(
            {
                "messageType": "REG",
                "ueServiceId": self.ue,
                "ueCredentialInfo": {
                    "authType": "PSK_TOKEN",
                    "credential": psk_token(self.secret, self.ue),
                },
            }
        )
        assert answer.code == Code.CREATED, answer

    async def observe(self, topic: str, token: bytes = b"obs") -> CoapMessage:
        """GET ``/msgin5g/topics/{topic}`` with Observe = 0; the answer."""
        options = uri_path_options(("msgin5g", "topics", topic))
        options.append((OptionNumber.OBSERVE, encode_uint(0)))
        return await self._exchange(
            CoapMessage(Type.CON, Code.GET, token=token, options=options)
        )

    async def notification(self, limit: float = 10.0) -> CoapMessage:
        """The next 2.05 notification; a CON one is acknowledged."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(limit):
            while True:
                message = CoapMessage.decode(await loop.sock_recv(self.sock, 4096))
                if message.code != Code.CONTENT:
                    continue
                if message.mtype == Type.CON:
                    ack = CoapMessage(Type.ACK, 0, message.mid)
                    await loop.sock_sendto(self.sock, ack.encode(), self.server)
                return message
