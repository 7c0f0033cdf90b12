"""The operator admin API and the console's routes on a real server (UDP + HTTP).

UEs are real device clients over CoAP; the admin API and the console are
called over a real HTTP socket. The browser test (tests/e2e/test_console.py)
drives the same pages in headless Chromium.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.model.credentials import psk_token
from msgin5g.server import Server
from msgin5g.transports.rest.console import COOKIE


async def start(**extra: str) -> Server:
    config = load_config(
        None,
        {},
        {
            "storage.url": "memory:",
            "coap.bind": "127.0.0.1:0",
            "rest.bind": "127.0.0.1:0",
            "coap.ack_timeout": "0.2",
            "coap.max_retransmit": "0",
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


@pytest.fixture
async def oauth_server() -> AsyncIterator[Server]:
    srv = await start(**{"rest.oauth2": "true"})
    assert srv.service is not None
    await srv.service.applications.add_client("op", "op-secret", role="operator")
    await srv.service.applications.add_client("as1", "as-secret", role="as")
    yield srv
    await srv.aclose()


def base(server: Server) -> str:
    address = server.http_address
    assert address is not None
    return f"http://{address[0]}:{address[1]}"


def coap(server: Server) -> str:
    host, port = server.coap_address
    return f"coap://{host}:{port}"


async def provision(server: Server, *ues: str) -> None:
    assert server.service is not None
    for ue in ues:
        await server.service.provision(ue, psk_token("s-" + ue, ue))


async def store_one(server: Server, message_id: str = "m-1") -> None:
    """ue1 sends to ue2, which is not registered: the message is stored."""
    async with Client("ue1", "s-ue1", server=coap(server)) as ue1:
        await ue1.register()
        resp = await ue1.send("ue2", b"for later", message_id=message_id, report=True)
        assert resp.delivery_status == "DELY_STORED"


async def test_admin_api_counts_search_and_discard(server: Server) -> None:
    await provision(server, "ue1", "ue2", "meter-7")
    async with (
        httpx.AsyncClient(base_url=base(server), timeout=10) as http,
        Client("ue1", "s-ue1", server=coap(server)) as ue1,
        Client("meter-7", "s-meter-7", server=coap(server)) as meter,
    ):
        await ue1.register()
        await meter.register()
        resp = await ue1.send("ue2", b"for later", message_id="m-1", report=True)
        assert resp.delivery_status == "DELY_STORED"
        summary = (await http.get("/admin/v1/summary")).json()
        assert summary["registeredUes"] == {"direct": 2, "gateway": 0}
        assert summary["storedMessages"] == 1
        assert summary["storedBytes"] > len(b"for later")
        assert summary["messagesIn"] == 1

        found = (await http.get("/admin/v1/ues", params={"q": "meter"})).json()
        assert [u["ueServiceId"] for u in found["ues"]] == ["meter-7"]
        assert found["ues"][0]["lastSeen"] is not None
        assert found["ues"][0]["contact"].startswith("127.0.0.1:")

        ue2 = (await http.get("/admin/v1/ues/ue2")).json()
        assert ue2["registered"] is False
        assert ue2["queueDepth"] == 1
        assert [m["messageId"] for m in ue2["stored"]] == ["m-1"]
        missing = await http.get("/admin/v1/ues/nobody")
        assert missing.status_code == 404
        assert missing.json()["cause"] == "UNKNOWN_UE_SERVICE_ID"

        gone = await http.delete("/admin/v1/ues/ue2/stored/m-1")
        assert gone.status_code == 204
        again = await http.delete("/admin/v1/ues/ue2/stored/m-1")
        assert again.status_code == 404
        assert again.json()["cause"] == "MESSAGE_NOT_FOUND"
        after = (await http.get("/admin/v1/summary")).json()
        assert after["storedMessages"] == 0
        assert after["storedBytes"] == 0
        # the originator asked for a report: it hears why
        report = await ue1.receive(timeout=10)
        assert report.item.message_id == "m-1"
        assert report.item.failure_cause == "NOT_AUTHORIZED"
        failures = (await http.get("/admin/v1/failures")).json()["failures"]
        assert failures[0]["messageId"] == "m-1"
        assert failures[0]["cause"] == "NOT_AUTHORIZED"
        assert failures[0]["recipient"] == "ue2"
    # ue2 registers later and gets nothing
    async with Client("ue2", "s-ue2", server=coap(server)) as ue2c:
        await ue2c.register()
        with pytest.raises(TimeoutError):
            await ue2c.receive(timeout=1.0)


async def test_admin_lists_groups_areas_gateways(server: Server) -> None:
    async with httpx.AsyncClient(base_url=base(server), timeout=10) as http:
        for path, key in (
            ("/admin/v1/groups", "groups"),
            ("/admin/v1/areas", "areas"),
            ("/admin/v1/gateways", "gateways"),
        ):
            resp = await http.get(path)
            assert resp.status_code == 200, path
            assert resp.json() == {key: []}
        assert server.service is not None
        from msgin5g.service.broadcast import BroadcastArea
        from msgin5g.service.groups import GroupDocument

        await server.service.broadcast.put(BroadcastArea("area-1", cells=["c1"]))
        await server.service.groups.create(
            GroupDocument("g1", members=["ue1", "ue2"], description="two")
        )
        areas = (await http.get("/admin/v1/areas")).json()["areas"]
        assert areas[0]["areaId"] == "area-1"
        assert areas[0]["cells"] == ["c1"]
        groups = (await http.get("/admin/v1/groups")).json()["groups"]
        assert groups[0]["groupId"] == "g1"


async def test_admin_api_needs_an_operator_token(oauth_server: Server) -> None:
    async with httpx.AsyncClient(base_url=base(oauth_server), timeout=10) as http:
        assert (await http.get("/admin/v1/summary")).status_code == 401

        async def bearer(client: str, secret: str) -> dict[str, str]:
            resp = await http.post(
                "/oauth2/token",
                data={"grant_type": "client_credentials"},
                auth=(client, secret),
            )
            assert resp.status_code == 200, resp.text
            return {"Authorization": f"Bearer {resp.json()['access_token']}"}

        as1 = await bearer("as1", "as-secret")
        assert (await http.get("/admin/v1/summary", headers=as1)).status_code == 403
        op = await bearer("op", "op-secret")
        assert (await http.get("/admin/v1/summary", headers=op)).status_code == 200
        # a console cookie is no credential for the JSON API
        http.cookies.set(COOKIE, op["Authorization"][7:])
        assert (await http.get("/admin/v1/summary")).status_code == 401


async def login(http: httpx.AsyncClient, client: str, secret: str) -> httpx.Response:
    return await http.post(
        "/console/login",
        data={"client_id": client, "client_secret": secret},
        headers={"Origin": str(http.base_url).rstrip("/")},
    )


async def test_console_login_cookie_and_csrf(oauth_server: Server) -> None:
    srv = oauth_server
    await provision(srv, "ue1", "ue2")
    await store_one(srv)
    async with httpx.AsyncClient(base_url=base(srv), timeout=10) as http:
        first = await http.get("/console")
        assert first.status_code == 303
        assert first.headers["location"] == "/console/login"
        form = await http.get("/console/login")
        assert form.status_code == 200
        assert "client_secret" in form.text
        assert "default-src 'none'" in form.headers["content-security-policy"]

        assert (await login(http, "op", "wrong")).status_code == 401
        assert (await login(http, "as1", "as-secret")).status_code == 403
        ok = await login(http, "op", "op-secret")
        assert ok.status_code == 303
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(COOKIE + "=")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/console" in cookie

        page = await http.get("/console")
        assert page.status_code == 200
        match = re.search(r'"X-CSRF-Token": "([0-9a-f]+)"', page.text)
        assert match is not None
        csrf = match.group(1)
        ues = await http.get("/console/panel/ues", params={"q": "ue1"})
        assert "ue1" in ues.text
        detail = await http.get("/console/panel/ue/ue2")
        assert "m-1" in detail.text

        no_token = await http.post(
            "/console/ue/ue2/discard", data={"message_id": "m-1"}
        )
        assert no_token.status_code == 403
        foreign = await http.post(
            "/console/ue/ue2/discard",
            data={"message_id": "m-1"},
            headers={"X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        )
        assert foreign.status_code == 403
        fetched = await http.post(
            "/console/ue/ue2/discard",
            data={"message_id": "m-1"},
            headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"},
        )
        assert fetched.status_code == 403
        assert srv.service is not None
        assert srv.service.quotas.usage("ue2")[0] == 1
        done = await http.post(
            "/console/ue/ue2/discard",
            data={"message_id": "m-1"},
            headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
        )
        assert done.status_code == 200
        assert "Discarded m-1" in done.text
        assert done.headers["hx-trigger"] == "ue-changed"
        assert srv.service.quotas.usage("ue2") == (0, 0)

        out = await http.post(
            "/console/logout",
            content=b"",
            headers={
                "X-CSRF-Token": csrf,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert out.status_code == 303
        http.cookies.clear()
        assert (await http.get("/console")).status_code == 303
        polled = await http.get(
            "/console/panel/summary", headers={"HX-Request": "true"}
        )
        assert polled.headers["hx-redirect"] == "/console/login"


async def test_console_open_without_oauth2_and_serves_assets(server: Server) -> None:
    async with httpx.AsyncClient(base_url=base(server), timeout=10) as http:
        page = await http.get("/console")
        assert page.status_code == 200
        assert "/console/static/htmx.min.js" in page.text
        js = await http.get("/console/static/htmx.min.js")
        assert js.status_code == 200
        assert js.text.startswith("/*! htmx 2.0.11")
        assert "Zero-Clause BSD" in js.text[:300]
        assert (await http.get("/console/static/../asgi.py")).status_code == 404
        assert (await http.get("/console/static/nope.js")).status_code == 404
        summary = await http.get("/console/panel/summary")
        assert 'id="rate-chart"' in summary.text
        for name in ("groups", "areas", "gateways", "failures"):
            assert (await http.get(f"/console/panel/{name}")).status_code == 200
        assert (await http.get("/console/panel/other")).status_code == 404
        # the login page is not needed without OAuth2
        assert (await http.get("/console/login")).status_code == 303
