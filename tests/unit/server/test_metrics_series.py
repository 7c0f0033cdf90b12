"""``/metrics`` series beyond the plain server: REST labels, DTLS, cluster (issue 17).

Real parts: the server in process on real UDP and TCP sockets, Mbed TLS's DTLS
client (tests/dtls_peer.py) for ``coaps://``, a private ``nats-server -js``
for the cluster; every figure is read over HTTP from ``GET /metrics``.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from mbedtls.exceptions import TLSError

from msgin5g.config import load_config
from msgin5g.server import Server, provision_ue, store_dtls_key
from tests.dtls_peer import DtlsPeer, reg_json, token
from tests.storage.nats_server import fresh_prefix, session_server

pytestmark = pytest.mark.timeout(120)

DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana-dashboard.json"


def sample(text: str, name: str) -> float:
    """The value of the sample line ``name`` (with its labels) in ``text``."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


def base(server: Server) -> str:
    address = server.http_address
    assert address is not None
    return f"http://{address[0]}:{address[1]}"


async def scrape(server: Server) -> str:
    async with httpx.AsyncClient(base_url=base(server), timeout=10) as http:
        reply = await http.get("/metrics")
    assert reply.status_code == 200, reply.text
    return reply.text


def served_names(text: str) -> set[str]:
    """Metric names in an exposition, with families that have no sample yet."""
    names = set(re.findall(r"^(msgin5g_[a-z_]+)", text, re.MULTILINE))
    return names | set(re.findall(r"^# HELP (msgin5g_[a-z_]+)", text, re.MULTILINE))


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    """Poll ``check`` until it holds (bounded)."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.1)


@pytest.fixture
async def plain() -> AsyncIterator[Server]:
    overrides = {
        "storage.url": "memory:",
        "coap.bind": "127.0.0.1:0",
        "rest.bind": "127.0.0.1:0",
    }
    async with Server(load_config(None, {}, overrides)) as server:
        yield server


@pytest.fixture
async def secure(tmp_path: Path) -> AsyncIterator[Server]:
    """coaps:// only (plain CoAP off), REST on; UE ue1 has a DTLS key."""
    url = f"sqlite:///{tmp_path / 'dtls.db'}"
    config = load_config(
        None,
        {},
        {
            "storage.url": url,
            "coap.secure_bind": "127.0.0.1:0",
            "coap.psk_store": str(tmp_path / "psk.db"),
            "rest.bind": "127.0.0.1:0",
        },
    )
    await provision_ue(url, "ue1", "secret-ue1")
    store_dtls_key(config.coap, "ue1", "secret-ue1")
    async with Server(config) as server:
        yield server


async def test_admin_console_and_new_apis_have_their_own_label(plain: Server) -> None:
    async with httpx.AsyncClient(base_url=base(plain), timeout=10) as http:
        await http.get("/console")
        await http.get("/admin/v1/summary")
        await http.post("/msgs-gwregistration/v1/registrations", content=b"{")
        await http.post("/nef-callbacks/v1/monitoring", content=b"{")
        await http.get("/no-such-api")
        text = (await http.get("/metrics")).text
    counts = {
        api: sum(
            float(v)
            for v in re.findall(
                rf'^msgin5g_rest_requests_total{{api="{api}",code="\d+"}} (\S+)$',
                text,
                re.MULTILINE,
            )
        )
        for api in ("console", "admin", "msgs-gwregistration", "nef-callbacks", "other")
    }
    assert counts == {
        "console": 1,
        "admin": 1,
        "msgs-gwregistration": 1,
        "nef-callbacks": 1,
        "other": 1,  # only /no-such-api
    }, text


async def test_dtls_counters_are_served_when_coaps_is_on(secure: Server) -> None:
    before = await scrape(secure)
    assert sample(before, "msgin5g_dtls_sessions") == 0
    assert sample(before, "msgin5g_dtls_handshakes_total") == 0
    address = secure.coap_addresses[1]
    assert address is not None
    intruder = DtlsPeer(address, "ue1", b"not-the-key-of-ue1-at-all-000000")
    with pytest.raises((TLSError, TimeoutError)):
        await intruder.connect(timeout=15)
    await intruder.close()
    peer = DtlsPeer(address, "ue1", token("ue1")[:32].encode())
    await peer.connect()
    try:
        answer = await peer.post(reg_json("ue1"))
        assert b"SUCCESS" in answer.payload, answer.payload
        text = await scrape(secure)
    finally:
        await peer.close()
    assert secure.coap is not None and secure.coap.secure is not None
    assert sample(text, "msgin5g_dtls_sessions") == 1
    assert sample(text, "msgin5g_dtls_handshakes_total") == 1
    assert sample(text, "msgin5g_dtls_handshake_failures_total") >= 1
    assert sample(text, "msgin5g_dtls_hello_verify_requests_total") >= 2
    assert sample(text, "msgin5g_dtls_handshakes_in_progress") == 0
    assert sample(text, 'msgin5g_uplink_messages_total{result="ok",type="REG"}') == 1
    assert "msgin5g_cluster_" not in text  # no cluster.node_id


async def cluster_node(url: str, node_id: str) -> Server:
    config = load_config(
        None,
        {},
        {
            "storage.url": url,
            "cluster.node_id": node_id,
            "cluster.lease": "3",
            "coap.bind": "127.0.0.1:0",
            "rest.bind": "127.0.0.1:0",
        },
    )
    server = Server(config)
    await server.start()
    return server


async def test_cluster_figures_are_served_when_node_id_is_set(
    plain: Server, secure: Server
) -> None:
    url = f"{session_server().url}?prefix={fresh_prefix()}"
    one = await cluster_node(url, "n1")
    try:
        two = await cluster_node(url, "n2")
        try:

            async def both_alive() -> bool:
                texts = [await scrape(one), await scrape(two)]
                return all(sample(t, "msgin5g_cluster_nodes_alive") == 2 for t in texts)

            await until(both_alive)
            text = await scrape(one)
        finally:
            await two.aclose()

        async def one_alone() -> bool:
            return sample(await scrape(one), "msgin5g_cluster_nodes_alive") == 1

        await until(one_alone)  # n2 withdrew its lease on the way out
    finally:
        await one.aclose()
    assert sample(text, "msgin5g_cluster_handed_out_total") == 0
    assert sample(text, "msgin5g_cluster_handed_in_total") == 0
    assert "msgin5g_dtls_" not in text  # no coaps://
    # every series of the Grafana dashboard is served by one of these servers
    served = served_names(text) | served_names(await scrape(secure))
    async with httpx.AsyncClient(base_url=base(plain), timeout=10) as http:
        await http.get("/nope")  # so that msgin5g_rest_requests_total has a sample
    served |= served_names(await scrape(plain))
    panels = json.loads(DASHBOARD.read_text())["panels"]
    used = {
        name
        for panel in panels
        for target in panel["targets"]
        for name in re.findall(r"msgin5g_[a-z_]+", target["expr"])
    }
    assert {n for n in used if n.startswith(("msgin5g_dtls_", "msgin5g_cluster_"))}
    assert used <= served, used - served
