"""The generator processes' work: UEs that register, send and count.

One :class:`Worker` runs in each ``--workers`` process (uvloop). The
coordinator (:mod:`msgin5g.bench.runner`) and the workers share one array of
floats (:class:`Shared`): the coordinator writes the window (``t0``,
``t_end``) and the stop flag, each worker publishes its live counts every
50 ms (the progress line, the drain and the fan-out rounds read them).

* :class:`P2pWorker`: its slice of the UEs, one socket each, registers; UE
  ``i`` sends ``MSG`` to UE ``i + 1`` (over all processes), ``--window`` in
  flight per UE; a message counts when the recipient received it, its latency
  is receipt minus send time (``time.perf_counter`` is CLOCK_MONOTONIC on
  Linux, one clock for every process);
* :class:`RegWorker`: its share of ``--sockets`` sockets; socket ``k``
  registers the UEs ``i ≡ k (mod sockets)`` (so it always has a registered UE
  and stays out of the server's flood control), ``--window`` REGs in flight;
  a registration counts when REGRESP says SUCCESS;
* :class:`FanoutWorker`: member UEs; process 0's first UE also sends one group
  ``MSG`` per round and starts the next round when every copy arrived (or after
  ``--drain`` seconds).

Closed loop (``--rate 0``): a completed request starts the next on its lane;
a refusal carrying Max-Age (5.03 SERVER_CONGESTION) delays it, at most 50 ms,
and so does a MSGRESP refused with SERVER_CONGESTION (the per-UE limit).
Paced: every millisecond the due number of sends goes out round-robin over the
lanes with room in their window; a send with no room is counted ``behind``.
"""

import asyncio
import base64
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Final

from msgin5g.bench.options import PROVISION_HINT, BenchFailed, BenchOptions
from msgin5g.bench.peer import (
    RawUe,
    delivered_payloads,
    open_ue,
    payload_sent_at,
    reg_body,
    stamp,
)
from msgin5g.bench.stats import Counts, coap_code, refusal_cause
from msgin5g.coap import CoapMessage
from msgin5g.coap.numbers import OptionNumber

__all__ = ["WORKERS", "FanoutWorker", "P2pWorker", "RegWorker", "Shared", "Worker"]

_T0: Final = 0
_T_END: Final = 1
_STOP: Final = 2
_HEADER: Final = 3
_FIELDS: Final = ("ready", "sent", "refused", "received", "arrived", "timeouts")
_BACKOFF_MAX: Final = 0.05
_FIRST_ANSWER: Final = 5.0
"""Seconds to wait for the first REG's answer before reporting no server."""


class Shared:
    """Typed view of the coordinator's shared array (one per run)."""

    @staticmethod
    def size_for(workers: int) -> int:
        """Floats in the shared array of a run with ``workers`` processes."""
        return _HEADER + workers * len(_FIELDS)

    def __init__(self, array: Any, workers: int) -> None:
        self.array = array
        self.workers = workers

    @property
    def t0(self) -> float:
        return float(self.array[_T0])

    @property
    def t_end(self) -> float:
        return float(self.array[_T_END])

    @property
    def stopped(self) -> bool:
        return bool(self.array[_STOP])

    def start(self, t0: float, t_end: float) -> None:
        self.array[_T_END] = t_end
        self.array[_T0] = t0

    def stop(self) -> None:
        self.array[_STOP] = 1.0

    def publish(self, worker: int, **values: float) -> None:
        base = _HEADER + worker * len(_FIELDS)
        for name, value in values.items():
            self.array[base + _FIELDS.index(name)] = value

    def total(self, name: str) -> float:
        index = _FIELDS.index(name)
        return float(
            sum(
                self.array[_HEADER + w * len(_FIELDS) + index]
                for w in range(self.workers)
            )
        )


def _accepted(response: CoapMessage) -> bool:
    """A 2.xx MSGRESP whose deliveryStatus is not a failure."""
    if response.code >> 5 != 2:
        return False
    payload = response.payload
    return b"DELY_ACCEPTED" in payload or b"DELY_STORED" in payload


def _cause(response: CoapMessage) -> str:
    """The refusal's key in the summary (:func:`~msgin5g.bench.stats.refusal_cause`)."""
    code = None if response.code >> 5 == 2 else coap_code(response.code)
    return refusal_cause(code, response.payload)


