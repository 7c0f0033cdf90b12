"""Real peers for the Message Gateway tests: the node SMSC, mosquitto, gateways.

* :class:`Smsc` runs ``tests/interop/node-smpp/smsc.js`` (the npm ``smpp``
  package's server, installed by scripts/install) on a free port and reads its
  JSON event lines; commands (MO SMS, a malformed PDU) go to its stdin;
* :func:`start_gateway` runs ``msgin5g l3g`` / ``msgin5g n3g`` and waits for
  its ``ready`` line, :func:`wait_registered` until the server lists its UEs.
"""

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import fail_or_skip, require_binary
from tests.e2e.conftest import spawn
from tests.e2e.test_as import Lines, RestServer, free_tcp_port, make_server

NODE_SMPP = Path(__file__).resolve().parents[1] / "interop" / "node-smpp"


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[RestServer]:
    """``msgin5g serve`` with REST on a free port (import it into a test module)."""
    srv = make_server(tmp_path)
    srv.start()
    yield srv
    err = srv.stop()
    assert "Traceback" not in err, err


class Smsc:
    """The npm ``smpp`` server as an SMSC on a free loopback port."""

    def __init__(self, port: int | None = None, throttle_first: int = 0) -> None:
        node = require_binary("node")
        if not (NODE_SMPP / "node_modules" / "smpp").is_dir():
            fail_or_skip("tests/interop/node-smpp: run scripts/install (npm ci)")
        self.port = port or free_tcp_port()
        proc = subprocess.Popen(
            [node, str(NODE_SMPP / "smsc.js"), str(self.port), str(throttle_first)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.proc = proc
        self.lines = Lines(proc)
        first = self.lines.next()
        assert first["event"] == "listening", first

    def command(self, **cmd: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def next(self, event: str, timeout: float = 30) -> dict[str, object]:
        """The next line of kind ``event`` (others are skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.lines.next(timeout=max(0.1, deadline - time.monotonic()))
            if line["event"] == event:
                return line
        raise AssertionError(f"no {event} from the SMSC in time")

    def stop(self) -> None:
        if self.proc.stdin is None or self.proc.stdin.closed:
            return  # stopped already
        self.proc.stdin.close()
        self.lines.stop()


def start_gateway(
    kind: str, server: RestServer | str, tmp_path: Path, *args: str, level: str = "INFO"
) -> Lines:
    """``msgin5g l3g|n3g`` against ``server``; returns once it printed ``ready``.

    Its stderr is read only at :meth:`Lines.stop`: keep ``level`` at WARNING
    when a test makes it log much.
    """
    proc = spawn(
        "--log-level",
        level,
        kind,
        "--server",
        server if isinstance(server, str) else server.http,
        "--listen",
        "127.0.0.1:0",
        "--outbox",
        str(tmp_path / f"{kind}-outbox.db"),
        *args,
    )
    out = Lines(proc)
    try:
        ready = out.next()
    except AssertionError:
        err = out.stop()
        raise AssertionError(f"msgin5g {kind} did not start:\n{err}") from None
    assert ready["event"] == "ready", ready
    out.ready = ready  # type: ignore[attr-defined]
    return out


def wait_registered(
    server: RestServer, gateway_id: str, ues: set[str], timeout: float = 30
) -> None:
    """Poll the server until it lists ``ues`` for ``gateway_id``."""
    url = f"{server.http}/msgs-gwregistration/v1/registrations/{gateway_id}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = httpx.get(url, timeout=5)
        if response.status_code == 200:
            listed = {r["ueSvcId"] for r in response.json()["ueResults"]}
            if ues <= listed:
                return
        time.sleep(0.1)
    raise AssertionError(f"{gateway_id} did not register {ues} in time")


class Mosquitto:
    """A private mosquitto broker on a free loopback port (never the one on 1883)."""

    def __init__(
        self, tmp_path: Path, port: int | None = None, password: str | None = None
    ) -> None:
        binary = require_binary("mosquitto")
        self.port = port or free_tcp_port()
        conf = tmp_path / "mosquitto.conf"
        # persistence: sessions and queued QoS 1 messages survive a restart
        access = "allow_anonymous true\n"
        if password is not None:  # one user, "gw", with this password
            users = tmp_path / "mosquitto.passwd"
            subprocess.run(
                [
                    require_binary("mosquitto_passwd"),
                    "-b",
                    "-c",
                    str(users),
                    "gw",
                    password,
                ],
                check=True,
                timeout=20,
            )
            access = f"allow_anonymous false\npassword_file {users}\n"
        if os.geteuid() == 0:  # else mosquitto drops to its own user, which
            access += "user root\n"  # cannot write or read files in tmp_path
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n{access}"
            f"persistence true\npersistence_location {tmp_path}/\n",
            encoding="utf-8",
        )
        self.proc = subprocess.Popen(
            [binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise AssertionError("mosquitto did not start")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.communicate(timeout=10)


def mqtt_device(broker: Mosquitto, topic: str, client_id: str) -> Lines:
    """``mosquitto_sub`` as a device: persistent session, QoS 1, one line per message.

    Returns once the broker acknowledged the subscription.
    """
    binary = require_binary("mosquitto_sub")
    # stdbuf: mosquitto_sub block-buffers stdout into a pipe
    proc = subprocess.Popen(
        [
            require_binary("stdbuf"), "-oL", binary, "-h", "127.0.0.1", "-p", str(broker.port), "-i", client_id,
            "-c", "-q", "1", "-t", topic, "-d",
            "-F", '{"topic":"%t","payload":"%p"}',
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    lines = Lines(proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        raw = lines._queue.get(timeout=20)
        if "SUBACK" in raw:
            return lines
    raise AssertionError("mosquitto_sub did not subscribe")


def mqtt_publish(broker: Mosquitto, topic: str, payload: str) -> None:
    """``mosquitto_pub`` one QoS 1 message."""
    binary = require_binary("mosquitto_pub")
    subprocess.run(
        [binary, "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
         "-t", topic, "-m", payload],
        check=True,
        timeout=20,
    )  # fmt: skip
