"""Starting and stopping the real third-party servers the tests run.

One place for what :mod:`tests.mosquitto` and :mod:`tests.storage.nats_server`
both need: a free loopback TCP port, a server process started with its output in
a log file and awaited (bounded polling) until it accepts connections, and a
stop that escalates from SIGTERM to SIGKILL.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["free_port", "start_listening", "stop_process"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_listening(
    argv: list[str],
    log: Path,
    address: tuple[str, int],
    *,
    timeout: float,
    banner: bytes = b"",
) -> subprocess.Popen[bytes]:
    """Start ``argv`` (output appended to ``log``) and wait until it listens.

    Ready means a TCP connection to ``address`` succeeds and, with ``banner``,
    the server's first bytes start with it.

    Raises:
        RuntimeError: the process exited (the message quotes the log's end), or
            did not listen within ``timeout`` seconds (it is stopped).
    """
    name = Path(argv[0]).name
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{name} exited with {proc.returncode}: "
                + log.read_text(errors="replace")[-2000:]
            )
        with (
            contextlib.suppress(OSError),
            socket.create_connection(address, timeout=0.5) as sock,
        ):
            if not banner or sock.recv(len(banner)).startswith(banner):
                return proc
        time.sleep(0.05)
    stop_process(proc, 5)
    raise RuntimeError(f"{name} did not listen on {address[1]} within {timeout} s")


def stop_process(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM ``proc``, SIGKILL it after ``grace`` seconds, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
