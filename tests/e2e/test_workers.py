"""End to end: ``msgin5g serve --workers 2`` on one CoAP port, a private nats-server.

Real processes: the supervisor and its two workers (sharing the port with
SO_REUSEPORT), a ``nats-server -js`` of this test on a free port, and many UEs
(the device library, one UDP socket each, so the kernel spreads their 4-tuples
over the two workers). Checked: both workers own UEs (``msgin5g cluster
status``), P2P among all UEs with delivery reports loses nothing, a worker
killed with SIGKILL is restarted and its UEs' messages are delivered once they
register again, and the refusals (SQLite, a worker that cannot start) are one
line without a traceback.
"""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.client.core import Received
from msgin5g.model.messages import Imdn, Msg
from tests.e2e.conftest import _env, free_udp_port, msgin5g, spawn
from tests.e2e.test_as import Lines, as_send, free_tcp_port
from tests.storage.nats_server import NatsServer, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SECRET = "worker-secret"
UES = 24


@dataclass
class Workers:
    """``msgin5g serve --workers 2 --node-id wk`` with its output in files."""

    storage: str
    tmp: Path
    port: int = field(default_factory=free_udp_port)
    http_port: int = 0
    """The shared HTTP port; 0: REST off."""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    @property
    def out(self) -> str:
        return (self.tmp / "serve.out").read_text(errors="replace")

    @property
    def err(self) -> str:
        return (self.tmp / "serve.err").read_text(errors="replace")

    def start(self) -> dict[str, int]:
        """Start; the pid of each worker by node id once all serve."""
        with (
            (self.tmp / "serve.out").open("wb") as out,
            (self.tmp / "serve.err").open("wb") as err,
        ):
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "msgin5g",
                    "serve",
                    "--workers",
                    "2",
                    "--node-id",
                    "wk",
                    "--storage",
                    self.storage,
                    "--coap",
                    f"127.0.0.1:{self.port}",
                    *(
                        ("--http", f"127.0.0.1:{self.http_port}")
                        if self.http_port
                        else ("--set", "rest.enabled=false")
                    ),
                    "--set",
                    "delivery.sweep_interval=0.2",
                    # a delivery that fails while a worker restarts (the UE's
                    # old contact) parks the recipient until its next uplink or
                    # this retry (300 s by default): the checks wait 90 s
                    "--set",
                    "delivery.retry_interval=2",
                ],
                stdout=out,
                stderr=err,
                env=_env(),
            )
        for _ in range(1200):  # bounded polling, no deadline on start-up speed
            found = re.search(
                r"with 2 workers \(wk-w0, wk-w1; pids (\d+), (\d+)\)", self.out
            )
            if found:
                return {"wk-w0": int(found[1]), "wk-w1": int(found[2])}
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"workers did not start:\n{self.out}\n{self.err}")

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code


@pytest.fixture
def workers(
    request: pytest.FixtureRequest, tmp_path: Path, jetstream: NatsServer
) -> Iterator[Workers]:
    http = request.param if hasattr(request, "param") else False
    srv = Workers(
        f"{jetstream.url}?prefix=wk", tmp_path, http_port=free_tcp_port() if http else 0
    )
    csv = tmp_path / "ues.csv"
    csv.write_text(
        "ueServiceId,secret\n" + "".join(f"ue{i},{SECRET}\n" for i in range(UES))
    )
    msgin5g("ue", "import", str(csv), "--storage", srv.storage, timeout=120)
    yield srv
    assert srv.stop() == 0, srv.err
    assert "Traceback" not in srv.err, srv.err
    assert not [
        p for p in os.listdir("/proc") if p.isdigit() and _is_worker(p, srv.port)
    ]


def _is_worker(pid: str, port: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"--worker-fds" in cmdline and f"127.0.0.1:{port}".encode() in cmdline


def cluster_nodes(storage: str) -> dict[str, dict[str, object]]:
    result = msgin5g("cluster", "status", "--json", "--storage", storage, check=False)
    if not result.stdout.strip():
        return {}
    return {n["node"]: n for n in json.loads(result.stdout)["nodes"]}


@dataclass
class UE:
    """A UE of the test: the client and what it received."""

    client: Client
    messages: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)

    async def collect(self) -> None:
        while True:
            received: Received = await self.client.receive()
            item = received.item
            if isinstance(item, Msg):
                self.messages.append(bytes(item.payload or b"").decode())
            elif isinstance(item, Imdn):
                self.reports[item.message_id] = item.delivery_status


