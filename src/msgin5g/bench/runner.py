"""The coordinator of one run: set-up, generator processes, window, summary.

:func:`run` (called by ``msgin5g bench``, in the CLI's process) does the REST
set-up a mode needs (:mod:`msgin5g.bench.a2p`), forks ``--workers`` generator
processes (each on uvloop, :class:`~msgin5g.bench.load.Worker`; with
``--engine c`` each runs its load phase in a C child,
:mod:`msgin5g.bench.native`, built here first), waits until
every one has registered its UEs, opens the window ``[t0, t0 + duration)``
after ``--warmup`` seconds of load, shows a progress line on stderr when it is
a terminal, waits after the window until every accepted message arrived or
``--drain`` seconds passed, stops the workers and merges their counts
(:func:`~msgin5g.bench.stats.summarize`).

The coordinator sends nothing itself: the generator never shares an event loop
or a process with what it measures, nor with its own coordination.
"""

import asyncio
import errno
import multiprocessing as mp
import os
import queue
import secrets
import sys
import time
from dataclasses import replace
from typing import Any, Final

from msgin5g.bench.options import BenchFailed, BenchOptions, parse_coap_uri
from msgin5g.bench.stats import Counts, Summary, summarize
from msgin5g.errors import MSGin5GError

__all__ = ["run"]

_READY_PER_UE: Final = 0.01
"""Set-up allowance per UE (s) on top of :data:`_READY_BASE`."""
_READY_BASE: Final = 30.0
_RESULT_TIMEOUT: Final = 30.0
_MID_SPACE: Final = 60_000
"""Requests one socket may send before its Message IDs wrap (RFC 7252 §4.4)."""


def _worker_main(
    index: int,
    options: BenchOptions,
    array: Any,
    server: tuple[str, int],
    results: Any,
) -> None:
    """Entry of a generator process: run its worker, report counts or the error."""
    from msgin5g.bench.load import WORKERS, Shared, Worker
    from msgin5g.coap import use_uvloop

    use_uvloop()
    shared = Shared(array, options.workers)
    worker_type: type[Worker]
    if options.mode == "a2p":
        from msgin5g.bench.a2p import A2pWorker

        worker_type = A2pWorker
    elif options.engine == "c":
        from msgin5g.bench.native import NATIVE_WORKERS

        worker_type = NATIVE_WORKERS[options.mode]
    else:
        worker_type = WORKERS[options.mode]
    try:
        counts = asyncio.run(worker_type(index, options, shared, server).run())
    except MSGin5GError as exc:
        results.put(("error", index, str(exc), exc.hint()))
        return
    except OSError as exc:
        hint = (
            "each simulated UE holds a UDP socket: raise the open-files limit "
            "(ulimit -n) or spread the UEs over more --workers"
            if exc.errno == errno.EMFILE
            else None
        )
        results.put(("error", index, f"generator process {index}: {exc}", hint))
        return
    except KeyboardInterrupt:
        return
    except Exception as exc:  # a bug: one line in the parent, not a traceback here
        results.put(
            (
                "error",
                index,
                f"internal error in generator process {index}: "
                f"{type(exc).__name__}: {exc}",
                "please report it",
            )
        )
        return
    results.put(("ok", index, counts.to_wire(), None))


class _Progress:
    """The live line on stderr (only when stderr is a terminal)."""

    def __init__(self, mode: str) -> None:
        self.tty = sys.stderr.isatty()
        self.mode = mode

    def show(self, text: str) -> None:
        if self.tty:
            print(f"\r\x1b[K{self.mode}: {text}", end="", file=sys.stderr, flush=True)

    def clear(self) -> None:
        if self.tty:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)


def _check_errors(results: Any) -> None:
    """Raise the first error a worker reported (non-blocking)."""
    while not results.empty():
        kind, index, detail, hint = results.get()
        if kind == "error":
            raise BenchFailed(detail, hint)
        results.put((kind, index, detail, hint))
        return


def _wait_ready(
    shared: Any,
    procs: list[Any],
    results: Any,
    options: BenchOptions,
    progress: _Progress,
) -> None:
    deadline = time.monotonic() + _READY_BASE + _READY_PER_UE * options.ues
    while True:
        ready = shared.total("ready")
        if ready >= options.workers:
            return
        _check_errors(results)
        if any(not p.is_alive() for p in procs):
            _check_errors(results)
            raise BenchFailed("a generator process ended during set-up")
        if time.monotonic() > deadline:
            raise BenchFailed(
                f"the UEs did not all register within "
                f"{_READY_BASE + _READY_PER_UE * options.ues:.0f} s",
                "is the server overloaded or rate-limiting the registrations?",
            )
        progress.show(
            f"registering {options.ues:,} UEs ({ready:.0f}/{options.workers} processes ready)"
        )
        time.sleep(0.05)


def _live(shared: Any) -> tuple[float, float, float]:
    return shared.total("sent"), shared.total("refused"), shared.total("received")


