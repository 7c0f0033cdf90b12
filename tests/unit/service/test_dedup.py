"""Duplicate detection: stable fingerprints, bounded memory, durable records.

The restart tests use a real SQLite file: the first service's answer is in the
file, a second service on the same file (empty memory) gives the same answer
and stores nothing twice.
"""

import asyncio
import os
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg, Reg, UECredentialInfo
from msgin5g.model.registry import Contact
from msgin5g.service import MessagingService
from msgin5g.service.dedup import DedupCache, entry_cost, fingerprint
from msgin5g.service.groups import Group
from msgin5g.storage import Backend, open_backend
from msgin5g.testing import ManualClock, RecordingDeliverer

UE1 = Contact("10.0.0.1", 40001)
SECRETS = {"ue1": "s1", "ue2": "s2", "ue3": "s3"}

Factory = Callable[..., Awaitable[tuple[MessagingService, Backend]]]


def msg(mid: str, *, to: str = "ue2", payload: bytes = b"hello", **kw: object) -> Msg:
    return Msg(
        message_id=mid,
        originating_ue_service_id="ue1",
        recipient_ue_service_id=to,
        payload=payload,
        store_and_forward_flag=True,
        **kw,  # type: ignore[arg-type]
    )


def reg(ue: str) -> Reg:
    info = UECredentialInfo(
        auth_type="PSK_TOKEN", credential=psk_token(SECRETS[ue], ue)
    )
    return Reg(ue_service_id=ue, ue_credential_info=info)


@pytest.fixture
async def open_service(tmp_path: Path) -> AsyncIterator[Factory]:
    """Opens services on one SQLite file; each call is a "restart"."""
    opened: list[tuple[MessagingService, Backend]] = []
    clock = ManualClock()

    async def factory(
        *, wrap: Callable[[Backend], Backend] | None = None, **config: object
    ) -> tuple[MessagingService, Backend]:
        for svc, backend in opened:  # the previous process is gone
            await svc.aclose()
            await backend.aclose()
        opened.clear()
        backend = open_backend(f"sqlite:///{tmp_path / 'store.db'}")
        await backend.start()
        svc = MessagingService(
            backend if wrap is None else wrap(backend),
            RecordingDeliverer(),
            config=DeliveryConfig(**config),  # type: ignore[arg-type]
            clock=clock,
        )
        for ue, secret in SECRETS.items():
            await svc.provision(ue, psk_token(secret, ue))
        await svc.start(sweeper=False)
        assert (await svc.register(reg("ue1"), UE1)).response.registration_result == (
            "SUCCESS"
        )
        opened.append((svc, backend))
        return svc, backend

    yield factory
    for svc, backend in opened:
        await svc.aclose()
        await backend.aclose()


# ---------------------------------------------------------------- fingerprint


