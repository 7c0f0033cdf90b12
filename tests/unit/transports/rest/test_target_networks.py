"""``rest.target_networks``: where the server may POST on a client's behalf.

Registration refuses a ``targetUri`` outside the networks (link-local metadata
addresses by default, also behind a hostname or an IPv4-mapped IPv6 literal),
and the outbound deliverer checks again at every delivery and connects only to
the address it checked (DNS rebinding), over real loopback TCP.
"""

import asyncio
from collections.abc import AsyncIterator

import pytest

from msgin5g.config import RestConfig
from msgin5g.errors import ConfigError, DeliveryRejected
from msgin5g.model.messages import Msg
from msgin5g.service.applications import TargetNetworks
from msgin5g.transports.rest.outbound import HttpASDeliverer

from .conftest import Rig, make_rig


@pytest.mark.parametrize(
    "uri",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:169.254.169.254]/",
        "http://[fe80::1]:8080/",
        "http://0.0.0.0:8080/",
        "http://[::]:8080/",
    ],
)
async def test_registration_refuses_link_local_and_unspecified_targets(
    rig: Rig, uri: str
) -> None:
    resp = await rig.register_as(target=uri)
    assert resp.status_code == 400, resp.text
    assert "rest.target_networks" in resp.json()["detail"]
    assert rig.service.applications.get("as1") is None


@pytest.mark.parametrize(
    "uri", ["http://127.0.0.1:9090/cb", "http://localhost:9090/", "https://[::1]/"]
)
async def test_loopback_and_ordinary_targets_stay_allowed(rig: Rig, uri: str) -> None:
    assert (await rig.register_as(target=uri)).status_code == 201


async def test_a_configured_allow_list_is_applied_to_resolved_hostnames() -> None:
    rig, backend = await make_rig(RestConfig(target_networks="10.0.0.0/8"))
    try:
        for uri in ("http://127.0.0.1:9090/", "http://localhost:9090/"):
            resp = await rig.register_as(target=uri)
            assert resp.status_code == 400, resp.text
        assert (await rig.register_as(target="http://10.1.2.3/")).status_code == 201
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


def test_bad_networks_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="target_networks"):
        RestConfig(target_networks="10.0.0.0/8, nonsense")


# delivery-time check on real sockets ------------------------------------------------


class Recorder:
    """A loopback HTTP/1.1 server that records request heads and answers 204."""

    def __init__(self) -> None:
        self.heads: list[str] = []
        self.server: asyncio.Server | None = None

    async def handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                text = head.decode("latin-1")
                self.heads.append(text)
                length = 0
                for line in text.split("\r\n"):
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    rec.server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    yield rec
    rec.server.close()
    await rec.server.wait_closed()


class Rebound(TargetNetworks):
    """The default policy with a resolver an attacker controls."""

    def __init__(self, answers: list[str]) -> None:
        default = TargetNetworks.from_config(RestConfig())
        super().__init__(default._allowed, default._denied)
        self.answers = answers

    async def resolve(self, host: str, port: int) -> list[str]:
        return list(self.answers)


MSG = Msg(
    message_id="m-1",
    originating_ue_service_id="ue1",
    recipient_as_service_id="as1",
    payload=b"hi",
)


async def test_delivery_connects_to_the_checked_address_with_the_hostname(
    recorder: Recorder,
) -> None:
    deliverer = HttpASDeliverer(5.0)
    try:
        await deliverer.deliver_to_as(f"http://localhost:{recorder.port}/cb", MSG)
    finally:
        await deliverer.aclose()
    [head] = recorder.heads
    assert head.startswith("POST /cb/deliver-message HTTP/1.1")
    assert f"host: localhost:{recorder.port}" in head.lower()


async def test_dns_rebinding_to_a_metadata_address_is_refused_at_delivery(
    recorder: Recorder,
) -> None:
    uri = f"http://as.example:{recorder.port}/cb"
    rebound = Rebound(["169.254.169.254"])
    deliverer = HttpASDeliverer(5.0, rebound)
    try:
        with pytest.raises(DeliveryRejected, match="target_networks"):
            await deliverer.deliver_to_as(uri, MSG)
        # a mixed answer: only the allowed address is connected to
        rebound.answers = ["169.254.169.254", "127.0.0.1"]
        deliverer._resolved.clear()
        await deliverer.deliver_to_as(uri, MSG)
    finally:
        await deliverer.aclose()
    [head] = recorder.heads
    assert f"host: as.example:{recorder.port}" in head.lower()


async def test_delivery_to_a_network_no_longer_allowed_is_refused(
    recorder: Recorder,
) -> None:
    networks = TargetNetworks.from_config(RestConfig(target_networks="10.0.0.0/8"))
    deliverer = HttpASDeliverer(5.0, networks)
    try:
        with pytest.raises(DeliveryRejected):
            await deliverer.deliver_to_as(f"http://127.0.0.1:{recorder.port}/", MSG)
    finally:
        await deliverer.aclose()
    assert recorder.heads == []
