"""Two msgin5g nodes on one nats-server: messages cross nodes, a dead node loses nothing.

Issue 12: real `msgin5g serve` processes with `cluster.node_id` set, each on its
own CoAP port, sharing a private `nats-server -js` started here; the UEs are
msgin5g device clients on real UDP sockets. Counts of lost and duplicated
messages are asserted to be zero.
"""

import asyncio
import json
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from msgin5g.client import Client
from tests.e2e.conftest import ServerProcess, _env, msgin5g
from tests.e2e.test_as import Lines, as_send, free_tcp_port, spawn
from tests.storage.nats_server import NatsServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

N = 1000


@dataclass
class Node(ServerProcess):
    """`msgin5g serve` as one node of a cluster."""

    nats_url: str = ""
    node_id: str = ""
    http_port: int = field(default_factory=free_tcp_port)

    @property
    def storage(self) -> str:
        return f"{self.nats_url}?prefix=cl"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.extra = (
            "--set",
            f"cluster.node_id={self.node_id}",
            "--set",
            "cluster.lease=3",
            "--set",
            "rest.enabled=true",
            "--http",
            f"127.0.0.1:{self.http_port}",
        )
        super().start()


@pytest.fixture
def nodes(tmp_path: Path, jetstream: NatsServer) -> Iterator[tuple[Node, Node]]:
    one = Node(tmp_path / "unused.db", nats_url=jetstream.url, node_id="n1")
    two = Node(tmp_path / "unused.db", nats_url=jetstream.url, node_id="n2")
    for ue in ("a", "b", "c"):
        one.add_ue(ue, f"s-{ue}")
    one.start()
    two.start()
    yield one, two
    errors = one.stop() + two.stop()
    assert "Traceback" not in errors, errors


def client(ue: str, node: Node) -> Client:
    return Client(ue, f"s-{ue}", server=node.url, bind=("127.0.0.1", 0))


async def receive_all(ue: Client, expected: int) -> list[str]:
    """Message IDs received until ``expected`` came and nothing more for a while."""
    received: list[str] = []
    while True:
        try:
            got = await ue.receive(timeout=5.0 if len(received) < expected else 1.5)
        except TimeoutError:
            return received
        if not got.is_report:
            received.append(got.item.message_id)


async def test_message_and_reports_cross_nodes_both_ways(
    nodes: tuple[Node, Node],
) -> None:
    one, two = nodes
    async with client("a", one) as a, client("b", two) as b:
        await a.register()
        await b.register()
        await asyncio.sleep(0.5)  # each node hears of the other's registration
        resp = await a.send("b", b"to b", report=True)
        assert resp.delivery_status == "DELY_ACCEPTED"
        got = await b.receive(timeout=10)
        assert got.item.payload == b"to b"
        report = await a.receive(timeout=10)
        assert report.is_report
        assert report.item.delivery_status == "REPT_DELY_SUCCESS"

        resp = await b.send("a", b"to a", report=True)
        assert resp.delivery_status == "DELY_ACCEPTED"
        got = await a.receive(timeout=10)
        assert got.item.payload == b"to a"
        report = await b.receive(timeout=10)
        assert report.item.delivery_status == "REPT_DELY_SUCCESS"


async def send_many(sender: Client, to: str, ids: list[str]) -> list[str]:
    statuses: list[str] = []
    for start in range(0, len(ids), 100):
        chunk = ids[start : start + 100]
        answers = await asyncio.gather(
            *(sender.send(to, f"m {i}".encode(), message_id=i) for i in chunk)
        )
        statuses.extend(r.delivery_status for r in answers)
    return statuses


