"""Messaging topics, POST form, through a real server (UDP, SQLite) — part of issue 4."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.errors import RemoteError
from msgin5g.model.messages import Msg
from msgin5g.server import Server, provision_ue

pytestmark = pytest.mark.timeout(30)


def config(url: str) -> object:
    return load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "rest.enabled": "false",
            "coap.ack_timeout": "0.2",
            "coap.max_retransmit": "1",
        },
    )


@pytest.fixture
async def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'topics.db'}"
    for ue in ("pub", "s1", "s2"):
        await provision_ue(url, ue, f"secret-{ue}")
    return url


def client(server: Server, ue: str) -> Client:
    host, port = server.coap_address
    return Client(
        ue, f"secret-{ue}", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0)
    )


async def test_subscribe_publish_unsubscribe(url: str) -> None:
    async with Server(config(url)) as server:  # type: ignore[arg-type]
        async with (
            client(server, "pub") as pub,
            client(server, "s1") as s1,
            client(server, "s2") as s2,
        ):
            for ue in (pub, s1, s2):
                await ue.register()
            resp = await s1.subscribe(["weather/zone-3", "alerts"])
            assert [r.result for r in resp.topic_results] == ["SUCCESS", "SUCCESS"]
            assert resp.expiration is not None
            await s2.subscribe(["alerts"])
            await pub.subscribe(["alerts"])  # the publisher gets no copy
            assert (
                await pub.publish("alerts", "storm")
            ).delivery_status == "DELY_ACCEPTED"
            for ue in (s1, s2):
                got = await ue.receive(timeout=5)
                assert isinstance(got.item, Msg)
                assert got.item.messaging_topic == "alerts"
                assert got.item.recipient_ue_service_id == ue.ue_service_id
                assert got.item.payload == b"storm"
            await s2.unsubscribe(["alerts"])
            await pub.publish("alerts", "second")
            got = await s1.receive(timeout=5)
            assert isinstance(got.item, Msg) and got.item.payload == b"second"
            with pytest.raises(TimeoutError):
                await s2.receive(timeout=0.5)
            with pytest.raises(TimeoutError):
                await pub.receive(timeout=0.2)
            assert (
                await pub.publish("nobody-here", "x")
            ).delivery_status == "DELY_ACCEPTED"


async def test_subscriptions_survive_restart_and_offline_subscriber_gets_it(
    url: str,
) -> None:
    async with Server(config(url)) as server:  # type: ignore[arg-type]
        async with client(server, "s1") as s1:
            await s1.register()
            later = datetime.now(UTC) + timedelta(hours=1)
            resp = await s1.subscribe(["meters"], expiration=later)
            assert resp.expiration is not None
            assert abs(resp.expiration.timestamp() - later.timestamp()) < 1
            await s1.deregister()
            await s1.register()
            await s1.subscribe(["meters"])
    async with Server(config(url)) as server:  # type: ignore[arg-type]
        assert server.service is not None
        assert server.service.topics.subscribers("meters") == ["s1"]
        async with client(server, "pub") as pub:
            await pub.register()
            await pub.publish("meters", "kwh=12")  # s1's socket is gone: stored
        async with client(server, "s1") as s1:
            await s1.register()
            got = await s1.receive(timeout=5)
            assert isinstance(got.item, Msg) and got.item.payload == b"kwh=12"


async def test_bad_topic_and_past_expiration(url: str) -> None:
    async with Server(config(url)) as server:  # type: ignore[arg-type]
        async with client(server, "s1") as s1:
            await s1.register()
            with pytest.raises(RemoteError) as bad:
                await s1.subscribe(["a+b"])
            assert bad.value.status == "4.00"
            with pytest.raises(RemoteError):
                await s1.subscribe(["t"], expiration=datetime(2000, 1, 1, tzinfo=UTC))
            assert server.service is not None
            assert server.service.topics.topics_of("s1") == []


async def test_deregistration_ends_subscriptions(url: str) -> None:
    async with Server(config(url)) as server:  # type: ignore[arg-type]
        async with client(server, "s1") as s1:
            await s1.register()
            await s1.subscribe(["x", "y"])
            await s1.deregister()
            assert server.service is not None
            assert server.service.topics.topics_of("s1") == []
