"""Fan-out (service.fanout) on the memory backend: one write, per-member outcome."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Imdn, Msg, Reg, UECredentialInfo
from msgin5g.model.registry import Contact
from msgin5g.service import MessagingService
from msgin5g.service.fanout import admission_failure
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock, RecordingDeliverer

PUB = Contact("10.0.0.1", 1)
SUB = Contact("10.0.0.2", 2)
SECRETS = {"pub": "s0", "sub": "s1", "sleepy": "s2", "gone": "s3"}


class CountingBackend(MemoryBackend):
    def __init__(self) -> None:
        super().__init__()
        self.fanouts: list[int] = []
        self.single = 0

    def enqueue_fanout(self, template, items, routes, *dedup):  # type: ignore[no-untyped-def]
        self.fanouts.append(len(items))
        return super().enqueue_fanout(template, items, routes, *dedup)

    async def enqueue(self, item):  # type: ignore[no-untyped-def]
        self.single += 1
        return await super().enqueue(item)

    async def enqueue_once(self, item, *dedup):  # type: ignore[no-untyped-def]
        self.single += 1
        return await super().enqueue_once(item, *dedup)


@pytest.fixture
async def env() -> AsyncIterator[tuple[MessagingService, RecordingDeliverer]]:
    backend = CountingBackend()
    deliverer = RecordingDeliverer()
    svc = MessagingService(
        backend, deliverer, config=DeliveryConfig(), clock=ManualClock()
    )
    for ue, secret in SECRETS.items():
        await svc.provision(ue, psk_token(secret, ue))
    await svc.start(sweeper=False)
    yield svc, deliverer
    await svc.aclose()


def reg(ue: str) -> Reg:
    info = UECredentialInfo(
        auth_type="PSK_TOKEN", credential=psk_token(SECRETS[ue], ue)
    )
    return Reg(ue_service_id=ue, ue_credential_info=info)


async def settle(deliverer: RecordingDeliverer, contact: Contact, count: int) -> None:
    for _ in range(500):
        if len(deliverer.messages_for(contact)) >= count:
            return
        await asyncio.sleep(0)


async def run_ready_tasks(rounds: int = 50) -> None:
    """Let the delivery tasks run (the memory backend never waits for I/O)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def test_one_write_per_fanout_and_reports_for_failed_members(
    env: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = env
    backend = svc.backend
    assert isinstance(backend, CountingBackend)
    await svc.register(reg("pub"), PUB)
    await svc.register(reg("sub"), SUB)
    for ue in ("sub", "sleepy", "gone", "pub", "stranger"):
        await svc.topics.subscribe(ue, ["t"], svc.clock.now() + 60)
    msg = Msg(
        message_id="p1",
        originating_ue_service_id="pub",
        messaging_topic="t",
        payload=b"data",
        delivery_status_required=True,
    )
    resp = await svc.submit(msg, PUB)
    assert resp.delivery_status == "DELY_ACCEPTED"
    assert backend.fanouts == [1]  # only "sub" could be accepted, in one write
    await settle(deliverer, SUB, 1)
    (copy,) = deliverer.messages_for(SUB)
    assert isinstance(copy, Msg)
    assert (copy.recipient_ue_service_id, copy.messaging_topic) == ("sub", "t")
    await settle(deliverer, PUB, 3)
    reports = {
        (r.originator, r.failure_cause)
        for r in deliverer.messages_for(PUB)
        if isinstance(r, Imdn)
    }
    assert reports == {
        ("sleepy", FailureCause.RECIPIENT_NOT_REGISTERED.value),
        ("gone", FailureCause.RECIPIENT_NOT_REGISTERED.value),
        ("stranger", FailureCause.RECIPIENT_UNKNOWN.value),
    }


async def test_stored_copies_reach_members_when_they_register(
    env: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = env
    await svc.register(reg("pub"), PUB)
    for ue in ("sub", "sleepy"):
        await svc.topics.subscribe(ue, ["t"], svc.clock.now() + 60)
    msg = Msg(
        message_id="p2",
        originating_ue_service_id="pub",
        messaging_topic="t",
        payload=b"later",
        store_and_forward_flag=True,
    )
    await svc.submit(msg, PUB)
    assert await svc.backend.count() == 2
    sleepy = Contact("10.0.0.3", 3)
    await svc.register(reg("sleepy"), sleepy)
    await settle(deliverer, sleepy, 1)
    (copy,) = deliverer.messages_for(sleepy)
    assert isinstance(copy, Msg) and copy.payload == b"later"
    assert copy.recipient_ue_service_id == "sleepy"


@pytest.mark.parametrize(
    ("online", "refuses", "registered", "flag", "cause"),
    [
        (True, False, True, False, None),
        (False, False, True, True, None),
        (False, True, True, True, FailureCause.STORE_AND_FORWARD_NOT_ALLOWED),
        (False, False, False, False, FailureCause.RECIPIENT_NOT_REGISTERED),
        (False, False, True, False, FailureCause.RECIPIENT_NOT_REACHABLE),
    ],
)
def test_admission_rules(
    online: bool,
    refuses: bool,
    registered: bool,
    flag: bool,
    cause: FailureCause | None,
) -> None:
    msg = Msg(message_id="m", payload=b"", store_and_forward_flag=flag)
    assert (
        admission_failure(msg, online=online, refuses=refuses, registered=registered)
        == cause
    )


async def test_member_reports_reach_the_originator_aggregated(
    env: tuple[MessagingService, RecordingDeliverer],
) -> None:
    from msgin5g.model.messages import AggImdn
    from msgin5g.service.groups import Group

    svc, deliverer = env
    members = [f"m{i}" for i in range(8)]
    contacts = {m: Contact("10.0.1.1", 100 + i) for i, m in enumerate(members)}
    for member in members:
        await svc.provision(member, psk_token("pw", member))
        info = UECredentialInfo(
            auth_type="PSK_TOKEN", credential=psk_token("pw", member)
        )
        await svc.register(
            Reg(ue_service_id=member, ue_credential_info=info), contacts[member]
        )
    await svc.register(reg("pub"), PUB)
    await svc.groups.put(Group("crew", ["pub", *members]))
    msg = Msg(
        message_id="g1",
        originating_ue_service_id="pub",
        recipient_group_service_id="crew",
        payload=b"muster",
        delivery_status_required=True,
    )
    deliverer.unreachable.add(PUB)  # the originator sleeps while reports come in
    assert (await svc.submit(msg, PUB)).delivery_status == "DELY_ACCEPTED"
    for member in members:
        await settle(deliverer, contacts[member], 1)
        report = Imdn(
            message_id="g1",
            delivery_status="REPT_DELY_SUCCESS",
            originating_ue_service_id=member,
            recipient_ue_service_id="pub",
        )
        await svc.report(report, contacts[member])
    await run_ready_tasks()
    deliverer.unreachable.discard(PUB)
    svc.delivery.on_uplink("pub")  # it wakes up: the stored reports go out together
    await settle(deliverer, PUB, len(members))
    items = deliverer.items_for(PUB)
    assert any(isinstance(item, AggImdn) for item in items)
    assert len(items) < len(members)
    reporters = sorted(r.originator for r in deliverer.messages_for(PUB))
    assert reporters == sorted(members)


async def test_burst_copies_leave_storage_once_acknowledged(
    env: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = env
    await svc.register(reg("pub"), PUB)
    await svc.register(reg("sub"), SUB)
    await svc.topics.subscribe("sub", ["t"], svc.clock.now() + 60)
    msg = Msg(message_id="b1", originating_ue_service_id="pub", messaging_topic="t")
    await svc.submit(msg, PUB)
    await settle(deliverer, SUB, 1)
    await run_ready_tasks()
    assert await svc.backend.count() == 0
    assert svc.delivery.delivered == 1
    assert svc.delivery.pending_in_memory() == 0


async def test_burst_failures_fall_back_to_the_mailbox_path(
    env: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = env
    sleepy = Contact("10.0.0.3", 3)
    gone = Contact("10.0.0.4", 4)
    await svc.register(reg("pub"), PUB)
    await svc.register(reg("sleepy"), sleepy)
    await svc.register(reg("gone"), gone)
    for ue in ("sleepy", "gone"):
        await svc.topics.subscribe(ue, ["t"], svc.clock.now() + 60)
    deliverer.unreachable.add(sleepy)  # no answer: stored, parked
    deliverer.rejecting.add(gone)  # 4.xx: futile, reported
    msg = Msg(
        message_id="b2",
        originating_ue_service_id="pub",
        messaging_topic="t",
        payload=b"x",
        store_and_forward_flag=True,
        delivery_status_required=True,
    )
    await svc.submit(msg, PUB)
    await settle(deliverer, PUB, 1)
    (report,) = [r for r in deliverer.messages_for(PUB) if isinstance(r, Imdn)]
    assert (report.originator, report.delivery_status) == ("gone", "REPT_DELY_FAILED")
    await run_ready_tasks()  # the sleepy member's retry fails and parks
    assert svc.delivery.is_unreachable("sleepy")
    assert await svc.backend.count() == 1  # kept for the sleepy member
    deliverer.unreachable.discard(sleepy)
    svc.delivery.on_uplink("sleepy")
    await settle(deliverer, sleepy, 1)
    (copy,) = deliverer.messages_for(sleepy)
    assert isinstance(copy, Msg) and copy.message_id == "b2"


async def test_no_burst_past_older_stored_items(
    env: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = env
    await svc.register(reg("pub"), PUB)
    await svc.topics.subscribe("sleepy", ["t"], svc.clock.now() + 60)
    older = Msg(
        message_id="old",
        originating_ue_service_id="pub",
        recipient_ue_service_id="sleepy",
        payload=b"1",
        store_and_forward_flag=True,
    )
    await svc.submit(older, PUB)  # stored: sleepy is not registered
    sleepy = Contact("10.0.0.3", 3)
    deliverer.unreachable.add(sleepy)
    await svc.register(reg("sleepy"), sleepy)
    await run_ready_tasks()  # its queue is tried, fails, is parked
    newer = Msg(
        message_id="new",
        originating_ue_service_id="pub",
        messaging_topic="t",
        payload=b"2",
        store_and_forward_flag=True,
    )
    await svc.submit(newer, PUB)
    deliverer.unreachable.discard(sleepy)
    svc.delivery.on_uplink("sleepy")
    await settle(deliverer, sleepy, 2)
    assert [m.message_id for m in deliverer.messages_for(sleepy)] == ["old", "new"]


async def test_topic_requests_from_an_unregistered_source_fail_per_topic(
    env: tuple[MessagingService, RecordingDeliverer],
) -> None:
    from msgin5g.model.messages import TopicSub, TopicUnsub

    svc, _ = env
    sub = await svc.subscribe(
        TopicSub(originating_ue_service_id="sub", messaging_topics=["a", "b"]), SUB
    )
    assert [
        (r.messaging_topic, r.result, r.failure_cause) for r in sub.topic_results
    ] == [
        ("a", "FAILURE", "NOT_REGISTERED"),
        ("b", "FAILURE", "NOT_REGISTERED"),
    ]
    await svc.register(reg("sub"), SUB)
    unsub = await svc.unsubscribe(
        TopicUnsub(originating_ue_service_id="sub", messaging_topics=["a"]), PUB
    )
    assert [(r.result, r.failure_cause) for r in unsub.topic_results] == [
        ("FAILURE", "NOT_AUTHORIZED")
    ]
    assert svc.topics.subscribers("a") == []
