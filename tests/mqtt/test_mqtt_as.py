"""An MQTT UE with Application Servers (A2P, P2A) and aggregated messages.

The AS side is real HTTP: the server's TS 29.538 APIs on a free port (httpx as
the AS client) and a stdlib HTTP listener as the AS's ``targetUri``.
"""

import asyncio
import base64
import json
import queue
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from msgin5g.model.messages import Msg
from tests.mosquitto import Mosquitto
from tests.mqtt.support import coap_ue, mqtt_ue, provisioned, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]


def _free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _AsListener:
    """The AS's targetUri: records each POST (path, JSON body), answers 204."""

    def __init__(self) -> None:
        self.posts: queue.Queue[tuple[str, Any]] = queue.Queue()
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                posts.put((self.path, json.loads(body or b"{}")))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


async def test_a2p_p2a_and_aggregated_messages_for_an_mqtt_ue(
    tmp_path: Path, broker: Mosquitto
) -> None:
    url = await provisioned(tmp_path)
    listener = _AsListener()
    settings = {"rest.enabled": "true", "rest.bind": f"127.0.0.1:{_free_tcp_port()}"}
    try:
        async with running_server(url, broker.url, **settings) as server:
            assert server.http_address is not None
            host, port = server.http_address
            async with (
                httpx.AsyncClient(base_url=f"http://{host}:{port}") as http,
                mqtt_ue(broker, "m1") as m1,
                coap_ue(server, "c1") as c1,
            ):
                await m1.register()
                await c1.register()
                reg = await http.post(
                    "/msgs-asregistration/v1/registrations",
                    json={"asSvcId": "as1", "targetUri": listener.url},
                )
                assert reg.status_code == 201, reg.text
                # A2P: the AS reaches the MQTT UE
                a2p = await http.post(
                    "/msgs-msgdelivery/v1/deliver-as-message",
                    json={
                        "oriAddr": {"addrType": "AS", "addr": "as1"},
                        "destAddr": {"addrType": "UE", "addr": "m1"},
                        "msgId": "a2p-1",
                        "stoAndFwInd": True,
                        "payload": base64.b64encode(b"from the AS").decode(),
                    },
                )
                assert a2p.status_code in (200, 204), a2p.text
                got = await m1.receive(timeout=10)
                assert isinstance(got.item, Msg)
                assert (got.item.originating_as_service_id, got.item.payload) == (
                    "as1",
                    b"from the AS",
                )
                # P2A: the MQTT UE reaches the AS's targetUri
                resp = await m1.send_to_as("as1", "to the AS")
                assert resp.delivery_status in ("DELY_ACCEPTED", "DELY_STORED")
                path, body = await asyncio.to_thread(listener.posts.get, timeout=20)
                assert path.endswith("/deliver-message")
                assert body["oriAddr"] == {"addrType": "UE", "addr": "m1"}
                assert (body["msgId"], base64.b64decode(body["payload"])) == (
                    resp.message_id,
                    b"to the AS",
                )
                # AGGMSG from the MQTT UE to a CoAP UE: each item delivered
                resp = await m1.send_aggregated("c1", ["one", "two", "three"])
                assert resp.failure_cause is None
                payloads = set()
                while len(payloads) < 3:
                    got = await c1.receive(timeout=10)
                    assert isinstance(got.item, Msg)
                    payloads.add(got.item.payload)
                assert payloads == {b"one", b"two", b"three"}
                # the binding's figures on /metrics, /readyz checks the broker
                metrics = (await http.get("/metrics")).text
                assert (
                    'msgin5g_mqtt_uplink_messages_total{result="ok",type="AGGMSG"} 1.0'
                    in metrics
                )
                assert "msgin5g_mqtt_broker_connected 1.0" in metrics
                assert "msgin5g_mqtt_delivery_latency_seconds_count" in metrics
                ready = await http.get("/readyz")
                assert ready.status_code == 200 and "mqtt" in ready.text, ready.text
    finally:
        listener.close()
