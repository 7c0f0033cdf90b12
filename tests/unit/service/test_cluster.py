"""Two service nodes on one (memory) storage, linked by an in-process fake cluster.

The NATS implementation is tested end to end in tests/e2e/test_cluster.py; here
the service's side of a cluster (ownership, hand-off, claims, dead nodes) runs
without sockets, with a fake clock and recording deliverers.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence

import msgspec
import pytest

from msgin5g.config import DeliveryConfig
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg, Reg, UECredentialInfo
from msgin5g.model.queue import QueuedItem
from msgin5g.model.registry import Contact, UERegistration
from msgin5g.service import MessagingService
from msgin5g.service.ports import ClusterListener
from msgin5g.storage.memory import MemoryBackend
from msgin5g.testing import ManualClock, RecordingDeliverer

A = Contact("10.0.0.1", 40001)
B = Contact("10.0.0.2", 40002)


class FakeNode:
    """:class:`msgin5g.service.ports.Cluster` for one node of a :class:`Hub`."""

    def __init__(self, hub: "Hub", node_id: str) -> None:
        self.hub = hub
        self.node_id = node_id
        self.listener: ClusterListener | None = None
        self.handed: list[tuple[str, list[int]]] = []
        self.adopted: list[str] = []

    async def start(self, listener: ClusterListener) -> None:
        self.listener = listener

    async def aclose(self) -> None:
        self.listener = None

    def is_alive(self, node: str) -> bool:
        return node not in self.hub.dead

    async def hand_off(self, node: str, items: Sequence[QueuedItem]) -> bool:
        peer = self.hub.nodes.get(node)
        if node in self.hub.dead or peer is None or peer.listener is None:
            return False
        self.handed.append((node, [i.seq for i in items]))
        peer.listener.on_handed(list(items))
        return True

    async def adopt(self, recipient: str) -> None:
        self.adopted.append(recipient)  # the memory backend is shared: all visible


class Hub:
    def __init__(self) -> None:
        self.nodes: dict[str, FakeNode] = {}
        self.dead: set[str] = set()

    async def sync(self, backend: MemoryBackend) -> None:
        """Play every stored registration to every node (the KV watch)."""
        stored = await backend.load_registrations()
        for node in self.nodes.values():
            if node.listener is not None:
                for reg in stored:
                    node.listener.on_registration(reg.ue_service_id, reg)


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[Hub, MemoryBackend, dict[str, tuple]]]:
    hub = Hub()
    backend = MemoryBackend()
    await backend.start()
    clock = ManualClock()
    made: dict[str, tuple[MessagingService, RecordingDeliverer, FakeNode]] = {}
    for name in ("n1", "n2"):
        node = FakeNode(hub, name)
        hub.nodes[name] = node
        deliverer = RecordingDeliverer()
        service = MessagingService(
            backend,
            deliverer,
            config=DeliveryConfig(default_ttl=3600),
            clock=clock,
            cluster=node,
        )
        made[name] = (service, deliverer, node)
    for ue in ("a", "b"):
        await made["n1"][0].provision(ue, psk_token(f"s-{ue}", ue))
    for service, _, _ in made.values():
        await service.start(sweeper=False)
    yield hub, backend, made
    for service, _, _ in made.values():
        await service.aclose()
    await backend.aclose()


def reg(ue: str) -> Reg:
    info = UECredentialInfo(auth_type="PSK_TOKEN", credential=psk_token(f"s-{ue}", ue))
    return Reg(ue_service_id=ue, ue_credential_info=info)


def msg(mid: str, to: str = "b", frm: str = "a") -> Msg:
    return Msg(
        message_id=mid,
        originating_ue_service_id=frm,
        recipient_ue_service_id=to,
        payload=b"x",
        store_and_forward_flag=True,
    )


async def settle() -> None:
    for _ in range(30):
        await asyncio.sleep(0)


async def test_registration_names_the_node_and_the_peer_follows(cluster) -> None:
    hub, backend, made = cluster
    n1, n2 = made["n1"][0], made["n2"][0]
    await n2.register(reg("b"), B)
    stored = await backend.load_registrations()
    assert [(r.ue_service_id, r.node) for r in stored] == [("b", "n2")]
    assert n1.registry.get("b") is None
    await hub.sync(backend)
    assert n1.registry.owner_of("b") == "n2"
    assert (n1.registry.owned, n2.registry.owned) == (0, 1)


async def test_message_for_a_ue_at_the_other_node_is_handed_off(cluster) -> None:
    hub, backend, made = cluster
    (n1, d1, node1), (n2, d2, _) = made["n1"], made["n2"]
    await n1.register(reg("a"), A)
    await n2.register(reg("b"), B)
    await hub.sync(backend)
    resp = await n1.submit(msg("m1"), A)
    assert resp.delivery_status == "DELY_ACCEPTED"
    await settle()
    assert d1.items_for(B) == []  # node 1 never talks to b itself
    assert [m.message_id for m in d2.messages_for(B)] == ["m1"]
    assert node1.handed and node1.handed[0][0] == "n2"


async def test_ue_of_a_dead_node_is_unreachable_and_messages_are_stored(
    cluster,
) -> None:
    hub, backend, made = cluster
    (n1, _, node1), (n2, d2, _) = made["n1"], made["n2"]
    await n1.register(reg("a"), A)
    await n2.register(reg("b"), B)
    await hub.sync(backend)
    await settle()  # node 2 looked for b's stored items (none)
    hub.dead.add("n2")
    resp = await n1.submit(msg("m1"), A)
    assert resp.delivery_status == "DELY_STORED"
    await settle()
    assert node1.handed == []
    assert await backend.count() == 1
    hub.dead.discard("n2")
    n1.cluster_events.on_node_up("n2")  # type: ignore[union-attr]
    await settle()
    assert [m.message_id for m in d2.messages_for(B)] == ["m1"]


async def test_uplink_reaching_another_node_claims_the_ue(cluster) -> None:
    hub, backend, made = cluster
    (n1, _, _), (n2, _, _) = made["n1"], made["n2"]
    await n1.register(reg("a"), A)
    await hub.sync(backend)
    assert n2.registry.owner_of("a") == "n1"
    resp = await n2.submit(msg("m1", to="b", frm="a"), A)  # a's datagrams moved
    assert resp.delivery_status == "DELY_STORED"
    await settle()
    assert n2.registry.owner_of("a") == "n2"
    stored = {r.ue_service_id: r.node for r in await backend.load_registrations()}
    assert stored == {"a": "n2"}
    await hub.sync(backend)
    assert n1.registry.owner_of("a") == "n2"


async def test_registration_moving_here_adopts_what_others_stored(cluster) -> None:
    _, _, made = cluster
    (n1, _, _), (n2, d2, node2) = made["n1"], made["n2"]
    await n1.register(reg("a"), A)
    await n1.submit(msg("m1"), A)  # b unregistered: stored by node 1
    await n2.register(reg("b"), B)
    await settle()
    assert node2.adopted == ["b"]
    assert [m.message_id for m in d2.messages_for(B)] == ["m1"]


def test_registry_ignores_an_older_echo_of_its_own_write() -> None:
    from msgin5g.service.registry import Registry

    registry = Registry(MemoryBackend(), ManualClock(), DeliveryConfig())
    registry.node = "n1"
    newer = UERegistration("a", A, A, registered_at=20.0, node="n1")
    older = msgspec.structs.replace(newer, registered_at=10.0, node="n2")
    registry.apply_stored("a", newer)
    assert registry.apply_stored("a", older) == (newer, newer)
    assert registry.owned == 1
    assert registry.apply_stored("a", None) == (newer, None)
    assert (registry.get("a"), registry.owned) == (None, 0)
