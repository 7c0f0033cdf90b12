"""What the benchmarks share: ports, the server process, provisioning, memory, CPU.

Imported by the scripts next to it (they run as ``python benchmarks/x.py``, so
this directory is on ``sys.path``). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msgin5g.bench.peer import reg_body

if TYPE_CHECKING:
    from msgin5g.bench import Summary

__all__ = ["ROOT", "SECRET", "bench", "cpu_seconds", "figures", "free_port"]
__all__ += ["provision", "provision_bench", "reg_body", "rss_kib", "serve"]
__all__ += ["add_engine_option", "alternating", "choose_engine", "provision_with_tree"]
__all__ += ["start_server"]

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret"
"""The one secret of the UEs the load generator (``msgin5g bench``) uses."""


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


def serve(
    coap: int,
    storage: str,
    *extra: str,
    ready: str = "serving",
    lines: int = 1,
    **popen: Any,
) -> tuple[subprocess.Popen[str], str]:
    """``msgin5g serve`` on ``127.0.0.1:coap`` with ``storage``, REST off.

    Waits until each of its first ``lines`` lines on stdout contains ``ready``
    (one per endpoint it announces); ``popen`` goes to :class:`subprocess.Popen`
    (``stderr``, ``env``). Returns the process and its last ready line.
    """
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "msgin5g",
            "--log-level",
            "WARNING",
            "serve",
            "--coap",
            f"127.0.0.1:{coap}",
            "--storage",
            storage,
            "--set",
            "rest.enabled=false",
            *extra,
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **popen,
    )
    assert proc.stdout is not None
    line = ""
    for _ in range(lines):
        line = proc.stdout.readline()
        assert ready in line, line
    return proc, line


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(port: int, db: Path, *extra: str) -> subprocess.Popen[str]:
    """``msgin5g serve`` on ``port`` with SQLite ``db``, REST off; waits until ready."""
    return serve(port, f"sqlite:///{db}", *extra)[0]


def provision_bench(url: str, ues: int, prefix: str = "bench-") -> float:
    """``msgin5g bench provision`` (the ``ue import`` path) of ``<prefix>00001..``.

    Runs the real CLI in a subprocess; returns its wall time in seconds.
    """
    import time

    start = time.perf_counter()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "msgin5g",
            "bench",
            "provision",
            "--storage",
            url,
            "--ues",
            str(ues),
            "--secret",
            SECRET,
            "--prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return time.perf_counter() - start


def bench(port: int, mode: str, ues: int, seconds: float, **more: Any) -> Summary:
    """One ``msgin5g bench MODE`` run (the package, in this process) against
    ``coap://127.0.0.1:port``; ``more`` are :class:`BenchOptions` fields."""
    from msgin5g.bench import BenchOptions, run

    options = BenchOptions(
        mode=mode,
        server=f"coap://127.0.0.1:{port}",
        ues=ues,
        secret=SECRET,
        duration=seconds,
        **more,
    )
    return run(options)


def choose_engine(requested: str, workers: int) -> str:
    """The ``msgin5g bench`` engine for ``--engine auto|c|python``, printed.

    ``auto`` is the C engine (coapgen: the generator's CPU per message is a
    fraction of the server's, so the server is the limit) when it builds here,
    else the Python engine; ``c`` fails when it does not build.
    """
    from msgin5g.bench.native import build
    from msgin5g.bench.options import BenchFailed

    why = ""
    if requested in ("auto", "c"):
        try:
            build()
        except BenchFailed as exc:
            if requested == "c":
                raise
            why = f" (the C engine does not build here: {exc})"
        else:
            print(f"generator: C engine (coapgen), {workers} process(es)")
            return "c"
    print(f"generator: Python engine (uvloop), {workers} process(es){why}")
    return "python"


def add_engine_option(parser: argparse.ArgumentParser, what: str) -> None:
    """``--engine auto|c|python`` (the generator of ``what``; see :func:`choose_engine`)."""
    parser.add_argument(
        "--engine",
        choices=("auto", "c", "python"),
        default="auto",
        help=f"the generator's engine for {what} (msgin5g bench --engine): auto = "
        "the C engine when it builds here (cc/gcc), else Python",
    )


def alternating(names: list[str], rounds: int) -> Iterator[tuple[int, str]]:
    """``(round, name)`` for ``rounds`` rounds over ``names``, the order flipped
    every round (a before/after pair measured alike, drift shared)."""
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else names[::-1]:
            yield round_, name


def figures(summary: Summary) -> dict[str, Any]:
    """The figures the benchmarks print, from a bench summary."""
    return {
        "msgs_per_s": summary.rate,
        "p50_ms": summary.p50_ms,
        "p99_ms": summary.p99_ms,
        "received": summary.received,
        "sent": summary.sent,
        "accepted": summary.accepted,
        "lost": summary.lost,
        "behind": summary.behind,
        "cpu": summary.generator_cpu_pct,
        "generator_us": summary.generator_us_per_unit,
    }


_PROVISION_SCRIPT = """
import asyncio, sys
from msgin5g.model.credentials import credential_digest, psk_token
from msgin5g.storage import open_backend

async def main(url):
    pairs = [line.split(",", 1) for line in sys.stdin.read().splitlines()]
    backend = open_backend(url)
    await backend.start()
    for start in range(0, len(pairs), 2000):
        await asyncio.gather(*(
            backend.put_credential(ue, credential_digest(psk_token(secret, ue)))
            for ue, secret in pairs[start : start + 2000]
        ))
    await backend.aclose()

asyncio.run(main(sys.argv[1]))
"""


def provision_with_tree(src: Path, url: str, pairs: list[tuple[str, str]]) -> None:
    """Provision (UE, secret) ``pairs`` into ``url`` with the code of the tree
    ``src`` (its ``src/`` directory), through the storage API every tree since
    issue 5 has: a server from an older tree may refuse a file that a newer
    tree created (schema version), so a before/after run provisions each
    server's file with that server's own code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSGIN5G_")}
    env["PYTHONPATH"] = str(Path(src).resolve())
    subprocess.run(
        [sys.executable, "-c", _PROVISION_SCRIPT, url],
        input="".join(f"{ue},{secret}\n" for ue, secret in pairs),
        text=True,
        env=env,
        check=True,
    )
