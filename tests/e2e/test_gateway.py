"""Gateway UE end to end: server, gateway and constrained UEs as real processes.

The server logs each bulk registration it handles (DEBUG line "bulk
registration of N UEs via GW"); its log goes to a file so the test counts the
bulk requests the server saw, not what the gateway believes it sent.
"""

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest

from msgin5g.server import provision_ue
from tests.e2e.conftest import _env, free_udp_port, msgin5g

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

FLEET = str(Path(__file__).with_name("constrained_fleet.py"))


@dataclass
class Proc:
    """A background process whose stderr goes to a file."""

    args: list[str]
    log: Path
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    err: IO[str] | None = None

    def start(self, ready: str | None = None) -> None:
        self.err = self.log.open("a")
        self.proc = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=self.err,
            text=True,
            env=_env(),
        )
        if ready is not None:
            self.wait_for(ready)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            if text in line:
                return line
        raise AssertionError(
            f"{text!r} not seen:\n{''.join(self.lines)}\n{self.log.read_text()}"
        )

    def json_lines(self, count: int, timeout: float = 120) -> list[dict[str, object]]:
        out = []
        for _ in range(count):
            out.append(json.loads(self.wait_for("{", timeout)))
        return out

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.proc = None
        if self.err is not None:
            self.err.close()
            self.err = None


def msgin5g_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "msgin5g", *args]


@dataclass
class Bed:
    tmp: Path
    server_port: int = field(default_factory=free_udp_port)
    gateway_port: int = field(default_factory=free_udp_port)
    procs: list[Proc] = field(default_factory=list)

    @property
    def server_db(self) -> str:
        return f"sqlite:///{self.tmp / 'server.db'}"

    @property
    def gateway_uri(self) -> str:
        return f"coap://127.0.0.1:{self.gateway_port}"

    @property
    def server_log(self) -> Path:
        return self.tmp / "server.log"

    def server(self) -> Proc:
        proc = Proc(
            msgin5g_args(
                "serve",
                "--coap",
                f"127.0.0.1:{self.server_port}",
                "--storage",
                self.server_db,
                "--set",
                "log.level=DEBUG",
                "--set",
                "coap.ack_timeout=0.5",
                "--set",
                "coap.max_retransmit=2",
                "--set",
                "rest.enabled=false",
            ),
            self.server_log,
        )
        self.procs.append(proc)
        proc.start("serving MSGin5G-1")
        return proc

    def gateway(self, *extra: str) -> Proc:
        proc = Proc(
            msgin5g_args(
                "--log-level",
                "INFO",
                "gateway",
                "--id",
                "gw",
                "--secret",
                "s-gw",
                "--server",
                f"coap://127.0.0.1:{self.server_port}",
                "--listen",
                f"127.0.0.1:{self.gateway_port}",
                "--storage",
                f"sqlite:///{self.tmp / 'gateway.db'}",
                "--retry-interval",
                "0.5",
                *extra,
            ),
            self.tmp / "gateway.log",
        )
        self.procs.append(proc)
        proc.start("gateway serving")
        return proc

    def fleet(self, action: str, ues: list[str], *extra: str) -> Proc:
        proc = Proc(
            [sys.executable, FLEET, self.gateway_uri, action, *ues, *extra],
            self.tmp / f"fleet-{len(self.procs)}.log",
        )
        self.procs.append(proc)
        proc.start('"ready"')
        return proc

    def bulk_sizes(self) -> list[int]:
        text = self.server_log.read_text()
        return [
            int(n) for n in re.findall(r"bulk registration of (\d+) UEs via gw", text)
        ]

    def status(self) -> dict[str, object]:
        result = msgin5g(
            "gateway", "status", "--listen", f"127.0.0.1:{self.gateway_port}"
        )
        return json.loads(result.stdout)


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    import asyncio

    async def provision() -> None:
        url = f"sqlite:///{tmp_path / 'server.db'}"
        for ue in ["gw", "ue1", "urgent-1", *(f"c{i:03d}" for i in range(100))]:
            await provision_ue(url, ue, f"s-{ue}")

    asyncio.run(provision())
    bed = Bed(tmp_path)
    yield bed
    for proc in reversed(bed.procs):
        proc.stop()
    for log in tmp_path.glob("*.log"):
        assert "Traceback" not in log.read_text(), log.read_text()


def _check_matched(line: dict[str, object]) -> None:
    assert line["responseMid"] == line["requestMid"], line
    assert line["responseToken"] == line["requestToken"], line
    assert line["msgin5gServiceId"] == "org.3gpp.msgin5g"


