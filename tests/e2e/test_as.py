"""Application Servers end to end: real `msgin5g serve`, `as listen`, UEs, HTTP and CoAP.

Every scenario runs real processes on loopback: the server (CoAP + HTTP in one
process, SQLite file), UEs (`msgin5g ue listen` or the device library over UDP)
and the AS simulator (`msgin5g as listen`, an HTTP server that is the AS's
targetUri and prints what it receives as JSON lines).
"""

import asyncio
import json
import queue
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.model.messages import Imdn
from tests.e2e.conftest import ServerProcess, msgin5g, spawn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lines:
    """JSON lines of a process's stdout, read by a thread (timeouts without select)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._queue.put(line)

    def next(self, timeout: float = 20) -> dict[str, object]:
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no JSON line in time") from None
            if line.startswith("{"):
                return json.loads(line)  # type: ignore[no-any-return]

    def stop(self) -> str:
        """Terminate the process, close its pipes, return its stderr."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # never leave it running
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"{self.proc.args[3:5]} did not stop within 10 s of SIGTERM"
            ) from None
        self._thread.join(timeout=10)
        assert self.proc.stdout is not None and self.proc.stderr is not None
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert "Traceback" not in err, err
        return err


class RestServer(ServerProcess):
    """`msgin5g serve` with the TS 29.538 APIs on a free TCP port."""

    http_port: int = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def make_server(tmp_path: Path, *extra: str) -> RestServer:
    http_port = free_tcp_port()
    srv = RestServer(
        tmp_path / "msgin5g.db",
        extra=(
            "--set",
            "rest.enabled=true",
            "--http",
            f"127.0.0.1:{http_port}",
            "--set",
            "delivery.as_retry_initial=0.2",
            "--set",
            "delivery.as_retry_max=0.5",
            *extra,
        ),
    )
    srv.http_port = http_port
    srv.add_ue("ue1", "s1")
    srv.add_ue("ue2", "s2")
    return srv


@pytest.fixture
def rest_server(tmp_path: Path) -> Iterator[RestServer]:
    srv = make_server(tmp_path)
    srv.start()
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err


def as_listener(
    server: RestServer, *args: str, port: int | None = None, register: bool = True
) -> Lines:
    bind = f"127.0.0.1:{port or free_tcp_port()}"
    extra = ("--as", "as1") if register else ()
    out = Lines(
        spawn("as", "listen", "--bind", bind, "--server", server.http, *extra, *args)
    )
    if register:
        first = out.next()
        assert first["status"] == 201, first
    return out


def ue_listener(server: RestServer, ue: str, secret: str) -> Lines:
    out = Lines(
        spawn(
            "ue",
            "listen",
            ue,
            "--secret",
            secret,
            "--server",
            server.url,
            "--bind",
            "127.0.0.1:0",
            "--decode",
        )
    )
    assert out.next()["registrationResult"] == "SUCCESS"
    return out


