"""The registry keeps per-UE memory small and checks credentials in batches.

Shared strings and a bounded credential cache (memory); concurrent credential
lookups share one storage read (registrations/s).

docs/performance.md, "Memory per registered idle UE": at 1 M registered UEs
every object per UE counts. These tests check the sharing itself (identity),
not byte counts, so they hold on every interpreter build.
"""

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.errors import StorageUnavailable
from msgin5g.model.credentials import credential_digest, psk_token
from msgin5g.model.messages import Reg, UECredentialInfo
from msgin5g.model.registry import Contact
from msgin5g.service import registry as registry_module
from msgin5g.service.registry import Registry
from msgin5g.spec.causes import FailureCause
from msgin5g.storage import open_backend
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock


def _reg(ue: str, **extra: object) -> Reg:
    info = UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token("s", ue))
    return Reg(ue_service_id=ue, ue_credential_info=info, **extra)  # type: ignore[arg-type]


def _host() -> str:
    return "".join(["127.0.", "0.", "1"])  # a new str object each call


async def test_credential_cache_stays_bounded_and_correct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(registry_module, "CREDENTIAL_CACHE_MAX", 16)
    backend = MemoryBackend()
    ues = [f"ue-{n}" for n in range(100)]
    await backend.put_credentials(
        [(ue, credential_digest(psk_token("s", ue))) for ue in ues]
    )
    registry = Registry(backend, ManualClock(), DeliveryConfig())
    for ue in ues:
        assert await registry.authenticate(ue, _reg(ue).ue_credential_info) is None
        assert len(registry._credentials) <= 16
    # the newest stay cached, the oldest were dropped first
    assert "ue-99" in registry._credentials
    assert "ue-0" not in registry._credentials
    # a dropped entry is read again from storage, unknown IDs stay unknown
    assert await registry.authenticate("ue-0", _reg("ue-0").ue_credential_info) is None
    unknown = await registry.authenticate("nobody", _reg("nobody").ue_credential_info)
    assert unknown == FailureCause.UNKNOWN_UE_SERVICE_ID


async def test_registrations_share_empty_profile_and_interned_host() -> None:
    registry = Registry(MemoryBackend(), ManualClock(), DeliveryConfig())
    first, _ = await registry.register(_reg("a"), Contact(_host(), 5001))
    second, _ = await registry.register(_reg("b"), Contact(_host(), 5002))
    assert first.profile == "{}" and first.profile is second.profile
    assert first.source.host is second.source.host
    assert first.contact is first.source  # no clientAddress: one object
    third, _ = await registry.register(
        _reg("c", max_segment_size=512), Contact(_host(), 5003)
    )
    assert third.profile == '{"max_segment_size":512}'


