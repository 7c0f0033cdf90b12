"""Legacy 3GPP Message Gateway end to end, against an SMSC we did not write.

Real processes on loopback: ``msgin5g serve`` (CoAP + HTTP, SQLite), ``msgin5g
l3g``, the npm ``smpp`` server as SMSC (tests/interop/node-smpp/smsc.js),
``msgin5g as listen`` as the AS and ``msgin5g ue listen`` as an MSGin5G UE.
"""

import base64
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import msgin5g
from tests.e2e.msgg_support import (  # noqa: F401 (server_fixture)
    Smsc,
    server_fixture,
    start_gateway,
    wait_registered,
)
from tests.e2e.test_as import (
    Lines,
    RestServer,
    as_listener,
    as_send,
    make_server,
    ue_listener,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

LEGACY = "leg1"
MSISDN = "491700000001"


@pytest.fixture
def smsc() -> Iterator[Smsc]:
    peer = Smsc()
    yield peer
    peer.stop()


def l3g(server: RestServer, smsc: Smsc, tmp_path: Path, *args: str) -> Lines:
    out = start_gateway(
        "l3g",
        server,
        tmp_path,
        "--smsc",
        f"127.0.0.1:{smsc.port}",
        "--ue",
        f"{LEGACY}={MSISDN}",
        "--ue",
        "leg2=+491700000002",
        *args,
    )
    wait_registered(server, "l3g-1", {LEGACY, "leg2"})
    smsc.next("bind")
    return out


def send_texts(server: RestServer, *texts: str) -> None:
    """A2P from as1 to the Legacy UE, one message per text (msgId = the text)."""
    for text in texts:
        ack = as_send(server, "--to", LEGACY, "--text", text, "--msg-id", text)
        assert ack["status"] == 200, ack


@contextmanager
def smsc_down(
    server: RestServer, smsc: Smsc, tmp_path: Path, *texts: str
) -> Iterator[tuple[Lines, int]]:
    """The AS listening and the gateway bound; then the SMSC stops and the AS
    sends ``texts`` to the Legacy UE. Yields the gateway and the SMSC's port."""
    aserver = as_listener(server)
    gateway = l3g(server, smsc, tmp_path)
    port = smsc.port
    try:
        smsc.stop()
        send_texts(server, *texts)
        yield gateway, port
    finally:
        gateway.stop()
        aserver.stop()


def test_a2p_to_legacy_ue_is_a_concatenated_sms_and_its_receipt_a_report(
    server: RestServer, smsc: Smsc, tmp_path: Path
) -> None:
    aserver = as_listener(server)
    gateway = l3g(server, smsc, tmp_path)
    try:
        text = ("MSGin5G to SMS, 300 characters long. " * 9)[:300]
        ack = as_send(
            server, "--to", LEGACY, "--text", text, "--report", "--msg-id", "long-1"
        )
        assert ack["status"] == 200, ack
        parts = [smsc.next("submit_sm") for _ in range(2)]
        assert {p["destination"] for p in parts} == {MSISDN}
        assert all(p["data_coding"] == 0 for p in parts)  # GSM 7-bit
        # UDH concatenation IE 00 03 <ref> <total> <seq>
        udhs = [bytes.fromhex(str(p["udh"][0])) for p in parts]  # type: ignore[index]
        assert [u[0] for u in udhs] == [0x00, 0x00]
        assert [u[3] for u in udhs] == [2, 2]
        ordered = sorted(zip(udhs, parts, strict=True), key=lambda up: up[0][4])
        assert "".join(str(p["text"]) for _, p in ordered) == text
        report = aserver.next()
        assert report["resource"] == "deliver-report"
        assert report["body"] == {
            "oriAddr": {"addrType": "UE", "addr": LEGACY},
            "destAddr": {"addrType": "AS", "addr": "as1"},
            "msgId": "long-1",
            "delivSt": "REPT_DELY_SUCCESS",
        }
        ack = as_send(server, "--to", "leg2", "--text", "Grüße 你好", "--msg-id", "u-1")
        assert ack["status"] == 200, ack
        sms = smsc.next("submit_sm")
        assert sms["data_coding"] == 8  # UCS-2
        assert sms["text"] == "Grüße 你好"
        assert sms["registered_delivery"] == 0
    finally:
        err = gateway.stop()
        aserver.stop()
    assert "unparsable PDU" not in err  # segment responses and receipts are fine


def test_mo_sms_reaches_an_msgin5g_ue_and_replies_find_the_sender(
    server: RestServer, smsc: Smsc, tmp_path: Path
) -> None:
    ue = ue_listener(server, "ue1", "s1")
    aserver = as_listener(server)
    gateway = l3g(server, smsc, tmp_path, "--number", "5001=ue:ue1")
    try:
        smsc.command(cmd="mo", **{"from": MSISDN, "to": "5001", "text": "hi ue1"})
        msg = ue.next()
        assert msg["messageType"] == "MSG"
        assert msg["originatingUeServiceId"] == LEGACY
        assert msg["payloadText"] == "hi ue1"
        # an AS writes to the Legacy UE, the UE answers to the source number
        as_send(server, "--to", LEGACY, "--text", "your code?", "--msg-id", "q-1")
        sms = smsc.next("submit_sm")
        assert sms["source"] == "5000"
        smsc.command(cmd="mo", **{"from": MSISDN, "to": "5000", "text": "4711"})
        answer = aserver.next()
        assert answer["resource"] == "deliver-message"
        body = answer["body"]
        assert body["oriAddr"] == {"addrType": "UE", "addr": LEGACY}  # type: ignore[index]
        assert base64.b64decode(body["payload"]) == b"4711"  # type: ignore[index]
    finally:
        gateway.stop()
        aserver.stop()
        ue.stop()


def test_smsc_down_for_10_s_loses_nothing(
    server: RestServer, smsc: Smsc, tmp_path: Path
) -> None:
    with smsc_down(server, smsc, tmp_path, "m0", "m1", "m2") as (_, port):
        # the gateway acknowledged them (stored); the SMSC stays away 10 s
        time.sleep(10)
        again = Smsc(port=port)
        try:
            texts = {str(again.next("submit_sm", timeout=60)["text"]) for _ in range(3)}
            assert texts == {"m0", "m1", "m2"}
        finally:
            again.stop()


def test_enquire_link_malformed_pdus_and_throttling(
    server: RestServer, tmp_path: Path
) -> None:
    smsc = Smsc(throttle_first=2)
    aserver = as_listener(server)
    gateway = l3g(server, smsc, tmp_path, "--enquire-link", "1")
    try:
        smsc.next("enquire_link")  # the idle session is kept alive
        as_send(server, "--to", LEGACY, "--text", "after throttling", "--msg-id", "t1")
        assert smsc.next("throttled")["destination"] == MSISDN
        assert smsc.next("submit_sm")["text"] == "after throttling"
        smsc.command(cmd="bad_body")
        smsc.next("generic_nack")  # the ESME refuses a PDU it cannot parse
        smsc.command(cmd="garbage")
        smsc.next("bind")  # the gateway dropped the broken session and re-bound
        as_send(server, "--to", LEGACY, "--text", "after garbage", "--msg-id", "g1")
        assert smsc.next("submit_sm")["text"] == "after garbage"
    finally:
        err = gateway.stop()
        smsc.stop()
        aserver.stop()
    assert "unparsable PDU from the SMSC" in err
    assert "SMSC session was lost" in err


def test_gateway_api_refuses_bad_requests(
    server: RestServer, smsc: Smsc, tmp_path: Path
) -> None:
    gateway = l3g(server, smsc, tmp_path)
    try:
        registration = httpx.get(
            f"{server.http}/msgs-gwregistration/v1/registrations/l3g-1", timeout=5
        ).json()
        api = f"{registration['gwUri']}/msgg-l3gdelivery/v1"
        base = {
            "oriAddr": {"addrType": "AS", "addr": "as1"},
            "destAddr": {"addrType": "UE", "addr": LEGACY},
            "msgId": "x1",
        }
        unknown = {**base, "destAddr": {"addrType": "UE", "addr": "nobody"}}
        binary = {**base, "payload": base64.b64encode(b"\xff\xfe").decode()}
        cases = [
            (unknown | {"payload": "aGk="}, 404, "RECIPIENT_UNKNOWN"),
            (binary, 400, "INVALID_MESSAGE"),
            ({"msgId": "x2"}, 400, "INVALID_MESSAGE"),
            ({**base, "payload": None}, 400, "INVALID_MESSAGE"),
        ]
        for body, status, cause in cases:
            response = httpx.post(f"{api}/deliver-message", json=body, timeout=5)
            assert response.status_code == status, (body, response.text)
            assert response.json()["cause"] == cause
        report = {**base, "delivSt": "REPT_DELY_SUCCESS"}
        response = httpx.post(f"{api}/deliver-report", json=report, timeout=5)
        assert response.status_code == 204
    finally:
        gateway.stop()


def test_gateway_kill_9_with_sms_queued_loses_nothing(
    server: RestServer, smsc: Smsc, tmp_path: Path
) -> None:
    with smsc_down(server, smsc, tmp_path, "k0", "k1") as (gateway, port):
        # both reached the gateway's outbox once the server's POSTs were answered
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _outbox_rows(tmp_path) < 2:
            time.sleep(0.1)
        assert _outbox_rows(tmp_path) == 2
        gateway.proc.kill()  # SIGKILL: no clean shutdown
        again = Smsc(port=port)
        restarted = l3g(server, again, tmp_path)
        try:
            texts = {str(again.next("submit_sm")["text"]) for _ in range(2)}
            assert texts == {"k0", "k1"}
        finally:
            restarted.stop()
            again.stop()


def _outbox_rows(tmp_path: Path) -> int:
    import sqlite3

    with sqlite3.connect(tmp_path / "l3g-outbox.db") as db:
        return int(
            db.execute("SELECT COUNT(*) FROM outbox WHERE queue='sms'").fetchone()[0]
        )


def test_messages_stored_at_the_server_survive_its_restart(
    server: RestServer, smsc: Smsc, tmp_path: Path
) -> None:
    """Gateway registrations are soft state: the refresh after a restart wakes them."""
    aserver = as_listener(server)
    l3g(server, smsc, tmp_path, "--validity", "6").stop()
    try:
        # the gateway is down: the server keeps the message
        ack = as_send(server, "--to", LEGACY, "--text", "kept", "--msg-id", "s-1")
        assert ack["status"] == 200, ack
        server.kill9()
        server.start()
        restarted = l3g(server, smsc, tmp_path, "--validity", "6")
        try:
            assert smsc.next("submit_sm")["text"] == "kept"
        finally:
            restarted.stop()
    finally:
        aserver.stop()


def test_with_oauth2_the_gateway_uses_its_gateway_client(
    tmp_path: Path, smsc: Smsc
) -> None:
    srv = make_server(tmp_path, "--set", "rest.oauth2=true")
    msgin5g("as", "add", "as1", "--secret", "as-secret", "--storage", srv.storage)
    msgin5g(
        "as", "add", "l3g-1", "--secret", "gw-secret", "--role", "gateway",
        "--ues", "leg*", "--storage", srv.storage,
    )  # fmt: skip
    srv.start()
    ue = ue_listener(srv, "ue1", "s1")
    gateway = None
    try:
        refused = start_gateway(
            "l3g", srv, tmp_path, "--smsc", f"127.0.0.1:{smsc.port}",
            "--ue", f"{LEGACY}={MSISDN}", "--secret", "wrong", level="WARNING",
        )  # fmt: skip
        time.sleep(3)  # at least one registration attempt was refused
        assert "token request refused: 401" in refused.stop()
        gateway = start_gateway(
            "l3g", srv, tmp_path, "--smsc", f"127.0.0.1:{smsc.port}",
            "--ue", f"{LEGACY}={MSISDN}", "--secret", "gw-secret",
            "--number", "5001=ue:ue1",
        )  # fmt: skip
        url = f"{srv.http}/msgs-gwregistration/v1/registrations/l3g-1"
        token = httpx.post(
            f"{srv.http}/oauth2/token",
            data={"grant_type": "client_credentials"},
            auth=("l3g-1", "gw-secret"),
            timeout=5,
        ).json()["access_token"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            read = httpx.get(url, headers={"Authorization": f"Bearer {token}"})
            if read.status_code == 200:
                break
            time.sleep(0.1)
        assert read.status_code == 200, read.text
        assert httpx.get(url, timeout=5).status_code == 401  # no token
        smsc.command(cmd="mo", **{"from": MSISDN, "to": "5001", "text": "signed"})
        msg = ue.next()
        assert msg["originatingUeServiceId"] == LEGACY
        assert msg["payloadText"] == "signed"
        msgin5g("as", "register", "as1", "--server", srv.http, "--secret", "as-secret")
        ack = as_send(srv, "--to", LEGACY, "--text", "ok", "--secret", "as-secret")
        assert ack["status"] == 200, ack
        assert smsc.next("submit_sm")["text"] == "ok"
    finally:
        if gateway is not None:
            gateway.stop()
        ue.stop()
        err = srv.stop()
    assert "Traceback" not in err, err
