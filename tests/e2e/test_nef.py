"""NEF flows end to end: a real `msgin5g serve`, device-library UEs over UDP and a
scripted NEF (real HTTP) that posts notifications back to the server's callbacks.

* LOSS_OF_CONNECTIVITY → messages stored without a delivery attempt;
  UE_REACHABILITY → delivered;
* device trigger → the trigger payload reaches the UE's triggering port → the UE
  registers → the stored message is delivered;
* a NEF answering 500 with garbage → the server logs it and keeps serving;
  bad and unknown notifications → 400 / 404.
"""

import asyncio
import base64
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from msgin5g.client import Client
from msgin5g.client.trigger import TriggerListener, parse_trigger
from msgin5g.model.messages import ClientPort, CommAvailability, Msg, TriggeringInfo
from tests.e2e.scripted_nef import ScriptedNef
from tests.e2e.test_as import RestServer, free_tcp_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

MONITORING = "/3gpp-monitoring-event/v1/msgin5g/subscriptions"
TRIGGERING = "/3gpp-device-triggering/v1/msgin5g/transactions"


def _server(tmp_path: Path, nef: ScriptedNef) -> RestServer:
    http_port = free_tcp_port()
    srv = RestServer(
        tmp_path / "msgin5g.db",
        extra=(
            "--set",
            "rest.enabled=true",
            "--http",
            f"127.0.0.1:{http_port}",
            "--set",
            f"nef.url={nef.url}",
            "--set",
            f"nef.callback_url=http://127.0.0.1:{http_port}",
        ),
    )
    srv.http_port = http_port
    srv.add_ue("ue1", "s1")
    srv.add_ue("ue2", "s2")
    return srv


@pytest.fixture
def nef() -> Iterator[ScriptedNef]:
    scripted = ScriptedNef()
    yield scripted
    scripted.close()


@pytest.fixture
def srv(tmp_path: Path, nef: ScriptedNef) -> Iterator[RestServer]:
    server = _server(tmp_path, nef)
    server.start()
    yield server
    err = server.stop()
    assert "Traceback" not in err, err


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _ue(ue: str, secret: str, server: RestServer, **reg: object) -> Client:
    client = Client(ue, secret, server=server.url, bind=("127.0.0.1", 0))
    await client.start()
    await client.register(**reg)  # type: ignore[arg-type]
    return client


async def _next_msg(client: Client) -> Msg:
    while True:
        received = await client.receive(timeout=30)
        if isinstance(received.item, Msg):
            return received.item


def _notify(server: RestServer, path: str, body: object) -> httpx.Response:
    return httpx.post(f"{server.http}/nef-callbacks/v1/{path}", json=body, timeout=10)


def test_reachability_notifications_store_then_deliver(
    srv: RestServer, nef: ScriptedNef
) -> None:
    async def scenario() -> None:
        window = CommAvailability(
            scheduled_comm_time=datetime.now(UTC), comm_duration_time=86400
        )
        info = TriggeringInfo(external_id="ue2@ext.test")
        ue1 = await _ue("ue1", "s1", srv)
        ue2 = await _ue("ue2", "s2", srv, triggering=info, availability=window)
        try:
            subs = await asyncio.to_thread(nef.wait_posted, "/subscriptions", 2)
            kinds = {s["monitoringType"] for s in subs}
            assert kinds == {"UE_REACHABILITY", "LOSS_OF_CONNECTIVITY"}
            assert all(s["externalId"] == "ue2@ext.test" for s in subs)
            reach = next(s for s in subs if s["monitoringType"] == "UE_REACHABILITY")
            assert reach["reachabilityType"] == "DATA"
            loss = next(s for s in subs if s["monitoringType"] != "UE_REACHABILITY")
            response = await asyncio.to_thread(
                _notify,
                srv,
                "monitoring",
                {
                    "subscription": loss["self"],
                    "monitoringEventReports": [
                        {
                            "monitoringType": "LOSS_OF_CONNECTIVITY",
                            "externalId": "ue2@ext.test",
                        }
                    ],
                },
            )
            assert response.status_code == 204, response.text
            resp = await ue1.send("ue2", "after the loss", message_id="r1")
            assert resp.delivery_status == "DELY_STORED", resp
            response = await asyncio.to_thread(
                _notify,
                srv,
                "monitoring",
                {
                    "subscription": reach["self"],
                    "monitoringEventReports": [
                        {
                            "monitoringType": "UE_REACHABILITY",
                            "reachabilityType": "DATA",
                        }
                    ],
                },
            )
            assert response.status_code == 204, response.text
            got = await _next_msg(ue2)
            assert got.payload == b"after the loss"
        finally:
            await ue1.aclose()
            await ue2.aclose()

    asyncio.run(scenario())


