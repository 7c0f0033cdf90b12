"""The service's time runs on its Clock, its tasks under one Supervisor (issue 11.4, 11.5).

Every test here moves a :class:`ManualClock`; none sleeps for real. A timer
that still used ``loop.call_later`` / ``asyncio.sleep`` would never fire.
"""

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.errors import RecipientUnreachable
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import (
    Imdn,
    Msg,
    Reg,
    StoreAndForwardParams,
    UECredentialInfo,
)
from msgin5g.model.registry import Contact
from msgin5g.model.segmentation import split
from msgin5g.service import MessagingService
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock, RecordingDeliverer

pytestmark = pytest.mark.timeout(20)

UE1 = Contact("10.0.0.1", 1)
UE2 = Contact("10.0.0.2", 2)
SECRETS = {"ue1": "s1", "ue2": "s2"}
TARGET = "http://as1.test/cb"


class FlakyAS:
    """ASDeliverer port: unreachable until ``up``; counts attempts."""

    def __init__(self) -> None:
        self.up = False
        self.attempts = 0
        self.delivered: list[Msg | Imdn] = []

    async def deliver_to_as(self, target_uri: str, item: Msg | Imdn) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if not self.up:
            raise RecipientUnreachable("test: AS down")
        self.delivered.append(item)


class BrokenRoutes(MemoryBackend):
    """Storage whose report routes fail: a failure report cannot be written."""

    async def take_report_route(self, message_id: str, reporter: str):  # type: ignore[no-untyped-def]
        raise RuntimeError("test: report routes are broken")


async def yields(rounds: int = 50) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def reg(ue: str) -> Reg:
    info = UECredentialInfo(
        auth_type="PSK_TOKEN", credential=psk_token(SECRETS[ue], ue)
    )
    return Reg(ue_service_id=ue, ue_credential_info=info)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def parts(
    clock: ManualClock,
) -> AsyncIterator[tuple[MessagingService, RecordingDeliverer, FlakyAS]]:
    backend = MemoryBackend()
    await backend.start()
    deliverer, as_ = RecordingDeliverer(), FlakyAS()
    config = DeliveryConfig(
        default_ttl=3600,
        sweep_interval=1.0,
        retry_interval=30.0,
        as_retry_initial=5.0,
        as_retry_max=20.0,
        reassembly_gap_timer=10.0,
        reassembly_timeout=100.0,
    )
    svc = MessagingService(
        backend, deliverer, config=config, clock=clock, as_deliverer=as_
    )
    for ue, secret in SECRETS.items():
        await svc.provision(ue, psk_token(secret, ue))
    await svc.start()  # with the sweeper: it sleeps on the manual clock
    yield svc, deliverer, as_
    await svc.aclose()
    await backend.aclose()


async def test_sweeper_runs_when_the_clock_moves_and_only_then(
    parts: tuple[MessagingService, RecordingDeliverer, FlakyAS], clock: ManualClock
) -> None:
    svc, deliverer, _ = parts
    await svc.register(reg("ue1"), UE1)
    when = datetime.fromtimestamp(clock.now() + 60, UTC)
    stored = await svc.submit(
        Msg(
            message_id="m1",
            originating_ue_service_id="ue1",
            recipient_ue_service_id="ue2",
            store_and_forward_flag=True,
            store_and_forward_params=StoreAndForwardParams(
                message_expiration_time=when
            ),
            delivery_status_required=True,
        ),
        UE1,
    )
    assert stored.delivery_status == "DELY_STORED"
    await clock.run_for(59)
    assert deliverer.messages_for(UE1) == [] and svc.delivery.expired == 0
    await clock.run_for(3)  # past the expiry, and a sweep falls due
    [report] = deliverer.messages_for(UE1)
    assert isinstance(report, Imdn) and report.failure_cause == "MESSAGE_EXPIRED"
    assert svc.delivery.expired == 1


async def test_as_back_off_timers_are_timers_of_the_clock(
    parts: tuple[MessagingService, RecordingDeliverer, FlakyAS], clock: ManualClock
) -> None:
    svc, _, as_ = parts
    await svc.register(reg("ue1"), UE1)
    await svc.register_as("as1", target_uri=TARGET)
    msg = Msg(
        message_id="p1",
        originating_ue_service_id="ue1",
        recipient_as_service_id="as1",
        store_and_forward_flag=True,
    )
    assert (await svc.submit(msg, UE1)).delivery_status == "DELY_ACCEPTED"
    await yields()
    assert as_.attempts == 1  # failed: parked, a retry in 5 s of the clock
    await yields(200)
    assert as_.attempts == 1  # real time does not move it
    await clock.run_for(5)
    assert as_.attempts == 2  # back-off doubles: next in 10 s
    await clock.run_for(9)
    assert as_.attempts == 2
    as_.up = True
    await clock.run_for(1)
    assert as_.attempts == 3
    assert [m.message_id for m in as_.delivered] == ["p1"]
    assert await svc.backend.count() == 0


