"""libcoap's coap-client-notls as a constrained UE talking to our Gateway UE.

libcoap's client cannot receive the gateway's matched ``REGRESP`` POST (it
expects a separate response), so ``REG`` is driven with our engine and libcoap
does what a constrained application client does over MSGin5G-5 (Annex A.3):
``APPREG``, then a relayed ``MSG`` from the same local port (``-p``), and the
``expectedRegistrationTime`` query.
"""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.gateway import ConstrainedUE
from msgin5g.model.messages import Msg
from tests.interop.test_libcoap import coap_client
from tests.unit.gateway.test_gateway_inprocess import Bed, _bed

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]


@pytest.fixture
async def bed(tmp_path: Path) -> AsyncIterator[Bed]:
    async for b in _bed(tmp_path, max_wait=30.0, batch_size=50):
        yield b


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_libcoap_application_client_sends_through_gateway(bed: Bed) -> None:
    port = _free_port()
    target = f"{bed.gateway_uri}/msgin5g"
    appreg = json.dumps(
        {
            "msgin5gServiceId": "org.3gpp.msgin5g",
            "messageType": "APPREG",
            "applicationId": "soil-probe",
            "layer2Id": "0a1b2d",
        }
    )
    out, err = await coap_client(
        "-p", str(port), "-m", "post", "-t", "50", "-e", appreg, target
    )
    answer = json.loads(out.strip().splitlines()[-1])
    assert answer["messageType"] == "APPREGRESP", err
    assert answer["registrationResult"] == "SUCCESS"
    async with Client(
        "ue1", "s-ue1", server=bed.server_uri, bind=("127.0.0.1", 0)
    ) as peer:
        await peer.register()
        msg = json.dumps(
            {
                "msgin5gServiceId": "org.3gpp.msgin5g",
                "messageType": "MSG",
                "targetAddress": "ue1",
                "targetType": "UE",
                "messageId": "1c2d-libcoap",
                "payload": "MjEuNQ==",
                "applicationId": "soil-probe",
                "deliveryStatusRequired": True,
            }
        )
        out, err = await coap_client(
            "-p", str(port), "-m", "post", "-t", "50", "-e", msg, target
        )
        resp = json.loads(out.strip().splitlines()[-1])
        assert resp["messageType"] == "MSGRESP", err
        assert resp["deliveryStatus"] == "DELY_ACCEPTED"
        got = await peer.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.payload == b"21.5"
        assert got.item.originating_ue_service_id == "gw"
        assert got.item.application_id == "soil-probe"


async def test_libcoap_asks_for_expected_registration_time(bed: Bed) -> None:
    async with ConstrainedUE("c1", "s-c1", gateway=bed.gateway_uri) as ue:
        task = asyncio.create_task(ue.register(wait_time=20, timeout=30))
        try:
            for _ in range(50):
                if (await bed.gateway.status())["cachedRequests"]:
                    break
                await asyncio.sleep(0.05)
            out, err = await coap_client(
                "-m", "get", f"{bed.gateway_uri}/msgin5g/pending?ue=c1"
            )
            answer = json.loads(out.strip().splitlines()[-1])
            assert answer["ueServiceId"] == "c1", err
            assert answer["expectedRegistrationTime"].endswith("Z")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_libcoap_bad_payload_gets_4_00_and_gateway_keeps_serving(
    bed: Bed,
) -> None:
    out, err = await coap_client(
        "-m", "post", "-t", "50", "-e", "{not json", f"{bed.gateway_uri}/msgin5g"
    )
    assert "4.00" in out + err and "INVALID_MESSAGE" in out + err
    async with ConstrainedUE("c2", "s-c2", gateway=bed.gateway_uri) as ue:
        assert (await ue.register(urgent=True, timeout=10)).succeeded
