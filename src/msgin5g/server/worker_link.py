"""The worker's end of ``msgin5g serve --workers N``: two pipes to the supervisor.

A worker started by :class:`~msgin5g.server.workers.Supervisor` gets the hidden
option ``--worker-fds S,L``: on the *status* pipe S it writes one JSON line,
``{"ready": true, "coap": [...], "http": [...]}`` once it serves or ``{"error":
..., "hint": ...}`` when it cannot start (the supervisor prints that as its own
one-line failure); the *lifeline* L is a pipe whose only write end the
supervisor holds, so end-of-file on it means the supervisor is gone and the
worker shuts down cleanly. :func:`read_status` is the supervisor's reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any

from msgin5g.errors import ConfigError

__all__ = ["WorkerLink", "read_status"]

log = logging.getLogger(__name__)

_STATUS_MAX = 65536  # bytes of a worker's status line at most


class WorkerLink:
    """A worker's end of the two pipes to its supervisor (``--worker-fds S,L``)."""

    def __init__(self, status_fd: int, lifeline_fd: int) -> None:
        self.status_fd: int | None = status_fd
        self.lifeline_fd = lifeline_fd

    @classmethod
    def parse(cls, text: str) -> WorkerLink:
        """From ``"S,L"``.

        Raises:
            ConfigError: not two descriptor numbers.
        """
        try:
            status, lifeline = (int(part) for part in text.split(","))
        except ValueError:
            raise ConfigError(
                f"--worker-fds {text!r}: expected STATUS,LIFELINE"
            ) from None
        return cls(status, lifeline)

    def watch_parent(self, stop: asyncio.Event) -> None:
        """Set ``stop`` when the supervisor is gone (its lifeline reads end-of-file)."""
        loop = asyncio.get_running_loop()
        fd = self.lifeline_fd

        def on_readable() -> None:
            try:
                data = os.read(fd, 64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(fd)
                log.warning("the supervisor is gone; shutting down")
                stop.set()

        loop.add_reader(fd, on_readable)

    def ready(self, coap: tuple[str, int], http: tuple[str, int] | None) -> None:
        """Tell the supervisor that this worker serves (and on which addresses)."""
        self._send(
            {
                "ready": True,
                "coap": list(coap),
                "http": None if http is None else list(http),
            }
        )

    def fail(self, message: str, hint: str | None) -> bool:
        """Tell the supervisor why this worker could not start.

        Returns:
            False when this worker had already reported "ready" (its error is
            then the worker's own to print).
        """
        return self._send({"error": message, "hint": hint})

    def _send(self, report: dict[str, Any]) -> bool:
        fd, self.status_fd = self.status_fd, None
        if fd is None:
            return False
        with contextlib.suppress(OSError):  # the supervisor is gone
            os.write(fd, json.dumps(report).encode() + b"\n")
        with contextlib.suppress(OSError):
            os.close(fd)
        return True


def read_status(fd: int) -> dict[str, Any] | None:
    """The worker's status line from ``fd`` (blocking; closes ``fd``); None at EOF."""
    data = b""
    try:
        while b"\n" not in data and len(data) < _STATUS_MAX:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    line = data.partition(b"\n")[0]
    if not line:
        return None
    try:
        report = json.loads(line)
    except ValueError:
        return None
    return report if isinstance(report, dict) else None