def _backoff(response: CoapMessage | None) -> float:
    """How long a refused lane waits before its next request (Max-Age, capped).

    A MSGRESP refused with SERVER_CONGESTION (the server's per-UE submission
    limit: a 2.xx, no Max-Age) waits the cap too.
    """
    if response is None:
        return 0.0
    if response.code >> 5 == 2:
        return _BACKOFF_MAX if b'"SERVER_CONGESTION"' in response.payload else 0.0
    if response.code >> 5 != 5:
        return 0.0
    max_age = response.uint_opt(OptionNumber.MAX_AGE)
    return min(float(max_age if max_age is not None else 1), _BACKOFF_MAX)


class Worker(ABC):
    """Common part: the window, the live counts, the sweep, the receive side."""

    def __init__(
        self,
        index: int,
        options: BenchOptions,
        shared: Shared,
        server: tuple[str, int],
    ) -> None:
        self.index = index
        self.options = options
        self.shared = shared
        self.server = server
        self.counts = Counts()
        self.arrived = 0
        self.t0 = math.inf
        self.t_end = math.inf
        self.ues: list[RawUe] = []
        self.names = options.names()
        self.run_id = options.run_id
        self._tasks: list[asyncio.Task[None]] = []

    # ------------------------------------------------------------ receive side

    def on_payload(self, body: bytes) -> None:
        """Count each stamped payload a UE received (those sent in the window)."""
        now = time.perf_counter()
        for payload in delivered_payloads(body):
            sent_at = payload_sent_at(payload)
            if sent_at is None:
                continue
            self.arrived += 1
            if self.t0 <= sent_at < self.t_end:
                self.counts.received += 1
                self.counts.latency.add(now - sent_at)

    # ------------------------------------------------------------------ life

    async def open_ues(self, names: Sequence[str]) -> list[RawUe]:
        ues = [await open_ue(name, self.server, self.on_payload) for name in names]
        self.ues.extend(ues)
        return ues

    async def register(self, ues: Sequence[RawUe], names: Sequence[str]) -> None:
        """REG each name from its UE socket (64 at a time).

        Raises:
            BenchFailed: a REG was refused, or the server did not answer.
        """
        sem = asyncio.Semaphore(64)
        first = True

        async def one(ue: RawUe, name: str) -> None:
            nonlocal first
            async with sem:
                timeout = _FIRST_ANSWER if first else 120.0
                try:
                    response = await asyncio.wait_for(
                        ue.call(reg_body(name, self.options.secret)), timeout
                    )
                except TimeoutError:
                    response = None
                first = False
                if response is None:
                    raise BenchFailed(
                        f"no answer from {self.options.server} to the REG of {name}",
                        "is an MSGin5G server running there? (--server coap://HOST:PORT)",
                    )
                if response.code >> 5 != 2 or b'"SUCCESS"' not in response.payload:
                    text = response.payload[:200].decode("utf-8", "replace")
                    raise BenchFailed(
                        f"the server refused the REG of {name}: "
                        f"{response.code >> 5}.{response.code & 31:02d} {text}",
                        PROVISION_HINT,
                    )

        if ues:
            await one(ues[0], names[0])
        await asyncio.gather(
            *(one(ue, name) for ue, name in zip(ues[1:], names[1:], strict=True))
        )

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            now = time.perf_counter()
            for ue in self.ues:
                if ue.in_flight:
                    ue.sweep(now)

    async def _publisher(self) -> None:
        while True:
            self._publish()
            await asyncio.sleep(0.05)

    def _publish(self) -> None:
        c = self.counts
        self.shared.publish(
            self.index,
            sent=c.sent,
            refused=c.refused,
            received=c.received,
            arrived=self.arrived,
            timeouts=c.timeouts,
        )

    async def run(self) -> Counts:
        """Set up, wait for the window, load, drain; the counts of the window."""
        self._tasks.append(asyncio.create_task(self._sweeper()))
        try:
            await self.setup()
            self._tasks.append(asyncio.create_task(self._publisher()))
            self.shared.publish(self.index, ready=1)
            while not self.shared.t0:  # another process sets it
                if self.shared.stopped:
                    return self.counts
                await asyncio.sleep(0.01)
            self.t0, self.t_end = self.shared.t0, self.shared.t_end
            load = asyncio.create_task(self.load())
            await _sleep_until(self.t0)
            cpu0 = time.process_time()
            await _sleep_until(self.t_end)
            self.counts.cpu_s = time.process_time() - cpu0
            self.counts.wall_s = self.t_end - self.t0
            while not self.shared.stopped:  # noqa: ASYNC110 - another process sets it
                await asyncio.sleep(0.02)
            load.cancel()
            self.counts.timeouts += self.unanswered()
            reuses = sum(ue.mid_reuses for ue in self.ues)
            if reuses:
                self.counts.extra["mid_reused"] = reuses
            self._publish()
            return self.counts
        finally:
            for task in self._tasks:
                task.cancel()
            for ue in self.ues:
                if ue.transport is not None:
                    ue.transport.close()

    def unanswered(self) -> int:
        """Requests of the window still without an answer at the stop."""
        return 0

    @abstractmethod
    async def setup(self) -> None:
        """Open this process's UE sockets and register them."""

    @abstractmethod
    async def load(self) -> None:
        """Send until ``t_end`` (or start the closed loops and return)."""


