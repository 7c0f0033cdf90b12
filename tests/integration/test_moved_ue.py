"""A UE that re-registers from a new address while a CON to its old one is in flight.

With RFC 7252 defaults the CON to the old address would be retransmitted for
~45 s (MAX_TRANSMIT_WAIT) before the queue moved on; the new registration makes
the server give up on the old address at once and deliver to the new one.
"""

import asyncio
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.model.messages import Msg
from msgin5g.server import Server, provision_ue

pytestmark = pytest.mark.timeout(40)


async def test_delivery_follows_a_re_registration_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'moved.db'}"
    for ue in ("ue1", "ue2"):
        await provision_ue(url, ue, f"secret-{ue}")
    config = load_config(
        None,
        {},
        {"coap.bind": "127.0.0.1:0", "storage.url": url, "rest.enabled": "false"},
    )
    async with Server(config) as server:
        host, port = server.coap_address
        address = f"coap://{host}:{port}"

        def client(ue: str) -> Client:
            return Client(ue, f"secret-{ue}", server=address, bind=("127.0.0.1", 0))

        async with client("ue1") as sender:
            await sender.register()
            gone = client("ue2")
            await gone.start()
            await gone.register()
            await gone.subscribe("news")
            await gone.aclose()  # its socket is closed: CONs to it go unanswered
            resp = await sender.send("ue2", b"after the move", store_and_forward=True)
            assert resp.delivery_status == "DELY_ACCEPTED"  # in flight to the old port
            # a fan-out copy too (it takes the burst path: no mailbox)
            await sender.publish("news", b"extra", store_and_forward=True)
            await asyncio.sleep(0.5)
            async with client("ue2") as moved:  # a new port: a new contact
                await moved.register()
                # well inside MAX_TRANSMIT_WAIT (~45 s) of the old attempts
                payloads = set()
                for _ in range(2):
                    got = await moved.receive(timeout=15)
                    assert isinstance(got.item, Msg)
                    payloads.add(got.item.payload)
                assert payloads == {b"after the move", b"extra"}