async def test_loaded_registrations_share_contacts_gateway_and_profile(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    backend = open_backend(url)
    await backend.start()
    writer = Registry(backend, ManualClock(), DeliveryConfig())
    gateway_source = Contact(_host(), 6000)
    await writer.register(_reg("gw"), gateway_source)
    for n in range(5):
        await writer.register(_reg(f"ue-{n}"), gateway_source, gateway="gw")
    before = {r.ue_service_id: r for r in writer.registrations()}

    loaded = Registry(backend, ManualClock(), DeliveryConfig())
    await loaded.load()  # every record decoded from msgpack: its own copies
    after = {r.ue_service_id: r for r in loaded.registrations()}
    await backend.aclose()

    assert after == before  # same content
    members = [after[f"ue-{n}"] for n in range(5)]
    assert all(m.gateway is members[0].gateway for m in members)
    assert all(m.profile is members[0].profile for m in members)
    assert all(m.source is after["gw"].source for m in members)
    assert all(m.contact is m.source for m in members)
    assert loaded.by_source(gateway_source) == after["gw"]


async def test_a_gateways_registrations_share_its_source_contact() -> None:
    registry = Registry(MemoryBackend(), ManualClock(), DeliveryConfig())
    gateway, _ = await registry.register(_reg("gw"), Contact(_host(), 6000))
    source = Contact(_host(), 6000)  # each BULKREG's source is a new object
    members = [
        (await registry.register(_reg(f"ue-{n}"), source, gateway="gw"))[0]
        for n in range(4)
    ]
    assert all(m.source is gateway.source for m in members)
    assert all(m.contact is m.source for m in members)
    # another source gets its own object, equal contacts stay equal
    other, _ = await registry.register(_reg("x"), Contact(_host(), 6001))
    assert other.source == Contact("127.0.0.1", 6001)
    again, _ = await registry.register(_reg("ue-0"), source, gateway="gw")
    assert again.source == gateway.source


class _TickingClock(ManualClock):
    """Each reading is a new float object (as time.time() returns)."""

    def now(self) -> float:
        return self.value + 0.0


async def test_registrations_within_a_millisecond_share_one_time() -> None:
    clock = _TickingClock(1_700_000_000.25)
    registry = Registry(MemoryBackend(), clock, DeliveryConfig())
    source = Contact(_host(), 6000)
    a, _ = await registry.register(_reg("a"), source)
    clock.value += 0.0004
    b, _ = await registry.register(_reg("b"), source, gateway="a")
    assert b.registered_at is a.registered_at  # one float for both
    assert b.registered_at == 1_700_000_000.25  # the first one's time
    # a UE registering again gets a later time, never its previous one
    clock.value += 0.0002
    a2, _ = await registry.register(_reg("a"), source)
    assert a2.registered_at > a.registered_at
    assert a2.registered_at == clock.value
    # past the window: a new time
    clock.value += 2 * registry_module.STAMP_SHARE
    c, _ = await registry.register(_reg("c"), source, gateway="a")
    assert c.registered_at == clock.value
    assert c.registered_at is not a2.registered_at


class _CountingBackend(MemoryBackend):
    """Counts credential reads; can hold them (a slow disk) or fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def get_credential(self, ue_service_id: str) -> bytes | None:
        self.reads.append([ue_service_id])
        return await super().get_credential(ue_service_id)

    async def get_credentials(self, ue_service_ids: Sequence[str]) -> dict[str, bytes]:
        self.reads.append(list(ue_service_ids))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StorageUnavailable("disk gone")
        return await super().get_credentials(ue_service_ids)


async def test_concurrent_credential_checks_share_one_storage_read() -> None:
    backend = _CountingBackend()
    ues = [f"ue-{n}" for n in range(50)]
    await backend.put_credentials(
        [(ue, credential_digest(psk_token("s", ue))) for ue in ues]
    )
    registry = Registry(backend, ManualClock(), DeliveryConfig())
    backend.gate = asyncio.Event()

    first = [
        asyncio.create_task(registry.authenticate(ue, _reg(ue).ue_credential_info))
        for ue in ues[:30]
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    assert backend.reads == [ues[:30]]  # one read in flight
    # asked while it is in flight: they wait and go together in the next read
    second = [
        asyncio.create_task(registry.authenticate(ue, _reg(ue).ue_credential_info))
        for ue in [*ues[30:], "nobody", "ue-31"]
    ]
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(backend.reads) == 1
    backend.gate.set()
    results = await asyncio.gather(*first, *second)
    assert backend.reads == [ues[:30], [*ues[30:], "nobody"]]
    assert results[:50] == [None] * 50
    assert results[50] == FailureCause.UNKNOWN_UE_SERVICE_ID
    assert results[51] is None


async def test_a_failed_credential_read_fails_each_waiter() -> None:
    backend = _CountingBackend()
    registry = Registry(backend, ManualClock(), DeliveryConfig())
    backend.fail = True
    outcomes = await asyncio.gather(
        registry.credential("a"), registry.credential("b"), return_exceptions=True
    )
    assert all(isinstance(o, StorageUnavailable) for o in outcomes)
    assert outcomes[0] is not outcomes[1]
    backend.fail = False
    assert await registry.credential("a") is None  # the next read works
