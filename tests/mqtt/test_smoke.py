from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.model.messages import Msg
from msgin5g.server import Server, provision_ue
from tests.mosquitto import Mosquitto

pytestmark = pytest.mark.timeout(60)


async def test_mqtt_to_coap(tmp_path: Path, broker: Mosquitto) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    for ue in ("a", "b"):
        await provision_ue(url, ue, f"secret-{ue}")
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "rest.enabled": "false",
            "mqtt.url": broker.url,
        },
    )
    async with Server(config) as server:
        host, port = server.coap_address
        async with (
            Client("a", "secret-a", server=broker.url) as a,
            Client(
                "b", "secret-b", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0)
            ) as b,
        ):
            await a.register()
            await b.register()
            resp = await a.send("b", b"hi", report=True)
            assert resp.delivery_status == "DELY_ACCEPTED"
            got = await b.receive(timeout=5)
            assert isinstance(got.item, Msg) and got.item.payload == b"hi"
            rep = await a.receive(timeout=5)
            print(rep)
            resp = await b.send("a", b"back", report=True)
            got = await a.receive(timeout=5)
            assert got.item.payload == b"back"
            rep = await b.receive(timeout=5)
            print(rep)
