"""MessagingService on the memory backend with a fake clock and deliverer."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import msgspec
import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import (
    CommAvailability,
    Dereg,
    Imdn,
    Msg,
    MsgUpd,
    Reg,
    StoreAndForwardParams,
    UECredentialInfo,
)
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.model.registry import Contact
from msgin5g.service import MessagingService
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock, RecordingDeliverer

UE1 = Contact("10.0.0.1", 40001)
UE2 = Contact("10.0.0.2", 40002)
UE3 = Contact("10.0.0.3", 40003)
SECRETS = {"ue1": "s1", "ue2": "s2", "ue3": "s3"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def deliverer() -> RecordingDeliverer:
    return RecordingDeliverer()


@pytest.fixture
async def service(
    clock: ManualClock, deliverer: RecordingDeliverer
) -> AsyncIterator[MessagingService]:
    backend = MemoryBackend()
    await backend.start()
    svc = MessagingService(
        backend, deliverer, config=DeliveryConfig(default_ttl=3600), clock=clock
    )
    for ue, secret in SECRETS.items():
        await svc.provision(ue, psk_token(secret, ue))
    await svc.start(sweeper=False)
    yield svc
    await svc.aclose()
    await backend.aclose()


def reg(ue: str, secret: str | None = None, **kw: object) -> Reg:
    info = UECredentialInfo(
        auth_type="PSK_TOKEN", credential=psk_token(secret or SECRETS[ue], ue)
    )
    return Reg(ue_service_id=ue, ue_credential_info=info, **kw)  # type: ignore[arg-type]


def msg(mid: str = "m1", *, to: str = "ue2", frm: str = "ue1", **kw: object) -> Msg:
    return Msg(
        message_id=mid,
        originating_ue_service_id=frm,
        recipient_ue_service_id=to,
        payload=b"hello",
        **kw,  # type: ignore[arg-type]
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_register_new_then_refresh(service: MessagingService) -> None:
    first = await service.register(reg("ue1"), UE1)
    again = await service.register(reg("ue1"), UE1)
    assert first.created and first.response.registration_result == "SUCCESS"
    assert not again.created and again.response.registration_result == "SUCCESS"
    assert service.registry.get("ue1") is not None


@pytest.mark.parametrize(
    ("ue", "secret", "cause"),
    [
        ("ue1", "wrong", "AUTHENTICATION_FAILED"),
        ("nobody", "x", "AUTHENTICATION_FAILED"),
    ],
)
async def test_register_failure_has_cause(
    service: MessagingService, ue: str, secret: str, cause: str
) -> None:
    outcome = await service.register(reg(ue, secret), UE1)
    assert not outcome.created
    assert outcome.response.registration_result == "FAILURE"
    assert outcome.response.failure_cause == cause
    assert service.registry.get(ue) is None


async def test_auth_none_refused_unless_test_mode(service: MessagingService) -> None:
    r = Reg(ue_service_id="ue1", ue_credential_info=UECredentialInfo(auth_type="NONE"))
    outcome = await service.register(r, UE1)
    assert outcome.response.failure_cause == "NOT_AUTHORIZED"


async def test_p2p_delivered_and_report_relayed(
    service: MessagingService, deliverer: RecordingDeliverer
) -> None:
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2"), UE2)
    resp = await service.submit(msg(delivery_status_required=True), UE1)
    assert resp.delivery_status == "DELY_ACCEPTED"
    await settle()
    [delivered] = deliverer.messages_for(UE2)
    assert isinstance(delivered, Msg) and delivered.payload == b"hello"
    assert await service.backend.count() == 0  # removed after the ACK
    imdn = Imdn(
        message_id="m1",
        delivery_status="REPT_DELY_SUCCESS",
        originating_ue_service_id="ue2",
        recipient_ue_service_id="ue1",
    )
    await service.report(imdn, UE2)
    await settle()
    [report] = deliverer.messages_for(UE1)
    assert report == imdn


async def test_report_without_route_is_ignored(
    service: MessagingService, deliverer: RecordingDeliverer
) -> None:
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2"), UE2)
    imdn = Imdn(
        message_id="never-sent",
        delivery_status="REPT_DELY_SUCCESS",
        originating_ue_service_id="ue2",
        recipient_ue_service_id="ue1",
    )
    await service.report(imdn, UE2)
    await settle()
    assert deliverer.messages_for(UE1) == []


async def test_sender_must_be_registered_from_its_address(
    service: MessagingService,
) -> None:
    resp = await service.submit(msg(), UE1)
    assert (resp.delivery_status, resp.failure_cause) == (
        "DELY_REJECTED",
        "NOT_REGISTERED",
    )
    await service.register(reg("ue1"), UE1)
    spoofed = await service.submit(msg(), Contact("6.6.6.6", 1))
    assert (spoofed.delivery_status, spoofed.failure_cause) == (
        "DELY_REJECTED",
        "NOT_AUTHORIZED",
    )


async def test_unknown_recipient_fails(service: MessagingService) -> None:
    await service.register(reg("ue1"), UE1)
    resp = await service.submit(msg(to="ghost"), UE1)
    assert (resp.delivery_status, resp.failure_cause) == (
        "DELY_FAILED",
        "RECIPIENT_UNKNOWN",
    )


async def test_offline_without_flag_fails_with_flag_stored(
    service: MessagingService, deliverer: RecordingDeliverer
) -> None:
    await service.register(reg("ue1"), UE1)
    failed = await service.submit(msg("a"), UE1)
    assert (failed.delivery_status, failed.failure_cause) == (
        "DELY_FAILED",
        "RECIPIENT_NOT_REGISTERED",
    )
    stored = await service.submit(msg("b", store_and_forward_flag=True), UE1)
    assert stored.delivery_status == "DELY_STORED"
    assert await service.backend.count() == 1
    await service.register(reg("ue2"), UE2)
    await settle()
    assert [m.message_id for m in deliverer.messages_for(UE2)] == ["b"]
    assert await service.backend.count() == 0


async def test_stored_delivered_in_priority_then_arrival_order(
    service: MessagingService, deliverer: RecordingDeliverer
) -> None:
    await service.register(reg("ue1"), UE1)
    for mid, prio in [
        ("l1", "LOW"),
        ("m1", None),
        ("h1", "HIGH"),
        ("l2", "LOW"),
        ("h2", "HIGH"),
    ]:
        r = await service.submit(
            msg(mid, store_and_forward_flag=True, priority_type=prio), UE1
        )
        assert r.delivery_status == "DELY_STORED"
    await service.register(reg("ue2"), UE2)
    await settle()
    assert [m.message_id for m in deliverer.messages_for(UE2)] == [
        "h1",
        "h2",
        "m1",
        "l1",
        "l2",
    ]


async def test_unreachable_recipient_keeps_stored_and_fails_others(
    service: MessagingService, deliverer: RecordingDeliverer
) -> None:
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2"), UE2)
    deliverer.unreachable.add(UE2)
    await service.submit(msg("keep", store_and_forward_flag=True), UE1)
    await service.submit(msg("drop", delivery_status_required=True), UE1)
    await settle()
    # 'drop' had no store flag: it failed and ue1 asked for a report
    reports = [i for i in deliverer.messages_for(UE1) if isinstance(i, Imdn)]
    assert [(r.message_id, r.failure_cause) for r in reports] == [
        ("drop", "RECIPIENT_NOT_REACHABLE")
    ]
    # while unreachable, new messages are stored without an attempt
    later = await service.submit(msg("later", store_and_forward_flag=True), UE1)
    assert later.delivery_status == "DELY_STORED"
    deliverer.unreachable.clear()
    # any uplink from ue2 wakes its mailbox
    await service.submit(msg("x", to="ue1", frm="ue2"), UE2)
    await settle()
    assert [m.message_id for m in deliverer.messages_for(UE2)] == ["keep", "later"]


async def test_expiry_sends_failure_report(
    service: MessagingService, deliverer: RecordingDeliverer, clock: ManualClock
) -> None:
    await service.register(reg("ue1"), UE1)
    when = datetime.fromtimestamp(clock.now() + 60, UTC)
    params = StoreAndForwardParams(message_expiration_time=when)
    r = await service.submit(
        msg(
            store_and_forward_flag=True,
            store_and_forward_params=params,
            delivery_status_required=True,
        ),
        UE1,
    )
    assert r.delivery_status == "DELY_STORED"
    assert await service.delivery.sweep_once() == 0
    clock.advance(61)
    assert await service.delivery.sweep_once() == 1
    await settle()
    [report] = deliverer.messages_for(UE1)
    assert isinstance(report, Imdn)
    assert (report.delivery_status, report.failure_cause) == (
        "REPT_DELY_FAILED",
        "MESSAGE_EXPIRED",
    )
    assert report.originating_ue_service_id == "ue2"
    await service.register(reg("ue2"), UE2)
    await settle()
    assert deliverer.messages_for(UE2) == []


async def test_duplicate_message_id(service: MessagingService) -> None:
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2"), UE2)
    first = await service.submit(msg("dup"), UE1)
    again = await service.submit(msg("dup"), UE1)
    other = await service.submit(
        Msg(
            message_id="dup",
            originating_ue_service_id="ue1",
            recipient_ue_service_id="ue2",
            payload=b"different",
        ),
        UE1,
    )
    assert again == first
    assert (other.delivery_status, other.failure_cause) == (
        "DELY_REJECTED",
        "DUPLICATE_MESSAGE_ID",
    )


async def test_store_and_forward_refused_by_recipient(
    service: MessagingService, deliverer: RecordingDeliverer
) -> None:
    await service.register(reg("ue1"), UE1)
    avail = CommAvailability(
        scheduled_comm_time=datetime.now(UTC),
        comm_duration_time=10,
        store_and_forward_option="NOT_REQUESTED",
    )
    await service.register(reg("ue2", comm_availability=avail), UE2)
    deliverer.unreachable.add(UE2)
    await service.submit(msg("first", store_and_forward_flag=True), UE1)
    await settle()
    resp = await service.submit(msg("second", store_and_forward_flag=True), UE1)
    assert (resp.delivery_status, resp.failure_cause) == (
        "DELY_FAILED",
        "STORE_AND_FORWARD_NOT_ALLOWED",
    )
    assert await service.backend.count() == 0


async def test_deregister_keeps_stored_messages_for_the_next_registration(
    service: MessagingService, deliverer: RecordingDeliverer
) -> None:
    """Store and forward exists for unregistered recipients (TS 23.554 §8.3.6)."""
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2"), UE2)
    deliverer.unreachable.add(UE2)
    await service.submit(
        msg("s", store_and_forward_flag=True, delivery_status_required=True), UE1
    )
    await settle()
    info = UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token("s2", "ue2"))
    resp = await service.deregister(
        Dereg(ue_service_id="ue2", ue_credential_info=info), UE2
    )
    assert resp.deregistration_result == "SUCCESS"
    await settle()
    assert deliverer.messages_for(UE1) == []  # no failure report
    assert await service.backend.count() == 1
    # idempotent, and still nothing lost
    again = await service.deregister(
        Dereg(ue_service_id="ue2", ue_credential_info=info), UE2
    )
    assert again.deregistration_result == "SUCCESS"
    assert await service.backend.count() == 1
    deliverer.unreachable.clear()
    await service.register(reg("ue2"), UE2)
    await settle()
    assert [m.message_id for m in deliverer.messages_for(UE2)] == ["s"]


async def test_deregister_fails_unstorable_items_with_reports(
    service: MessagingService, deliverer: RecordingDeliverer, clock: ManualClock
) -> None:
    """An item accepted without store and forward cannot wait for the UE."""
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2"), UE2)
    live = msg("live", delivery_status_required=True)
    await service.backend.enqueue(
        QueuedItem(
            recipient="ue2",
            item=live,
            priority=1,
            expires_at=clock.now() + 60,
            store=False,
        )
    )
    await service.backend.put_report_route(
        ReportRoute(
            message_id="live",
            reporter="ue2",
            originator="ue1",
            expires_at=clock.now() + 60,
        )
    )
    resp = await service.deregister(Dereg(ue_service_id="ue2"), UE2)
    assert resp.deregistration_result == "SUCCESS"
    await settle()
    [report] = deliverer.messages_for(UE1)
    assert isinstance(report, Imdn) and report.failure_cause == "RECIPIENT_DEREGISTERED"
    assert await service.backend.count() == 0


@pytest.mark.parametrize("credential", [None, "bogus"])
async def test_dereg_of_an_unregistered_ue_changes_nothing(
    service: MessagingService, deliverer: RecordingDeliverer, credential: str | None
) -> None:
    """Attack: one DEREG from anyone wiped an offline UE's mailbox (issue 10.1)."""
    await service.register(reg("ue1"), UE1)
    for mid in ("a", "b"):
        await service.submit(
            msg(mid, store_and_forward_flag=True, delivery_status_required=True), UE1
        )
    await settle()
    assert await service.backend.count() == 2
    info = (
        None
        if credential is None
        else UECredentialInfo(auth_type="PSK_TOKEN", credential=credential)
    )
    attacker = Contact("10.6.6.6", 6666)
    resp = await service.deregister(
        Dereg(ue_service_id="ue2", ue_credential_info=info), attacker
    )
    assert resp.deregistration_result == "SUCCESS"  # idempotent (digest §3.3.3)
    await settle()
    assert await service.backend.count() == 2
    assert deliverer.messages_for(UE1) == []  # no RECIPIENT_DEREGISTERED report
    await service.register(reg("ue2"), UE2)
    await settle()
    assert sorted(m.message_id for m in deliverer.messages_for(UE2)) == ["a", "b"]


