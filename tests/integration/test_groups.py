"""Group messaging with the server's local group store (part of issue 4)."""

from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.config import load_config
from msgin5g.model.messages import Imdn, Msg
from msgin5g.server import Server, provision_ue
from msgin5g.server.admin import list_groups, put_group, remove_group_members

pytestmark = pytest.mark.timeout(30)
UES = ("ctrl", "v1", "v2", "v3", "outsider")


async def setup(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'groups.db'}"
    for ue in UES:
        await provision_ue(url, ue, f"secret-{ue}")
    await put_group(url, "valves", ["ctrl", "v1", "v2", "v3", "v1"], add=False)
    return url


def client(server: Server, ue: str) -> Client:
    host, port = server.coap_address
    return Client(
        ue, f"secret-{ue}", server=f"coap://{host}:{port}", bind=("127.0.0.1", 0)
    )


async def test_group_fan_out_reports_and_offline_member(tmp_path: Path) -> None:
    url = await setup(tmp_path)
    assert await list_groups(url) == [("valves", ["ctrl", "v1", "v2", "v3"])]
    config = load_config(
        None,
        {},
        {"coap.bind": "127.0.0.1:0", "storage.url": url, "rest.enabled": "false"},
    )
    async with Server(config) as server:
        async with (
            client(server, "ctrl") as ctrl,
            client(server, "v1") as v1,
            client(server, "v2") as v2,
            client(server, "outsider") as outsider,
        ):
            for ue in (ctrl, v1, v2, outsider):
                await ue.register()
            resp = await ctrl.send_to_group("valves", "OPEN", report=True)
            assert resp.delivery_status == "DELY_ACCEPTED"
            for ue in (v1, v2):
                got = await ue.receive(timeout=5)
                assert isinstance(got.item, Msg)
                assert got.item.recipient_group_service_id == "valves"
                assert got.item.recipient_ue_service_id == ue.ue_service_id
            reports = {
                (await ctrl.receive(timeout=5)).item.originator for _ in range(2)
            }
            assert reports == {"v1", "v2"}
            refused = await outsider.send_to_group("valves", "x")
            assert (refused.delivery_status, refused.failure_cause) == (
                "DELY_REJECTED",
                "NOT_AUTHORIZED",
            )
            unknown = await ctrl.send_to_group("nope", "x")
            assert unknown.failure_cause == "GROUP_NOT_FOUND"
            async with client(server, "v3") as v3:  # offline until now: stored
                await v3.register()
                got = await v3.receive(timeout=5)
                assert isinstance(got.item, Msg) and got.item.payload == b"OPEN"
                report = await ctrl.receive(timeout=5)
                assert isinstance(report.item, Imdn) and report.item.originator == "v3"
            with pytest.raises(TimeoutError):
                await ctrl.receive(timeout=0.3)  # the sender got no copy


async def test_membership_changes(tmp_path: Path) -> None:
    url = await setup(tmp_path)
    assert await put_group(url, "valves", ["v9"], add=True) == [
        "ctrl",
        "v1",
        "v2",
        "v3",
        "v9",
    ]
    assert await remove_group_members(url, "valves", ["v1", "v9"])
    assert await list_groups(url) == [("valves", ["ctrl", "v2", "v3"])]
    assert await remove_group_members(url, "valves", [])
    assert await list_groups(url) == []
    assert not await remove_group_members(url, "valves", ["v2"])