async def test_kill_9_of_a_node_loses_and_duplicates_nothing(
    nodes: tuple[Node, Node],
) -> None:
    """B is offline; A (node 1) and C (node 2) store for it; node 2 dies; B moves."""
    one, two = nodes
    ids_a = [f"a-{uuid.uuid4()}" for _ in range(N // 2)]
    ids_c = [f"c-{uuid.uuid4()}" for _ in range(N // 2)]
    async with client("b", two) as b:
        await b.register()
        await b.deregister()
    await asyncio.sleep(1.0)  # both nodes saw the de-registration
    async with client("a", one) as a, client("c", two) as c:
        await a.register()
        await c.register()
        statuses = await asyncio.gather(
            send_many(a, "b", ids_a), send_many(c, "b", ids_c)
        )
    assert Counter(statuses[0] + statuses[1]) == {"DELY_STORED": N}

    two.kill9()  # node 2 held C's writes in its index: they are in the stream
    async with client("b", one) as b:
        await b.register()
        received = await receive_all(b, N)
    counts = Counter(received)
    lost = set(ids_a + ids_c) - set(counts)
    duplicated = [m for m, n in counts.items() if n > 1]
    assert (len(lost), len(duplicated)) == (0, 0), (sorted(lost)[:5], duplicated[:5])


async def test_ue_moving_to_another_node_takes_its_messages(
    nodes: tuple[Node, Node],
) -> None:
    """B registered at node 2 but silent; it re-registers at node 1: nothing lost."""
    one, two = nodes
    ids = [f"m-{uuid.uuid4()}" for _ in range(50)]
    async with client("b", two) as b:
        await b.register()
        async with client("a", one) as a:
            await a.register()
            await asyncio.sleep(0.5)
            statuses = await send_many(a, "b", ids[:25])
            assert set(statuses) <= {"DELY_ACCEPTED", "DELY_STORED"}
            first = await receive_all(b, 25)
    # b's socket is closed: node 2 still holds its registration
    async with client("a", one) as a:
        await a.register()
        await send_many(a, "b", ids[25:])
    async with client("b", one) as b:  # a new socket, at node 1
        await b.register()
        second = await receive_all(b, 25)
    counts = Counter(first + second)
    assert set(counts) == set(ids), sorted(set(ids) - set(counts))[:5]
    assert max(counts.values()) == 1


def cluster_status(storage: str) -> tuple[int, dict[str, list[dict[str, object]]]]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "msgin5g",
            "cluster",
            "status",
            "--json",
            "--storage",
            storage,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        check=False,
    )
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def test_cluster_status_shows_both_nodes(nodes: tuple[Node, Node]) -> None:
    one, two = nodes
    for _ in range(50):  # the heartbeat after start-up carries the addresses
        code, status = cluster_status(one.storage)
        if all(n["coap"] for n in status["nodes"]):
            break
        time.sleep(0.2)
    assert code == 0
    assert [n["node"] for n in status["nodes"]] == ["n1", "n2"]
    assert all(n["alive"] for n in status["nodes"])
    assert [n["coap"] for n in status["nodes"]] == [
        f"127.0.0.1:{one.port}",
        f"127.0.0.1:{two.port}",
    ]
    two.kill9()
    for _ in range(50):  # its lease (3 s) runs out
        code, status = cluster_status(one.storage)
        if code:
            break
        time.sleep(0.2)
    assert code == 1
    assert [n["alive"] for n in status["nodes"]] == [True, False]


async def test_a2p_at_one_node_for_a_ue_at_the_other_with_report_to_the_as(
    nodes: tuple[Node, Node],
) -> None:
    """The AS registered at node 1; it sends through node 2 to a UE at node 1."""
    one, two = nodes
    bind = f"127.0.0.1:{free_tcp_port()}"
    aserver = Lines(
        spawn("as", "listen", "--bind", bind, "--server", one.http, "--as", "as1")
    )
    try:
        assert aserver.next()["status"] == 201
        async with client("a", one) as a:
            await a.register()
            await asyncio.sleep(0.5)  # node 2 re-read the AS registration
            ack = await asyncio.to_thread(
                as_send,
                two,
                "--to",
                "a",
                "--text",
                "via n2",
                "--report",
                "--msg-id",
                "a2p-x",
            )
            assert ack["status"] == 200, ack
            got = await a.receive(timeout=10)
            assert got.item.payload == b"via n2"
        report = await asyncio.to_thread(aserver.next)
        assert report["resource"] == "deliver-report"
        assert report["body"]["delivSt"] == "REPT_DELY_SUCCESS"
    finally:
        aserver.stop()


async def test_topic_subscribed_at_one_node_published_at_the_other(
    nodes: tuple[Node, Node],
) -> None:
    one, two = nodes
    async with client("a", one) as a, client("c", two) as c:
        await a.register()
        await c.register()
        sub = await a.subscribe("cl/news")
        assert sub.topic_results[0].result == "SUCCESS"
        await asyncio.sleep(0.5)  # node 2 follows the subscription record
        resp = await c.publish("cl/news", b"extra")
        assert resp.delivery_status in {"DELY_ACCEPTED", "DELY_STORED"}
        got = await a.receive(timeout=10)
        assert got.item.payload == b"extra"
        assert got.item.messaging_topic == "cl/news"


async def test_kill_9_of_nats_server_loses_nothing_acknowledged(
    nodes: tuple[Node, Node], jetstream: NatsServer
) -> None:
    """Both nodes ride out a nats-server crash; the stored messages survive it."""
    one, two = nodes
    ids = [f"k-{uuid.uuid4()}" for _ in range(100)]
    async with client("a", one) as a:
        await a.register()
        statuses = await send_many(a, "b", ids)
    assert set(statuses) == {"DELY_STORED"}
    jetstream.kill()
    jetstream.start()
    async with client("b", two) as b:
        for _ in range(60):  # the nodes reconnect (0.5 s back-off)
            try:
                resp = await b.register()
            except Exception:
                await asyncio.sleep(0.5)
                continue
            if resp.registration_result == "SUCCESS":
                break
            await asyncio.sleep(0.5)
        received = await receive_all(b, len(ids))
        assert sorted(received) == sorted(ids)
        async with client("a", one) as a:
            await a.register()
            resp = await a.send("b", b"after the crash", report=True)
            # accepted, or stored while node 1 still counts node 2 as away:
            # delivered either way once the nodes hear of each other again
            assert resp.delivery_status in {"DELY_ACCEPTED", "DELY_STORED"}
            got = await b.receive(timeout=20)
            assert got.item.payload == b"after the crash"


async def test_group_message_reaches_members_at_both_nodes(
    nodes: tuple[Node, Node],
) -> None:
    one, two = nodes
    members = [f"g{i}" for i in range(6)]
    for ue in members:
        one.add_ue(ue, f"s-{ue}")
    msgin5g("group", "create", "crew", *members, "--storage", one.storage)
    clients = [client(ue, one if i % 2 else two) for i, ue in enumerate(members)]
    for ue in clients:
        await ue.start()
    try:
        for ue in clients:
            await ue.register()
        await asyncio.sleep(0.5)
        resp = await clients[0].send_to_group("crew", b"all hands")
        assert resp.delivery_status == "DELY_ACCEPTED"
        for ue in clients[1:]:
            got = await ue.receive(timeout=10)
            assert got.item.payload == b"all hands", ue.ue_service_id
    finally:
        for ue in clients:
            await ue.aclose()
