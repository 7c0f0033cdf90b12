"""A gateway configured with another ``msgin5gServiceId`` uses it on its links.

Real gateway, server and constrained UEs over UDP (the bed of
test_gateway_inprocess). The server side does not see the value: the gateway
sends none upstream (BULKREG carries none).
"""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.errors import RemoteError
from msgin5g.gateway import ConstrainedUE
from tests.unit.gateway.test_gateway_inprocess import Bed, _bed

pytestmark = pytest.mark.timeout(60)

ACME = "acme.msgin5g"


@pytest.fixture
async def acme(tmp_path: Path) -> AsyncIterator[Bed]:
    async for bed in _bed(tmp_path, service_id=ACME):
        yield bed


async def test_constrained_ue_with_the_gateways_value_registers(acme: Bed) -> None:
    async with ConstrainedUE(
        "c1", "s-c1", gateway=acme.gateway_uri, service_id=ACME
    ) as ue:
        outcome = await ue.register(urgent=True)
    assert outcome.succeeded
    assert outcome.response.msgin5g_service_id == ACME


async def test_constrained_ue_with_another_value_is_refused(acme: Bed) -> None:
    async with ConstrainedUE("c2", "s-c2", gateway=acme.gateway_uri) as ue:
        with pytest.raises(RemoteError) as refused:
            await ue.register(urgent=True)
    assert refused.value.code == 0x80  # 4.00
    assert "msgin5gServiceId" in str(refused.value.body)
