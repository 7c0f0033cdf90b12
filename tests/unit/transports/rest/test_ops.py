"""/healthz, /readyz and /metrics on a real server (real UDP, real HTTP).

``curl /metrics`` must show live figures: a UE registers and sends over CoAP,
an AS-side request goes over HTTP, and the scrape reflects both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.errors import StorageUnavailable
from msgin5g.runtime.histogram import Histogram
from msgin5g.server import Server


def metric(text: str, name: str) -> float:
    """The value of the sample line ``name`` (with its labels) in ``text``."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


async def start(**extra: str) -> Server:
    config = load_config(
        None,
        {},
        {
            "storage.url": "memory:",
            "coap.bind": "127.0.0.1:0",
            "rest.bind": "127.0.0.1:0",
            **extra,
        },
    )
    server = Server(config)
    await server.start()
    return server


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = await start()
    yield srv
    await srv.aclose()


def base(server: Server) -> str:
    address = server.http_address
    assert address is not None
    return f"http://{address[0]}:{address[1]}"


async def provision(server: Server, ue: str, secret: str) -> None:
    from msgin5g.model.credentials import psk_token

    assert server.service is not None
    await server.service.provision(ue, psk_token(secret, ue))


def native_socket() -> bool:
    try:
        import msgin5g.coap._udpio  # noqa: F401
    except ImportError:
        return False
    return True


async def test_metrics_show_live_figures(server: Server) -> None:
    await provision(server, "ue1", "s1")
    await provision(server, "ue2", "s2")
    host, port = server.coap_address
    async with httpx.AsyncClient(base_url=base(server), timeout=10) as http:
        before = (await http.get("/metrics")).text
        assert metric(before, 'msgin5g_registered_ues{kind="direct"}') == 0
        async with (
            Client("ue1", "s1", server=f"coap://{host}:{port}") as ue1,
            Client("ue2", "s2", server=f"coap://{host}:{port}") as ue2,
        ):
            await ue1.register()
            await ue2.register()
            resp = await ue1.send("ue2", b"hello")
            assert resp.delivery_status == "DELY_ACCEPTED"
            received = await ue2.receive(timeout=5)
            assert received.item.payload == b"hello"
            stored = await ue1.send("ue-away", b"x")  # not provisioned: refused
            assert stored.delivery_status != "DELY_ACCEPTED"
            await http.post("/msgs-msgdelivery/v1/deliver-as-message", content=b"{}",
                            headers={"content-type": "application/json"})  # fmt: skip
            scrape = await http.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    text = scrape.text
    assert metric(text, 'msgin5g_registered_ues{kind="direct"}') == 2
    assert metric(text, 'msgin5g_uplink_messages_total{result="ok",type="REG"}') == 2
    assert metric(text, 'msgin5g_uplink_messages_total{result="ok",type="MSG"}') == 2
    assert metric(text, 'msgin5g_downlink_messages_total{result="delivered"}') >= 1
    assert metric(text, "msgin5g_delivery_latency_seconds_count") >= 1
    assert metric(text, "msgin5g_coap_datagrams_received_total") >= 4
    assert metric(text, "msgin5g_coap_exchanges_open") >= 0
    if native_socket():  # compiled: the listener's socket is read in C
        assert metric(text, "msgin5g_coap_icmp_unreachable_total") == 0
        assert metric(text, "msgin5g_coap_send_queued") == 0
    assert metric(text, "msgin5g_stored_messages") == 0
    assert metric(text, "msgin5g_stored_bytes") == 0
    assert (
        metric(text, 'msgin5g_rest_requests_total{api="msgs-msgdelivery",code="400"}')
        == 1
    )
    # the operations endpoints themselves are not counted
    assert 'api="other"' not in text


async def test_stored_messages_and_bytes(server: Server) -> None:
    await provision(server, "ue1", "s1")
    await provision(server, "ue2", "s2")
    host, port = server.coap_address
    async with Client("ue1", "s1", server=f"coap://{host}:{port}") as ue1:
        await ue1.register()
        resp = await ue1.send("ue2", b"0123456789")  # ue2 is not registered
        assert resp.delivery_status == "DELY_STORED"
    async with httpx.AsyncClient(base_url=base(server)) as http:
        text = (await http.get("/metrics")).text
    assert metric(text, "msgin5g_stored_messages") == 1
    assert metric(text, "msgin5g_stored_bytes") > 0


async def test_healthz_and_readyz(server: Server) -> None:
    async with httpx.AsyncClient(base_url=base(server)) as http:
        health = await http.get("/healthz")
        ready = await http.get("/readyz")
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"storage": "ok", "coap": "ok"}}


async def test_readyz_names_a_failing_storage(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(ue_service_id: str) -> bytes | None:
        raise StorageUnavailable("disk gone")

    assert server.backend is not None
    monkeypatch.setattr(server.backend, "get_credential", broken)
    async with httpx.AsyncClient(base_url=base(server)) as http:
        ready = await http.get("/readyz")
        health = await http.get("/healthz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "fail"
    assert "disk gone" in body["checks"]["storage"]
    assert body["checks"]["coap"] == "ok"
    assert health.status_code == 200  # alive, not ready


async def test_metrics_need_an_operator_token_with_oauth2() -> None:
    srv = await start(**{"rest.oauth2": "true"})
    try:
        assert srv.service is not None
        apps = srv.service.applications
        await apps.add_client("as1", "secret-as1")
        await apps.add_client("op", "secret-op", role="operator")
        async with httpx.AsyncClient(base_url=base(srv)) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 401

            async def token(client: str, secret: str) -> str:
                reply = await http.post(
                    "/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(client, secret),
                )
                assert reply.status_code == 200, reply.text
                return str(reply.json()["access_token"])

            as_token = await token("as1", "secret-as1")
            refused = await http.get(
                "/metrics", headers={"Authorization": f"Bearer {as_token}"}
            )
            assert refused.status_code == 403
            op_token = await token("op", "secret-op")
            allowed = await http.get(
                "/metrics", headers={"Authorization": f"Bearer {op_token}"}
            )
            assert allowed.status_code == 200
            assert "msgin5g_registered_ues" in allowed.text
    finally:
        await srv.aclose()


def test_histogram_buckets_are_cumulative() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4
    assert histogram.sum == pytest.approx(3.65)


async def test_the_grafana_dashboard_uses_only_served_metrics(server: Server) -> None:
    import json
    import re
    from pathlib import Path

    dashboard = (
        Path(__file__).resolve().parents[4] / "deploy" / "grafana-dashboard.json"
    )
    panels = json.loads(dashboard.read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"msgin5g_[a-z_]+", e)}
    # served only with coaps:// or cluster.node_id: tests/unit/server/test_metrics_series.py
    used = {m for m in used if not m.startswith(("msgin5g_dtls_", "msgin5g_cluster_"))}
    async with httpx.AsyncClient(base_url=base(server)) as http:
        await http.get("/nope")  # so that msgin5g_rest_requests_total has a sample
        served = (await http.get("/metrics")).text
    names = set(re.findall(r"^(msgin5g_[a-z_]+)", served, re.MULTILINE))
    # families without samples yet (no uplink so far) still have their HELP line
    names |= set(re.findall(r"^# HELP (msgin5g_[a-z_]+)", served, re.MULTILINE))
    assert used, exprs
    assert used <= names, used - names
