"""The HTTP clients towards a peer server and a NEF, against a real HTTP server
on loopback that answers whatever each test scripts: 2xx, 4xx, 5xx, garbage."""

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from msgin5g.config_network import NefConfig, PeersConfig
from msgin5g.errors import DeliveryRejected, RecipientUnreachable, UpstreamError
from msgin5g.model.messages import Imdn, Msg
from msgin5g.service.nef import UE_REACHABILITY, UeIdentity
from msgin5g.transports.rest.nef_client import HttpNefClient
from msgin5g.transports.rest.peer_client import HttpPeerDeliverer

Answer = tuple[int, bytes, dict[str, str]]


class Scripted:
    """Answers requests from ``answers`` in order; records (method, path, headers, body)."""

    def __init__(self) -> None:
        self.answers: list[Answer] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                outer.seen.append((self.command, self.path, dict(self.headers), body))
                status, payload, headers = outer.answers.pop(0)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http() -> Iterator[Scripted]:
    scripted = Scripted()
    yield scripted
    scripted.close()


JSON = {"Content-Type": "application/json"}
MSG = Msg(
    message_id="m1",
    originating_ue_service_id="ann@a.test",
    recipient_ue_service_id="bob@b.test",
    payload=b"hi",
)


def _ack(status: str | None = None, cause: str | None = None) -> bytes:
    body: dict[str, object] = {
        "oriAddr": {"addrType": "UE", "addr": "ann@a.test"},
        "msgId": "m1",
    }
    if status:
        body["status"] = status
    if cause:
        body["failureCause"] = cause
    return json.dumps(body).encode()


async def test_peer_outcomes(http: Scripted) -> None:
    peer = HttpPeerDeliverer(PeersConfig(domain="a.test", routes=f"b.test={http.url}"))
    try:
        http.answers = [(200, _ack(), JSON)]
        await peer.deliver_to_peer(http.url, MSG)
        method, path, _, body = http.seen[-1]
        assert (method, path) == ("POST", "/msgs-msgdelivery/v1/deliver-ue-message")
        sent = json.loads(body)
        assert sent["destAddr"] == {"addrType": "UE", "addr": "bob@b.test"}
        http.answers = [(200, _ack("DELY_FAILED", "RECIPIENT_UNKNOWN"), JSON)]
        with pytest.raises(DeliveryRejected) as refused:
            await peer.deliver_to_peer(http.url, MSG)
        assert refused.value.cause == "RECIPIENT_UNKNOWN"
        for status in (500, 503, 429):
            http.answers = [(status, b"<html>oops</html>", {})]
            with pytest.raises(RecipientUnreachable):
                await peer.deliver_to_peer(http.url, MSG)
        http.answers = [
            (
                403,
                b'{"cause":"NOT_AUTHORIZED"}',
                {"Content-Type": "application/problem+json"},
            )
        ]
        with pytest.raises(DeliveryRejected) as forbidden:
            await peer.deliver_to_peer(http.url, MSG)
        assert forbidden.value.cause == "NOT_AUTHORIZED"
        http.answers = [(404, b"not json at all", {})]
        with pytest.raises(DeliveryRejected):
            await peer.deliver_to_peer(http.url, MSG)
        report = Imdn(
            message_id="m1",
            delivery_status="REPT_DELY_SUCCESS",
            originating_ue_service_id="ann@a.test",
            recipient_ue_service_id="bob@b.test",
        )
        http.answers = [(200, _ack(), JSON)]
        await peer.deliver_to_peer(http.url, report)
        assert http.seen[-1][1] == "/msgs-msgdelivery/v1/deliver-report"
    finally:
        await peer.aclose()
    nobody = HttpPeerDeliverer(PeersConfig(timeout=2))
    try:
        with pytest.raises(RecipientUnreachable):
            await nobody.deliver_to_peer("http://127.0.0.1:9", MSG)  # discard port
    finally:
        await nobody.aclose()


async def test_peer_oauth2_token_and_refresh(http: Scripted) -> None:
    config = PeersConfig(
        domain="a.test",
        routes=f"b.test={http.url}",
        client_id="a.test",
        client_secret="sa",
    )
    peer = HttpPeerDeliverer(config)
    token = json.dumps(
        {"access_token": "t1", "token_type": "Bearer", "expires_in": 3600}
    ).encode()
    token2 = json.dumps(
        {"access_token": "t2", "token_type": "Bearer", "expires_in": 3600}
    ).encode()
    try:
        http.answers = [
            (200, token, JSON),
            (401, b"", {}),
            (200, token2, JSON),
            (200, _ack(), JSON),
        ]
        await peer.deliver_to_peer(http.url, MSG)
        paths = [(m, p, h.get("Authorization")) for m, p, h, _ in http.seen]
        assert paths[0][1] == "/oauth2/token"
        assert paths[1][2] == "Bearer t1"
        assert paths[3][2] == "Bearer t2"
        http.answers = [(401, b'{"error":"invalid_client"}', JSON), (401, b"{}", JSON)]
        peer._tokens[http.url].invalidate()  # force a new token request
        with pytest.raises(DeliveryRejected, match=r"refused client a\.test"):
            await peer.deliver_to_peer(http.url, MSG)
    finally:
        await peer.aclose()


async def test_nef_client_answers(http: Scripted) -> None:
    nef = HttpNefClient(NefConfig(url=http.url), "http://127.0.0.1:8080")
    ue = UeIdentity(msisdn="4915100000001")
    expire = datetime(2030, 1, 1, tzinfo=UTC)
    try:
        http.answers = [
            (201, b'{"self":"/sub/1"}', {**JSON, "Location": f"{http.url}/sub/7"})
        ]
        assert await nef.subscribe(ue, UE_REACHABILITY, expire) == f"{http.url}/sub/7"
        sent = json.loads(http.seen[-1][3])
        assert sent["msisdn"] == "4915100000001"
        assert sent["monitorExpireTime"] == "2030-01-01T00:00:00Z"
        assert (
            sent["notificationDestination"]
            == "http://127.0.0.1:8080/nef-callbacks/v1/monitoring"
        )
        http.answers = [
            (201, b'{"self":"/sub/8"}', JSON)
        ]  # no Location: the body's self
        assert await nef.subscribe(ue, UE_REACHABILITY, expire) == f"{http.url}/sub/8"
        bad = [
            (500, b"<html>", {}),
            (403, b'{"cause":"NOT_AUTHORIZED"}', JSON),
            (201, b"[1,2]", JSON),
            (201, b"{}", JSON),
            (200, b"{}", JSON),
        ]
        for answer in bad:
            http.answers = [answer]
            with pytest.raises(UpstreamError):
                await nef.trigger(ue, 1, b"x", 60, urgent=True)
        http.answers = [(404, b"", {})]
        await nef.unsubscribe(f"{http.url}/sub/7")  # already gone: fine
        http.answers = [(500, b"", {})]
        with pytest.raises(UpstreamError, match="500"):
            await nef.unsubscribe(f"{http.url}/sub/8")
    finally:
        await nef.aclose()
