"""Peers (MSGin5G-8), NEF reachability/triggering and communication windows.

MessagingService on the memory backend with a manual clock, the recording CoAP
deliverer, and in-memory fakes of the two HTTP ports (peer server, NEF).
"""

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.config_network import NefConfig, PeersConfig, parse_routes
from msgin5g.errors import (
    ConfigError,
    DeliveryRejected,
    RecipientUnreachable,
    UpstreamError,
)
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import (
    ClientPort,
    CommAvailability,
    Imdn,
    Msg,
    Reg,
    TriggeringInfo,
    UECredentialInfo,
)
from msgin5g.model.registry import Contact
from msgin5g.service import MessagingService
from msgin5g.service.nef import (
    LOSS_OF_CONNECTIVITY,
    UE_REACHABILITY,
    MonitoringReport,
    Reachability,
    UeIdentity,
)
from msgin5g.service.peers import Peers, domain_of
from msgin5g.service.schedule import CommSchedule, Window, window_of
from msgin5g.spec.causes import FailureCause
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock, RecordingDeliverer

UE1 = Contact("10.0.0.1", 40001)
UE2 = Contact("10.0.0.2", 40002)
SECRETS = {"ue1": "s1", "ue2": "s2"}


class FakePeer:
    """A peer server: records items; fails while ``down``; refuses with ``refuse``."""

    def __init__(self) -> None:
        self.items: list[tuple[str, Msg | Imdn]] = []
        self.down = False
        self.refuse: FailureCause | None = None

    async def deliver_to_peer(self, api_root: str, item: Msg | Imdn) -> None:
        if self.down:
            raise RecipientUnreachable("peer down")
        if self.refuse is not None:
            raise DeliveryRejected("refused", cause=self.refuse)
        self.items.append((api_root, item))


class FakeNef:
    """A NEF: records requests; ``broken`` makes every request fail."""

    def __init__(self) -> None:
        self.subscriptions: list[tuple[UeIdentity, str]] = []
        self.deleted: list[str] = []
        self.triggers: list[tuple[UeIdentity, int, bytes]] = []
        self.urgent: list[bool] = []
        self.broken = False

    async def subscribe(
        self, ue: UeIdentity, monitoring_type: str, expire: datetime
    ) -> str:
        if self.broken:
            raise UpstreamError("NEF answered 500")
        self.subscriptions.append((ue, monitoring_type))
        return f"http://nef/sub/{len(self.subscriptions)}"

    async def unsubscribe(self, subscription: str) -> None:
        self.deleted.append(subscription)

    async def trigger(
        self, ue: UeIdentity, port: int, payload: bytes, validity: int, urgent: bool
    ) -> str:
        if self.broken:
            raise UpstreamError("NEF answered garbage")
        self.triggers.append((ue, port, payload))
        self.urgent.append(urgent)
        return f"http://nef/tx/{len(self.triggers)}"

    def uri(self, kind: str) -> str:
        index = [k for _, k in self.subscriptions].index(kind)
        return f"http://nef/sub/{index + 1}"


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
    config = DeliveryConfig(default_ttl=3600, as_retry_initial=1.0, as_retry_max=4.0)
    svc = MessagingService(backend, deliverer, config=config, clock=clock)
    for ue, secret in SECRETS.items():
        await svc.provision(ue, psk_token(secret, ue))
    await svc.start(sweeper=False)
    yield svc
    await svc.aclose()
    await backend.aclose()


def reg(ue: str, **kw: object) -> Reg:
    info = UECredentialInfo(
        auth_type="PSK_TOKEN", credential=psk_token(SECRETS[ue], ue)
    )
    return Reg(ue_service_id=ue, ue_credential_info=info, **kw)  # type: ignore[arg-type]


def msg(mid: str, to: str, frm: str = "ue1", **kw: object) -> Msg:
    return Msg(
        message_id=mid,
        originating_ue_service_id=frm,
        recipient_ue_service_id=to,
        payload=b"hello",
        store_and_forward_flag=True,
        **kw,  # type: ignore[arg-type]
    )


def delivered_ids(deliverer: RecordingDeliverer, contact: Contact) -> list[str]:
    return [i.message_id for i in deliverer.messages_for(contact) if isinstance(i, Msg)]


# peers ------------------------------------------------------------------------


