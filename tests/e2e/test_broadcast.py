"""Broadcast messaging end to end: `msgin5g serve`, `msgin5g area`, `ue listen`, HTTP.

Real processes on loopback: the server (CoAP + REST, SQLite file), the operator
CLI changing Broadcast Areas in the same storage (before and while the server
runs), UEs reporting their cell / tracking area with `ue listen --cell/
--tracking-area`, and an AS speaking raw HTTP to the TS 29.538 APIs.
"""

import base64
import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ServerProcess, msgin5g, spawn

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SECRETS = {"ue1": "s1", "ue2": "s2", "ue3": "s3", "ue4": "s4"}


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """Rest of a process's output after its first line was read.

    ``communicate()`` would read the pipe directly and lose what ``readline()``
    already buffered.
    """
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.wait(timeout)
    with proc.stdout, proc.stderr:
        return proc.stdout.read(), proc.stderr.read()


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


class RestServer(ServerProcess):
    """`msgin5g serve` with the TS 29.538 APIs on a free TCP port."""

    http_port: int = 0

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestServer]:
    port = free_tcp_port()
    srv = RestServer(
        tmp_path / "msgin5g.db",
        extra=("--set", "rest.enabled=true", "--http", f"127.0.0.1:{port}"),
    )
    srv.http_port = port
    for ue, secret in SECRETS.items():
        srv.add_ue(ue, secret)
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err


def area(server: ServerProcess, *args: str, check: bool = True) -> str:
    return msgin5g("area", *args, "--storage", server.storage, check=check).stdout


def listen(server: ServerProcess, ue: str, *extra: str) -> subprocess.Popen[str]:
    proc = spawn(
        "ue",
        "listen",
        ue,
        "--secret",
        SECRETS[ue],
        "--server",
        server.url,
        "--bind",
        "127.0.0.1:0",
        "--decode",
        *extra,
    )
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())  # REGRESP once registered
    assert first["registrationResult"] == "SUCCESS", first
    return proc


def body(
    msg_id: str, to: str, *, ori: str = "as1", ori_type: str = "AS"
) -> dict[str, object]:
    return {
        "oriAddr": {"addrType": ori_type, "addr": ori},
        "destAddr": {"addrType": "BC", "addr": to},
        "msgId": msg_id,
        "payload": base64.b64encode(msg_id.encode()).decode(),
    }


def test_area_cli(server: RestServer) -> None:
    created = json.loads(
        area(
            server,
            "create",
            "downtown",
            "--cell",
            "c1",
            "--cell",
            "c2",
            "--tracking-area",
            "ta1",
            "--ue",
            "ue3",
        )
    )
    assert created == {
        "areaId": "downtown",
        "cells": ["c1", "c2"],
        "trackingAreas": ["ta1"],
        "ues": ["ue3"],
        "ueMaySend": False,
        "allowedAs": [],
    }
    assigned = json.loads(area(server, "assign", "downtown", "ue4", "ue3"))
    assert assigned["ues"] == ["ue3", "ue4"]
    unassigned = json.loads(area(server, "unassign", "downtown", "ue3"))
    assert unassigned["ues"] == ["ue4"]
    area(server, "create", "open", "--ue-may-send", "--allow-as", "as9")
    assert area(server, "list").splitlines() == [
        "downtown\t2 cells\t1 tracking areas\t1 assigned UEs\tany AS",
        "open\t0 cells\t0 tracking areas\t0 assigned UEs\tas9 + UEs",
    ]
    assert json.loads(area(server, "show", "open"))["ueMaySend"] is True
    area(server, "delete", "open")
    missing = msgin5g("area", "show", "open", "--storage", server.storage, check=False)
    assert missing.returncode == 1 and "no area open" in missing.stderr
    assert (
        msgin5g(
            "area", "assign", "open", "x", "--storage", server.storage, check=False
        ).returncode
        == 1
    )
    helptext = msgin5g("area", "--help").stdout
    for word in ("cell", "tracking area", "assigned", "ueLocation"):
        assert word in helptext, word
    create_help = msgin5g("area", "create", "--help").stdout
    assert "--tracking-area" in create_help and "--ue-may-send" in create_help
    assert "--cell" in msgin5g("ue", "register", "--help").stdout


def test_a2p_and_bg_broadcast_across_processes(server: RestServer) -> None:
    area(
        server,
        "create",
        "downtown",
        "--cell",
        "cell-1",
        "--tracking-area",
        "ta-1",
        "--ue",
        "ue3",
    )
    server.start()
    api = httpx.Client(base_url=server.http, timeout=10)
    with api:
        reg = api.post("/msgs-asregistration/v1/registrations", json={"asSvcId": "as1"})
        assert reg.status_code == 201, reg.text
        by_cell = listen(server, "ue1", "--cell", "cell-1", "--count", "3")
        by_ta = listen(
            server, "ue2", "--cell", "cell-7", "--tracking-area", "ta-1", "--count", "2"
        )
        elsewhere = listen(
            server,
            "ue4",
            "--cell",
            "cell-9",
            "--tracking-area",
            "ta-9",
            "--timeout",
            "3",
        )
        a2p = {**body("a2p-1", "downtown"), "stoAndFwInd": True}
        resp = api.post("/msgs-msgdelivery/v1/deliver-as-message", json=a2p)
        assert resp.status_code == 200, resp.text
        bg = {**body("bg-1", "downtown"), "priority": "HIGH"}
        resp = api.post("/msgg-bgdelivery/v1/deliver-message", json=bg)
        assert resp.status_code == 204, resp.text
        # unknown area, and a UE that may not broadcast here
        resp = api.post(
            "/msgg-bgdelivery/v1/deliver-message", json=body("bg-2", "nowhere")
        )
        assert resp.status_code == 404 and resp.json()["cause"] == "RECIPIENT_UNKNOWN"
        resp = api.post(
            "/msgg-bgdelivery/v1/deliver-message",
            json=body("bg-3", "downtown", ori="ue4", ori_type="UE"),
        )
        assert resp.status_code == 403 and resp.json()["cause"] == "NOT_AUTHORIZED"
        # an area created by the CLI while the server runs is used at once
        area(server, "create", "live", "--cell", "cell-1")
        resp = api.post(
            "/msgg-bgdelivery/v1/deliver-message", json=body("live-1", "live")
        )
        assert resp.status_code == 204, resp.text

        got_cell = lines(finish(by_cell, 30)[0])
        got_ta = lines(finish(by_ta, 30)[0])
        got_none = lines(finish(elsewhere, 30)[0])
    assert [m["messageId"] for m in got_cell] == ["a2p-1", "bg-1", "live-1"]
    assert [m["messageId"] for m in got_ta] == ["a2p-1", "bg-1"]
    assert got_none == []
    first = got_cell[0]
    assert first["recipientBroadcastAreaId"] == "downtown"
    assert first["originatingAsServiceId"] == "as1"
    assert first["payloadText"] == "a2p-1"
    assert got_cell[1]["priorityType"] == "HIGH"
    # ue3 is assigned and was offline: both broadcasts were stored for it
    late = listen(server, "ue3", "--count", "2")
    got_late = lines(finish(late, 30)[0])
    assert sorted(str(m["messageId"]) for m in got_late) == ["a2p-1", "bg-1"]
