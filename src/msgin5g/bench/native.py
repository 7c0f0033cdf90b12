"""The C load engine (``--engine c``): build it, feed it, read its counts.

The Python generator costs about as much CPU per end-to-end message as the
server it measures (issue 13), so ``msgin5g bench p2p|reg --engine c`` runs the
measured load phase in ``bench/native/coapgen.c`` (package data, one C file,
libc only; its header says what it does and does not do):

* :func:`build` compiles it once per source version with ``cc`` (or ``gcc``,
  or ``$CC``) into the per-user cache, ``$XDG_CACHE_HOME/msgin5g/coapgen-<sha12>``
  (the first 12 hex digits of the source's SHA-256), through a temporary name
  and a rename, so processes building at once never see half a file;
* :class:`NativeP2pWorker` and :class:`NativeRegWorker` do the normal set-up in
  Python (one socket per UE, REG), then hand the sockets' file descriptors
  (``os.dup``; the Python transports are closed so the event loop no longer
  reads them) to one ``coapgen`` child per generator process, write its
  configuration (:func:`engine_config`) to its stdin, relay its live line
  (every 50 ms, :func:`parse_live`) to :class:`~msgin5g.bench.load.Shared`,
  write ``stop`` when the coordinator stops the run, and turn its final line
  (:func:`parse_final`) into :class:`~msgin5g.bench.stats.Counts`.

The generator's CPU (``cpu_s``) is the child's during the window plus this
process's own (relaying), so the "generator cost" line stays honest.
"""

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final

from msgin5g.bench.load import P2pWorker, RegWorker, Worker
from msgin5g.bench.options import BenchFailed
from msgin5g.bench.stats import Counts

__all__ = [
    "NATIVE_WORKERS",
    "SOURCE",
    "NativeP2pWorker",
    "NativeRegWorker",
    "binary_path",
    "build",
    "engine_config",
    "find_compiler",
    "parse_final",
    "parse_live",
]

SOURCE: Final = Path(__file__).parent / "native" / "coapgen.c"

NO_COMPILER_HINT: Final = (
    "install a C compiler (Debian/Ubuntu: apt-get install gcc), or use --engine python"
)
_LIVE_FIELDS: Final = ("sent", "refused", "received", "arrived", "timeouts")
_WAIT_CHILD: Final = 10.0
"""Seconds the child may take to exit after its final line."""