def test_domains_and_routes() -> None:
    assert domain_of("bob@B.Example") == "b.example"
    assert domain_of("bob") is None
    assert domain_of("@b.example") is None
    assert parse_routes("b.example=http://b:1, c=https://c/") == {
        "b.example": "http://b:1",
        "c": "https://c",
    }
    for bad in ("b.example", "=http://x", "b=ftp://x", "u@b=http://x"):
        with pytest.raises(ConfigError, match=r"peers\.routes"):
            parse_routes(bad)
    with pytest.raises(ConfigError, match=r"peers\.domain"):
        PeersConfig(routes="b=http://b")
    with pytest.raises(ConfigError, match="own domain"):
        PeersConfig(domain="a", routes="a=http://a")
    peers = Peers(PeersConfig(domain="a.example", routes="b.example=http://b"), None)
    assert peers.is_remote("bob@b.example")
    assert not peers.is_remote("ann@a.example")
    assert peers.unknown_domain("x@c.example") == "c.example"
    assert peers.unknown_domain("ann@a.example") is None
    assert peers.unknown_domain("plain") is None


async def _with_peer(service: MessagingService) -> FakePeer:
    peer = FakePeer()
    service.set_peers(
        Peers(PeersConfig(domain="a.example", routes="b.example=http://b"), peer)
    )
    await service.register(reg("ue1"), UE1)
    return peer


async def test_remote_recipient_goes_to_the_peer(
    service: MessagingService, clock: ManualClock
) -> None:
    peer = await _with_peer(service)
    resp = await service.submit(msg("p1", "bob@b.example"), UE1)
    assert resp.delivery_status == "DELY_ACCEPTED"
    await clock.settle()
    assert [(root, item.message_id) for root, item in peer.items] == [
        ("http://b", "p1")
    ]


async def test_peer_down_keeps_and_retries_with_back_off(
    service: MessagingService, clock: ManualClock
) -> None:
    peer = await _with_peer(service)
    peer.down = True
    await service.submit(msg("p1", "bob@b.example"), UE1)
    await clock.settle()
    resp = await service.submit(msg("p2", "bob@b.example"), UE1)
    assert resp.delivery_status == "DELY_STORED"
    assert await service.backend.count() == 2
    peer.down = False
    await clock.run_for(1.5)
    assert sorted(item.message_id for _, item in peer.items) == ["p1", "p2"]


async def test_peer_refusal_reports_failure(
    service: MessagingService, clock: ManualClock, deliverer: RecordingDeliverer
) -> None:
    peer = await _with_peer(service)
    peer.refuse = FailureCause.RECIPIENT_UNKNOWN
    await service.submit(msg("p1", "bob@b.example", delivery_status_required=True), UE1)
    await clock.settle()
    reports = [i for i in deliverer.items_for(UE1) if isinstance(i, Imdn)]
    assert [(r.message_id, r.failure_cause) for r in reports] == [
        ("p1", "RECIPIENT_UNKNOWN")
    ]


async def test_unknown_domain_and_as_originator(service: MessagingService) -> None:
    await _with_peer(service)
    resp = await service.submit(msg("u1", "carol@nowhere.example"), UE1)
    assert (resp.delivery_status, resp.failure_cause) == (
        "DELY_FAILED",
        "RECIPIENT_UNKNOWN",
    )
    from_as = Msg(
        message_id="a1",
        originating_as_service_id="as1",
        recipient_ue_service_id="bob@b.example",
        payload=b"x",
    )
    resp = await service.router.route(from_as, 0.0)
    assert (resp.delivery_status, resp.failure_cause) == (
        "DELY_REJECTED",
        "NOT_AUTHORIZED",
    )


async def test_report_from_a_peer_ue_reaches_the_originator(
    service: MessagingService, clock: ManualClock, deliverer: RecordingDeliverer
) -> None:
    await _with_peer(service)
    await service.submit(msg("p1", "bob@b.example", delivery_status_required=True), UE1)
    await clock.settle()
    report = Imdn(
        message_id="p1",
        delivery_status="REPT_DELY_SUCCESS",
        originating_ue_service_id="bob@b.example",
        recipient_ue_service_id="ue1",
    )
    await service.report_from_api(report, client=None)
    await clock.settle()
    assert [i.message_id for i in deliverer.items_for(UE1) if isinstance(i, Imdn)] == [
        "p1"
    ]