@pytest.fixture
async def ues(workers: Workers) -> AsyncIterator[list[UE]]:
    clients = [
        Client(f"ue{i}", SECRET, server=workers.url, bind=("127.0.0.1", 0))
        for i in range(UES)
    ]
    out = [UE(c) for c in clients]
    for c in clients:
        await c.start()
    tasks = [asyncio.create_task(ue.collect()) for ue in out]
    yield out
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    for c in clients:
        await c.aclose()


async def until(condition: "object", what: str, seconds: float = 90) -> None:
    for _ in range(int(seconds * 10)):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not reached within {seconds} s: {what}")


@dataclass
class Round:
    """Messages of one round: the texts each UE must get, the ids each sent."""

    tag: str
    texts: dict[int, list[str]]
    ids: dict[int, list[str]]


async def send_round(ues: list[UE], tag: str, per_ue: int) -> Round:
    """Each UE sends ``per_ue`` messages with a report request to the next UE."""
    sent = Round(
        tag, {i: [] for i in range(len(ues))}, {i: [] for i in range(len(ues))}
    )

    async def one(i: int) -> None:
        to = (i + 1) % len(ues)
        for n in range(per_ue):
            text = f"{tag} {i}->{to} #{n}"
            resp = await ues[i].client.send(f"ue{to}", text, report=True)
            assert resp.delivery_status in {"DELY_ACCEPTED", "DELY_STORED"}, resp
            sent.texts[to].append(text)
            sent.ids[i].append(resp.message_id)

    await asyncio.gather(*(one(i) for i in range(len(ues))))
    return sent


async def check_delivered(ues: list[UE], sent: Round) -> None:
    """Every message arrived exactly once; every sender got a success report."""

    def got(i: int) -> list[str]:
        return [m for m in ues[i].messages if m.startswith(f"{sent.tag} ")]

    def done() -> bool:
        return all(
            len(got(i)) >= len(sent.texts[i])
            and all(mid in ues[i].reports for mid in sent.ids[i])
            for i in range(len(ues))
        )

    try:
        await until(done, f"all '{sent.tag}' messages and reports")
    finally:
        lost = {i: sorted(set(sent.texts[i]) - set(got(i))) for i in range(len(ues))}
        unreported = {
            i: [mid for mid in sent.ids[i] if mid not in ues[i].reports]
            for i in range(len(ues))
        }
        assert not any(lost.values()), f"lost: {lost}"
        assert not any(unreported.values()), f"no report: {unreported}"
    for i, ue in enumerate(ues):
        assert sorted(got(i)) == sorted(sent.texts[i]), f"ue{i}: duplicates or strays"
        assert {ue.reports[mid] for mid in sent.ids[i]} == {"REPT_DELY_SUCCESS"}


async def start_spread(workers: Workers, ues: list[UE]) -> dict[str, int]:
    """Start the workers, register every UE, wait until both workers own some.

    Returns the pid of each worker by node id.
    """
    pids = workers.start()
    await asyncio.gather(*(ue.client.register() for ue in ues))

    def spread() -> bool:
        nodes = cluster_nodes(workers.storage)
        owned = [int(nodes.get(n, {}).get("registeredUes", 0)) for n in pids]  # type: ignore[call-overload]
        return sum(owned) == UES and min(owned) > 0

    await until(spread, "both workers own some of the UEs")
    return pids


async def test_ues_spread_over_two_workers_and_p2p_among_all_loses_nothing(
    workers: Workers, ues: list[UE]
) -> None:
    pids = await start_spread(workers, ues)
    nodes = cluster_nodes(workers.storage)
    assert {
        n: nodes[n]["pid"] for n in pids
    } == pids  # the workers, not another process
    sent = await send_round(ues, "spread", 4)
    await check_delivered(ues, sent)