def test_device_trigger_wakes_the_ue(srv: RestServer, nef: ScriptedNef) -> None:
    port = _free_udp_port()

    async def scenario() -> None:
        info = TriggeringInfo(
            external_id="ue2@ext.test", client_ports=[ClientPort(port=port)]
        )
        asleep = await _ue("ue2", "s2", srv, triggering=info)
        await asleep.aclose()  # the device sleeps: nothing answers there any more
        awake = Client("ue2", "s2", server=srv.url, bind=("127.0.0.1", 0))
        await awake.start()
        listener = TriggerListener(awake, "127.0.0.1", port)
        await listener.start()
        ue1 = await _ue("ue1", "s1", srv)
        try:
            resp = await ue1.send("ue2", "wake up", message_id="t1")
            assert resp.delivery_status == "DELY_ACCEPTED", resp
            got = await _next_msg(awake)
            assert got.payload == b"wake up"
            assert listener.triggers >= 1
            trigger = nef.posted("/transactions")[0]
            assert trigger["applicationPortId"] == port
            assert trigger["externalId"] == "ue2@ext.test"
            assert trigger["priority"] == "NO_PRIORITY"
            assert parse_trigger(base64.b64decode(trigger["triggerPayload"])) == "ue2"
            for _ in range(600):  # bounded wait for the NEF's report to be answered
                if nef.report_answers:
                    break
                await asyncio.sleep(0.05)
            assert nef.report_answers[0] == 204
        finally:
            await listener.aclose()
            await ue1.aclose()
            await awake.aclose()

    asyncio.run(scenario())


def test_bad_notifications_are_refused(srv: RestServer) -> None:
    unknown = _notify(
        srv,
        "monitoring",
        {
            "subscription": "http://nef.invalid/sub/1",
            "monitoringEventReports": [{"monitoringType": "UE_REACHABILITY"}],
        },
    )
    assert unknown.status_code == 404
    missing = _notify(srv, "monitoring", {"monitoringEventReports": []})
    assert missing.status_code == 400
    assert "subscription" in missing.text
    bad = _notify(srv, "triggering", {"transaction": "x"})
    assert bad.status_code == 400
    assert "result" in bad.text
    garbage = httpx.post(
        f"{srv.http}/nef-callbacks/v1/triggering",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert garbage.status_code == 400


def test_broken_nef_does_not_stop_messaging(tmp_path: Path) -> None:
    nef = ScriptedNef(broken=True)
    server = _server(tmp_path, nef)
    server.start()
    try:

        async def scenario() -> None:
            port = _free_udp_port()
            info = TriggeringInfo(
                external_id="ue2@ext.test", client_ports=[ClientPort(port=port)]
            )
            asleep = await _ue("ue2", "s2", server, triggering=info)
            await asleep.aclose()
            ue1 = await _ue("ue1", "s1", server)
            try:
                resp = await ue1.send("ue2", "kept", message_id="b1")
                assert resp.delivery_status == "DELY_ACCEPTED"
                await asyncio.to_thread(nef.wait_posted, "/transactions", 1)
                # the server still serves, and the message waits for the UE
                awake = await _ue("ue2", "s2", server)
                try:
                    got = await _next_msg(awake)
                    assert got.payload == b"kept"
                finally:
                    await awake.aclose()
            finally:
                await ue1.aclose()

        asyncio.run(scenario())
    finally:
        err = server.stop()
        nef.close()
    assert "Traceback" not in err, err
