"""A real ``mosquitto`` for tests: own process, free loopback port, own config.

Started from the installed binary (Debian package ``mosquitto``); the machine's
system-wide broker on 1883 is never used. :class:`Mosquitto` can be stopped and
started again on the same port (the broker-restart test), and takes an ACL file
(``msgin5g mqtt acl`` output) and a password file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tests.conftest import require_binary
from tests.processes import free_port, start_listening, stop_process

__all__ = ["Mosquitto", "free_port"]


class Mosquitto:
    """One ``mosquitto -c conf`` on 127.0.0.1:``port``."""

    def __init__(
        self,
        workdir: Path,
        *,
        acl_file: Path | None = None,
        password_file: Path | None = None,
        port: int | None = None,
    ) -> None:
        # Debian installs the broker in /usr/sbin, often not on a user's PATH
        sbin = Path("/usr/sbin/mosquitto")
        self.binary = str(sbin) if sbin.exists() else require_binary("mosquitto")
        self.workdir = workdir
        self.port = port or free_port()
        self.acl_file = acl_file
        self.password_file = password_file
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:<port>``."""
        return f"mqtt://127.0.0.1:{self.port}"

    def _write_conf(self) -> None:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            # as root mosquitto drops to user 'mosquitto', which cannot read the
            # password and ACL files in pytest's private tmp directory
            lines.append("user root")
        if self.password_file is not None:
            lines += ["allow_anonymous false", f"password_file {self.password_file}"]
        else:
            lines.append("allow_anonymous true")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 15.0) -> None:
        """Start the broker and wait until it accepts TCP connections."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._write_conf()
        self.proc = start_listening(
            [self.binary, "-c", str(self.conf)],
            self.log,
            ("127.0.0.1", self.port),
            timeout=timeout,
        )

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc, 5)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