async def test_dereg_of_a_registered_ue_from_a_foreign_source_is_refused(
    service: MessagingService,
) -> None:
    await service.register(reg("ue2"), UE2)
    resp = await service.deregister(
        Dereg(ue_service_id="ue2"), Contact("10.6.6.6", 6666)
    )
    assert (resp.deregistration_result, resp.failure_cause) == (
        "FAILURE",
        "NOT_AUTHORIZED",
    )
    assert service.registry.get("ue2") is not None


async def test_unknown_id_and_wrong_secret_look_the_same(
    service: MessagingService, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack: REG answers told provisioned IDs apart (issue 10.6)."""
    unknown = await service.register(reg("nobody", "x"), UE1)
    wrong = await service.register(reg("ue1", "wrong"), UE1)
    assert unknown.response == msgspec.structs.replace(
        wrong.response, ue_service_id="nobody"
    )
    assert "UNKNOWN_UE_SERVICE_ID" in caplog.text  # the log keeps the difference


async def test_deregister_with_wrong_credential_fails(
    service: MessagingService,
) -> None:
    await service.register(reg("ue2"), UE2)
    info = UECredentialInfo(auth_type="PSK_TOKEN", credential="bogus")
    resp = await service.deregister(
        Dereg(ue_service_id="ue2", ue_credential_info=info), UE2
    )
    assert (resp.deregistration_result, resp.failure_cause) == (
        "FAILURE",
        "AUTHENTICATION_FAILED",
    )
    assert service.registry.get("ue2") is not None


async def test_msgupd_update_and_discard(
    service: MessagingService, deliverer: RecordingDeliverer, clock: ManualClock
) -> None:
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue3"), Contact("10.0.0.3", 3))
    await service.submit(msg("s1", store_and_forward_flag=True), UE1)
    later = datetime.fromtimestamp(clock.now() + 7200, UTC)
    params = StoreAndForwardParams(message_expiration_time=later)
    upd = MsgUpd(
        originating_ue_service_id="ue1",
        recipient_ue_service_id="ue2",
        message_id="s1",
        store_and_forward_params=params,
    )
    assert (await service.update_stored(upd, UE1)).delivery_status == "DELY_STORED"
    stored = await service.backend.find("ue2", "s1")
    assert stored is not None and stored.expires_at == pytest.approx(later.timestamp())
    foreign = MsgUpd(
        originating_ue_service_id="ue3", recipient_ue_service_id="ue2", message_id="s1"
    )
    r = await service.update_stored(foreign, Contact("10.0.0.3", 3))
    assert r.failure_cause == "NOT_AUTHORIZED"
    discard = MsgUpd(
        originating_ue_service_id="ue1", recipient_ue_service_id="ue2", message_id="s1"
    )
    assert (
        await service.update_stored(discard, UE1)
    ).delivery_status == "DELY_ACCEPTED"
    assert await service.backend.count() == 0
    missing = await service.update_stored(discard, UE1)
    assert missing.failure_cause == "MESSAGE_NOT_FOUND"


async def test_restart_resumes_delivery(clock: ManualClock) -> None:
    backend = MemoryBackend()
    await backend.start()
    first = MessagingService(backend, RecordingDeliverer(), clock=clock)
    await first.provision("ue1", psk_token("s1", "ue1"))
    await first.provision("ue2", psk_token("s2", "ue2"))
    await first.start(sweeper=False)
    await first.register(reg("ue1"), UE1)
    await first.register(reg("ue2"), UE2)
    first.delivery._deliverer.unreachable.add(UE2)  # type: ignore[attr-defined]
    await first.submit(msg("k", store_and_forward_flag=True), UE1)
    await settle()
    await first.aclose()
    deliverer = RecordingDeliverer()
    second = MessagingService(backend, deliverer, clock=clock)
    await second.start(sweeper=False)
    await settle()
    assert [m.message_id for m in deliverer.messages_for(UE2)] == ["k"]
    await second.aclose()


# a lone item goes out without a drain task (issue 13) ------------------------


class GatedDeliverer(RecordingDeliverer):
    """Holds every ``deliver_nowait`` until the test settles it; counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: list[tuple[Contact, object, asyncio.Future[None]]] = []
        self.awaited = 0

    async def deliver(self, contact: Contact, item: object) -> None:  # type: ignore[override]
        self.awaited += 1
        await super().deliver(contact, item)  # type: ignore[arg-type]

    def deliver_nowait(self, contact: Contact, item: object) -> asyncio.Future[None]:  # type: ignore[override]
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates.append((contact, item, gate))
        return gate


def drain_tasks() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if getattr(t.get_coro(), "__qualname__", "") == "DeliveryEngine._drain"
    ]


