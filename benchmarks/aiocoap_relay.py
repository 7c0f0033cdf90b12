"""Baseline for benchmarks/p2p.py: a minimal MSGin5G relay built on aiocoap.

It does only what the benchmark exercises: ``REG`` records the source address
(no credential check, no storage), ``MSG`` is answered 2.04 ``MSGRESP`` and then
POSTed CON to the recipient's address with an aiocoap client request. It is the
"relay on a general-purpose CoAP library" the project compares its engine with.
Run by p2p.py as ``python benchmarks/aiocoap_relay.py PORT``; not a test.
"""

from __future__ import annotations

import asyncio
import sys

import aiocoap
import aiocoap.resource
import msgspec

decoder = msgspec.json.Decoder()


class Relay(aiocoap.resource.Resource):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.addresses: dict[str, str] = {}
        self.context: aiocoap.Context | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
        body = decoder.decode(request.payload)
        kind = body.get("messageType")
        if kind == "REG":
            hostinfo = request.remote.hostinfo
            self.addresses[body["ueServiceId"]] = f"coap://{hostinfo}/msgin5g"
            reply = {
                "messageType": "REGRESP",
                "ueServiceId": body["ueServiceId"],
                "registrationResult": "SUCCESS",
            }
            return aiocoap.Message(
                code=aiocoap.CREATED,
                payload=msgspec.json.encode(reply),
                content_format=50,
            )
        if kind == "MSG":
            target = self.addresses.get(body.get("recipientUeServiceId", ""))
            if target is not None:
                task = asyncio.create_task(self.forward(target, request.payload))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            reply = {
                "messageType": "MSGRESP",
                "messageId": body["messageId"],
                "deliveryStatus": "DELY_ACCEPTED",
            }
            return aiocoap.Message(
                code=aiocoap.CHANGED,
                payload=msgspec.json.encode(reply),
                content_format=50,
            )
        return aiocoap.Message(code=aiocoap.BAD_REQUEST)

    async def forward(self, uri: str, payload: bytes) -> None:
        assert self.context is not None
        message = aiocoap.Message(
            code=aiocoap.POST, uri=uri, payload=payload, content_format=50
        )
        try:
            await self.context.request(message).response
        except Exception:
            pass


async def main(port: int) -> None:
    relay = Relay()
    site = aiocoap.resource.Site()
    site.add_resource(["msgin5g"], relay)
    context = await aiocoap.Context.create_server_context(
        site, bind=("127.0.0.1", port), transports=["udp6"]
    )
    relay.context = context
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
