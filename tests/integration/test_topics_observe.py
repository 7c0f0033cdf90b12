"""Observe notifications cannot be starved by observers that never ACK (issue 10, 12).

A real server (UDP on loopback, SQLite in tmp_path); the observers are bare UDP
sockets (:mod:`tests.integration.raw_observer`), so "dead" ones really never
acknowledge. Before the fix, 64 such observers held all 64 notification
workers for MAX_TRANSMIT_WAIT each and an observer of another topic got nothing
until they timed out.
"""

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.coap import CoapMessage, Code, Endpoint, TransmissionParameters, Type
from msgin5g.config import load_config
from msgin5g.errors import Overloaded, RecipientUnreachable, RequestTimeout
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg
from msgin5g.model.registry import Contact
from msgin5g.server import Server
from msgin5g.transports.coap.observe import ObserveResource
from tests.integration.raw_observer import RawUE

pytestmark = pytest.mark.timeout(60)

DEAD = 80  # more than the 64 workers of the old scheduler


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": f"sqlite:///{tmp_path / 'observe.db'}",
            "rest.enabled": "false",
            # a dead observer's CON notification is retransmitted for
            # ~1 * (2**3 - 1) * 1.5 s: long against the test, short for a hang
            "coap.ack_timeout": "1.0",
            "coap.max_retransmit": "2",
        },
    )
    async with Server(config) as srv:
        assert srv.service is not None
        for ue in ("pub", "good", *(f"dead{i}" for i in range(DEAD))):
            await srv.service.provision(ue, psk_token(f"secret-{ue}", ue))
        yield srv


async def test_dead_observers_do_not_starve_a_good_one(server: Server) -> None:
    service = server.service
    assert service is not None
    address = server.coap_address
    dead = [RawUE(f"dead{i}", f"secret-dead{i}", address) for i in range(DEAD)]
    good = RawUE("good", "secret-good", address)
    try:
        for ue in dead:
            await ue.register()
            assert (await ue.observe("storm")).code == Code.CONTENT
            # from now on this socket is never read: no ACK, ever
        await good.register()
        assert (await good.observe("calm")).code == Code.CONTENT
        host, port = address
        async with Client(
            "pub", "secret-pub", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0)
        ) as pub:
            await pub.register()
            await pub.publish("storm", "to the dead")
            await pub.publish("calm", "to the living")
            got = await good.notification()
        assert got.mtype == Type.CON
        assert b'"messagingTopic":"calm"' in got.payload
        # checked by state, not by a stopwatch: every dead observation still
        # exists, i.e. their CON notifications are still being retransmitted
        assert len(service.topics.observers("storm")) == DEAD
    finally:
        for ue in (*dead, good):
            ue.close()


async def test_endpoint_notify_nowait_holds_no_task() -> None:
    """The engine call the registry uses: a future per notification."""
    loop = asyncio.get_running_loop()
    params = TransmissionParameters(ack_timeout=0.05, max_retransmit=1)
    async with await Endpoint.create(("127.0.0.1", 0), params=params) as endpoint:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
            observer = sock.getsockname()
            endpoint.observe(observer, b"tk")
            # NON: done once sent
            assert endpoint.notify_nowait(
                observer, b"tk", b"1", confirmable=False
            ).done()
            first = CoapMessage.decode(await loop.sock_recv(sock, 2048))
            assert (first.mtype, first.token) == (Type.NON, b"tk")
            # CON: pending until the ACK
            pending = endpoint.notify_nowait(observer, b"tk", b"2")
            con = CoapMessage.decode(await loop.sock_recv(sock, 2048))
            assert con.mtype == Type.CON and not pending.done()
            ack = CoapMessage(Type.ACK, 0, con.mid)
            await loop.sock_sendto(sock, ack.encode(), endpoint.local_address)
            await asyncio.wait_for(pending, 5)
            # never acknowledged: RequestTimeout, the observation is forgotten
            lost = endpoint.notify_nowait(observer, b"tk", b"3")
            with pytest.raises(RequestTimeout):
                await asyncio.wait_for(lost, 5)
            # a final notification carries no Observe option
            endpoint.observe(observer, b"tk")
            endpoint.notify_nowait(observer, b"tk", b"4", confirmable=False, final=True)
            # not a numeric address
            with pytest.raises(ValueError, match="numeric"):
                endpoint.notify_nowait(("localhost", 1), b"tk", b"5")


class _FullEndpoint:
    """An endpoint whose message layer is full: every CON fails at once."""

    def notify_nowait(
        self, peer: object, token: bytes, payload: bytes, **_: object
    ) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_exception(RequestTimeout("too many outstanding requests"))
        return future


async def test_a_full_engine_is_not_mistaken_for_a_lost_observer(
    server: Server,
) -> None:
    """max_pending reached: Overloaded (observation kept), not RecipientUnreachable."""
    service = server.service
    assert service is not None and server.coap is not None
    resource = ObserveResource(service)
    resource._endpoint = _FullEndpoint()  # type: ignore[assignment]
    msg = Msg(message_id="m", originating_ue_service_id="pub", messaging_topic="t")
    outcome = resource.notify_nowait(
        Contact("127.0.0.1", 9), b"tk", msg, confirmable=True
    )
    with pytest.raises(Overloaded):
        await outcome
    stopped = ObserveResource(service).notify_nowait(
        Contact("127.0.0.1", 9), b"tk", msg, confirmable=True
    )
    with pytest.raises(RecipientUnreachable):
        await stopped
