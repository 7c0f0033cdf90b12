"""What the benchmarks share: ports, the server process, provisioning, memory.

Imported by the scripts next to it (they run as ``python benchmarks/x.py``, so
this directory is on ``sys.path``). Not collected by pytest.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[1]


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A loopback port (UDP by default) that is free right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of a process (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def reg_body(ue: str, secret: str) -> bytes:
    """A ``REG`` with a PSK_TOKEN derived from ``secret``."""
    from msgin5g.model.credentials import psk_token

    return msgspec.json.encode(
        {
            "messageType": "REG",
            "ueServiceId": ue,
            "ueCredentialInfo": {
                "authType": "PSK_TOKEN",
                "credential": psk_token(secret, ue),
            },
        }
    )


async def provision(url: str, ids: list[str], secret: str) -> None:
    """Provision UEs straight into storage (2,000 per batch)."""
    from msgin5g.model.credentials import credential_digest, psk_token
    from msgin5g.storage import open_backend

    backend = open_backend(url, synchronous="NORMAL")
    await backend.start()
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        await asyncio.gather(
            *(
                backend.put_credential(ue, credential_digest(psk_token(secret, ue)))
                for ue in chunk
            )
        )
    await backend.aclose()


def start_server(port: int, db: Path, *extra: str) -> subprocess.Popen[str]:
    """``msgin5g serve`` on ``port`` with SQLite ``db``, REST off; waits until ready."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "msgin5g",
            "--log-level",
            "WARNING",
            "serve",
            "--coap",
            f"127.0.0.1:{port}",
            "--storage",
            f"sqlite:///{db}",
            "--set",
            "rest.enabled=false",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "serving" in line, line
    return proc