async def test_message_from_a_peer_ue_is_accepted(
    service: MessagingService, clock: ManualClock, deliverer: RecordingDeliverer
) -> None:
    await _with_peer(service)
    await service.register(reg("ue2"), UE2)
    resp = await service.submit_for_ue(
        msg("r1", "ue2", frm="bob@b.example"), client=None
    )
    assert resp.delivery_status == "DELY_ACCEPTED"
    await clock.settle()
    assert delivered_ids(deliverer, UE2) == ["r1"]


# NEF ---------------------------------------------------------------------------


def _nef(
    service: MessagingService, clock: ManualClock, **kw: object
) -> tuple[FakeNef, Reachability]:
    api = FakeNef()
    nef = Reachability(
        NefConfig(url="http://nef", **kw),  # type: ignore[arg-type]
        api,
        registry=service.registry,
        delivery=service.delivery,
        clock=clock,
        tasks=service.tasks,
    )
    service.set_nef(nef)
    return api, nef


TRIGGERABLE = TriggeringInfo(
    external_id="ue2@ext", client_ports=[ClientPort(port=9999)]
)


async def test_reachability_reports_hold_and_release(
    service: MessagingService, clock: ManualClock, deliverer: RecordingDeliverer
) -> None:
    api, nef = _nef(service, clock)
    await service.register(reg("ue1"), UE1)
    window = CommAvailability(
        scheduled_comm_time=datetime.now(UTC), comm_duration_time=60
    )
    await service.register(
        reg("ue2", triggering_info=TRIGGERABLE, comm_availability=window), UE2
    )
    await clock.settle()
    assert {k for _, k in api.subscriptions} == {UE_REACHABILITY, LOSS_OF_CONNECTIVITY}
    loss = MonitoringReport(LOSS_OF_CONNECTIVITY, external_id="ue2@ext")
    nef.notified(api.uri(LOSS_OF_CONNECTIVITY), [loss], cancelled=False)
    assert service.delivery.is_held("ue2")
    resp = await service.submit(msg("h1", "ue2"), UE1)
    assert resp.delivery_status == "DELY_STORED"
    await clock.settle()
    assert delivered_ids(deliverer, UE2) == []
    nef.notified(
        api.uri(UE_REACHABILITY), [MonitoringReport(UE_REACHABILITY)], cancelled=False
    )
    await clock.settle()
    assert delivered_ids(deliverer, UE2) == ["h1"]


async def test_cancelled_subscription_is_renewed_and_dereg_deletes(
    service: MessagingService, clock: ManualClock
) -> None:
    api, nef = _nef(service, clock)
    window = CommAvailability(
        scheduled_comm_time=datetime.now(UTC), comm_duration_time=60
    )
    await service.register(
        reg("ue2", triggering_info=TRIGGERABLE, comm_availability=window), UE2
    )
    await clock.settle()
    first = api.uri(UE_REACHABILITY)
    nef.notified(first, [], cancelled=True)
    await clock.settle()
    assert not nef.is_subscription(first)
    assert [k for _, k in api.subscriptions] == [
        UE_REACHABILITY,
        LOSS_OF_CONNECTIVITY,
        UE_REACHABILITY,  # only the cancelled kind is asked again
    ]
    service.delivery.on_registered("ue2")  # a refresh: nothing new to ask
    await clock.settle()
    assert len(api.subscriptions) == 3
    await service.delivery.forget("ue2", keep_stored=True)  # what DEREG does
    await clock.settle()
    assert sorted(api.deleted) == ["http://nef/sub/2", "http://nef/sub/3"]


async def test_trigger_for_an_unreachable_ue_at_most_once_per_interval(
    service: MessagingService, clock: ManualClock, deliverer: RecordingDeliverer
) -> None:
    api, nef = _nef(service, clock, trigger_min_interval=600.0)
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2", triggering_info=TRIGGERABLE), UE2)
    deliverer.unreachable.add(UE2)
    await service.submit(msg("t1", "ue2"), UE1)
    await clock.settle()
    await service.submit(msg("t2", "ue2"), UE1)
    await clock.settle()
    assert len(api.triggers) == 1
    ident, port, payload = api.triggers[0]
    assert (ident.external_id, port) == ("ue2@ext", 9999)
    body = json.loads(payload)
    assert body["ueServiceId"] == "ue2" and body["pending"] == 1  # when parked
    nef.trigger_reported("http://nef/tx/1", "FAILURE")
    assert service.delivery.is_held("ue2")
    clock.advance(601)
    await service.submit(msg("t3", "ue2"), UE1)
    await clock.settle()
    assert len(api.triggers) == 2


