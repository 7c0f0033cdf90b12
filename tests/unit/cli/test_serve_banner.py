"""``msgin5g serve``'s start-up banner: one line per address, the console's URL too.

The single server runs as a real process (as a user starts it) on free loopback
ports; the URLs it prints are then used as printed: the console answers on
HTTP, the coaps:// port on UDP. The supervisor's banner (``--workers N``) is
the same text built from what the workers report; it is checked on that
report directly (the workers themselves: tests/e2e/test_workers.py).
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from msgin5g.cli.main import build_parser
from msgin5g.cli.serve import _announce_workers, _worker_arguments
from msgin5g.config import load_config
from msgin5g.server.workers import WorkersReady

pytestmark = pytest.mark.timeout(90)


def banner(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start ``msgin5g serve`` and read its banner (until the CoAP line)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    env["PYTHONUNBUFFERED"] = "1"
    argv = [
        sys.executable, "-m", "msgin5g", "serve",
        "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}",
        "--http", "127.0.0.1:0",
        "--set", f"coap.psk_store={tmp_path / 'psk.db'}",
        *options,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if "MSGin5G-1 on coap://" in line:
            break
    return proc, lines


def stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def test_banner_names_the_console_and_the_coaps_url(tmp_path: Path) -> None:
    proc, lines = banner(
        tmp_path,
        "--coap", "127.0.0.1:0",
        "--set", "coap.secure_bind=127.0.0.1:0",
        "--set", "coap.allow_insecure=true",
    )  # fmt: skip
    try:
        text = "\n".join(lines)
        api = re.search(
            r"^msgin5g: serving TS 29.538 APIs on (http://\S+)$", text, re.M
        )
        console = re.search(r"^msgin5g: operator console on (http://\S+)$", text, re.M)
        coaps = re.search(
            r"^msgin5g: serving MSGin5G-1 on coaps://127\.0\.0\.1:(\d+)/msgin5g$",
            text,
            re.M,
        )
        coap = re.search(
            r"^msgin5g: serving MSGin5G-1 on coap://127\.0\.0\.1:(\d+)/msgin5g$",
            text,
            re.M,
        )
        assert api and console and coaps and coap, text
        assert console[1] == api[1] + "/console"
        reply = httpx.get(console[1], timeout=10)
        assert reply.status_code == 200, reply.text
        assert "<html" in reply.text.lower()
        assert int(coaps[1]) != int(coap[1]) > 0
    finally:
        stop(proc)


def test_workers_banner_has_the_same_lines(capsys: pytest.CaptureFixture[str]) -> None:
    config = load_config(
        None,
        {},
        {"coap.bind": "127.0.0.1:5683", "rest.bind": "127.0.0.1:8080"},
    )
    ready = WorkersReady(
        coap=("127.0.0.1", 5683),
        http=("127.0.0.1", 8080),
        node_ids=("n-w0", "n-w1"),
        pids=(101, 102),
    )
    _announce_workers(config, ready)
    assert capsys.readouterr().out.splitlines() == [
        "msgin5g: serving TS 29.538 APIs on http://127.0.0.1:8080",
        "msgin5g: operator console on http://127.0.0.1:8080/console",
        "msgin5g: serving MSGin5G-1 on coap://127.0.0.1:5683/msgin5g with 2 workers "
        "(n-w0, n-w1; pids 101, 102)",
    ]


def test_workers_get_the_mqtt_and_tls_options_of_serve() -> None:
    args = build_parser().parse_args(
        [
            "serve", "--workers", "2", "--storage", "nats://127.0.0.1:1",
            "--mqtt", "mqtt://127.0.0.1:1883",
            "--tls-cert", "/etc/msgin5g/cert.pem", "--tls-key", "/etc/msgin5g/key.pem",
        ]
    )  # fmt: skip
    argv = _worker_arguments(args)
    pairs = set(itertools.pairwise(argv))
    assert ("--mqtt", "mqtt://127.0.0.1:1883") in pairs
    assert ("--tls-cert", "/etc/msgin5g/cert.pem") in pairs
    assert ("--tls-key", "/etc/msgin5g/key.pem") in pairs
    assert ("--storage", "nats://127.0.0.1:1") in pairs


def test_workers_with_coaps_are_refused_in_one_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    result = subprocess.run(
        [
            sys.executable, "-m", "msgin5g", "serve", "--workers", "2",
            "--storage", "nats://127.0.0.1:1", "--coaps", "127.0.0.1:5684",
        ],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 1
    assert "serve --workers does not serve coaps://" in result.stderr
    assert "Traceback" not in result.stderr
    assert "serving" not in result.stdout  # no worker was started