def _drive(
    shared: Any,
    procs: list[Any],
    options: BenchOptions,
    progress: _Progress,
    results: Any,
) -> None:
    """Open the window, show progress, drain."""
    t0 = time.perf_counter() + options.warmup
    t_end = t0 + options.duration
    shared.start(t0, t_end)
    while (now := time.perf_counter()) < t_end:
        _check_errors(results)
        if any(not proc.is_alive() for proc in procs):
            raise BenchFailed("a generator process ended during the run")
        sent, refused, received = _live(shared)
        if now < t0:
            progress.show(f"warming up ({t0 - now:.1f} s)")
        else:
            elapsed = max(now - t0, 1e-6)
            progress.show(
                f"{elapsed:5.1f}/{options.duration:.0f} s  sent {sent:,.0f}  "
                f"received {received:,.0f}  refused {refused:,.0f}  "
                f"{received / elapsed:,.0f}/s"
            )
        time.sleep(min(0.25, max(0.0, t_end - now)))
    deadline = t_end + options.drain
    time.sleep(0.1)
    while time.perf_counter() < deadline:
        sent, refused, received = _live(shared)
        if received + refused >= sent:
            break
        progress.show(f"draining: {sent - refused - received:,.0f} messages under way")
        time.sleep(0.05)
    shared.stop()


def _collect(results: Any, procs: list[Any]) -> list[Counts]:
    parts: dict[int, Counts] = {}
    deadline = time.monotonic() + _RESULT_TIMEOUT
    while len(parts) < len(procs):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BenchFailed("a generator process did not report its counts")
        try:
            kind, index, detail, hint = results.get(timeout=remaining)
        except queue.Empty:
            continue
        if kind == "error":
            raise BenchFailed(detail, hint)
        parts[index] = Counts.from_wire(detail)
    return [parts[i] for i in sorted(parts)]


def _setup_rest(options: BenchOptions) -> None:
    from msgin5g.bench.a2p import ensure_group, register_as

    async def setup() -> None:
        if options.mode == "a2p":
            await register_as(options)
        elif options.mode == "fanout":
            await ensure_group(options)

    asyncio.run(setup())


def run(options: BenchOptions) -> Summary:
    """Run one benchmark against a running server and summarise it.

    Raises:
        BenchFailed: set-up failed (a UE not provisioned, no server, no C
            compiler for ``--engine c`` ...).
        ServerUnreachable: the REST API does not answer (``a2p``, ``fanout``).
        ConfigError: an unusable ``--server`` or ``--http``.
    """
    from msgin5g.bench.load import Shared

    server = parse_coap_uri(options.server)
    options = replace(options, run_id=secrets.token_hex(4))
    if options.mode in ("a2p", "fanout"):
        _setup_rest(options)
    if options.engine == "c":  # once here, not in every generator process
        from msgin5g.bench.native import build

        build()
    ctx = mp.get_context("fork")
    array = ctx.RawArray("d", Shared.size_for(options.workers))
    shared = Shared(array, options.workers)
    results: Any = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker_main,
            args=(index, options, array, server, results),
            daemon=True,
        )
        for index in range(options.workers)
    ]
    progress = _Progress(options.mode)
    for proc in procs:
        proc.start()
    try:
        _wait_ready(shared, procs, results, options, progress)
        _drive(shared, procs, options, progress, results)
        parts = _collect(results, procs)
    finally:
        shared.stop()
        progress.clear()
        for proc in procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
    summary = summarize(
        parts,
        mode=options.mode,
        server=options.server,
        ues=options.ues,
        duration_s=options.duration,
        offered_rate=options.rate,
    )
    _mid_warning(summary, options)
    reused = summary.extra.get("mid_reused", 0)
    if reused and options.warmup + options.duration + options.drain < 247:
        summary.warnings.append(
            f"the server gave a UE a Message ID it had used in this run {reused:.0f} "
            "time(s), with a new token: RFC 7252 §4.4 forbids reuse within "
            "EXCHANGE_LIFETIME (247 s), and a client that detects duplicates on the "
            "Message ID alone drops such messages (counted here: tokens differ)"
        )
    incomplete = summary.extra.get("incomplete_rounds", 0)
    if incomplete:
        summary.warnings.append(
            f"{incomplete:.0f} fan-out round(s) (warm-up included) still missed a "
            f"copy after --drain {options.drain:g} s; the next round started anyway"
        )
    if os.cpu_count() == 1:
        summary.warnings.append("one CPU: the generator competes with the server")
    return summary


def _mid_warning(summary: Summary, options: BenchOptions) -> None:
    """Warn when a socket sent enough to reuse Message IDs within 247 s."""
    lanes = {
        "p2p": options.ues,
        "reg": min(options.sockets, options.ues),
        "fanout": 1,
        "a2p": 0,
    }[options.mode]
    if not lanes:
        return
    requests = (
        summary.extra.get("rounds", 0) if options.mode == "fanout" else summary.sent
    )
    per_socket = (requests / lanes) * (options.duration + options.warmup)
    per_socket /= options.duration
    if per_socket > _MID_SPACE and options.duration < 247:
        summary.warnings.append(
            f"each socket sent ~{per_socket:,.0f} requests: Message IDs repeat "
            "within EXCHANGE_LIFETIME and the server may answer from its "
            "duplicate cache; use more --ues (p2p) or --sockets (reg)"
        )