async def test_no_trigger_without_triggering_info_and_broken_nef_is_harmless(
    service: MessagingService, clock: ManualClock, deliverer: RecordingDeliverer
) -> None:
    api, nef = _nef(service, clock)
    await service.register(reg("ue1"), UE1)
    await service.register(reg("ue2"), UE2)
    deliverer.unreachable.add(UE2)
    await service.submit(msg("n1", "ue2"), UE1)
    await clock.settle()
    assert api.triggers == [] and api.subscriptions == []
    api.broken = True
    await service.register(reg("ue2", triggering_info=TRIGGERABLE), UE2)
    await service.submit(msg("n2", "ue2"), UE1)
    await clock.settle()
    assert nef.nef_failures >= 1
    assert service.stats()["taskFailures"] == 0
    deliverer.unreachable.discard(UE2)
    await service.register(reg("ue2"), UE2)
    await clock.settle()
    assert delivered_ids(deliverer, UE2) == ["n1", "n2"]


# communication windows -----------------------------------------------------------


def test_window_states() -> None:
    once = Window(start=100.0, duration=10.0)
    assert once.state(90.0) == (False, 10.0)
    assert once.state(105.0) == (True, 5.0)
    assert once.state(111.0) == (False, None)
    periodic = Window(start=100.0, duration=10.0, period=60.0)
    assert periodic.state(165.0) == (True, 5.0)
    assert periodic.state(175.0) == (False, 45.0)


def test_window_of_reads_only_profiles_with_a_window() -> None:
    assert window_of("{}") is None
    assert window_of('{"ue_location":{"cell_id":"c1"}}') is None
    profile = (
        '{"comm_availability":{"scheduledCommTime":"2026-12-05T10:00:00+00:00",'
        '"commDurationTime":10,"periodicCommIndicator":true,"periodicCommInterval":60}}'
    )
    window = window_of(profile)
    assert window is not None
    assert (window.duration, window.period) == (10.0, 60.0)


async def test_delivery_waits_for_the_window(
    service: MessagingService, clock: ManualClock, deliverer: RecordingDeliverer
) -> None:
    service.delivery.watch(CommSchedule(service.registry, service.delivery, clock))
    await service.register(reg("ue1"), UE1)
    start = datetime.fromtimestamp(clock.now() + 100, tz=UTC)
    window = CommAvailability(
        scheduled_comm_time=start,
        comm_duration_time=10,
        periodic_comm_indicator=True,
        periodic_comm_interval=60,
    )
    await service.register(reg("ue2", comm_availability=window), UE2)
    resp = await service.submit(msg("w1", "ue2"), UE1)
    assert resp.delivery_status == "DELY_STORED"
    await clock.run_for(99)
    assert delivered_ids(deliverer, UE2) == []
    await clock.run_for(2)  # window opens at +100
    assert delivered_ids(deliverer, UE2) == ["w1"]
    await clock.run_for(10)  # closed again at +110
    resp = await service.submit(msg("w2", "ue2"), UE1)
    assert resp.delivery_status == "DELY_STORED"
    await clock.run_for(50)  # next window at +160
    assert delivered_ids(deliverer, UE2) == ["w1", "w2"]


async def test_trigger_waits_for_the_window_unless_high_priority(
    service: MessagingService, clock: ManualClock, deliverer: RecordingDeliverer
) -> None:
    api, _ = _nef(service, clock)
    await service.register(reg("ue1"), UE1)
    later = CommAvailability(
        scheduled_comm_time=datetime.fromtimestamp(clock.now() + 3600, tz=UTC),
        comm_duration_time=60,
    )
    await service.register(
        reg("ue2", triggering_info=TRIGGERABLE, comm_availability=later), UE2
    )
    deliverer.unreachable.add(UE2)
    await service.submit(msg("l1", "ue2", priority_type="LOW"), UE1)
    await clock.settle()
    assert api.urgent == []  # its window (in an hour) will do
    await service.submit(msg("h1", "ue2", priority_type="HIGH"), UE1)
    await clock.settle()
    assert api.urgent == [True]