def as_send(server: RestServer, *args: str) -> dict[str, object]:
    result = msgin5g("as", "send", "as1", "--server", server.http, *args, check=False)
    return json.loads(result.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_a2p_to_registered_ue_with_report_to_the_as(rest_server: RestServer) -> None:
    aserver = as_listener(rest_server)
    ue = ue_listener(rest_server, "ue1", "s1")
    try:
        ack = as_send(
            rest_server,
            "--to",
            "ue1",
            "--text",
            "read now",
            "--report",
            "--priority",
            "HIGH",
            "--msg-id",
            "a2p-1",
        )
        assert ack["status"] == 200
        assert ack["body"] == {
            "oriAddr": {"addrType": "AS", "addr": "as1"},
            "msgId": "a2p-1",
        }
        msg = ue.next()
        assert msg["messageType"] == "MSG"
        assert msg["originatingAsServiceId"] == "as1"
        assert msg["payloadText"] == "read now"
        assert msg["priorityType"] == "HIGH"
        report = aserver.next()
        assert report["resource"] == "deliver-report"
        assert report["body"] == {
            "oriAddr": {"addrType": "UE", "addr": "ue1"},
            "destAddr": {"addrType": "AS", "addr": "as1"},
            "msgId": "a2p-1",
            "delivSt": "REPT_DELY_SUCCESS",
        }
    finally:
        ue.stop()
        aserver.stop()


def test_a2p_to_offline_ue_is_stored_then_delivered_and_reported(
    rest_server: RestServer,
) -> None:
    aserver = as_listener(rest_server)
    try:
        ack = as_send(
            rest_server,
            "--to",
            "ue2",
            "--text",
            "later",
            "--report",
            "--msg-id",
            "a2p-2",
            "--store-until",
            "2099-01-01T00:00:00Z",
        )
        assert ack["body"]["status"] == "DELY_STORED"  # type: ignore[index]
        failed = as_send(rest_server, "--to", "ue2", "--text", "x", "--no-store")
        assert failed["body"]["status"] == "DELY_FAILED"  # type: ignore[index]
        assert failed["body"]["failureCause"] == "RECIPIENT_NOT_REGISTERED"  # type: ignore[index]
        unknown = as_send(rest_server, "--to", "nobody", "--text", "x")
        assert unknown["status"] == 404
        ue = ue_listener(rest_server, "ue2", "s2")
        try:
            msg = ue.next()
            assert (msg["messageId"], msg["payloadText"]) == ("a2p-2", "later")
            report = aserver.next()
            assert report["body"]["msgId"] == "a2p-2"  # type: ignore[index]
            assert report["body"]["delivSt"] == "REPT_DELY_SUCCESS"  # type: ignore[index]
        finally:
            ue.stop()
    finally:
        aserver.stop()


async def _p2a(server: RestServer, to: str, ids: list[str], *, report: bool) -> Client:
    client = Client("ue1", "s1", server=server.url, bind=("127.0.0.1", 0))
    await client.start()
    await client.register()
    for msg_id in ids:
        resp = await client.send_to_as(
            to, f"reading {msg_id}", message_id=msg_id, report=report
        )
        assert resp.delivery_status in ("DELY_ACCEPTED", "DELY_STORED"), resp
    return client


def test_p2a_ue_to_as_target_uri_and_report_back(rest_server: RestServer) -> None:
    aserver = as_listener(rest_server, "--decode")

    async def scenario() -> Imdn:
        client = await _p2a(rest_server, "as1", ["p2a-1"], report=True)
        try:
            received = await client.receive(timeout=20)
            assert isinstance(received.item, Imdn)
            return received.item
        finally:
            await client.aclose()

    try:
        imdn = asyncio.run(scenario())
        got = aserver.next()
        assert got["resource"] == "deliver-message"
        body = got["body"]
        assert body["oriAddr"] == {"addrType": "UE", "addr": "ue1"}  # type: ignore[index]
        assert body["destAddr"] == {"addrType": "AS", "addr": "as1"}  # type: ignore[index]
        assert body["payloadText"] == "reading p2a-1"  # type: ignore[index]
        assert body["delivStReqInd"] is True  # type: ignore[index]
        assert imdn.message_id == "p2a-1"
        assert imdn.delivery_status == "REPT_DELY_SUCCESS"
        assert imdn.originating_as_service_id == "as1"
    finally:
        aserver.stop()


def test_as_down_then_up_loses_nothing_even_across_a_server_kill(
    tmp_path: Path,
) -> None:
    srv = make_server(tmp_path)
    srv.start()
    port = free_tcp_port()
    try:
        reg = msgin5g(
            "as",
            "register",
            "as1",
            "--target-uri",
            f"http://127.0.0.1:{port}",
            "--server",
            srv.http,
        )
        assert json.loads(reg.stdout)["status"] == 201
        ids = [f"down-{i}" for i in range(5)]

        async def send() -> None:
            client = await _p2a(srv, "as1", ids, report=False)
            await client.aclose()

        asyncio.run(send())  # the AS is down: all acknowledged, stored
        srv.kill9()
        srv.start()
        aserver = as_listener(srv, port=port, register=False)
        try:
            got = sorted(str(aserver.next()["body"]["msgId"]) for _ in ids)  # type: ignore[index]
            assert got == ids
        finally:
            aserver.stop()
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err


def test_oauth2_on(tmp_path: Path) -> None:
    srv = make_server(tmp_path, "--set", "rest.oauth2=true")
    msgin5g("as", "add", "as1", "--secret", "as-secret", "--storage", srv.storage)
    srv.start()
    try:
        anonymous = msgin5g("as", "register", "as1", "--server", srv.http, check=False)
        assert json.loads(anonymous.stdout)["status"] == 401
        wrong = msgin5g(
            "as",
            "register",
            "as1",
            "--server",
            srv.http,
            "--secret",
            "nope",
            check=False,
        )
        assert wrong.returncode == 1 and "token request refused" in wrong.stderr
        ok = msgin5g(
            "as", "register", "as1", "--server", srv.http, "--secret", "as-secret"
        )
        assert json.loads(ok.stdout)["status"] == 201
        ack = as_send(srv, "--to", "ue1", "--text", "x", "--secret", "as-secret")
        assert ack["body"]["status"] == "DELY_STORED"  # type: ignore[index]
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err


def test_oauth2_roles_over_http(tmp_path: Path) -> None:
    """``as add --role gateway --ues``: only the gateway may send as its UEs, and a
    guessing client is throttled while the others keep getting tokens."""
    import httpx

    srv = make_server(tmp_path, "--set", "rest.oauth2=true")
    msgin5g("as", "add", "as1", "--secret", "as-secret", "--storage", srv.storage)
    gateway = msgin5g(
        "as", "add", "gw1", "--role", "gateway", "--ues", "ue*", "--secret", "gw-s",
        "--storage", srv.storage,
    )  # fmt: skip
    assert "gateway client gw1" in gateway.stdout
    refused = msgin5g(
        "as", "add", "x", "--role", "operator", "--ues", "ue1", "--storage",
        srv.storage, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    srv.start()
    try:
        with httpx.Client(base_url=srv.http, timeout=10) as http:

            def token(client: str, secret: str) -> httpx.Response:
                return http.post(
                    "/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(client, secret),
                )

            def bearer(client: str, secret: str) -> dict[str, str]:
                resp = token(client, secret)
                assert resp.status_code == 200, resp.text
                return {"Authorization": f"Bearer {resp.json()['access_token']}"}

            as1, gw1 = bearer("as1", "as-secret"), bearer("gw1", "gw-s")
            meta = http.post(
                "/msgs-asregistration/v1/registrations",
                json={"asSvcId": "as1", "targetUri": "http://169.254.169.254/"},
                headers=as1,
            )
            assert meta.status_code == 400, meta.text
            reg = http.post(
                "/msgs-asregistration/v1/registrations",
                json={"asSvcId": "as1", "targetUri": "http://127.0.0.1:9/"},
                headers=as1,
            )
            assert reg.status_code == 201, reg.text
            body = {
                "oriAddr": {"addrType": "UE", "addr": "ue1"},
                "destAddr": {"addrType": "AS", "addr": "as1"},
                "msgId": "e2e-gw-1",
                "stoAndFwInd": True,
            }
            path = "/msgs-msgdelivery/v1/deliver-ue-message"
            assert http.post(path, json=body, headers=as1).status_code == 403
            sent = http.post(path, json=body, headers=gw1)
            assert sent.status_code == 200, sent.text
            statuses = [token("gw1", f"guess-{i}").status_code for i in range(15)]
            assert statuses[:10] == [401] * 10 and statuses[-1] == 429
    finally:
        err = srv.stop()
    assert "Traceback" not in err, err
