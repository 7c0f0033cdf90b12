"""Bulk registration and de-registration through a Gateway UE (digest §3.4, §3.5)."""

import asyncio
from collections.abc import AsyncIterator

import pytest

from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import (
    BulkDereg,
    BulkReg,
    Dereg,
    Msg,
    Reg,
    UECredentialInfo,
)
from msgin5g.model.registry import Contact
from msgin5g.service import MessagingService
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock, RecordingDeliverer

GW = Contact("10.0.0.9", 5683)
UE1 = Contact("10.0.0.1", 40001)


def cred(ue: str, secret: str | None = None) -> UECredentialInfo:
    return UECredentialInfo(
        auth_type="PSK_TOKEN", credential=psk_token(secret or f"s-{ue}", ue)
    )


@pytest.fixture
async def service() -> AsyncIterator[tuple[MessagingService, RecordingDeliverer]]:
    backend = MemoryBackend()
    await backend.start()
    deliverer = RecordingDeliverer()
    svc = MessagingService(backend, deliverer, clock=ManualClock())
    for ue in ("gw", "ue1", "c1", "c2", "c3"):
        await svc.provision(ue, psk_token(f"s-{ue}", ue))
    await svc.start(sweeper=False)
    await svc.register(Reg(ue_service_id="gw", ue_credential_info=cred("gw")), GW)
    await svc.register(Reg(ue_service_id="ue1", ue_credential_info=cred("ue1")), UE1)
    yield svc, deliverer
    await svc.aclose()
    await backend.aclose()


def bulk(*entries: Reg, gateway_secret: str | None = None) -> BulkReg:
    return BulkReg(
        ue_service_id="gw",
        ue_credential_info=cred("gw", gateway_secret),
        num_of_reg_requests=len(entries),
        reg_requests=list(entries),
    )


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_bulk_register_per_entry_results_in_order(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, _ = service
    resp, created = await svc.bulk_register(
        bulk(
            Reg(ue_service_id="c1", ue_credential_info=cred("c1")),
            Reg(ue_service_id="c2", ue_credential_info=cred("c2", "wrong")),
            Reg(ue_service_id="nobody", ue_credential_info=cred("nobody")),
            Reg(ue_service_id="c3", ue_credential_info=cred("c3")),
        ),
        GW,
    )
    assert created
    assert resp.num_of_reg_responses == 4
    assert [
        (r.ue_service_id, r.registration_result, r.failure_cause)
        for r in resp.reg_responses
    ] == [
        ("c1", "SUCCESS", None),
        ("c2", "FAILURE", "AUTHENTICATION_FAILED"),
        ("nobody", "FAILURE", "AUTHENTICATION_FAILED"),
        ("c3", "SUCCESS", None),
    ]
    registration = svc.registry.get("c1")
    assert registration is not None and registration.gateway == "gw"
    again, created_again = await svc.bulk_register(
        bulk(Reg(ue_service_id="c1", ue_credential_info=cred("c1"))), GW
    )
    assert not created_again and again.reg_responses[0].registration_result == "SUCCESS"


async def test_gateway_must_authenticate_and_be_registered_there(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, _ = service
    entry = Reg(ue_service_id="c1", ue_credential_info=cred("c1"))
    wrong_secret, _ = await svc.bulk_register(bulk(entry, gateway_secret="bad"), GW)
    other_place, _ = await svc.bulk_register(bulk(entry), Contact("6.6.6.6", 1))
    for resp in (wrong_secret, other_place):
        assert resp.reg_responses[0].failure_cause == "NOT_AUTHORIZED"
    assert svc.registry.get("c1") is None


async def test_downlink_goes_to_the_gateway_and_uplink_through_it_is_accepted(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, deliverer = service
    await svc.bulk_register(
        bulk(Reg(ue_service_id="c1", ue_credential_info=cred("c1"))), GW
    )
    down = Msg(
        message_id="d1",
        originating_ue_service_id="ue1",
        recipient_ue_service_id="c1",
        payload=b"to c1",
    )
    assert (await svc.submit(down, UE1)).delivery_status == "DELY_ACCEPTED"
    await settle()
    [item] = deliverer.messages_for(GW)
    assert isinstance(item, Msg) and item.recipient_ue_service_id == "c1"
    up = Msg(
        message_id="u1",
        originating_ue_service_id="c1",
        recipient_ue_service_id="ue1",
        payload=b"from c1",
    )
    assert (await svc.submit(up, GW)).delivery_status == "DELY_ACCEPTED"
    # the gateway moved: its constrained UEs follow it
    await svc.register(
        Reg(ue_service_id="gw", ue_credential_info=cred("gw")),
        Contact("10.0.0.10", 5683),
    )
    again = Msg(
        message_id="d2",
        originating_ue_service_id="ue1",
        recipient_ue_service_id="c1",
        payload=b"again",
    )
    await svc.submit(again, UE1)
    await settle()
    assert [
        m.message_id for m in deliverer.messages_for(Contact("10.0.0.10", 5683))
    ] == ["d2"]


async def test_bulk_deregister(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    svc, _ = service
    await svc.bulk_register(
        bulk(Reg(ue_service_id="c1", ue_credential_info=cred("c1"))), GW
    )
    request = BulkDereg(
        ue_service_id="gw",
        ue_credential_info=cred("gw"),
        num_of_dereg_requests=3,
        dereg_requests=[
            Dereg(ue_service_id="c1"),
            Dereg(ue_service_id="ue1"),  # registered directly, not via gw
            Dereg(ue_service_id="c2"),  # not registered: idempotent success
        ],
    )
    resp = await svc.bulk_deregister(request, GW)
    assert [
        (r.ue_service_id, r.deregistration_result, r.failure_cause)
        for r in resp.dereg_responses
    ] == [
        ("c1", "SUCCESS", None),
        ("ue1", "FAILURE", "NOT_AUTHORIZED"),
        ("c2", "SUCCESS", None),
    ]
    assert svc.registry.get("c1") is None
    assert svc.registry.get("ue1") is not None


async def test_bulk_deregister_of_an_offline_ue_keeps_its_mailbox(
    service: tuple[MessagingService, RecordingDeliverer],
) -> None:
    """Attack: a BULKDEREG wiped the stored messages of any unregistered UE."""
    svc, deliverer = service
    stored = Msg(
        message_id="kept",
        originating_ue_service_id="ue1",
        recipient_ue_service_id="c3",
        payload=b"x",
        store_and_forward_flag=True,
        delivery_status_required=True,
    )
    assert (await svc.submit(stored, UE1)).delivery_status == "DELY_STORED"
    request = BulkDereg(
        ue_service_id="gw",
        ue_credential_info=cred("gw"),
        num_of_dereg_requests=1,
        dereg_requests=[Dereg(ue_service_id="c3")],
    )
    resp = await svc.bulk_deregister(request, GW)
    assert resp.dereg_responses[0].deregistration_result == "SUCCESS"
    await settle()
    assert await svc.backend.count() == 1
    assert deliverer.messages_for(UE1) == []  # no RECIPIENT_DEREGISTERED report
