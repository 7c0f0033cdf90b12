"""End to end on NATS JetStream: `msgin5g serve --storage nats://...` and the CLI.

One msgin5g process on a nats-server of this test: a UE sends to an offline UE,
both processes are killed with SIGKILL, both restart, the recipient registers
and gets the message.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess
from tests.e2e.test_scenarios import finish, lines, listen, send
from tests.storage.nats_server import NatsServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@dataclass
class NatsServerProcess(ServerProcess):
    """`msgin5g serve` with its storage on a NATS JetStream server."""

    nats_url: str = ""

    @property
    def storage(self) -> str:
        return f"{self.nats_url}?prefix=e2e"


@pytest.fixture
def nats_server(tmp_path: Path, jetstream: NatsServer) -> Iterator[NatsServerProcess]:
    srv = NatsServerProcess(tmp_path / "unused.db", nats_url=jetstream.url)
    srv.add_ue("ue1", "s1")
    srv.add_ue("ue2", "s2")
    srv.start()
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err
    assert not (tmp_path / "unused.db").exists()  # nothing went to SQLite


def test_stored_message_survives_kill_9_of_msgin5g_and_nats(
    nats_server: NatsServerProcess, jetstream: NatsServer
) -> None:
    sent = []
    for i in range(3):
        out = send(nats_server, "--to", "ue2", "--text", f"via jetstream {i}")
        assert out[1]["deliveryStatus"] == "DELY_STORED"
        sent.append(f"via jetstream {i}")
    nats_server.kill9()
    jetstream.kill()
    jetstream.start()
    nats_server.start()
    receiver = listen(nats_server, "ue2", "s2", "--count", "3", "--decode")
    stdout, stderr = finish(receiver, 30)
    assert [m["payloadText"] for m in lines(stdout)] == sent, stderr


def test_online_message_and_report(nats_server: NatsServerProcess) -> None:
    receiver = listen(nats_server, "ue2", "s2", "--count", "1", "--decode")
    _regresp, msgresp, imdn = send(
        nats_server, "--to", "ue2", "--text", "hi", "--report"
    )
    assert msgresp["deliveryStatus"] == "DELY_ACCEPTED"
    assert imdn["deliveryStatus"] == "REPT_DELY_SUCCESS"
    stdout, _ = finish(receiver, 20)
    assert [m["payloadText"] for m in lines(stdout)] == ["hi"]