async def _sleep_until(moment: float) -> None:
    delay = moment - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


class _Lanes(Worker, ABC):
    """A worker whose load is requests on lanes (UE sockets), closed or paced."""

    def lanes(self) -> list[RawUe]:
        return self.ues

    @abstractmethod
    def body(self, lane: int, at: float) -> bytes:
        """The next request of ``lane``, stamped with the send time ``at``."""

    def counted(self, response: CoapMessage | None, sent_at: float) -> None:
        """Count an answer (those of requests sent in the window)."""
        c = self.counts
        if not self.t0 <= sent_at < self.t_end:
            return
        if response is None:
            c.timeouts += 1
            return
        c.answer.add(time.perf_counter() - sent_at)
        if _accepted(response):
            c.accepted += 1
        else:
            c.refuse(_cause(response))

    def send(self, lane: int) -> None:
        ue = self.lanes()[lane]
        now = time.perf_counter()
        if self.t0 <= now < self.t_end:
            self.counts.sent += 1

        def done(response: CoapMessage | None, sent_at: float) -> None:
            self.counted(response, sent_at)
            if self.options.rate or time.perf_counter() >= self.t_end:
                return
            delay = _backoff(response)
            if delay:
                asyncio.get_running_loop().call_later(delay, self._resend, lane)
            else:
                self.send(lane)

        ue.post(self.body(lane, now), done, now)

    def _resend(self, lane: int) -> None:
        if time.perf_counter() < self.t_end:
            self.send(lane)

    async def load(self) -> None:
        lanes = self.lanes()
        if not self.options.rate:
            for lane in range(len(lanes)):
                for _ in range(self.options.window):
                    self.send(lane)
            return
        rate = self.options.rate / self.options.workers
        start = time.perf_counter()
        issued = 0
        turn = 0
        window = self.options.window
        while (now := time.perf_counter()) < self.t_end:
            due = int((now - start) * rate) - issued
            issued += due
            for _ in range(due):
                for _ in range(len(lanes)):
                    turn = (turn + 1) % len(lanes)
                    if lanes[turn].in_flight < window:
                        self.send(turn)
                        break
                else:
                    if now >= self.t0:
                        self.counts.behind += 1
            await asyncio.sleep(0.001)

    def unanswered(self) -> int:
        # in-flight requests sent inside the window have no answer yet
        return sum(ue.in_flight for ue in self.lanes())


def p2p_body(prefix: bytes, serial: int, payload: bytes, store: bool) -> bytes:
    """The ``MSG`` body of a ``p2p`` lane: ``prefix`` ends in the messageId's
    stem; with ``store`` the message asks for storage (``storeAndForwardFlag``)."""
    tail = b',"storeAndForwardFlag":true}' if store else b"}"
    encoded = base64.b64encode(payload)
    return prefix + b'%d","payload":"%s"%s' % (serial, encoded, tail)