async def test_reassembly_timeout_report_goes_out_through_the_sweeper(
    parts: tuple[MessagingService, RecordingDeliverer, FlakyAS], clock: ManualClock
) -> None:
    """Segments hand their SEGMENT_MISSING report to the engine's sweeper."""
    svc, deliverer, _ = parts
    await svc.register(reg("ue1"), UE1)
    whole = Msg(
        message_id="big",
        originating_ue_service_id="ue1",
        recipient_ue_service_id="ue2",
        payload=b"z" * 5000,
        delivery_status_required=True,
    )
    first = split(whole, 2048)[0]
    assert (await svc.submit(first, UE1)).delivery_status == "DELY_ACCEPTED"
    await clock.run_for(120)  # gap timer (SEGREC), then the set is given up
    items = deliverer.messages_for(UE1)
    reports = [i for i in items if isinstance(i, Imdn)]
    assert [r.failure_cause for r in reports] == ["SEGMENT_MISSING"]


async def test_a_failing_background_task_is_logged_and_counted(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = BrokenRoutes()
    await backend.start()
    deliverer = RecordingDeliverer()
    svc = MessagingService(backend, deliverer, clock=clock)
    for ue, secret in SECRETS.items():
        await svc.provision(ue, psk_token(secret, ue))
    await svc.start(sweeper=False)
    try:
        await svc.register(reg("ue1"), UE1)
        await svc.register(reg("ue2"), UE2)
        await svc.topics.subscribe("ue2", ["t"], clock.now() + 60)
        deliverer.rejecting.add(UE2)  # 4.xx: the copy fails, a report is due
        with caplog.at_level(logging.ERROR, logger="msgin5g.runtime.supervisor"):
            await svc.submit(
                Msg(
                    message_id="t1",
                    originating_ue_service_id="ue1",
                    messaging_topic="t",
                    payload=b"x",
                    delivery_status_required=True,
                ),
                UE1,
            )
            await yields()
        assert svc.stats()["taskFailures"] == 1  # the report task died: counted
        assert "report routes are broken" in caplog.text  # and logged
        assert svc.stats()["backgroundTasks"] == 0
    finally:
        await svc.aclose()
        await backend.aclose()


async def test_aclose_ends_every_task_of_the_service(
    parts: tuple[MessagingService, RecordingDeliverer, FlakyAS],
) -> None:
    svc, deliverer, _ = parts
    await svc.register(reg("ue1"), UE1)
    await svc.register(reg("ue2"), UE2)
    deliverer.unreachable.add(UE2)
    for i in range(3):
        await svc.submit(
            Msg(
                message_id=f"m{i}",
                originating_ue_service_id="ue1",
                recipient_ue_service_id="ue2",
                store_and_forward_flag=True,
            ),
            UE1,
        )
    assert svc.tasks.running >= 1  # the sweeper, at least
    await svc.aclose()
    assert svc.tasks.running == 0
    assert svc.stats()["taskFailures"] == 0


class BrokenLoad(MemoryBackend):
    """Storage that cannot read a mailbox back."""

    async def pending_for(self, recipient: str, limit: int):  # type: ignore[no-untyped-def]
        raise RuntimeError("test: cannot read the mailbox")


async def test_a_failing_drain_task_is_logged_and_counted(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = BrokenLoad()
    await backend.start()
    svc = MessagingService(backend, RecordingDeliverer(), clock=clock)
    for ue, secret in SECRETS.items():
        await svc.provision(ue, psk_token(secret, ue))
    await svc.start(sweeper=False)
    try:
        await svc.register(reg("ue1"), UE1)
        stored = await svc.submit(
            Msg(
                message_id="s1",
                originating_ue_service_id="ue1",
                recipient_ue_service_id="ue2",
                store_and_forward_flag=True,
            ),
            UE1,
        )
        assert stored.delivery_status == "DELY_STORED"
        with caplog.at_level(logging.ERROR, logger="msgin5g.service.delivery"):
            await svc.register(reg("ue2"), UE2)  # wakes the mailbox: load fails
            await yields()
        assert svc.stats()["taskFailures"] == 1
        assert "cannot read the mailbox" in caplog.text
        assert svc.stats()["backgroundTasks"] == 0
    finally:
        await svc.aclose()
        await backend.aclose()
