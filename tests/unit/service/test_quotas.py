"""Storage quotas and submission rate ([limits]) in the messaging service.

Attack shape of issue 10 item 10, scaled down: one UE floods an offline UE with
stored messages; beyond the quota it is refused with SERVER_CONGESTION while
other UEs are still served.
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from msgin5g.config import DeliveryConfig, LimitsConfig, load_config
from msgin5g.errors import ConfigError
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Imdn, Msg, Reg, UECredentialInfo
from msgin5g.model.registry import Contact
from msgin5g.service import MessagingService
from msgin5g.service.groups import Group
from msgin5g.service.quotas import Quotas
from msgin5g.storage import Backend, open_backend
from msgin5g.storage.base import ITEM_OVERHEAD
from msgin5g.testing import ManualClock, RecordingDeliverer

UES = ["ue1", "ue2", "ue3", "ue4"]
CONTACTS = {ue: Contact("10.0.0.1", 40000 + i) for i, ue in enumerate(UES)}

Factory = Callable[..., Awaitable[MessagingService]]


def msg(mid: str, *, frm: str = "ue1", to: str = "ue2", size: int = 10) -> Msg:
    return Msg(
        message_id=mid,
        originating_ue_service_id=frm,
        recipient_ue_service_id=to,
        payload=b"x" * size,
        store_and_forward_flag=True,
    )


async def register(svc: MessagingService, ue: str) -> None:
    info = UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token("pw", ue))
    outcome = await svc.register(
        Reg(ue_service_id=ue, ue_credential_info=info), CONTACTS[ue]
    )
    assert outcome.response.registration_result == "SUCCESS"


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Factory]:
    """Services on one SQLite file (a new call is a restart)."""
    opened: list[tuple[MessagingService, Backend]] = []
    clock = ManualClock()

    async def factory(
        deliverer: RecordingDeliverer | None = None, **limits: object
    ) -> MessagingService:
        for svc, backend in opened:
            await svc.aclose()
            await backend.aclose()
        opened.clear()
        backend = open_backend(f"sqlite:///{tmp_path / 'store.db'}")
        await backend.start()
        svc = MessagingService(
            backend,
            deliverer or RecordingDeliverer(),
            config=DeliveryConfig(),
            clock=clock,
            limits=LimitsConfig(**limits),  # type: ignore[arg-type]
        )
        for ue in UES:
            await svc.provision(ue, psk_token("pw", ue))
        await svc.start(sweeper=False)
        for ue in ("ue1", "ue3"):  # ue2 and ue4 stay offline
            await register(svc, ue)
        opened.append((svc, backend))
        return svc

    yield factory
    for svc, backend in opened:
        await svc.aclose()
        await backend.aclose()


async def test_flood_of_an_offline_ue_stops_at_its_quota(make: Factory) -> None:
    svc = await make(stored_per_recipient=50, submit_rate=0)
    answers = [await svc.submit(msg(f"m{i}"), CONTACTS["ue1"]) for i in range(80)]
    assert [a.delivery_status for a in answers[:50]] == ["DELY_STORED"] * 50
    refused = answers[50:]
    assert {(a.delivery_status, a.failure_cause) for a in refused} == {
        ("DELY_FAILED", "SERVER_CONGESTION")
    }
    assert await svc.backend.count() == 50
    # a third UE still stores for a fourth
    other = await svc.submit(msg("o1", frm="ue3", to="ue4"), CONTACTS["ue3"])
    assert other.delivery_status == "DELY_STORED"
    # a refused message is not remembered as refused: it is retried later
    assert svc.quotas.usage("ue2") == (50, 50 * (ITEM_OVERHEAD + 10))


async def test_quota_frees_up_when_the_recipient_takes_its_messages(
    make: Factory,
) -> None:
    deliverer = RecordingDeliverer()
    svc = await make(deliverer, stored_per_recipient=5, submit_rate=0)
    for i in range(5):
        await svc.submit(msg(f"m{i}"), CONTACTS["ue1"])
    full = await svc.submit(msg("m5"), CONTACTS["ue1"])
    assert full.failure_cause == "SERVER_CONGESTION"
    await register(svc, "ue2")
    for _ in range(200):
        if svc.quotas.usage("ue2") == (0, 0):
            break
        await asyncio.sleep(0.01)
    assert svc.quotas.usage("ue2") == (0, 0)
    again = await svc.submit(msg("m5"), CONTACTS["ue1"])  # same messageId, retried
    assert again.delivery_status == "DELY_ACCEPTED"


async def test_bytes_per_recipient_and_total(make: Factory) -> None:
    per_item = ITEM_OVERHEAD + 1000
    svc = await make(
        stored_bytes_per_recipient=3 * per_item,
        stored_bytes_total=5 * per_item,
        submit_rate=0,
    )
    to_ue2 = [
        await svc.submit(msg(f"a{i}", size=1000), CONTACTS["ue1"]) for i in range(4)
    ]
    assert [a.failure_cause for a in to_ue2] == [None, None, None, "SERVER_CONGESTION"]
    to_ue4 = [
        await svc.submit(msg(f"b{i}", frm="ue3", to="ue4", size=1000), CONTACTS["ue3"])
        for i in range(3)
    ]
    assert [a.failure_cause for a in to_ue4] == [None, None, "SERVER_CONGESTION"]
    assert svc.quotas.total_bytes == 5 * per_item


async def test_usage_is_loaded_from_storage_at_start(make: Factory) -> None:
    svc = await make(stored_per_recipient=3, submit_rate=0)
    for i in range(3):
        await svc.submit(msg(f"m{i}"), CONTACTS["ue1"])
    svc = await make(stored_per_recipient=3, submit_rate=0)  # restart
    assert svc.quotas.usage("ue2") == (3, 3 * (ITEM_OVERHEAD + 10))
    refused = await svc.submit(msg("m3"), CONTACTS["ue1"])
    assert refused.failure_cause == "SERVER_CONGESTION"


async def test_fanout_member_over_quota_fails_alone(make: Factory) -> None:
    svc = await make(stored_per_recipient=2, submit_rate=0)
    for i in range(2):
        await svc.submit(msg(f"m{i}"), CONTACTS["ue1"])  # ue2 is full
    await svc.groups.put(Group("crew", ["ue1", "ue2", "ue4"]))
    group_msg = Msg(
        message_id="g1",
        originating_ue_service_id="ue1",
        recipient_group_service_id="crew",
        payload=b"muster",
        store_and_forward_flag=True,
        delivery_status_required=True,
    )
    answer = await svc.submit(group_msg, CONTACTS["ue1"])
    assert answer.delivery_status == "DELY_ACCEPTED"
    assert svc.quotas.usage("ue4")[0] == 1
    assert svc.quotas.usage("ue2")[0] == 2
    reports = [
        i.item
        for i in await svc.backend.pending_for("ue1", limit=100)
        if isinstance(i.item, Imdn)
    ]
    assert [(r.originating_ue_service_id, r.failure_cause) for r in reports] == [
        ("ue2", "SERVER_CONGESTION")
    ]


async def test_submission_rate_per_originator(make: Factory) -> None:
    svc = await make(submit_rate=10, submit_burst=5)
    clock = svc.clock
    assert isinstance(clock, ManualClock)
    answers = [await svc.submit(msg(f"m{i}"), CONTACTS["ue1"]) for i in range(8)]
    assert [a.failure_cause for a in answers] == [None] * 5 + ["SERVER_CONGESTION"] * 3
    assert {a.delivery_status for a in answers[5:]} == {"DELY_REJECTED"}
    served = await svc.submit(msg("o1", frm="ue3", to="ue4"), CONTACTS["ue3"])
    assert served.delivery_status == "DELY_STORED"  # another originator is served
    clock.advance(0.15)  # one token back (1.5 at 10/s)
    retried = await svc.submit(msg("m5"), CONTACTS["ue1"])  # same ID, now served
    assert retried.delivery_status == "DELY_STORED"
    assert (await svc.submit(msg("m6"), CONTACTS["ue1"])).failure_cause == (
        "SERVER_CONGESTION"
    )
    assert await svc.backend.count() == 7


def test_token_buckets_of_idle_originators_are_pruned() -> None:
    quotas = Quotas(LimitsConfig(submit_rate=100, submit_burst=10))
    for i in range(25_000):
        assert quotas.take_token(f"ue-{i}", float(i))  # each idle long enough
    assert len(quotas._buckets) <= 20_000


def test_limits_config() -> None:
    config = load_config(
        None, {"MSGIN5G_LIMITS_SUBMIT_RATE": "50"}, {"limits.stored_per_recipient": "7"}
    )
    assert config.limits.submit_rate == 50.0
    assert config.limits.stored_per_recipient == 7
    assert config.limits.stored_bytes_total == 2 * 1024**3
    with pytest.raises(ConfigError, match=r"limits\.stored_per_recipient"):
        LimitsConfig(stored_per_recipient=-1)
    with pytest.raises(ConfigError, match=r"limits\.submit_burst"):
        LimitsConfig(submit_burst=0)
    with pytest.raises(ConfigError, match="dedup_max_bytes"):
        DeliveryConfig(dedup_max_bytes=10)


@pytest.mark.parametrize("status", ["DELY_FAILED", "DELY_REJECTED"])
def test_rest_answers_429_with_retry_after(status: str) -> None:
    """The TS 29.538 APIs answer a quota or rate refusal with 429 (not 403/400)."""
    from msgin5g.codec.openapi_json import Address
    from msgin5g.model.messages import MsgResp
    from msgin5g.transports.rest.problems import ack_or_problem, no_content_or_problem

    resp = MsgResp(
        message_id="m1",
        originating_as_service_id="app",
        delivery_status=status,  # type: ignore[arg-type]
        failure_cause="SERVER_CONGESTION",
    )
    for answer in (
        ack_or_problem(resp, Address(addr_type="AS", addr="app")),
        no_content_or_problem(resp),
    ):
        assert answer.status_code == 429
        assert answer.headers["Retry-After"] == "1"
        assert b'"cause":"SERVER_CONGESTION"' in answer.body


def test_application_servers_are_limited_by_the_rest_layer_not_here() -> None:
    quotas = Quotas(LimitsConfig(submit_rate=1, submit_burst=1))
    assert all(quotas.take_token("as/fleet-manager", 0.0) for _ in range(100))
    assert quotas.take_token("ue1", 0.0)
    assert not quotas.take_token("ue1", 0.0)