async def test_lone_item_is_delivered_without_a_drain_task(
    service: MessagingService, deliverer: RecordingDeliverer
) -> None:
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2"), UE2)
    await service.submit(msg("m1"), UE1)
    assert drain_tasks() == []
    await settle()
    assert [m.message_id for m in deliverer.messages_for(UE2)] == ["m1"]
    assert await service.backend.count() == 0
    assert service.delivery.delivered == 1
    assert service.delivery.pending_in_memory() == 0
    assert service.delivery.drain_tasks() == 0


@contextlib.asynccontextmanager
async def _gated_service(
    clock: ManualClock,
) -> AsyncIterator[tuple[MessagingService, MemoryBackend, "GatedDeliverer"]]:
    """A started service on a memory backend whose deliveries wait on gates."""
    backend = MemoryBackend()
    await backend.start()
    gated = GatedDeliverer()
    svc = MessagingService(
        backend,
        gated,
        config=DeliveryConfig(default_ttl=3600, transit_hold=0),
        clock=clock,
    )
    for ue, secret in SECRETS.items():
        await svc.provision(ue, psk_token(secret, ue))
    await svc.start(sweeper=False)
    try:
        yield svc, backend, gated
    finally:
        await svc.aclose()
        await backend.aclose()


async def test_items_behind_a_lone_delivery_wait_and_are_bundled(
    clock: ManualClock,
) -> None:
    async with _gated_service(clock) as (svc, backend, gated):
        await svc.register(reg("ue1"), UE1)
        await svc.register(reg("ue2"), UE2)
        await svc.submit(msg("m1"), UE1)
        await svc.submit(msg("m2"), UE1)
        await svc.submit(msg("m3"), UE1)
        await settle()
        # one delivery in flight; the others wait in the mailbox, as behind a
        # drain task's delivery
        assert [(c, m.message_id) for c, m, _ in gated.gates] == [(UE2, "m1")]  # type: ignore[attr-defined]
        assert svc.delivery.drain_tasks() == 1
        gated.gates[0][2].set_result(None)
        await settle()
        # the drain task takes over and bundles what waited (§8.4.3)
        assert [type(i).__name__ for i in gated.items_for(UE2)] == ["AggMsg"]
        assert [m.message_id for m in gated.messages_for(UE2)] == ["m2", "m3"]
        assert await backend.count() == 0
        assert svc.delivery.delivered == 3