def test_fingerprint_is_the_same_in_another_process() -> None:
    """Python's hash() differs per process; the stored fingerprint must not."""
    m = msg("m1", payload=b"\x00\x01")
    code = (
        "from msgin5g.model.messages import Msg\n"
        "from msgin5g.service.dedup import fingerprint\n"
        "m = Msg(message_id='m1', originating_ue_service_id='ue1',"
        " recipient_ue_service_id='ue2', payload=b'\\x00\\x01',"
        " store_and_forward_flag=True)\n"
        "print(fingerprint(m).hex())\n"
    )
    env = {
        **os.environ,
        "PYTHONHASHSEED": "12345",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert out.stdout.strip() == fingerprint(m).hex()
    assert fingerprint(m) != fingerprint(msg("m1", payload=b"\x00\x02"))
    assert len(fingerprint(m)) == 16


# ---------------------------------------------------------------- memory bound


def test_cache_stays_within_its_byte_bound() -> None:
    bound = 1 << 20
    cache = DedupCache(window=86400.0, max_entries=10_000_000, max_bytes=bound, now=0.0)
    value = bytes(16) + b"x" * 90  # fingerprint + a typical encoded MSGRESP
    for i in range(50_000):
        cache.put(f"ue-{i % 2000:05d}\0{i:036d}", value, float(i) / 1000)
        assert cache.nbytes <= bound + 2 * entry_cost("k" * 50, value)
    assert cache.rotations > 0
    newest = f"ue-{49_999 % 2000:05d}\0{49_999:036d}"
    assert cache.get(newest, 50.0) == value  # recent entries are kept


def test_cache_estimate_is_honest() -> None:
    """The per-entry estimate is not below what the entries really take."""
    value = bytes(16) + b"x" * 90
    keys = [f"ue-{i % 2000:05d}\0{i:036d}" for i in range(20_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    cache = DedupCache(window=86400.0, max_entries=10**9, max_bytes=10**12, now=0.0)
    for i, key in enumerate(keys):  # a fresh value object per entry
        cache.put(key, value[:-1] + bytes([i % 256]), 0.0)
    real = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    real += sum(sys.getsizeof(k) for k in keys)  # keys were allocated before
    assert len(cache) == len(keys)
    assert 0.5 * cache.nbytes <= real <= cache.nbytes * 1.15, (real, cache.nbytes)


def test_cache_drops_entries_after_two_windows() -> None:
    cache = DedupCache(window=10.0, max_entries=100, max_bytes=1 << 20, now=0.0)
    cache.put("a\0m", b"v", 0.0)
    assert cache.get("a\0m", 9.0) == b"v"
    assert cache.get("a\0m", 10.0) == b"v"  # in the previous generation
    assert cache.get("a\0m", 20.0) is None


# ---------------------------------------------------------------- durable records


async def test_retry_after_restart_gets_the_first_answer_and_is_stored_once(
    open_service: Factory,
) -> None:
    svc, backend = await open_service()
    first = await svc.submit(msg("m1"), UE1)
    assert first.delivery_status == "DELY_STORED"  # ue2 is offline
    svc, backend = await open_service()  # memory is empty now
    again = await svc.submit(msg("m1"), UE1)
    assert again == first
    assert await backend.count() == 1
    other = await svc.submit(msg("m1", payload=b"other content"), UE1)
    assert other.delivery_status == "DELY_REJECTED"
    assert other.failure_cause == "DUPLICATE_MESSAGE_ID"
    assert await backend.count() == 1


async def test_storage_answers_when_the_memory_cache_forgot(
    open_service: Factory,
) -> None:
    svc, backend = await open_service(dedup_max_bytes=4096)
    firsts = [await svc.submit(msg(f"m{i}"), UE1) for i in range(300)]
    assert svc.dedup.cache.rotations > 0  # memory could not hold them all
    agains = [await svc.submit(msg(f"m{i}"), UE1) for i in range(300)]
    assert agains == firsts
    assert await backend.count() == 300


async def test_group_retry_after_restart_is_not_fanned_out_again(
    open_service: Factory,
) -> None:
    svc, backend = await open_service()
    await svc.groups.put(Group("crew", ["ue1", "ue2", "ue3"]))
    group_msg = Msg(
        message_id="g1",
        originating_ue_service_id="ue1",
        recipient_group_service_id="crew",
        payload=b"to all",
        store_and_forward_flag=True,
    )
    first = await svc.submit(group_msg, UE1)
    assert first.delivery_status == "DELY_ACCEPTED"
    assert await backend.count() == 2  # ue2 and ue3, both offline
    svc, backend = await open_service()
    assert await svc.submit(group_msg, UE1) == first
    assert await backend.count() == 2
    assert svc.dedup.conflicts == 1


async def test_concurrent_copies_are_stored_once(open_service: Factory) -> None:
    svc, backend = await open_service()
    answers = await asyncio.gather(*(svc.submit(msg("m1"), UE1) for _ in range(5)))
    assert {a.delivery_status for a in answers} == {"DELY_STORED"}
    assert await backend.count() == 1


async def test_expired_records_are_purged_by_the_sweeper(open_service: Factory) -> None:
    svc, backend = await open_service(dedup_window=60.0, retry_interval=1.0)
    await svc.submit(msg("m1"), UE1)
    clock = svc.clock
    assert isinstance(clock, ManualClock)
    assert await backend.find_dedup("ue1", "m1", clock.now()) is not None
    clock.advance(61.0)
    await svc.delivery.sweep_once()
    assert await backend.find_dedup("ue1", "m1", 0.0) is None
    svc, backend = await open_service(dedup_window=60.0)
    again = await svc.submit(msg("m1"), UE1)  # outside the window: a new message
    assert again.delivery_status == "DELY_STORED"
    assert await backend.count() == 2


class _FirstEnqueueFails:
    """A backend whose first ``enqueue_once`` fails after the other copies queued.

    A wrapper, not a patched method: the SQLite backend and the router may be
    compiled (mypyc), and a compiled class's methods cannot be replaced.
    """

    def __init__(self, inner: Backend) -> None:
        self._inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    async def enqueue_once(self, *args: Any, **kw: Any) -> Any:
        self.calls += 1
        for _ in range(10):  # the other copies arrive and wait for this one
            await asyncio.sleep(0)
        if self.calls == 1:
            raise RuntimeError("storage hiccup")
        return await self._inner.enqueue_once(*args, **kw)


async def test_copies_waiting_on_a_refused_first_are_routed_once(
    open_service: Factory,
) -> None:
    """The first copy is refused for congestion: the waiting copies store it once."""
    wrapped: list[_FirstEnqueueFails] = []

    def wrap(backend: Backend) -> Backend:
        wrapped.append(_FirstEnqueueFails(backend))
        return cast(Backend, wrapped[-1])

    svc, backend = await open_service(wrap=wrap)
    answers = await asyncio.gather(
        *(svc.submit(msg("m1"), UE1) for _ in range(4)), return_exceptions=True
    )
    assert isinstance(answers[0], RuntimeError)
    assert [a.delivery_status for a in answers[1:]] == ["DELY_STORED"] * 3  # type: ignore[union-attr]
    assert wrapped[0].calls == 2
    assert await backend.count() == 1
