"""MSGin5G-8 end to end: two real `msgin5g serve` processes exchanging UE messages.

Server A serves domain ``a.test`` and server B ``b.test``; each routes the other's
domain to the other's ``/msgs-msgdelivery/v1`` over HTTP on loopback, with
OAuth2 client credentials on both sides (each server is a ``peer`` client of the
other). UEs are device-library clients over real UDP.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.model.messages import Imdn, Msg
from tests.e2e.conftest import msgin5g
from tests.e2e.test_as import RestServer, free_tcp_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ALICE = "alice@a.test"
BOB = "bob@b.test"


def _server(
    db: Path, domain: str, http_port: int, peer: str, peer_port: int
) -> RestServer:
    srv = RestServer(
        db,
        extra=(
            "--set",
            "rest.enabled=true",
            "--http",
            f"127.0.0.1:{http_port}",
            "--set",
            "rest.oauth2=true",
            "--set",
            "delivery.as_retry_initial=0.2",
            "--set",
            "delivery.as_retry_max=0.5",
            "--set",
            f"peers.domain={domain}",
            "--set",
            f"peers.routes={peer}=http://127.0.0.1:{peer_port}",
            "--set",
            f"peers.client_id={domain}",
            "--set",
            f"peers.client_secret=secret-of-{domain}",
        ),
    )
    srv.http_port = http_port
    # the other server's OAuth2 client here (it acts for *@peer)
    msgin5g(
        "as", "add", peer, "--secret", f"secret-of-{peer}", "--role", "peer",
        "--storage", srv.storage,
    )  # fmt: skip
    return srv


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[RestServer, RestServer]]:
    port_a, port_b = free_tcp_port(), free_tcp_port()
    a = _server(tmp_path / "a.db", "a.test", port_a, "b.test", port_b)
    b = _server(tmp_path / "b.db", "b.test", port_b, "a.test", port_a)
    a.add_ue(ALICE, "sa")
    b.add_ue(BOB, "sb")
    a.start()
    b.start()
    yield a, b
    for srv in (a, b):
        err = srv.stop()
        assert "Traceback" not in err, err


async def _next(client: Client, kind: type[Msg] | type[Imdn]) -> Msg | Imdn:
    while True:
        received = await client.receive(timeout=30)
        if isinstance(received.item, kind):
            return received.item


async def _ue(ue: str, secret: str, srv: RestServer) -> Client:
    client = Client(ue, secret, server=srv.url, bind=("127.0.0.1", 0))
    await client.start()
    await client.register()
    return client


def test_messages_and_reports_both_ways(pair: tuple[RestServer, RestServer]) -> None:
    a, b = pair

    async def scenario() -> None:
        alice = await _ue(ALICE, "sa", a)
        bob = await _ue(BOB, "sb", b)
        try:
            resp = await alice.send(BOB, "hello from A", report=True, message_id="m-ab")
            assert resp.delivery_status == "DELY_ACCEPTED", resp
            got = await _next(bob, Msg)
            assert isinstance(got, Msg)
            assert got.payload == b"hello from A"
            assert got.originating_ue_service_id == ALICE
            report = await _next(alice, Imdn)
            assert report.message_id == "m-ab"
            assert report.originating_ue_service_id == BOB
            assert str(report.delivery_status) == "REPT_DELY_SUCCESS"

            resp = await bob.send(ALICE, "hello from B", report=True, message_id="m-ba")
            assert resp.delivery_status == "DELY_ACCEPTED", resp
            got = await _next(alice, Msg)
            assert got.payload == b"hello from B"
            report = await _next(bob, Imdn)
            assert report.message_id == "m-ba"
            assert report.originating_ue_service_id == ALICE
        finally:
            await alice.aclose()
            await bob.aclose()

    asyncio.run(scenario())


def test_peer_down_stores_then_delivers(pair: tuple[RestServer, RestServer]) -> None:
    a, b = pair
    b.stop()

    async def scenario() -> None:
        alice = await _ue(ALICE, "sa", a)
        try:
            for n in range(3):
                resp = await alice.send(
                    BOB, f"while B is down {n}", report=True, message_id=f"d{n}"
                )
                assert resp.delivery_status in {"DELY_ACCEPTED", "DELY_STORED"}, resp
            b.start()  # the originating server retries with back-off
            bob = await _ue(BOB, "sb", b)
            try:
                payloads = {(await _next(bob, Msg)).payload for _ in range(3)}
                assert payloads == {f"while B is down {n}".encode() for n in range(3)}
                reports = {(await _next(alice, Imdn)).message_id for _ in range(3)}
                assert reports == {"d0", "d1", "d2"}
            finally:
                await bob.aclose()
        finally:
            await alice.aclose()

    asyncio.run(scenario())


def test_unknown_domain_fails(pair: tuple[RestServer, RestServer]) -> None:
    a, _ = pair

    async def scenario() -> None:
        alice = await _ue(ALICE, "sa", a)
        try:
            resp = await alice.send("carol@nowhere.test", "hi", message_id="u1")
            assert resp.delivery_status == "DELY_FAILED"
            assert resp.failure_cause == "RECIPIENT_UNKNOWN"
        finally:
            await alice.aclose()

    asyncio.run(scenario())
