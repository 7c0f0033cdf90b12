"""Broadcast Areas: storage, membership, policy, and the fan-out through the service."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.model.credentials import credential_digest, psk_token
from msgin5g.model.messages import Dereg, Imdn, Msg, Reg, UECredentialInfo, UeLocation
from msgin5g.model.registry import Contact, UERegistration
from msgin5g.service import MessagingService
from msgin5g.service.broadcast import (
    AREA_KIND,
    BroadcastArea,
    BroadcastRegistry,
    located_in,
)
from msgin5g.service.registry import Registry
from msgin5g.spec.causes import FailureCause
from msgin5g.spec.delivery import ReportDeliveryStatus
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock, RecordingDeliverer

CONFIG = DeliveryConfig(default_ttl=3600, group_cache_ttl=5.0)
SECRETS = {ue: f"s-{ue}" for ue in ("a", "b", "c", "d", "e", "sender")}


def contact(ue: str) -> Contact:
    return Contact("10.0.0.1", 40000 + sorted(SECRETS).index(ue))


def reg(ue: str, cell: str | None = None, ta: str | None = None) -> Reg:
    info = UECredentialInfo(
        auth_type="PSK_TOKEN", credential=psk_token(SECRETS[ue], ue)
    )
    location = None
    if cell is not None or ta is not None:
        location = UeLocation(cell_id=cell, tracking_area_id=ta)
    return Reg(ue_service_id=ue, ue_credential_info=info, ue_location=location)


def area(**kw: object) -> BroadcastArea:
    fields: dict[str, object] = {
        "cells": ["c1", "c2"],
        "tracking_areas": ["ta9"],
        "ues": [],
    }
    fields.update(kw)
    return BroadcastArea("downtown", **fields)  # type: ignore[arg-type]


def bc(
    mid: str = "b1",
    *,
    frm_as: str | None = "as1",
    frm_ue: str | None = None,
    **kw: object,
) -> Msg:
    return Msg(
        message_id=mid,
        originating_as_service_id=frm_as if frm_ue is None else None,
        originating_ue_service_id=frm_ue,
        recipient_broadcast_area_id=kw.pop("to", "downtown"),  # type: ignore[arg-type]
        payload=b"storm warning",
        **kw,  # type: ignore[arg-type]
    )


# BroadcastRegistry on its own -------------------------------------------------------


@pytest.fixture
async def backend() -> AsyncIterator[MemoryBackend]:
    store = MemoryBackend()
    await store.start()
    for ue, secret in SECRETS.items():
        await store.put_credential(ue, credential_digest(psk_token(secret, ue)))
    yield store
    await store.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def registry(backend: MemoryBackend, clock: ManualClock) -> Registry:
    reg_ = Registry(backend, clock, CONFIG)
    await reg_.register(reg("a", cell="c1"), contact("a"))
    await reg_.register(reg("b", cell="c7", ta="ta9"), contact("b"))
    await reg_.register(reg("c", cell="c8", ta="ta1"), contact("c"))
    await reg_.register(reg("sender"), contact("sender"))
    return reg_


@pytest.mark.parametrize("attached", [True, False], ids=["registry", "storage"])
async def test_members_by_cell_ta_and_assignment(
    backend: MemoryBackend, clock: ManualClock, registry: Registry, attached: bool
) -> None:
    areas = BroadcastRegistry(
        backend, clock, CONFIG, registry=registry if attached else None
    )
    # d: assigned, provisioned, offline; a: both located and assigned; zz: unknown
    await areas.put(area(ues=["d", "a", "zz", "d"]))
    members = await areas.members("downtown")
    assert members is not None
    assert sorted(members) == ["a", "b", "d"]
    assert members.count("a") == 1
    assert await areas.members("elsewhere") is None


async def test_deregistered_or_moved_ues_leave_the_area(
    backend: MemoryBackend, clock: ManualClock, registry: Registry
) -> None:
    areas = BroadcastRegistry(backend, clock, CONFIG, registry=registry)
    await areas.put(area())
    assert sorted(await areas.members("downtown") or []) == ["a", "b"]
    await registry.register(reg("a", cell="c99"), contact("a"))  # moved away
    await registry.deregister("b")
    await registry.register(reg("c", cell="c2"), contact("c"))  # moved in
    assert await areas.members("downtown") == ["c"]


async def test_put_dedupes_and_delete_and_all(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    areas = BroadcastRegistry(backend, clock, CONFIG)
    stored = await areas.put(
        BroadcastArea("x", cells=["c1", "c1", ""], ues=["u", "u"], allowed_as=["a"])
    )
    assert stored == BroadcastArea("x", cells=["c1"], ues=["u"], allowed_as=["a"])
    assert await backend.get_record(AREA_KIND, "x", BroadcastArea) == stored
    await areas.put(BroadcastArea("a-first"))
    assert [a.area_id for a in await areas.all()] == ["a-first", "x"]
    assert await areas.delete("x")
    assert not await areas.delete("x")
    assert await areas.get("x") is None


async def test_changes_from_another_process_are_seen_after_the_cache_ttl(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    areas = BroadcastRegistry(backend, clock, CONFIG)
    assert await areas.get("late") is None
    # another process (the CLI) writes the record directly
    await backend.put_record(AREA_KIND, "late", BroadcastArea("late", cells=["c1"]))
    assert await areas.get("late") is None  # still cached
    clock.advance(CONFIG.group_cache_ttl + 0.1)
    assert await areas.get("late") == BroadcastArea("late", cells=["c1"])


async def test_refusal_policy(backend: MemoryBackend, clock: ManualClock) -> None:
    areas = BroadcastRegistry(backend, clock, CONFIG)
    await areas.put(area())
    await areas.put(BroadcastArea("open", ue_may_send=True, allowed_as=["as2"]))
    for area_id in ("downtown", "open"):
        assert await areas.members(area_id) is not None
    assert areas.refusal(bc(), "downtown") is None
    ue_msg = bc(frm_ue="a")
    assert areas.refusal(ue_msg, "downtown") == FailureCause.NOT_AUTHORIZED
    assert areas.refusal(ue_msg, "open") is None
    assert areas.refusal(bc(frm_as="as1"), "open") == FailureCause.NOT_AUTHORIZED
    assert areas.refusal(bc(frm_as="as2"), "open") is None
    # an area never looked up is refused (fail closed)
    assert areas.refusal(bc(), "never-seen") == FailureCause.NOT_AUTHORIZED


async def test_located_in_scales_to_many_registrations(
    backend: MemoryBackend, clock: ManualClock
) -> None:
    """Correctness at 20,000 registrations (timings are measured, not asserted)."""
    registry = Registry(backend, clock, CONFIG)
    for i in range(20_000):
        ue = f"ue{i}"
        # direct fill of the routing table: a REG per UE is not the point here
        registry._registrations[ue] = _registration(ue, f"cell{i % 500}", f"ta{i % 40}")
    target = BroadcastArea("big", cells=["cell7"], tracking_areas=["ta3"])
    found = located_in(target, registry.registrations())
    expected = {f"ue{i}" for i in range(20_000) if i % 500 == 7 or i % 40 == 3}
    assert set(found) == expected
    assert len(found) == len(expected)


def _registration(ue: str, cell: str, ta: str) -> UERegistration:
    where = Contact("10.1.0.1", 1)
    return UERegistration(ue, where, where, 0.0, cell_id=cell, tracking_area_id=ta)


# through the MessagingService -------------------------------------------------------


@pytest.fixture
async def service(
    backend: MemoryBackend, clock: ManualClock
) -> AsyncIterator[tuple[MessagingService, RecordingDeliverer]]:
    deliverer = RecordingDeliverer()
    svc = MessagingService(backend, deliverer, config=CONFIG, clock=clock)
    await svc.start(sweeper=False)
    await svc.register_as("as1", target_uri="http://as1.test/cb")
    yield svc, deliverer
    await svc.aclose()


async def settle(deliverer: RecordingDeliverer, count: int) -> None:
    for _ in range(200):
        if len(deliverer.delivered) >= count:
            return
        await asyncio.sleep(0)
    await asyncio.wait_for(_until(deliverer, count), 5)


async def _until(deliverer: RecordingDeliverer, count: int) -> None:
    while len(deliverer.delivered) < count:
        deliverer.event.clear()
        await deliverer.event.wait()


def received(deliverer: RecordingDeliverer, ue: str) -> list[Msg]:
    return [m for m in deliverer.messages_for(contact(ue)) if isinstance(m, Msg)]


async def test_as_broadcast_reaches_the_area_once_each(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = service
    await svc.broadcast.put(area(ues=["d", "a"]))
    await svc.register(reg("a", cell="c1"), contact("a"))
    await svc.register(reg("b", ta="ta9"), contact("b"))
    await svc.register(reg("c", cell="c3", ta="ta3"), contact("c"))
    resp = await svc.submit_from_as(bc(store_and_forward_flag=True))
    assert resp.delivery_status == "DELY_ACCEPTED", resp
    await settle(deliverer, 2)
    for ue in ("a", "b"):
        [copy] = received(deliverer, ue)
        assert copy.recipient_ue_service_id == ue
        assert copy.recipient_broadcast_area_id == "downtown"
        assert copy.originating_as_service_id == "as1"
    assert received(deliverer, "c") == []
    # d was offline: stored, delivered when it registers
    await svc.register(reg("d"), contact("d"))
    await settle(deliverer, 3)
    [late] = received(deliverer, "d")
    assert late.payload == b"storm warning"


async def test_unknown_area_and_refused_ue(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = service
    await svc.broadcast.put(area())
    await svc.register(reg("a", cell="c1"), contact("a"))
    await svc.register(reg("sender", cell="c1"), contact("sender"))
    unknown = await svc.submit_from_as(bc(to="nowhere"))
    assert (unknown.delivery_status, unknown.failure_cause) == (
        "DELY_FAILED",
        FailureCause.RECIPIENT_UNKNOWN,
    )
    refused = await svc.submit(bc("u1", frm_ue="sender"), contact("sender"))
    assert (refused.delivery_status, refused.failure_cause) == (
        "DELY_REJECTED",
        FailureCause.NOT_AUTHORIZED,
    )
    await asyncio.sleep(0)
    assert deliverer.delivered == []


async def test_ue_broadcast_allowed_by_policy_excludes_the_sender(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = service
    await svc.broadcast.put(area(ue_may_send=True))
    await svc.register(reg("a", cell="c1"), contact("a"))
    await svc.register(reg("sender", cell="c1"), contact("sender"))
    resp = await svc.submit(
        bc("u2", frm_ue="sender", delivery_status_required=True), contact("sender")
    )
    assert resp.delivery_status == "DELY_ACCEPTED"
    await settle(deliverer, 1)
    [copy] = received(deliverer, "a")
    assert received(deliverer, "sender") == []
    # a's report goes back to the broadcasting UE
    report = Imdn(
        message_id="u2",
        delivery_status=ReportDeliveryStatus.REPT_DELY_SUCCESS,
        originating_ue_service_id="a",
        recipient_ue_service_id="sender",
    )
    await svc.report(report, contact("a"))
    await settle(deliverer, 2)
    assert any(isinstance(i, Imdn) for i in deliverer.messages_for(contact("sender")))
    assert copy.message_id == "u2"


async def test_deregistered_ue_gets_no_broadcast(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = service
    await svc.broadcast.put(area())
    await svc.register(reg("a", cell="c1"), contact("a"))
    await svc.register(reg("b", cell="c2"), contact("b"))
    await svc.deregister(Dereg(ue_service_id="b"), contact("b"))
    resp = await svc.submit_from_as(bc(store_and_forward_flag=False))
    assert resp.delivery_status == "DELY_ACCEPTED"
    await settle(deliverer, 1)
    assert len(received(deliverer, "a")) == 1
    assert received(deliverer, "b") == []
