"""Real server processes for end-to-end scenarios."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import require_binary
from tests.storage.nats_server import NatsServer


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def msgin5g(
    *args: str, timeout: float = 30, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the msgin5g CLI to completion."""
    result = subprocess.run(
        [sys.executable, "-m", "msgin5g", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(),
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"msgin5g {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def spawn(*args: str) -> subprocess.Popen[str]:
    """Start the msgin5g CLI in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "msgin5g", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class ServerProcess:
    """A `msgin5g serve` process on a private port and SQLite file."""

    db: Path
    port: int = field(default_factory=free_udp_port)
    extra: tuple[str, ...] = ()
    proc: subprocess.Popen[str] | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"coap://127.0.0.1:{self.port}"

    @property
    def storage(self) -> str:
        return f"sqlite:///{self.db}"

    def start(self) -> None:
        self.proc = spawn(
            "serve",
            "--coap",
            f"127.0.0.1:{self.port}",
            "--storage",
            self.storage,
            "--set",
            "coap.ack_timeout=0.3",
            "--set",
            "coap.max_retransmit=1",
            "--set",
            "delivery.sweep_interval=0.2",
            "--set",
            "rest.enabled=false",  # REST tests enable it on a free port
            *self.extra,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.logs.append(line)
            if "serving MSGin5G-1" in line:
                return
        err = self.stop()
        raise AssertionError(
            "server did not start:\n" + "".join(self.logs) + "\nstderr:\n" + err[-3000:]
        )

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=10)
        self.proc = None

    def stop(self) -> str:
        if self.proc is None:
            return ""
        self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.proc = None
        return err

    def add_ue(self, ue: str, secret: str) -> None:
        msgin5g("ue", "add", ue, "--secret", secret, "--storage", self.storage)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "msgin5g.db")
    srv.add_ue("ue1", "s1")
    srv.add_ue("ue2", "s2")
    srv.start()
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err


@pytest.fixture
def jetstream(tmp_path: Path) -> Iterator[NatsServer]:
    """A private ``nats-server -js`` of this test (free port, store in tmp)."""
    server = NatsServer(require_binary("nats-server"), tmp_path / "js")
    server.start()
    yield server
    server.stop()


def stored_rows(server: ServerProcess) -> tuple[int, int]:
    """(queue rows, dedup records) in the server's file (WAL readers see commits)."""
    conn = sqlite3.connect(server.db)
    try:
        queue = conn.execute("SELECT COUNT(*) FROM queue").fetchone()[0]
        dedup = conn.execute("SELECT COUNT(*) FROM dedup").fetchone()[0]
    finally:
        conn.close()
    return int(queue), int(dedup)
