"""A real ``nats-server -js`` for tests: own process, free loopback port, tmp store.

The server is started from the installed binary (Debian package ``nats-server``);
tests never use a system-wide server. :class:`NatsServer` can be killed with
SIGKILL and restarted on the same port and store directory, which is how the
crash tests show that every acknowledged write survives.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.processes import free_port, start_listening, stop_process

__all__ = ["NatsServer", "free_port", "fresh_prefix", "nats_url", "session_server"]

_prefixes = itertools.count(1)


class NatsServer:
    """One ``nats-server -js`` process on 127.0.0.1 with its store in ``store_dir``."""

    def __init__(
        self,
        binary: str,
        store_dir: Path,
        port: int | None = None,
        *,
        args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.binary = binary
        self.host = host
        self.store_dir = store_dir
        self.port = port or free_port()
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = store_dir / "nats-server.log"

    @property
    def url(self) -> str:
        """``nats://<host>:<port>``."""
        return f"nats://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until it accepts TCP connections."""
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.proc = start_listening(
            [
                self.binary,
                "-js",
                "-a",
                self.host,
                "-p",
                str(self.port),
                "-sd",
                str(self.store_dir),
                *self.args,
            ],
            self.log,
            (self.host, self.port),
            timeout=timeout,
            banner=b"INFO",
        )

    def kill(self) -> None:
        """SIGKILL the server (no flush, no clean shutdown) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """Stop the server cleanly (SIGTERM), SIGKILL after 10 s."""
        if self.proc is not None:
            stop_process(self.proc, 10)
        self.proc = None


_session: NatsServer | None = None


def session_server() -> NatsServer:
    """The nats-server shared by this test session (started on first use).

    Skips (or fails in CI) when the binary is missing. Tests sharing it stay
    isolated by a fresh stream/bucket prefix each (:func:`nats_url`).
    """
    global _session
    if _session is None:
        from tests.conftest import require_binary

        binary = require_binary("nats-server")
        store = Path(tempfile.mkdtemp(prefix="msgin5g-nats-"))
        server = NatsServer(binary, store)
        server.start()
        atexit.register(_stop_session, server, store)
        _session = server
    return _session


def _stop_session(server: NatsServer, store: Path) -> None:
    server.stop()
    shutil.rmtree(store, ignore_errors=True)


def fresh_prefix() -> str:
    """A stream/bucket prefix no other test uses."""
    return f"t{next(_prefixes)}x{os.getpid()}"


def nats_url(owner: object) -> str:
    """URL of the session server with a prefix fixed for ``owner`` (one per factory)."""
    prefix = getattr(owner, "nats_prefix", None)
    if prefix is None:
        prefix = fresh_prefix()
        setattr(owner, "nats_prefix", prefix)  # noqa: B010
    return f"{session_server().url}?prefix={prefix}"