def test_hundred_ues_register_in_a_few_bulks_then_urgent_and_dereg(bed: Bed) -> None:
    bed.server()
    bed.gateway("--batch-size", "40", "--max-wait", "2")
    ues = [f"c{i:03d}:s-c{i:03d}" for i in range(99)] + ["c099:wrong"]
    fleet = bed.fleet("register", ues)
    lines = fleet.json_lines(100)
    by_ue = {str(line["ueServiceId"]): line for line in lines}
    assert len(by_ue) == 100
    for line in lines:
        _check_matched(line)
    pairs = {(line["requestMid"], line["requestToken"]) for line in lines}
    assert len(pairs) == 100  # each UE got its own Message ID and Token back
    assert all(by_ue[f"c{i:03d}"]["registrationResult"] == "SUCCESS" for i in range(99))
    bad = by_ue["c099"]
    assert bad["registrationResult"] == "FAILURE"
    assert bad["failureCause"] == "AUTHENTICATION_FAILED"
    assert all("failureCause" not in by_ue[f"c{i:03d}"] for i in range(99))
    sizes = bed.bulk_sizes()
    assert sum(sizes) == 100 and 3 <= len(sizes) <= 10, sizes  # a few bulks
    assert bed.status()["bulkRequests"] == len(sizes)

    # urgent: forwarded on its own, no new bulk request at the server
    urgent = msgin5g(
        "ue",
        "register",
        "urgent-1",
        "--secret",
        "s-urgent-1",
        "--via-gateway",
        bed.gateway_uri,
        "--urgent",
    )
    answer = json.loads(urgent.stdout)
    assert answer["registrationResult"] == "SUCCESS"
    assert answer["coap"]["responseMid"] == answer["coap"]["requestMid"]
    assert bed.bulk_sizes() == sizes
    assert bed.status()["individualRequests"] == 1

    # bulk de-registration of ten UEs
    leaving = [f"c{i:03d}:s-c{i:03d}" for i in range(10)]
    gone = bed.fleet("deregister", leaving, "--wait-time", "1").json_lines(10)
    for line in gone:
        _check_matched(line)
        assert line["messageType"] == "DEREGRESP"
        assert line["deregistrationResult"] == "SUCCESS"
    listing = msgin5g("ue", "list", "--storage", bed.server_db).stdout
    assert "c000\tnot registered" in listing and "c010\tregistered" in listing
    assert bed.status()["cachedRequests"] == []


def test_messages_flow_both_ways_through_the_gateway(bed: Bed) -> None:
    bed.server()
    bed.gateway("--max-wait", "0.5")
    listener = Proc(
        msgin5g_args(
            "ue",
            "listen",
            "ue1",
            "--secret",
            "s-ue1",
            "--server",
            f"coap://127.0.0.1:{bed.server_port}",
            "--count",
            "1",
        ),
        bed.tmp / "listener.log",
    )
    bed.procs.append(listener)
    listener.start()
    listener.wait_for("REGRESP")
    fleet = bed.fleet("register", ["c001:s-c001"], "--send", "ue1", "--listen", "60")
    registered = fleet.json_lines(1)[0]
    assert registered["registrationResult"] == "SUCCESS"
    sent = json.loads(fleet.wait_for('"sent"'))["sent"]
    assert sent["deliveryStatus"] == "DELY_ACCEPTED"
    got = json.loads(listener.wait_for('"MSG"'))
    assert got["originatingUeServiceId"] == "c001"
    report = json.loads(fleet.wait_for('"received"'))["received"]
    assert report["messageType"] == "IMDN" and report["messageId"] == sent["messageId"]
    down = msgin5g(
        "ue",
        "send",
        "ue1",
        "--secret",
        "s-ue1",
        "--server",
        f"coap://127.0.0.1:{bed.server_port}",
        "--to",
        "c001",
        "--text",
        "down",
        "--report",
    )
    received = json.loads(fleet.wait_for('"received"'))["received"]
    assert received["messageType"] == "MSG" and received["payload"] == "ZG93bg=="
    assert '"REPT_DELY_SUCCESS"' in down.stdout


def test_gateway_restart_loses_no_acknowledged_request(bed: Bed) -> None:
    # the server is down: the gateway acknowledges and caches, cannot send
    gateway = bed.gateway("--max-wait", "0.5")
    ues = [f"c{i:03d}:s-c{i:03d}" for i in range(5)]
    fleet = bed.fleet("register", ues)
    deadline = time.monotonic() + 30
    while len(bed.status()["cachedRequests"]) < 5:  # type: ignore[arg-type]
        assert time.monotonic() < deadline, bed.status()
        time.sleep(0.2)
    gateway.stop(signal.SIGKILL)
    bed.server()
    bed.gateway("--max-wait", "0.5")
    lines = fleet.json_lines(5)
    for line in lines:
        _check_matched(line)
        assert line["registrationResult"] == "SUCCESS"
    assert sum(bed.bulk_sizes()) == 5