async def test_lone_delivery_failures_take_the_mailbox_path(
    clock: ManualClock,
) -> None:
    async with _gated_service(clock) as (svc, backend, gated):
        await svc.register(reg("ue1"), UE1)
        await svc.register(reg("ue2"), UE2)
        await svc.register(reg("ue3"), UE3)
        await svc.submit(msg("keep", store_and_forward_flag=True), UE1)
        await svc.submit(msg("no", to="ue3", delivery_status_required=True), UE1)
        await settle()
        to_ue2, to_ue3 = gated.gates
        to_ue2[2].set_exception(RecipientUnreachable("no ACK"))
        to_ue3[2].set_exception(DeliveryRejected("4.00"))
        await settle()
        # unreachable: parked and kept stored, no second attempt
        assert svc.delivery.is_unreachable("ue2")
        assert gated.awaited == 0
        assert len(gated.gates) == 3
        # refused: done, and the originator gets its failure report
        contact, report, _ = gated.gates[2]
        assert contact == UE1 and isinstance(report, Imdn)
        assert (report.message_id, report.delivery_status) == (
            "no",
            "REPT_DELY_FAILED",
        )
        stored = await backend.pending_for("ue2", limit=10)
        assert [i.item.message_id for i in stored] == ["keep"]
        assert await backend.pending_for("ue3", limit=10) == []
        # an uplink from ue2 wakes its mailbox: the drain task delivers
        await svc.submit(msg("x", to="ue1", frm="ue2"), UE2)
        await settle()
        assert [m.message_id for m in gated.messages_for(UE2)] == ["keep"]
        assert not svc.delivery.is_unreachable("ue2")
