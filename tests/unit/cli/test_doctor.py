"""``msgin5g doctor`` with the real binary: free ports, taken ports, bad storage,
a running server."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

from msgin5g.config import load_config
from msgin5g.server import Server


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}


def doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msgin5g", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
    )


def lines(out: str) -> dict[str, str]:
    """check name -> status of each check line."""
    found = {}
    for line in out.splitlines():
        if line.startswith(("ok", "warn", "FAIL")):
            status, _, rest = line.partition(" ")
            found[rest.split()[0] + (" port" if "port" in rest[:14] else "")] = status
    return found


def test_everything_free_is_ok(tmp_path: Path) -> None:
    result = doctor(
        "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}",
        "--coap", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
        "--http", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert lines(result.stdout) == {
        "configuration": "ok",
        "storage": "ok",
        "coap port": "ok",
        "http port": "ok",
    }
    assert "Traceback" not in result.stderr


def test_taken_ports_and_bad_storage_fail_with_hints(tmp_path: Path) -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp,
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp,
    ):
        udp.bind(("127.0.0.1", 0))  # bound, speaks no CoAP
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()  # accepts, speaks no HTTP
        result = doctor(
            "--storage", f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}",
            "--coap", f"127.0.0.1:{udp.getsockname()[1]}",
            "--http", f"127.0.0.1:{tcp.getsockname()[1]}",
        )  # fmt: skip
    assert result.returncode == 1
    assert lines(result.stdout) == {
        "configuration": "ok",
        "storage": "FAIL",
        "coap port": "FAIL",
        "http port": "FAIL",
    }
    assert "does not exist" in result.stdout
    assert "taken by another process" in result.stdout
    assert result.stdout.count("hint:") == 3
    assert "Traceback" not in result.stderr


def test_bad_configuration_is_one_failure() -> None:
    result = doctor("--set", "coap.ack_timeout=-1")
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL  configuration")
    assert "coap.ack_timeout" in result.stdout


async def test_a_running_server_is_recognised(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    config = load_config(
        None,
        {},
        {
            "storage.url": storage,
            "coap.bind": "127.0.0.1:0",
            "rest.bind": "127.0.0.1:0",
        },
    )
    async with Server(config) as server:
        coap_host, coap_port = server.coap_address
        http = server.http_address
        assert http is not None
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "msgin5g", "doctor", "--storage", storage,
            "--coap", f"{coap_host}:{coap_port}", "--http", f"{http[0]}:{http[1]}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env(),
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text + err.decode()
    assert lines(text)["coap port"] == "warn"
    assert lines(text)["http port"] == "warn"
    assert "already running" in text
    assert "and is ready" in text
