"""Fan-out storage: one payload, per-member rows (every backend), schema upgrade."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from msgin5g.model.messages import Msg
from msgin5g.model.queue import QueuedItem, ReportRoute, fanout_template, member_copy
from msgin5g.spec.delivery import PriorityRank
from msgin5g.storage import Backend, open_backend
from msgin5g.storage.sqlite import SCHEMA_VERSION

if TYPE_CHECKING:
    from conftest import BackendFactory

T0 = 1_700_000_000.0


def group_msg(message_id: str = "m-1") -> Msg:
    return Msg(
        message_id=message_id,
        originating_ue_service_id="ue-a",
        recipient_group_service_id="grp",
        payload=b"x" * 500,
        delivery_status_required=True,
    )


def fanout_items(template: Msg, members: list[str]) -> list[QueuedItem]:
    return [
        QueuedItem(
            recipient=member,
            item=member_copy(template, member),
            priority=PriorityRank.MIDDLE,
            expires_at=T0 + 3600,
            store=True,
        )
        for member in members
    ]


async def test_fanout_items_read_back_as_member_copies(backend: Backend) -> None:
    template = fanout_template(group_msg())
    members = ["ue-b", "ue-c", "as/app-1"]
    items = fanout_items(template, members)
    routes = [ReportRoute("m-1", m, "ue-a", T0 + 7200) for m in members]
    await backend.enqueue_fanout(template, items, routes)

    seqs = [item.seq for item in items]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3 and seqs[0] > 0
    for member in ("ue-b", "ue-c"):
        (stored,) = await backend.pending_for(member)
        assert isinstance(stored.item, Msg)
        assert stored.item.recipient_ue_service_id == member
        assert stored.item.recipient_group_service_id == "grp"
        assert stored.item.payload == b"x" * 500
    (as_item,) = await backend.pending_for("as/app-1")
    assert isinstance(as_item.item, Msg)
    assert as_item.item.recipient_as_service_id == "app-1"
    assert as_item.item.recipient_ue_service_id is None
    found = await backend.find("ue-c", "m-1")
    assert found is not None and found.seq == seqs[1]
    route = await backend.take_report_route("m-1", "ue-b")
    assert route is not None and route.originator == "ue-a"
    assert await backend.count() == 3


async def test_per_member_state_is_independent(backend: Backend) -> None:
    template = fanout_template(group_msg())
    items = fanout_items(template, ["ue-b", "ue-c", "ue-d"])
    await backend.enqueue_fanout(template, items, [])
    await backend.remove(items[0].seq)
    assert await backend.set_expiry(items[1].seq, T0 + 10)
    expired = await backend.take_expired(T0 + 20)
    assert [e.recipient for e in expired] == ["ue-c"]
    assert isinstance(expired[0].item, Msg)
    assert expired[0].item.recipient_ue_service_id == "ue-c"
    assert [i.recipient for i in await backend.take_all_for("ue-d")] == ["ue-d"]
    assert await backend.count() == 0


async def test_shared_payload_purged_only_when_unreferenced(
    backend_factory: BackendFactory,
) -> None:
    backend = await backend_factory.open()
    template = fanout_template(group_msg())
    items = fanout_items(template, ["ue-b", "ue-c"])
    await backend.enqueue_fanout(template, items, [])
    await backend.remove(items[0].seq)
    await backend.purge_payloads()
    (left,) = await backend.pending_for("ue-c")
    assert isinstance(left.item, Msg) and left.item.payload == b"x" * 500
    await backend.remove(items[1].seq)
    purged = await backend.purge_payloads()
    if backend_factory.persistent:
        assert purged == 1
    if backend_factory.kind == "sqlite":
        conn = sqlite3.connect(backend_factory.url.removeprefix("sqlite:///"))
        assert conn.execute("SELECT COUNT(*) FROM payloads").fetchone()[0] == 0
        conn.close()


async def test_fanout_stores_the_payload_once(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    backend = open_backend(f"sqlite:///{path}")
    await backend.start()
    template = fanout_template(group_msg())
    members = [f"ue-{i}" for i in range(1000)]
    await backend.enqueue_fanout(template, fanout_items(template, members), [])
    await backend.aclose()
    conn = sqlite3.connect(path)
    payloads = conn.execute("SELECT COUNT(*), SUM(LENGTH(body)) FROM payloads")
    count, size = payloads.fetchone()
    bodies = conn.execute("SELECT SUM(LENGTH(body)) FROM queue").fetchone()[0]
    conn.close()
    assert count == 1 and size > 500
    assert bodies == 0  # member rows hold delivery state only


async def test_fanout_survives_reopen(backend_factory: BackendFactory) -> None:
    backend = await backend_factory.open()
    template = fanout_template(group_msg())
    await backend.enqueue_fanout(template, fanout_items(template, ["ue-b"]), [])
    backend = await backend_factory.reopen(backend)
    (item,) = await backend.pending_for("ue-b")
    assert isinstance(item.item, Msg) and item.item.recipient_ue_service_id == "ue-b"


async def test_version_2_database_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE queue (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            recipient TEXT NOT NULL,
            message_id TEXT NOT NULL,
            priority INTEGER NOT NULL,
            expires_at REAL NOT NULL,
            store INTEGER NOT NULL,
            body BLOB NOT NULL
        );
        INSERT INTO queue(recipient, message_id, priority, expires_at, store, body)
        VALUES ('ue-b', 'old', 1, 1e12, 1,
                '{"messageType":"MSG","messageId":"old","payload":"aGk="}');
        PRAGMA user_version = 2;
        """
    )
    conn.close()
    backend = open_backend(f"sqlite:///{path}")
    await backend.start()
    (old,) = await backend.pending_for("ue-b")
    assert old.item.message_id == "old"
    template = fanout_template(group_msg())
    await backend.enqueue_fanout(template, fanout_items(template, ["ue-b"]), [])
    assert len(await backend.pending_for("ue-b")) == 2
    await backend.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


async def test_seqs_are_never_reused_across_reopen(
    backend_factory: BackendFactory,
) -> None:
    backend = await backend_factory.open()
    template = fanout_template(group_msg())
    items = fanout_items(template, ["ue-b", "ue-c"])
    await backend.enqueue_fanout(template, items, [])
    for item in items:
        await backend.remove(item.seq)
    backend = await backend_factory.reopen(backend)
    later = fanout_items(template, ["ue-d"])
    await backend.enqueue_fanout(template, later, [])
    assert later[0].seq > items[-1].seq


async def test_fanout_seqs_are_known_before_the_write_completes(
    backend: Backend,
) -> None:
    template = fanout_template(group_msg())
    items = fanout_items(template, ["ue-b", "ue-c"])
    durable = backend.enqueue_fanout(template, items, [])
    assert items[0].seq > 0 and items[1].seq == items[0].seq + 1
    await durable
    single = QueuedItem("ue-b", member_copy(template, "ue-b"), 1, T0 + 60, True)
    assert await backend.enqueue(single) == items[1].seq + 1
