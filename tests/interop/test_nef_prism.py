"""The NEF client against Prism mocking the official TS 29.122 YAMLs.

Prism (npm ``@stoplight/prism-cli``, pinned in tests/interop/prism/) serves a
mock generated from TS29122_MonitoringEvent.yaml and TS29122_DeviceTriggering.yaml
(bundled into one document by :mod:`tests.interop.prism.bundle`, the official
files untouched) and validates every request against them: a request that does
not match is answered with the YAML's ``400`` (``422`` where none is documented). Our client's requests must come back ``201``.
``Prefer: code=201`` picks the documented ``201`` among the answers (the mock
would otherwise choose the ``200`` immediate-report answer).
"""

import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from msgin5g.config_network import NefConfig
from msgin5g.errors import UpstreamError
from msgin5g.service.nef import (
    LOSS_OF_CONNECTIVITY,
    UE_REACHABILITY,
    UeIdentity,
    trigger_payload,
)
from msgin5g.transports.rest.nef_client import HttpNefClient
from tests.conftest import fail_or_skip
from tests.interop.openapi_support import SPECS, spec_path
from tests.interop.prism.bundle import bundle

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]

PRISM = Path(__file__).parent / "prism" / "node_modules" / ".bin" / "prism"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not PRISM.exists():
        fail_or_skip(
            "Prism not installed (scripts/install runs npm ci in tests/interop/prism)"
        )
    for name in ("TS29122_MonitoringEvent.yaml", "TS29122_DeviceTriggering.yaml"):
        spec_path(name)
    document = bundle(
        SPECS,
        ["TS29122_MonitoringEvent.yaml", "TS29122_DeviceTriggering.yaml"],
        tmp_path_factory.mktemp("prism") / "nef.yaml",
    )
    port = _free_port()
    proc = subprocess.Popen(
        [str(PRISM), "mock", "-h", "127.0.0.1", "-p", str(port), str(document)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90  # Node start-up on a loaded machine
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError("prism exited") from None
                time.sleep(0.3)
        else:
            raise AssertionError("prism did not listen")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _client(url: str) -> HttpNefClient:
    return HttpNefClient(
        NefConfig(url=url, scs_as_id="msgin5g"),
        "http://127.0.0.1:8080",
        headers={"Prefer": "code=201"},
    )


async def test_subscriptions_match_the_yaml(prism: str) -> None:
    nef = _client(prism)
    try:
        expire = datetime.now(UTC) + timedelta(hours=1)
        for kind in (UE_REACHABILITY, LOSS_OF_CONNECTIVITY):
            for ue in (
                UeIdentity(external_id="meter-1@ext.test"),
                UeIdentity(msisdn="4915112345678"),
            ):
                uri = await nef.subscribe(ue, kind, expire)
                assert uri.startswith("http")
    finally:
        await nef.aclose()


async def test_trigger_matches_the_yaml(prism: str) -> None:
    nef = _client(prism)
    try:
        uri = await nef.trigger(
            UeIdentity(external_id="meter-1@ext.test"),
            20001,
            trigger_payload("meter-1", 2),
            3600,
            urgent=False,
        )
        assert uri.startswith("http")
    finally:
        await nef.aclose()


async def test_the_mock_rejects_what_the_yaml_forbids(prism: str) -> None:
    """The mock validates: a body without required members is not ``201``."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{prism}/3gpp-device-triggering/v1/msgin5g/transactions",
            json={"externalId": "meter-1@ext.test"},
            headers={"Prefer": "code=201"},
        )
    # the YAML's own 400 answer (Prism's 422 when a spec documents none)
    assert response.status_code in {400, 422}
    nef = _client(prism)
    try:
        with pytest.raises(UpstreamError, match="answered 4"):
            await nef.trigger(
                UeIdentity(external_id="meter-1@ext.test"),
                70000,  # not a Port (0-65535)
                b"x",
                3600,
                urgent=False,
            )
    finally:
        await nef.aclose()
