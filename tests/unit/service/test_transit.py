"""The transit path (service/transit.py): delivered first, written only if slow.

Unit tests on the memory backend with a manual clock and a deliverer whose
deliveries wait until the test settles them, so every race of the path (the
recipient's ACK, the end of the hold, a failure, a resend) is taken in a chosen
order. The answer to the sender is what the service returns from ``submit``.
"""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.errors import ConfigError, DeliveryRejected, RecipientUnreachable
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg, MsgResp, Reg, UECredentialInfo
from msgin5g.model.registry import Contact
from msgin5g.service.messaging import MessagingService
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock

UE1 = Contact("10.0.0.1", 40001)
UE2 = Contact("10.0.0.2", 40002)
SECRETS = {"ue1": "s1", "ue2": "s2"}
HOLD = 0.2


class Gates:
    """A deliverer whose every delivery waits for the test (``deliver_nowait``)."""

    def __init__(self) -> None:
        self.gates: list[tuple[Contact, object, asyncio.Future[None]]] = []

    def deliver_nowait(self, contact: Contact, item: object) -> asyncio.Future[None]:
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates.append((contact, item, gate))
        return gate

    async def deliver(self, contact: Contact, item: object) -> None:
        await self.deliver_nowait(contact, item)

    def abandon(self, contact: Contact) -> None:
        pass

    def ids(self) -> list[str]:
        out = []
        for _, item, _ in self.gates:
            messages = getattr(item, "messages", None) or [item]
            out += [m.message_id for m in messages]
        return out