@pytest.mark.parametrize("victim", ["wk-w1", "wk-w0"])
async def test_a_killed_worker_is_restarted_and_its_ues_get_every_message(
    workers: Workers, ues: list[UE], victim: str
) -> None:
    pids = workers.start()
    await asyncio.gather(*(ue.client.register() for ue in ues))
    await until(
        lambda: (
            sum(
                int(n.get("registeredUes", 0))  # type: ignore[call-overload]
                for n in cluster_nodes(workers.storage).values()
            )
            == UES
        ),
        "every UE registered",
    )
    before = await send_round(ues, "before", 1)
    await check_delivered(ues, before)

    os.kill(pids[victim], signal.SIGKILL)
    # sent while the victim is dead: its UEs' datagrams reach the other worker
    during = await send_round(ues, "during", 2)
    await until(lambda: f"worker {victim} restarted" in workers.err, "the restart")
    # the restart may move some UEs' hash: they register again (as a UE does)
    await asyncio.gather(*(ue.client.register() for ue in ues))
    after = await send_round(ues, "after", 1)
    await check_delivered(ues, during)
    await check_delivered(ues, after)
    assert (
        f"worker {victim} (pid {pids[victim]}) killed by SIGKILL; restarting"
        in workers.err
    )


@pytest.mark.parametrize("workers", [True], indirect=True)
async def test_a2p_through_the_shared_http_port_reaches_ues_of_both_workers(
    workers: Workers, ues: list[UE]
) -> None:
    pids = await start_spread(workers, ues)
    nodes = cluster_nodes(workers.storage)
    assert {nodes[n]["http"] for n in pids} == {f"127.0.0.1:{workers.http_port}"}
    bind = f"127.0.0.1:{free_tcp_port()}"
    aserver = Lines(
        spawn("as", "listen", "--bind", bind, "--server", workers.http, "--as", "as1")
    )
    try:
        assert aserver.next()["status"] == 201
        for i in range(8):  # each `as send` is a new connection: any worker
            for _ in range(50):  # the other worker follows the AS registration
                ack = await asyncio.to_thread(
                    as_send,
                    workers,
                    "--to",
                    f"ue{i}",
                    "--text",
                    f"a2p {i}",
                    "--report",
                    "--msg-id",
                    f"a2p-{i}",
                )
                if ack["status"] == 200:
                    break
                await asyncio.sleep(0.1)
            assert ack["status"] == 200, ack
        await until(
            lambda: all(f"a2p {i}" in ues[i].messages for i in range(8)),
            "every A2P message at its UE",
        )
        reports = [await asyncio.to_thread(aserver.next) for _ in range(8)]
        assert {r["resource"] for r in reports} == {"deliver-report"}
        assert {r["body"]["delivSt"] for r in reports} == {"REPT_DELY_SUCCESS"}  # type: ignore[index]
        assert all(ue.messages.count(f"a2p {i}") == 1 for i, ue in enumerate(ues[:8]))
    finally:
        aserver.stop()


def test_workers_on_sqlite_are_refused_in_one_line(tmp_path: Path) -> None:
    result = msgin5g(
        "serve",
        "--workers",
        "2",
        "--storage",
        f"sqlite:///{tmp_path}/x.db",
        "--coap",
        f"127.0.0.1:{free_udp_port()}",
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        "msgin5g: cluster.workers: more than one worker needs storage on NATS "
        "JetStream (--storage nats://HOST:4222); SQLite is the single-process default"
    )
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x.db").exists()


def test_a_worker_that_cannot_start_is_reported_in_one_line(tmp_path: Path) -> None:
    nobody = f"nats://127.0.0.1:{free_port()}?connect_timeout=1"
    result = msgin5g(
        "serve",
        "--workers",
        "2",
        "--node-id",
        "edge",
        "--storage",
        nobody,
        "--coap",
        f"127.0.0.1:{free_udp_port()}",
        "--http",
        f"127.0.0.1:{free_port()}",
        check=False,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "msgin5g: worker edge-w0: nats: no server answered at nats://127.0.0.1:"
    ), result.stderr
    assert len(result.stderr.splitlines()) <= 2  # the line and at most a hint
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = msgin5g(
            "serve",
            "--workers",
            "2",
            "--storage",
            "nats://127.0.0.1:1",
            "--coap",
            f"127.0.0.1:{port}",
            "--set",
            "rest.enabled=false",
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"msgin5g: cannot bind UDP ('127.0.0.1', {port}): [Errno 98] Address already in use",
        "hint: check the host and port, and that no other process uses the port",
    ]
