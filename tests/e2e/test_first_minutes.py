"""The first five minutes of a new user (issue 17 item 7), with the real CLI.

Every failure of a command is one line plus a hint, never a traceback; local
mistakes are refused before the first datagram; a CoAP server that is not
there fails within seconds (ICMP port unreachable); ``ue listen`` de-registers
when stopped, so the README's store-and-forward demo works as written.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, free_udp_port, msgin5g, spawn


def one_line_and_hint(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's line; asserts exit 1, no traceback, exactly line + hint."""
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert lines[0].startswith("msgin5g: ")
    assert lines[1].startswith("hint: ") and len(lines[1]) > len("hint: ")
    return lines[0]


def closed_udp_port() -> int:
    return free_udp_port()  # bound then closed: the kernel answers ICMP


@pytest.fixture
def silent_server() -> Iterator[socket.socket]:
    """A bound UDP socket that never answers (and so sends no ICMP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        yield sock


def nothing_received(sock: socket.socket) -> bool:
    try:
        sock.recv(2048)
    except BlockingIOError:
        return True
    return False


def test_as_command_without_server_is_one_line() -> None:
    port = free_udp_port()  # no TCP listener there either
    result = msgin5g(
        "as", "send", "as1", "--to", "ue1", "--text", "hi",
        "--server", f"http://127.0.0.1:{port}",
        check=False,
    )  # fmt: skip
    line = one_line_and_hint(result)
    assert f"http://127.0.0.1:{port}" in line
    assert "--server" in result.stderr


def test_missing_file_refused_before_any_datagram(
    silent_server: socket.socket,
) -> None:
    host, port = silent_server.getsockname()
    for command in (
        ("ue", "send", "ue1", "--secret", "s", "--to", "ue2"),
        ("as", "send", "as1", "--to", "ue1", "--server", f"http://{host}:{port}"),
    ):
        result = msgin5g(
            *command, "--file", "/missing/file", "--server",
            f"coap://{host}:{port}" if command[0] == "ue" else f"http://{host}:{port}",
            check=False,
        )  # fmt: skip
        assert "--file /missing/file" in one_line_and_hint(result)
    assert nothing_received(silent_server)


def test_bogus_log_level_is_one_line() -> None:
    result = msgin5g("--log-level", "bogus", "ue", "list", check=False)
    assert "--log-level 'bogus'" in one_line_and_hint(result)


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (("--to", "ue/2", "--text", "x"), "--to 'ue/2'"),
        (("--to", "ue2", "--text", "x", "--store-until", "soon"), "--store-until"),
        (("--to", "ue2", "--text", "x", "--store-until", "2030-01-01T00:00"), "zone"),
        (("--topic", "t", "--text", "x", "--report"), "--report"),
        (("--group", "g\x01", "--text", "x"), "--group"),
    ],
)
def test_malformed_send_refused_before_registration(
    silent_server: socket.socket, options: tuple[str, ...], complaint: str
) -> None:
    host, port = silent_server.getsockname()
    result = msgin5g(
        "ue", "send", "ue1", "--secret", "s1", "--server", f"coap://{host}:{port}",
        *options,
        timeout=10,
        check=False,
    )  # fmt: skip
    assert complaint in one_line_and_hint(result)
    assert nothing_received(silent_server)  # no REG went out


def test_coap_server_not_up_fails_fast() -> None:
    port = closed_udp_port()
    start = time.monotonic()
    result = msgin5g(
        "ue", "register", "ue1", "--secret", "s1",
        "--server", f"coap://127.0.0.1:{port}",
        timeout=20,
        check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    line = one_line_and_hint(result)
    assert "ICMP port unreachable" in line
    assert f"127.0.0.1:{port}" in line
    assert elapsed < 15  # was 75-92 s of silence


def test_ue_add_refuses_to_replace_a_secret(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    msgin5g("ue", "add", "ue1", "--secret", "first", "--storage", storage)
    result = msgin5g("ue", "add", "ue1", "--storage", storage, check=False)
    assert "already provisioned" in one_line_and_hint(result)
    assert "--force" in result.stderr
    again = msgin5g("ue", "add", "ue1", "--secret", "second", "--force",
                    "--storage", storage)  # fmt: skip
    assert "provisioned ue1" in again.stdout


def wait_for_line(proc: subprocess.Popen[str], text: str, seconds: float = 15) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if text in line:
            return line
    raise AssertionError(f"no {text!r} from {proc.args}")


def test_store_and_forward_demo_after_ctrl_c(server: ServerProcess) -> None:
    """README: listen, Ctrl-C, send --report, listen again: the report comes."""
    listen = spawn("ue", "listen", "ue2", "--secret", "s2", "--server", server.url)
    try:
        wait_for_line(listen, "REGRESP")
        listen.send_signal(signal.SIGINT)
        _, err = listen.communicate(timeout=15)
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.communicate()
    assert "Traceback" not in err
    assert "de-registered ue2" in err

    sent = msgin5g(
        "ue", "send", "ue1", "--secret", "s1", "--server", server.url,
        "--to", "ue2", "--text", "hello", "--report", "--wait", "0.5",
        check=False,
    )  # fmt: skip
    msgresp = json.loads(sent.stdout.splitlines()[1])
    assert msgresp["deliveryStatus"] == "DELY_STORED", sent.stdout
    assert sent.returncode == 3  # no report yet: ue2 is away

    again = msgin5g(
        "ue", "listen", "ue2", "--secret", "s2", "--server", server.url,
        "--count", "1", "--timeout", "10",
    )  # fmt: skip
    got = json.loads(again.stdout.splitlines()[1])
    assert got["messageId"] == msgresp["messageId"]
    assert "de-registered ue2" in again.stderr


def test_group_send_waits_for_member_reports(server: ServerProcess) -> None:
    msgin5g("group", "create", "crew", "ue1", "ue2", "--storage", server.storage)
    listen = spawn(
        "ue", "listen", "ue2", "--secret", "s2", "--server", server.url,
        "--count", "1", "--timeout", "20",
    )  # fmt: skip
    try:
        wait_for_line(listen, "REGRESP")
        sent = msgin5g(
            "ue", "send", "ue1", "--secret", "s1", "--server", server.url,
            "--group", "crew", "--text", "hi all", "--report", "--wait", "3",
            "--priority", "HIGH",
        )  # fmt: skip
        listen.communicate(timeout=20)
    finally:
        if listen.poll() is None:
            listen.kill()
            listen.communicate()
    lines = [json.loads(line) for line in sent.stdout.splitlines()]
    msgresp = lines[1]
    reports = [x for x in lines[2:] if x.get("messageId") == msgresp["messageId"]]
    assert reports, sent.stdout  # the member's report was waited for and printed