class CountingBackend(MemoryBackend):
    """The memory backend, counting the writes the transit path must avoid."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    async def enqueue_once(self, *args: object, **kw: object) -> object:  # type: ignore[override]
        self.writes += 1
        return await super().enqueue_once(*args, **kw)  # type: ignore[arg-type]


@asynccontextmanager
async def service(
    clock: ManualClock, hold: float = HOLD
) -> AsyncIterator[tuple[MessagingService, CountingBackend, Gates]]:
    backend = CountingBackend()
    await backend.start()
    gates = Gates()
    svc = MessagingService(
        backend,
        gates,  # type: ignore[arg-type]
        config=DeliveryConfig(default_ttl=3600, transit_hold=hold),
        clock=clock,
    )
    for ue, secret in SECRETS.items():
        await svc.provision(ue, psk_token(secret, ue))
    await svc.start(sweeper=False)
    info = {
        ue: UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token(s, ue))
        for ue, s in SECRETS.items()
    }
    await svc.register(Reg(ue_service_id="ue1", ue_credential_info=info["ue1"]), UE1)
    await svc.register(Reg(ue_service_id="ue2", ue_credential_info=info["ue2"]), UE2)
    try:
        yield svc, backend, gates
    finally:
        await svc.aclose()
        await backend.aclose()


def msg(mid: str, **kw: object) -> Msg:
    return Msg(
        message_id=mid,
        originating_ue_service_id="ue1",
        recipient_ue_service_id="ue2",
        payload=b"hello",
        **kw,  # type: ignore[arg-type]
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def submit(svc: MessagingService, m: Msg) -> asyncio.Task[MsgResp]:
    return asyncio.create_task(svc.submit(m, UE1))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_delivered_before_the_hold_ends_is_never_written(
    clock: ManualClock,
) -> None:
    async with service(clock) as (svc, backend, gates):
        answer = submit(svc, msg("m1"))
        await settle()
        # delivery started at once; the sender waits for it (nothing durable yet)
        assert gates.ids() == ["m1"]
        assert not answer.done()
        assert backend.writes == 0
        assert svc.quotas.total_items() == 1
        gates.gates[0][2].set_result(None)
        await settle()
        assert answer.result().delivery_status == "DELY_ACCEPTED"
        clock.advance(HOLD * 2)
        await settle()
        assert backend.writes == 0 and await backend.count() == 0
        transit = svc.delivery.transit
        assert transit is not None
        assert (transit.unwritten, transit.written, len(transit)) == (1, 0, 0)
        assert svc.delivery.delivered == 1
        assert svc.quotas.total_items() == 0


async def test_a_slow_delivery_is_written_when_the_hold_ends(
    clock: ManualClock,
) -> None:
    async with service(clock) as (svc, backend, gates):
        answer = submit(svc, msg("m1"))
        await settle()
        clock.advance(HOLD / 2)
        await settle()
        assert not answer.done() and backend.writes == 0
        clock.advance(HOLD)
        await settle()
        # durable now: the sender has its answer before the recipient's ACK
        assert answer.result().delivery_status == "DELY_ACCEPTED"
        assert backend.writes == 1 and await backend.count() == 1
        gates.gates[0][2].set_result(None)
        await settle()
        assert await backend.count() == 0  # removed once delivered
        assert svc.delivery.delivered == 1
        assert len(gates.gates) == 1  # delivered once
        assert svc.quotas.total_items() == 0


async def test_an_unreachable_recipient_gets_the_write_and_the_mailbox(
    clock: ManualClock,
) -> None:
    async with service(clock) as (svc, backend, gates):
        answer = submit(svc, msg("m1", store_and_forward_flag=False))
        await settle()
        gates.gates[0][2].set_exception(RecipientUnreachable("no ACK"))
        await settle()
        # written first, answered after the commit, then the mailbox path
        assert backend.writes == 1
        assert answer.result().delivery_status == "DELY_ACCEPTED"
        # the mailbox tries once more (as after any lone delivery), then parks
        assert gates.ids() == ["m1", "m1"]
        gates.gates[1][2].set_exception(RecipientUnreachable("no ACK"))
        await settle()
        assert svc.delivery.is_unreachable("ue2")
        transit = svc.delivery.transit
        assert transit is not None and transit.written == 1


async def test_a_refusal_while_held_answers_and_writes_nothing(
    clock: ManualClock,
) -> None:
    async with service(clock) as (svc, backend, gates):
        answer = submit(svc, msg("m1"))
        await settle()
        gates.gates[0][2].set_exception(DeliveryRejected("4.00"))
        await settle()
        assert answer.result().delivery_status == "DELY_ACCEPTED"
        assert backend.writes == 0 and await backend.count() == 0
        assert svc.delivery.failed == 1
        assert svc.quotas.total_items() == 0


@pytest.mark.parametrize(
    "kw",
    [{"store_and_forward_flag": True}, {"delivery_status_required": True}],
    ids=["asks for storage", "asks for a report"],
)
async def test_storage_or_a_report_takes_the_written_path(
    clock: ManualClock, kw: dict[str, object]
) -> None:
    async with service(clock) as (svc, backend, gates):
        answer = submit(svc, msg("m1", **kw))
        await settle()
        # answered once durable, whether or not the recipient acknowledged
        assert answer.result().delivery_status == "DELY_ACCEPTED"
        assert backend.writes == 1 and await backend.count() == 1
        assert gates.ids() == ["m1"]
        gates.gates[0][2].set_result(None)
        await settle()
        assert await backend.count() == 0


async def test_a_second_message_while_one_is_in_transit_is_written_first(
    clock: ManualClock,
) -> None:
    async with service(clock) as (svc, backend, gates):
        first = submit(svc, msg("m1"))
        await settle()
        second = submit(svc, msg("m2"))
        await settle()
        assert second.done() and backend.writes == 1  # the ordinary path
        assert not first.done()
        gates.gates[0][2].set_result(None)
        await settle()
        assert first.done()
        assert backend.writes == 1


async def test_a_resend_during_transit_gets_the_same_answer_and_one_delivery(
    clock: ManualClock,
) -> None:
    async with service(clock) as (svc, backend, gates):
        first = submit(svc, msg("m1"))
        await settle()
        again = submit(svc, msg("m1"))
        await settle()
        assert not again.done()  # waits for the first one's answer
        gates.gates[0][2].set_result(None)
        await settle()
        assert again.result() == first.result()
        assert gates.ids() == ["m1"]
        assert backend.writes == 0


async def test_hold_zero_writes_every_message_before_delivery(
    clock: ManualClock,
) -> None:
    async with service(clock, hold=0) as (svc, backend, _gates):
        assert svc.delivery.transit is None
        answer = submit(svc, msg("m1"))
        await settle()
        assert answer.done() and backend.writes == 1


def test_transit_hold_is_bounded() -> None:
    with pytest.raises(ConfigError, match="transit_hold"):
        DeliveryConfig(transit_hold=-1)
    with pytest.raises(ConfigError, match="transit_hold"):
        DeliveryConfig(transit_hold=11)
