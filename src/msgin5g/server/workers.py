"""``msgin5g serve --workers N``: a small supervisor of N server processes on one port.

What: the parent process of ``serve --workers N`` serves nothing itself. It
checks the ports, starts N worker processes one after another, forwards
SIGINT/SIGTERM to them, restarts a worker that dies and stops everything when
one cannot start. Each worker is the ordinary single-process server with
``coap.reuse_port`` and ``rest.reuse_port`` on, ``cluster.workers = 1`` and
``cluster.node_id = "<node>-w<i>"``, on the same storage URL (NATS JetStream;
the configuration refuses more than one worker on SQLite). How UEs are spread
over the workers and what a restart does to them: docs/cluster.md, "All cores
of one machine".

Design choices:
    * **Subprocesses** (``python -m msgin5g serve ...``), not ``multiprocessing``:
      a worker runs exactly the code path of a single server (configuration
      loading, uvloop, signal handling), nothing is pickled, and the
      ``MSGIN5G_*`` environment is inherited as it is. The command line of a
      worker repeats only the options the user typed (``--config``,
      ``--storage``, ``--set``, the log options) plus the per-worker settings,
      so a storage URL with credentials taken from a file or the environment
      never appears in ``ps``.
    * **Two pipes** link a worker to the supervisor (``--worker-fds S,L``, a
      hidden option): the *status* pipe carries one JSON line from the worker,
      either ``{"ready": ...}`` with the bound addresses or ``{"error": ...,
      "hint": ...}``, its start-up failure, which the supervisor prints as its
      own one line; the *lifeline* is a pipe whose only write end the
      supervisor holds: when the supervisor dies (even by SIGKILL) the workers
      read end-of-file and shut down cleanly, no orphan keeps the port
      (the worker's end: :mod:`msgin5g.server.worker_link`).
    * **One after another**: worker i+1 is started when worker i is ready, so
      the first-time creation of the JetStream streams and buckets happens
      once, in worker 0, and never races.
    * **Port check first**: the supervisor binds the CoAP (UDP) and HTTP (TCP)
      addresses *without* ``SO_REUSEPORT`` and releases them before starting
      workers. A port that any process uses fails the start in one line;
      without the check, a second ``--workers`` group of the same user on the
      same port would silently join the first one's ``SO_REUSEPORT`` group and
      receive part of its datagrams. Port 0 is resolved here once, so that
      every worker binds the same port.
    * **Restarts** back off exponentially (0.5 s, 1 s, 2 s ... at most 30 s);
      a worker that dies more than ``max_restarts`` times within ``window``
      seconds is a crash loop: the supervisor stops every worker and exits 1
      (a service manager's restart policy decides what happens next).
    * **Shutdown**: SIGINT or SIGTERM is forwarded as SIGTERM to every worker;
      each gets ``grace`` seconds to close its transports and flush storage,
      then is killed (logged). A second signal kills at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from msgin5g.config import ServerConfig
from msgin5g.errors import ConfigError, ConnectError, WorkerError
from msgin5g.server.worker_link import WorkerLink, read_status

__all__ = [
    "RestartPolicy",
    "Supervisor",
    "WorkerLink",
    "WorkerPlan",
    "WorkersReady",
    "default_node_id",
    "describe_exit",
    "plan_workers",
    "resolve_workers",
    "worker_node_id",
]

log = logging.getLogger(__name__)

_NODE_ID_MAX = 64  # ClusterConfig.node_id


# ------------------------------------------------------------------ the plan


def resolve_workers(workers: int, cpus: int | None = None) -> int:
    """The number of worker processes: ``workers``, or one per usable core for 0.

    Args:
        workers: ``cluster.workers`` (0 = one per core).
        cpus: the usable cores (default: this process's CPU affinity).
    """
    if workers > 0:
        return workers
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
    return max(1, cpus)


def default_node_id(hostname: str) -> str:
    """A node id from a host name: characters outside ``[A-Za-z0-9_-]`` become ``-``."""
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "-", hostname).strip("-")
    return cleaned or "node"


def worker_node_id(base: str, index: int) -> str:
    """``<base>-w<index>``, ``base`` shortened so that the id stays within 64 characters."""
    suffix = f"-w{index}"
    return base[: _NODE_ID_MAX - len(suffix)] + suffix


def describe_exit(returncode: int | None) -> str:
    """``exit status 3`` or ``killed by SIGKILL`` (for one-line reports)."""
    if returncode is None:
        return "not started"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What the supervisor starts: the workers' ids, ports and command line."""

    node_ids: tuple[str, ...]
    coap: tuple[str, int]
    http: tuple[str, int] | None
    arguments: tuple[str, ...]
    """Global options, ``serve`` and the options the user typed (no per-worker ones)."""
    python: str = sys.executable
    module: str = "msgin5g"
    """What the workers run (``python -m module``; tests substitute a stand-in)."""

    def command(self, index: int, status_fd: int, lifeline_fd: int) -> list[str]:
        """The command line of worker ``index``."""
        per_worker = [
            "--coap",
            _hostport(*self.coap),
            "--set",
            "coap.reuse_port=true",
            "--set",
            "cluster.workers=1",
            "--set",
            f"cluster.node_id={self.node_ids[index]}",
            "--worker-fds",
            f"{status_fd},{lifeline_fd}",
        ]
        if self.http is not None:
            per_worker[2:2] = ["--http", _hostport(*self.http)]
            per_worker += ["--set", "rest.reuse_port=true"]
        return [self.python, "-m", self.module, *self.arguments, *per_worker]


def _free_udp(host: str, port: int) -> int:
    """Check that UDP ``host:port`` is free (no ``SO_REUSEPORT``); resolve port 0.

    Raises:
        ConnectError: in use, or not an address of this machine.
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
        )[0]
    except OSError as exc:
        raise ConnectError(f"cannot resolve bind address {host!r}: {exc}") from exc
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConnectError(f"cannot bind UDP {(host, port)!r}: {exc}") from exc
        return int(sock.getsockname()[1])


def _free_tcp(host: str, port: int) -> int:
    """Check that TCP ``host:port`` is free (no ``SO_REUSEPORT``); resolve port 0.

    Raises:
        ConnectError: in use, or not an address of this machine.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConnectError(f"HTTP bind {host}:{port}: {exc.strerror}") from exc
        return int(sock.getsockname()[1])


def plan_workers(
    config: ServerConfig,
    arguments: Sequence[str],
    *,
    hostname: str | None = None,
    cpus: int | None = None,
) -> WorkerPlan:
    """Check the ports and name the workers of ``config``.

    Args:
        config: the loaded configuration (``cluster.workers`` != 1).
        arguments: see :attr:`WorkerPlan.arguments`.
        hostname: the base of the node ids when ``cluster.node_id`` is empty
            (default: this machine's host name).
        cpus: usable cores, for ``cluster.workers = 0``.

    Raises:
        ConfigError: not on Linux (``SO_REUSEPORT`` spreads datagrams only there).
        ConnectError: the CoAP or HTTP port is used by another process.
    """
    if not sys.platform.startswith("linux"):
        raise ConfigError(
            "cluster.workers: sharing one port between worker processes needs "
            "Linux (SO_REUSEPORT); run one node per port instead"
        )
    count = resolve_workers(config.cluster.workers, cpus)
    base = config.cluster.node_id or default_node_id(
        hostname if hostname is not None else socket.gethostname()
    )
    coap_host, coap_port = config.coap.address
    coap = (coap_host, _free_udp(coap_host, coap_port))
    http: tuple[str, int] | None = None
    if config.rest.enabled:
        http_host, http_port = config.rest.address
        http = (http_host, _free_tcp(http_host, http_port))
    return WorkerPlan(
        node_ids=tuple(worker_node_id(base, i) for i in range(count)),
        coap=coap,
        http=http,
        arguments=tuple(arguments),
    )


# ---------------------------------------------------------------- supervisor


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Back-off between restarts of a worker, and the bound on them."""

    first_delay: float = 0.5
    max_delay: float = 30.0
    max_restarts: int = 5
    """Restarts of one worker allowed within ``window``; one more death gives up."""
    window: float = 60.0

    def next_delay(self, deaths: deque[float], now: float) -> float | None:
        """Record a death at ``now``; the delay before the restart, or None to give up."""
        deaths.append(now)
        while deaths and deaths[0] < now - self.window:
            deaths.popleft()
        if len(deaths) > self.max_restarts:
            return None
        return float(min(self.max_delay, self.first_delay * 2 ** (len(deaths) - 1)))


@dataclass(frozen=True, slots=True)
class WorkersReady:
    """What the supervisor announces once every worker serves."""

    coap: tuple[str, int]
    http: tuple[str, int] | None
    node_ids: tuple[str, ...]
    pids: tuple[int, ...]


@dataclass
class _Worker:
    index: int
    node_id: str
    proc: asyncio.subprocess.Process | None = None
    deaths: deque[float] = field(default_factory=deque)
    restarts: int = 0


class Supervisor:
    """Runs the workers of a :class:`WorkerPlan` until SIGINT/SIGTERM.

    Args:
        plan: the workers to run.
        policy: restart back-off and bound.
        grace: seconds a worker gets to stop before it is killed.
        announce: called once every worker serves.
        clock: monotonic seconds (restart window).
    """

    def __init__(
        self,
        plan: WorkerPlan,
        *,
        policy: RestartPolicy | None = None,
        grace: float = 30.0,
        announce: Callable[[WorkersReady], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.policy = policy or RestartPolicy()
        self.grace = grace
        self._announce = announce
        self._clock = clock
        self._workers = [_Worker(i, node) for i, node in enumerate(plan.node_ids)]
        self._stop = asyncio.Event()
        self._signals = 0
        self._failure: WorkerError | None = None
        self._lifeline: tuple[int, int] = (-1, -1)  # (read, write), set by run()
        self._ready: dict[str, Any] = {}

    @property
    def pids(self) -> list[int]:
        """The pids of the running workers (tests, benchmarks)."""
        return [
            w.proc.pid
            for w in self._workers
            if w.proc is not None and w.proc.returncode is None
        ]

    async def run(self) -> int:
        """Start the workers one after another, then keep them running.

        Returns:
            0 after a clean stop on a signal.

        Raises:
            WorkerError: a worker could not start, or died too often.
        """
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal)
        self._lifeline = os.pipe()
        keepers: list[asyncio.Task[None]] = []
        try:
            if await self._start_all():
                keepers = [
                    asyncio.create_task(self._keep(w), name=f"keep-{w.node_id}")
                    for w in self._workers
                ]
                await self._stop.wait()
            await self._stop_all()
        finally:
            for task in keepers:
                task.cancel()
            for task in keepers:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for fd in self._lifeline:
                os.close(fd)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if self._failure is not None:
            raise self._failure
        return 0

    async def _start_all(self) -> bool:
        """Start every worker in turn; False when stopped or one failed."""
        for worker in self._workers:
            failure = await self._start(worker)
            if self._stop.is_set():
                return False
            if failure is not None:
                self._failure = failure
                self._stop.set()
                return False
        if self._announce is not None:
            coap = self._ready.get("coap") or self.plan.coap
            http = self._ready.get("http")
            self._announce(
                WorkersReady(
                    coap=(str(coap[0]), int(coap[1])),
                    http=None if http is None else (str(http[0]), int(http[1])),
                    node_ids=self.plan.node_ids,
                    pids=tuple(self.pids),
                )
            )
        return True

    async def _start(self, worker: _Worker) -> WorkerError | None:
        """Spawn ``worker`` and wait until it serves; its failure, or None."""
        lifeline_r = self._lifeline[0]
        status_r, status_w = os.pipe()
        command = self.plan.command(worker.index, status_w, lifeline_r)
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                pass_fds=(status_w, lifeline_r),
            )
        except OSError as exc:
            os.close(status_r)
            worker.proc = None
            return WorkerError(f"worker {worker.node_id}: cannot start: {exc}")
        finally:
            os.close(status_w)
        report = await asyncio.to_thread(read_status, status_r)
        if report is not None and report.get("ready"):
            self._ready = report
            return None
        code = await worker.proc.wait()
        if report is not None and report.get("error"):
            hint = report.get("hint")
            return WorkerError(
                f"worker {worker.node_id}: {report['error']}",
                hint if isinstance(hint, str) else None,
            )
        return WorkerError(
            f"worker {worker.node_id} exited during start-up ({describe_exit(code)})",
            "its messages above say why",
        )

    async def _keep(self, worker: _Worker) -> None:
        """Restart ``worker`` whenever it dies, with back-off, until stopped."""
        while not self._stop.is_set():
            proc = worker.proc
            code = None if proc is None else await proc.wait()
            if self._stop.is_set():
                return
            delay = self.policy.next_delay(worker.deaths, self._clock())
            pid = "-" if proc is None else str(proc.pid)
            if delay is None:
                self._failure = WorkerError(
                    f"worker {worker.node_id} died {len(worker.deaths)} times within "
                    f"{self.policy.window:.0f} s (last: {describe_exit(code)}); "
                    "stopped all workers",
                    "its messages above say why; fix the cause and start again",
                )
                self._stop.set()
                return
            log.warning(
                "worker %s (pid %s) %s; restarting in %.1f s",
                worker.node_id,
                pid,
                describe_exit(code),
                delay,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)
            if self._stop.is_set():
                return
            failure = await self._start(worker)
            if failure is None and worker.proc is not None:
                worker.restarts += 1
                log.warning(
                    "worker %s restarted (pid %d)", worker.node_id, worker.proc.pid
                )
            else:
                log.warning("worker did not start again: %s", failure)

    def stop(self) -> None:
        """Stop as on SIGTERM (a second call kills the workers)."""
        self._on_signal()

    def _on_signal(self) -> None:
        self._signals += 1
        self._stop.set()
        for worker in self._workers:
            proc = worker.proc
            if proc is not None and proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    if self._signals == 1:
                        proc.terminate()
                    else:
                        proc.kill()

    async def _stop_all(self) -> None:
        """SIGTERM every running worker; kill those still running after ``grace``."""
        running = [
            (w.node_id, w.proc)
            for w in self._workers
            if w.proc is not None and w.proc.returncode is None
        ]
        for _, proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        await asyncio.gather(*(self._reap(node, proc) for node, proc in running))

    async def _reap(self, node_id: str, proc: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(proc.wait(), self.grace)
        except TimeoutError:
            log.warning(
                "worker %s (pid %d) did not stop within %.0f s; killing it",
                node_id,
                proc.pid,
                self.grace,
            )
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