class P2pWorker(_Lanes):
    """UE -> server -> UE messages (counted at the recipient)."""

    async def setup(self) -> None:
        mine = self.names[self.index :: self.options.workers]
        ues = await self.open_ues(mine)
        await self.register(ues, mine)
        following = {
            name: self.names[(i + 1) % len(self.names)]
            for i, name in enumerate(self.names)
        }
        self._prefixes = [
            (
                f'{{"messageType":"MSG","originatingUeServiceId":"{name}",'
                f'"recipientUeServiceId":"{following[name]}","messageId":"'
                f"{name}-{self.run_id}-"
            ).encode()
            for name in mine
        ]
        self._serial = 0

    def body(self, lane: int, at: float) -> bytes:
        self._serial += 1
        payload = stamp(self.options.size, at)
        return p2p_body(self._prefixes[lane], self._serial, payload, self.options.store)


class RegWorker(_Lanes):
    """Registrations (PSK check, durable write), counted at REGRESP SUCCESS."""

    async def setup(self) -> None:
        total = min(self.options.sockets, self.options.ues)
        sockets = list(range(self.index, total, self.options.workers))
        if not sockets:
            return
        self._owned = [self.names[k::total] for k in sockets]
        self._next = [0] * len(sockets)
        self._bodies = [
            [reg_body(name, self.options.secret) for name in names]
            for names in self._owned
        ]
        ues = await self.open_ues([names[0] for names in self._owned])
        await self.register(ues, [names[0] for names in self._owned])

    def body(self, lane: int, at: float) -> bytes:
        bodies = self._bodies[lane]
        self._next[lane] = (self._next[lane] + 1) % len(bodies)
        return bodies[self._next[lane]]

    def counted(self, response: CoapMessage | None, sent_at: float) -> None:
        if not self.t0 <= sent_at < self.t_end:
            return
        c = self.counts
        if response is None:
            c.timeouts += 1
            return
        latency = time.perf_counter() - sent_at
        c.answer.add(latency)
        if response.code >> 5 == 2 and b'"SUCCESS"' in response.payload:
            c.accepted += 1
            c.received += 1
            c.latency.add(latency)
        else:
            c.refuse(_cause(response))


class FanoutWorker(Worker):
    """Group messages: members count copies; process 0 also sends the rounds."""

    async def setup(self) -> None:
        mine = self.names[self.index :: self.options.workers]
        ues = await self.open_ues(mine)
        await self.register(ues, mine)
        self.copies = len(self.names) - 1  # the sender gets no copy
        self.rounds = 0

    async def load(self) -> None:
        if self.index != 0:
            return
        sender, name = self.ues[0], self.names[0]
        expected = 0.0
        serial = 0
        group = self.options.group
        while time.perf_counter() < self.t_end:
            serial += 1
            sent_at = time.perf_counter()
            payload = base64.b64encode(stamp(self.options.size, sent_at)).decode()
            body = (
                f'{{"messageType":"MSG","originatingUeServiceId":"{name}",'
                f'"recipientGroupServiceId":"{group}","messageId":'
                f'"{name}-{self.run_id}-g{serial}","payload":"{payload}"}}'
            ).encode()
            response = await sender.call(body)
            counted = sent_at >= self.t0
            if counted and response is not None:
                self.counts.answer.add(time.perf_counter() - sent_at)
            if counted:
                self.counts.sent += self.copies
                self.rounds += 1
                self.counts.extra["rounds"] = self.rounds
            if response is None or not _accepted(response):
                if counted:
                    if response is None:
                        self.counts.timeouts += self.copies
                    else:
                        self.counts.refuse(_cause(response), self.copies)
                await asyncio.sleep(_backoff(response) or 0.01)
                continue
            if counted:
                self.counts.accepted += self.copies
            expected += self.copies
            deadline = time.perf_counter() + max(self.options.drain, 1.0)
            self._publish()
            while (  # noqa: ASYNC110 - other processes count the copies
                self.shared.total("arrived") < expected
                and time.perf_counter() < deadline
            ):
                await asyncio.sleep(0.005)
            arrived = self.shared.total("arrived")
            if arrived < expected:  # a copy is missing after --drain seconds
                extra = self.counts.extra
                extra["incomplete_rounds"] = extra.get("incomplete_rounds", 0) + 1
            expected = arrived


WORKERS: Final[dict[str, type[Worker]]] = {
    "p2p": P2pWorker,
    "reg": RegWorker,
    "fanout": FanoutWorker,
}
"""The CoAP-only modes; ``a2p`` is :class:`msgin5g.bench.a2p.A2pWorker`."""