def find_compiler() -> str | None:
    """``$CC``, else ``cc``, else ``gcc`` on PATH (None: no compiler)."""
    names = [os.environ["CC"].split()[0]] if os.environ.get("CC") else []
    for name in [*names, "cc", "gcc"]:
        found = shutil.which(name)
        if found:
            return found
    return None


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/msgin5g`` (default ``~/.cache/msgin5g``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "msgin5g"


def binary_path(source: bytes) -> Path:
    """Where the build of ``source`` lives: keyed by its SHA-256."""
    digest = hashlib.sha256(source).hexdigest()
    return cache_dir() / f"coapgen-{digest[:12]}"


def build(source_path: Path = SOURCE) -> Path:
    """The compiled engine, built now unless the cache has this source's build.

    Raises:
        BenchFailed: no C compiler, or the build failed (its first lines).
    """
    source = source_path.read_bytes()
    target = binary_path(source)
    if os.access(target, os.X_OK):
        return target
    compiler = find_compiler()
    if compiler is None:
        raise BenchFailed(
            "--engine c needs a C compiler (cc or gcc on PATH, or $CC)",
            NO_COMPILER_HINT,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}-", dir=target.parent)
    os.close(fd)
    try:
        result = subprocess.run(  # noqa: S603 - the compiler found on PATH
            [compiler, "-std=gnu11", "-O2", "-o", temp, str(source_path), "-lm"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            first = " / ".join(result.stderr.strip().splitlines()[:3])
            raise BenchFailed(
                f"building the C engine with {compiler} failed: {first}",
                NO_COMPILER_HINT,
            )
        os.chmod(temp, 0o755)  # noqa: S103 - a program, like any in /usr/bin
        os.replace(temp, target)  # atomic: a concurrent build renames the same
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
    return target


def engine_config(
    *,
    mode: str,
    window: int,
    rate: float,
    size: int,
    store: bool,
    t0: float,
    t_end: float,
    lanes: Sequence[tuple[int, int, Sequence[bytes]]],
) -> bytes:
    """The stdin configuration of ``coapgen`` (format: the top of coapgen.c).

    ``lanes`` are ``(fd, next Message ID, bodies)``: for ``p2p`` one body, the
    prefix; for ``reg`` the REG bodies. The Message IDs go on from the set-up's
    (a used one would be answered from the server's duplicate cache).

    Raises:
        ValueError: a body holds a line break (JSON from msgspec never does).
    """
    lines = [
        b"coapgen 1",
        b"mode " + mode.encode(),
        b"window %d" % window,
        b"rate " + repr(float(rate)).encode(),
        b"size %d" % size,
        b"store %d" % int(store),
        b"t0 " + repr(t0).encode(),
        b"t_end " + repr(t_end).encode(),
    ]
    for fd, mid, bodies in lanes:
        lines.append(b"lane %d %d %d" % (fd, len(bodies), mid & 0xFFFF))
        for body in bodies:
            if b"\n" in body or b"\r" in body:
                raise ValueError("a lane body must be one line")
            lines.append(body)
    lines.append(b"go")
    return b"\n".join(lines) + b"\n"


def parse_live(line: bytes) -> dict[str, float] | None:
    """The counts of a ``live ...`` line (None: not one)."""
    parts = line.split()
    if len(parts) != 1 + len(_LIVE_FIELDS) or parts[0] != b"live":
        return None
    return {
        name: float(value) for name, value in zip(_LIVE_FIELDS, parts[1:], strict=True)
    }


def parse_final(line: bytes) -> Counts | None:
    """The counts of the ``final {json}`` line (None: not one)."""
    if not line.startswith(b"final "):
        return None
    return Counts.from_wire(json.loads(line[len(b"final ") :]))


class _NativeLanes(Worker, ABC):
    """Python set-up, then the load phase in one ``coapgen`` child."""

    @abstractmethod
    def lane_bodies(self) -> list[list[bytes]]:
        """Per lane: the bodies coapgen needs (see :func:`engine_config`)."""

    @abstractmethod
    def lane_fds(self) -> list[int]:
        """The lanes' socket file descriptors (before the hand-over)."""

    async def run(self) -> Counts:
        binary = build()
        sweeper = asyncio.create_task(self._sweeper())  # REG retransmissions
        try:
            await self.setup()
        finally:
            sweeper.cancel()
        fds = [os.dup(fd) for fd in self.lane_fds()]
        mids = [ue.next_mid() for ue in self.ues]
        for ue in self.ues:
            if ue.transport is not None:
                ue.transport.close()
        await asyncio.sleep(0)  # let the loop drop its readers
        try:
            self.shared.publish(self.index, ready=1)
            while not self.shared.t0:
                if self.shared.stopped:
                    return self.counts
                await asyncio.sleep(0.01)
            self.t0, self.t_end = self.shared.t0, self.shared.t_end
            if not fds:  # reg: more processes than --sockets
                while not self.shared.stopped:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
                return self.counts
            config = engine_config(
                mode=self.options.mode,
                window=self.options.window,
                rate=self.options.rate / self.options.workers,
                size=self.options.size,
                store=self.options.store,
                t0=self.t0,
                t_end=self.t_end,
                lanes=list(zip(fds, mids, self.lane_bodies(), strict=True)),
            )
            return await asyncio.to_thread(self._drive, binary, fds, config)
        finally:
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _drive(self, binary: Path, fds: list[int], config: bytes) -> Counts:
        """Run the child: configure, relay live counts, stop, read its counts."""
        with subprocess.Popen(  # noqa: S603 - our build of our source
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=fds,
        ) as child:
            stdin, stdout = child.stdin, child.stdout
            if stdin is None or stdout is None:  # pragma: no cover - PIPE above
                raise BenchFailed("the C engine has no pipes")
            for fd in fds:  # the child holds its own copies
                os.close(fd)
            fds.clear()
            stdin.write(config)
            stdin.flush()
            counts = self._relay(stdin, stdout)
            try:
                stdin.close()
            except OSError:
                pass
            status = child.wait(_WAIT_CHILD)
        if counts is None:
            raise BenchFailed(
                f"the C engine ({binary.name}) ended without its counts "
                f"(exit status {status})",
                "its own message is above; please report it",
            )
        return counts

    def _relay(self, stdin: IO[bytes], stdout: IO[bytes]) -> Counts | None:
        own0: float | None = None
        own = 0.0
        stop_sent = False
        for line in stdout:  # a line every 50 ms
            now = time.perf_counter()
            if own0 is None and now >= self.t0:
                own0 = time.process_time()
            if own0 is not None and not own and now >= self.t_end:
                own = time.process_time() - own0
            live = parse_live(line)
            if live is not None:
                self.shared.publish(self.index, **live)
            else:
                final = parse_final(line)
                if final is not None:
                    final.cpu_s += own
                    return final
            if self.shared.stopped and not stop_sent:
                stop_sent = True
                try:
                    stdin.write(b"stop\n")
                    stdin.flush()
                except OSError:  # the child is gone: its stdout ends next
                    pass
        return None


class NativeP2pWorker(_NativeLanes, P2pWorker):
    """``p2p`` with the load phase in coapgen (prefixes from :class:`P2pWorker`)."""

    def lane_bodies(self) -> list[list[bytes]]:
        return [[prefix] for prefix in self._prefixes]

    def lane_fds(self) -> list[int]:
        return [_fileno(ue.transport) for ue in self.ues]


class NativeRegWorker(_NativeLanes, RegWorker):
    """``reg`` with the load phase in coapgen (bodies from :class:`RegWorker`)."""

    def lane_bodies(self) -> list[list[bytes]]:
        return [list(bodies) for bodies in getattr(self, "_bodies", [])]

    def lane_fds(self) -> list[int]:
        return [_fileno(ue.transport) for ue in self.ues]


def _fileno(transport: asyncio.BaseTransport | None) -> int:
    if transport is None:
        raise BenchFailed("a bench UE has no socket to hand to the C engine")
    fileno: int = transport.get_extra_info("socket").fileno()
    return fileno


NATIVE_WORKERS: Final[dict[str, type[Worker]]] = {
    "p2p": NativeP2pWorker,
    "reg": NativeRegWorker,
}
"""The modes ``--engine c`` covers."""
