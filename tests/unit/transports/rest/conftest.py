"""A MessagingService on the memory backend behind the REST app (httpx ASGITransport)."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from msgin5g.config import DeliveryConfig, RestConfig
from msgin5g.errors import DeliveryRejected, RecipientUnreachable
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Imdn, Msg, Reg, UECredentialInfo
from msgin5g.model.registry import Contact
from msgin5g.service import MessagingService
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import FakeClock, RecordingDeliverer
from msgin5g.transports.rest import create_app

UE1 = Contact("10.0.0.1", 40001)
SECRETS = {"ue1": "s1", "ue2": "s2"}


class RecordingASDeliverer:
    """The ASDeliverer port as a recorder; URIs in ``unreachable`` fail."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, Msg | Imdn]] = []
        self.attempts = 0
        self.unreachable: set[str] = set()
        self.rejecting: set[str] = set()
        self.event = asyncio.Event()

    async def deliver_to_as(self, target_uri: str, item: Msg | Imdn) -> None:
        self.attempts += 1
        await asyncio.sleep(0)
        if target_uri in self.unreachable:
            raise RecipientUnreachable("test: AS down")
        if target_uri in self.rejecting:
            raise DeliveryRejected("test: AS refuses")
        self.delivered.append((target_uri, item))
        self.event.set()

    async def wait_for(self, count: int) -> None:
        while len(self.delivered) < count:
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), 5)


@dataclass
class Rig:
    service: MessagingService
    http: httpx.AsyncClient
    ue: RecordingDeliverer
    as_: RecordingASDeliverer
    clock: FakeClock
    app: object = None

    async def register_ue(self, ue: str = "ue1", contact: Contact = UE1) -> None:
        info = UECredentialInfo(
            auth_type="PSK_TOKEN", credential=psk_token(SECRETS[ue], ue)
        )
        outcome = await self.service.register(
            Reg(ue_service_id=ue, ue_credential_info=info), contact
        )
        assert outcome.response.registration_result == "SUCCESS"

    async def register_as(
        self,
        as_id: str = "as1",
        target: str | None = "http://as1.test/cb",
        **kw: object,
    ) -> httpx.Response:
        body: dict[str, object] = {"asSvcId": as_id, **kw}
        if target is not None:
            body["targetUri"] = target
        return await self.http.post("/msgs-asregistration/v1/registrations", json=body)


async def make_rig(rest: RestConfig | None = None) -> tuple[Rig, MemoryBackend]:
    backend = MemoryBackend()
    await backend.start()
    clock = FakeClock()
    ue = RecordingDeliverer()
    as_ = RecordingASDeliverer()
    service = MessagingService(
        backend,
        ue,
        config=DeliveryConfig(
            default_ttl=3600, as_retry_initial=0.01, as_retry_max=0.02
        ),
        clock=clock,
        as_deliverer=as_,
    )
    for name, secret in SECRETS.items():
        await service.provision(name, psk_token(secret, name))
    await service.start(sweeper=False)
    app = create_app(service, rest or RestConfig())
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://msgin5g.test"
    )
    return Rig(service, http, ue, as_, clock, app), backend


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    built, backend = await make_rig()
    yield built
    await built.http.aclose()
    await built.service.aclose()
    await backend.aclose()


def as_message(
    msg_id: str = "m-1",
    to: str = "ue1",
    *,
    addr_type: str = "UE",
    ori: str = "as1",
    **kw: object,
) -> dict[str, object]:
    return {
        "oriAddr": {"addrType": "AS", "addr": ori},
        "destAddr": {"addrType": addr_type, "addr": to},
        "msgId": msg_id,
        "stoAndFwInd": True,
        **kw,
    }
