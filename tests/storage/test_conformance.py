"""Conformance suite: every method of every protocol in msgin5g.storage.base.

Each test runs once per backend (fixture ``backend``: memory, sqlite on a file).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import msgspec
import pytest

from msgin5g.errors import ConfigError
from msgin5g.model.messages import Imdn, Msg, StoreAndForwardParams
from msgin5g.model.queue import QueuedItem, ReportRoute
from msgin5g.model.registry import Contact, UERegistration
from msgin5g.spec.delivery import PriorityRank, PriorityType, ReportDeliveryStatus
from msgin5g.storage import Backend, open_backend
from msgin5g.storage.base import DedupRecord

if TYPE_CHECKING:
    from conftest import BackendFactory

T0 = 1_700_000_000.0


def make_msg(message_id: str, recipient: str = "ue-b", **fields: object) -> Msg:
    return Msg(
        message_id=message_id,
        originating_ue_service_id="ue-a",
        recipient_ue_service_id=recipient,
        payload=b"hello",
        **fields,  # type: ignore[arg-type]
    )


def make_item(
    message_id: str,
    recipient: str = "ue-b",
    *,
    priority: int = PriorityRank.MIDDLE,
    expires_at: float = T0 + 3600,
    store: bool = True,
) -> QueuedItem:
    return QueuedItem(
        recipient=recipient,
        item=make_msg(message_id, recipient),
        priority=priority,
        expires_at=expires_at,
        store=store,
    )


def make_imdn(message_id: str, recipient: str = "ue-a") -> QueuedItem:
    return QueuedItem(
        recipient=recipient,
        item=Imdn(
            message_id=message_id,
            delivery_status=ReportDeliveryStatus.REPT_DELY_SUCCESS,
            originating_ue_service_id="ue-b",
            recipient_ue_service_id=recipient,
        ),
        priority=PriorityRank.HIGH,
        expires_at=T0 + 60,
        store=False,
    )


def make_registration(ue: str, port: int = 5683) -> UERegistration:
    return UERegistration(
        ue_service_id=ue,
        source=Contact("192.0.2.1", port),
        contact=Contact("192.0.2.1", port, ("msgin5g", "in")),
        registered_at=T0,
        refuses_store_and_forward=True,
        max_segment_size=512,
        profile='{"clientPorts":[]}',
    )


def ids(items: list[QueuedItem]) -> list[str]:
    return [item.item.message_id for item in items]


# ---------------------------------------------------------------- credentials


async def test_credentials_crud_and_sorted_listing(backend: Backend) -> None:
    assert await backend.get_credential("ue-1") is None
    assert await backend.list_credentials() == []

    await backend.put_credential("ue-2", b"\x00digest-2")
    await backend.put_credential("ue-1", b"digest-1")
    await backend.put_credential("ue-10", b"digest-10")
    assert await backend.get_credential("ue-2") == b"\x00digest-2"
    assert await backend.list_credentials() == ["ue-1", "ue-10", "ue-2"]

    await backend.put_credential("ue-2", b"replaced")
    assert await backend.get_credential("ue-2") == b"replaced"
    assert await backend.list_credentials() == ["ue-1", "ue-10", "ue-2"]

    assert await backend.delete_credential("ue-2") is True
    assert await backend.delete_credential("ue-2") is False
    assert await backend.get_credential("ue-2") is None
    assert await backend.list_credentials() == ["ue-1", "ue-10"]


async def test_bulk_credentials_keep_or_replace_existing(
    backend_factory: BackendFactory,
) -> None:
    backend = await backend_factory.open()
    await backend.put_credential("ue-2", b"old-2")
    await backend.put_credential("ue-9", b"old-9")
    await backend.delete_credential("ue-9")  # a deleted ID is created again
    pairs = [(f"ue-{n}", f"new-{n}".encode()) for n in range(5)] + [("ue-9", b"d9")]

    assert await backend.put_credentials(pairs) == ["ue-2"]
    assert await backend.get_credential("ue-2") == b"old-2"  # kept: no replace
    assert await backend.get_credential("ue-4") == b"new-4"
    assert await backend.get_credential("ue-9") == b"d9"

    again = [("ue-1", b"r1"), ("ue-2", b"r2"), ("ue-5", b"r5")]
    assert await backend.put_credentials(again, replace=True) == ["ue-1", "ue-2"]
    assert await backend.get_credential("ue-2") == b"r2"
    assert await backend.put_credentials([]) == []

    assert (await backend.load_credentials())[:3] == [
        ("ue-0", b"new-0"),
        ("ue-1", b"r1"),
        ("ue-2", b"r2"),
    ]

    backend = await backend_factory.reopen(backend)  # durable when it returned
    assert await backend.list_credentials() == [f"ue-{n}" for n in range(6)] + ["ue-9"]
    assert await backend.get_credential("ue-1") == b"r1"
    assert len(await backend.load_credentials()) == 7


async def test_bulk_credentials_spanning_chunks(backend: Backend) -> None:
    pairs = [(f"bulk-{n:05d}", n.to_bytes(4, "big")) for n in range(12_345)]
    await backend.put_credential("bulk-11111", b"there")
    assert await backend.put_credentials(pairs) == ["bulk-11111"]
    wanted = ["bulk-00000", "nobody", "bulk-11111", "bulk-00000", "bulk-12344"]
    assert await backend.get_credentials(wanted) == {
        "bulk-00000": bytes(4),
        "bulk-11111": b"there",
        "bulk-12344": (12_344).to_bytes(4, "big"),
    }
    assert await backend.get_credentials([]) == {}
    many = await backend.get_credentials([ue for ue, _ in pairs[:1_200]])
    assert len(many) == 1_200
    assert len(await backend.list_credentials()) == 12_345
    assert await backend.get_credential("bulk-12344") == (12_344).to_bytes(4, "big")


# ---------------------------------------------------------------- registrations


async def test_a_burst_of_registrations_keeps_submission_order(
    backend_factory: BackendFactory,
) -> None:
    # SQLite runs consecutive upserts of one group commit as one executemany
    backend = await backend_factory.open()
    burst = [make_registration(f"burst-{n % 150}", port=n) for n in range(300)]
    await asyncio.gather(*(backend.put_registration(r) for r in burst))
    loaded = {r.ue_service_id: r for r in await backend.load_registrations()}
    assert len(loaded) == 150
    assert loaded["burst-7"].source.port == 157  # the later write wins
    backend = await backend_factory.reopen(backend)
    loaded = {r.ue_service_id: r for r in await backend.load_registrations()}
    assert loaded["burst-149"] == burst[299]


async def test_registration_put_replace_delete_load(backend: Backend) -> None:
    assert await backend.load_registrations() == []
    first = make_registration("ue-1")
    second = make_registration("ue-2")
    await backend.put_registration(first)
    await backend.put_registration(second)
    loaded = sorted(await backend.load_registrations(), key=lambda r: r.ue_service_id)
    assert loaded == [first, second]

    replaced = make_registration("ue-1", port=6000)
    await backend.put_registration(replaced)
    loaded = sorted(await backend.load_registrations(), key=lambda r: r.ue_service_id)
    assert loaded == [replaced, second]
    assert loaded[0].contact.path == ("msgin5g", "in")

    assert await backend.delete_registration("ue-1") is True
    assert await backend.delete_registration("ue-1") is False
    assert await backend.load_registrations() == [second]


async def test_registration_defaults_round_trip(backend: Backend) -> None:
    minimal = UERegistration(
        ue_service_id="ue-min",
        source=Contact("::1", 1),
        contact=Contact("::1", 1),
        registered_at=0.5,
    )
    await backend.put_registration(minimal)
    assert await backend.load_registrations() == [minimal]


# ---------------------------------------------------------------- queue


async def test_enqueue_assigns_increasing_seq_and_sets_it_on_item(
    backend: Backend,
) -> None:
    items = [make_item(f"m{i}", recipient=f"ue-{i % 3}") for i in range(10)]
    seqs = []
    for item in items:
        seq = await backend.enqueue(item)
        assert item.seq == seq
        seqs.append(seq)
    assert all(seq > 0 for seq in seqs)
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)


async def test_pending_for_orders_by_priority_then_seq(backend: Backend) -> None:
    priorities = [2, 0, 1, 0, 2, 1, 0, 2]
    for i, priority in enumerate(priorities):
        await backend.enqueue(make_item(f"m{i}", priority=priority))
        await backend.enqueue(make_item(f"other{i}", recipient="ue-other"))

    pending = await backend.pending_for("ue-b", limit=1000)
    assert ids(pending) == ["m1", "m3", "m6", "m2", "m5", "m0", "m4", "m7"]
    assert [(item.priority, item.seq) for item in pending] == sorted(
        (item.priority, item.seq) for item in pending
    )
    assert all(item.recipient == "ue-b" for item in pending)
    assert await backend.pending_for("ue-nobody") == []


async def test_pending_for_after_seq_and_limit(backend: Backend) -> None:
    seqs = [await backend.enqueue(make_item(f"m{i}")) for i in range(6)]
    assert ids(await backend.pending_for("ue-b", limit=2)) == ["m0", "m1"]
    assert ids(await backend.pending_for("ue-b", after_seq=seqs[1], limit=2)) == [
        "m2",
        "m3",
    ]
    assert ids(await backend.pending_for("ue-b", after_seq=seqs[-1])) == []
    assert len(await backend.pending_for("ue-b")) == 6


async def test_pending_for_returns_full_item(backend: Backend) -> None:
    original = make_item(
        "m1", priority=PriorityRank.LOW, expires_at=T0 + 5, store=False
    )
    await backend.enqueue(original)
    [stored] = await backend.pending_for("ue-b")
    assert stored == original


async def test_stored_item_is_independent_of_caller_objects(backend: Backend) -> None:
    item = make_item("m1", expires_at=T0 + 10)
    seq = await backend.enqueue(item)
    item.expires_at = T0 + 99  # mutating the caller's object changes nothing stored
    [stored] = await backend.pending_for("ue-b")
    assert stored.expires_at == T0 + 10
    stored.priority = 99  # nor does mutating a returned copy
    [again] = await backend.pending_for("ue-b")
    assert again.priority == PriorityRank.MIDDLE
    assert again.seq == seq


async def test_remove_forgets_item_and_ignores_unknown_seq(backend: Backend) -> None:
    keep = await backend.enqueue(make_item("keep"))
    gone = await backend.enqueue(make_item("gone"))
    await backend.remove(gone)
    await backend.remove(gone)
    await backend.remove(987654)
    assert [item.seq for item in await backend.pending_for("ue-b")] == [keep]
    assert await backend.count() == 1


async def test_remove_nowait_visible_after_next_awaited_write(backend: Backend) -> None:
    first = await backend.enqueue(make_item("first"))
    await backend.enqueue(make_item("second"))
    backend.remove_nowait(first)
    backend.remove_nowait(424242)  # unknown: ignored
    await backend.put_credential("ue-x", b"d")  # any awaited write
    assert ids(await backend.pending_for("ue-b")) == ["second"]
    assert await backend.count() == 1


async def test_take_expired_removes_and_returns_only_expired(backend: Backend) -> None:
    for name, expires_at in [("t40", 40), ("t10", 10), ("t30", 30), ("t20", 20)]:
        await backend.enqueue(make_item(name, expires_at=T0 + expires_at))

    taken = await backend.take_expired(T0 + 20)  # boundary: expires_at == now
    assert ids(taken) == ["t10", "t20"]
    assert ids(await backend.pending_for("ue-b")) == ["t40", "t30"]
    assert await backend.take_expired(T0 + 20) == []
    assert await backend.count() == 2


async def test_take_expired_respects_limit(backend: Backend) -> None:
    for i in range(5):
        await backend.enqueue(make_item(f"m{i}", expires_at=T0 + i))
    assert ids(await backend.take_expired(T0 + 100, limit=2)) == ["m0", "m1"]
    assert await backend.count() == 3
    assert ids(await backend.take_expired(T0 + 100, limit=2)) == ["m2", "m3"]
    assert ids(await backend.take_expired(T0 + 100)) == ["m4"]
    assert await backend.count() == 0


async def test_find_by_recipient_and_message_id(backend: Backend) -> None:
    await backend.enqueue(make_imdn("shared-id", recipient="ue-b"))  # a report
    seq = await backend.enqueue(make_item("shared-id", recipient="ue-b"))
    await backend.enqueue(make_item("shared-id", recipient="ue-c"))

    found = await backend.find("ue-b", "shared-id")
    assert found is not None
    assert found.seq == seq
    assert isinstance(found.item, Msg)
    assert found.recipient == "ue-b"
    assert await backend.find("ue-b", "unknown") is None
    assert await backend.find("ue-z", "shared-id") is None


async def test_find_ignores_reports(backend: Backend) -> None:
    await backend.enqueue(make_imdn("only-report", recipient="ue-a"))
    assert await backend.find("ue-a", "only-report") is None


async def test_set_expiry_changes_expiry(backend: Backend) -> None:
    seq = await backend.enqueue(make_item("m1", expires_at=T0 + 10))
    await backend.enqueue(make_item("m2", expires_at=T0 + 10))
    assert await backend.set_expiry(seq, T0 + 1000) is True
    assert await backend.set_expiry(999999, T0) is False

    [item] = [i for i in await backend.pending_for("ue-b") if i.seq == seq]
    assert item.expires_at == T0 + 1000
    assert ids(await backend.take_expired(T0 + 100)) == ["m2"]
    assert ids(await backend.take_expired(T0 + 1000)) == ["m1"]


async def test_set_expiry_can_make_item_expire_sooner(backend: Backend) -> None:
    seq = await backend.enqueue(make_item("m1", expires_at=T0 + 1000))
    assert await backend.set_expiry(seq, T0 + 1)
    assert ids(await backend.take_expired(T0 + 2)) == ["m1"]


async def test_take_all_for_removes_every_item_of_recipient(backend: Backend) -> None:
    await backend.enqueue(make_item("low", priority=PriorityRank.LOW))
    await backend.enqueue(make_item("high", priority=PriorityRank.HIGH))
    await backend.enqueue(make_item("keep", recipient="ue-c"))

    assert ids(await backend.take_all_for("ue-b")) == ["high", "low"]
    assert await backend.pending_for("ue-b") == []
    assert await backend.take_all_for("ue-b") == []
    assert ids(await backend.pending_for("ue-c")) == ["keep"]
    assert await backend.count() == 1


async def test_recipients_with_pending(backend: Backend) -> None:
    assert await backend.recipients_with_pending() == []
    seq = await backend.enqueue(make_item("m1", recipient="ue-z"))
    await backend.enqueue(make_item("m2", recipient="ue-a"))
    await backend.enqueue(make_item("m3", recipient="ue-a"))
    assert sorted(await backend.recipients_with_pending()) == ["ue-a", "ue-z"]
    await backend.remove(seq)
    assert await backend.recipients_with_pending() == ["ue-a"]


async def test_count(backend: Backend) -> None:
    assert await backend.count() == 0
    seqs = [await backend.enqueue(make_item(f"m{i}")) for i in range(3)]
    await backend.enqueue(make_imdn("r1"))
    assert await backend.count() == 4
    await backend.remove(seqs[0])
    assert await backend.count() == 3


# ---------------------------------------------------------------- reports


async def test_report_route_put_and_take(backend: Backend) -> None:
    route = ReportRoute("m1", reporter="ue-b", originator="ue-a", expires_at=T0)
    await backend.put_report_route(route)
    await backend.put_report_route(ReportRoute("m1", "ue-c", "ue-a", T0))

    assert await backend.take_report_route("m1", "ue-x") is None
    assert await backend.take_report_route("m1", "ue-b") == route
    assert await backend.take_report_route("m1", "ue-b") is None  # take removes
    assert await backend.take_report_route("m1", "ue-c") is not None


async def test_report_route_put_replaces(backend: Backend) -> None:
    await backend.put_report_route(ReportRoute("m1", "ue-b", "ue-a", T0))
    newer = ReportRoute("m1", "ue-b", "as-1", T0 + 50)
    await backend.put_report_route(newer)
    assert await backend.take_report_route("m1", "ue-b") == newer


async def test_purge_report_routes_drops_only_expired(backend: Backend) -> None:
    for i in range(5):
        await backend.put_report_route(ReportRoute(f"m{i}", "ue-b", "ue-a", T0 + i))
    assert await backend.purge_report_routes(T0 + 2) == 3  # expires_at <= now
    assert await backend.purge_report_routes(T0 + 2) == 0
    assert await backend.take_report_route("m2", "ue-b") is None
    assert await backend.take_report_route("m3", "ue-b") is not None
    assert await backend.take_report_route("m4", "ue-b") is not None


# ---------------------------------------------------------------- fidelity


async def test_round_trip_fidelity_of_msg_and_imdn(backend: Backend) -> None:
    expiry = datetime(2031, 2, 3, 4, 5, 6, 789000, tzinfo=timezone(timedelta(hours=2)))
    msg = Msg(
        message_id="3f2b6c1e-aaaa-bbbb-cccc-000000000001",
        originating_as_service_id="as-1",
        recipient_ue_service_id="ue-b",
        messaging_topic="topic/\u00e9t\u00e9",
        delivery_status_required=True,
        application_id="app",
        payload=bytes(range(256)),
        priority_type=PriorityType.HIGH,
        store_and_forward_flag=True,
        store_and_forward_params=StoreAndForwardParams(message_expiration_time=expiry),
        segmentation_set_id="set-1",
        total_segments=3,
        segment_number=2,
    )
    report = Imdn(
        message_id="m-reported",
        delivery_status=ReportDeliveryStatus.REPT_DELY_FAILED,
        originating_ue_service_id="ue-b",
        recipient_as_service_id="as-1",
        failure_cause="EXPIRED",
    )
    msg_item = QueuedItem("ue-b", msg, PriorityRank.HIGH, T0 + 0.125, True)
    imdn_item = QueuedItem("as-1", report, PriorityRank.LOW, T0 + 7.5, False)
    await backend.enqueue(msg_item)
    await backend.enqueue(imdn_item)

    [got_msg] = await backend.pending_for("ue-b")
    [got_imdn] = await backend.pending_for("as-1")
    assert got_msg == msg_item
    assert got_imdn == imdn_item
    assert isinstance(got_msg.item, Msg)
    assert isinstance(got_imdn.item, Imdn)
    assert got_msg.item.payload == bytes(range(256))
    assert type(got_msg.item.priority_type) is PriorityType
    assert type(got_imdn.item.delivery_status) is ReportDeliveryStatus
    params = got_msg.item.store_and_forward_params
    assert params is not None
    assert params.message_expiration_time == expiry
    assert params.message_expiration_time is not None
    assert params.message_expiration_time.utcoffset() == timedelta(hours=2)
    assert got_msg.store is True
    assert got_imdn.store is False
    found = await backend.find("ue-b", msg.message_id)
    assert found == msg_item


async def test_round_trip_of_msg_without_optional_members(backend: Backend) -> None:
    item = QueuedItem("ue-b", Msg(message_id="bare"), 0, 0.0, False)
    await backend.enqueue(item)
    assert await backend.pending_for("ue-b") == [item]


# ---------------------------------------------------------------- persistence


async def test_data_survives_close_and_reopen(
    backend_factory: BackendFactory,
) -> None:
    backend = await backend_factory.open()
    reg = make_registration("ue-1")
    await backend.put_credential("ue-1", b"digest")
    await backend.put_registration(reg)
    expiry = datetime(2030, 1, 1, tzinfo=UTC)
    item = QueuedItem(
        "ue-b",
        make_msg(
            "m1",
            store_and_forward_params=StoreAndForwardParams(
                message_expiration_time=expiry
            ),
        ),
        PriorityRank.HIGH,
        T0,
        True,
    )
    await backend.enqueue(item)
    last = await backend.enqueue(make_item("m2"))
    backend.remove_nowait(last)
    route = ReportRoute("m1", "ue-b", "ue-a", T0)
    await backend.put_report_route(route)

    backend = await backend_factory.reopen(backend)
    assert await backend.get_credential("ue-1") == b"digest"
    assert await backend.list_credentials() == ["ue-1"]
    assert await backend.load_registrations() == [reg]
    assert await backend.pending_for("ue-b") == [item]
    assert await backend.count() == 1
    assert await backend.take_report_route("m1", "ue-b") == route
    # seq keeps increasing across restarts, even past removed items
    assert await backend.enqueue(make_item("m3")) > last


async def test_aclose_twice_is_safe(backend: Backend) -> None:
    await backend.enqueue(make_item("m1"))
    await backend.aclose()
    await backend.aclose()


# ---------------------------------------------------------------- concurrency


async def test_concurrent_enqueues_get_distinct_seqs_and_are_durable(
    backend_factory: BackendFactory,
) -> None:
    backend = await backend_factory.open()
    writes = 500
    commits_before = getattr(backend, "commits", None)  # a group-committing backend
    items = [make_item(f"m{i}", recipient=f"ue-{i % 7}") for i in range(writes)]

    seqs = await asyncio.gather(*(backend.enqueue(item) for item in items))

    assert len(set(seqs)) == writes
    assert [item.seq for item in items] == seqs
    assert await backend.count() == writes
    if commits_before is not None:
        commits = getattr(backend, "commits") - commits_before  # noqa: B009
        assert 0 < commits < writes / 5, f"{commits} commits for {writes} writes"
    if backend_factory.persistent:
        backend = await backend_factory.reopen(backend)
        assert await backend.count() == writes
        stored = {
            item.seq: item.item.message_id
            for recipient in await backend.recipients_with_pending()
            for item in await backend.pending_for(recipient, limit=writes)
        }
        assert stored == {item.seq: item.item.message_id for item in items}


async def test_concurrent_mixed_operations(backend: Backend) -> None:
    seqs = await asyncio.gather(
        *(backend.enqueue(make_item(f"m{i}")) for i in range(50))
    )
    await asyncio.gather(
        *(backend.remove(seq) for seq in seqs[:25]),
        *(backend.put_credential(f"ue-{i}", b"d") for i in range(25)),
        *(backend.set_expiry(seq, T0) for seq in seqs[25:]),
    )
    assert await backend.count() == 25
    assert len(await backend.list_credentials()) == 25
    assert len(await backend.take_expired(T0)) == 25


# ---------------------------------------------------------------- open_backend


@pytest.mark.parametrize(
    ("url", "kind", "path"),
    [
        ("memory:", "MemoryBackend", None),
        ("sqlite:///relative/path.db", "SqliteBackend", "relative/path.db"),
        ("sqlite:////abs/path.db", "SqliteBackend", "/abs/path.db"),
        ("sqlite:///:memory:", "SqliteBackend", ":memory:"),
    ],
)
def test_open_backend_chooses_by_url(url: str, kind: str, path: str | None) -> None:
    backend = open_backend(url)
    assert type(backend).__name__ == kind
    if path is not None:
        assert getattr(backend, "path") == path  # noqa: B009
        assert getattr(backend, "synchronous") == "FULL"  # noqa: B009


def test_open_backend_passes_synchronous() -> None:
    backend = open_backend("sqlite:///x.db", synchronous="NORMAL")
    assert getattr(backend, "synchronous") == "NORMAL"  # noqa: B009


@pytest.mark.parametrize(
    "url", ["postgres://db/x", "sqlite://host/x.db", "sqlite:///", "", "memory"]
)
def test_open_backend_rejects_unsupported_url(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^storage\.url: "):
        open_backend(url)


def test_open_backend_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match=r"^storage\.synchronous: "):
        open_backend("sqlite:///x.db", synchronous="SOMETIMES")
    with pytest.raises(ConfigError, match=r"^storage\.synchronus: "):
        open_backend("memory:", synchronus="FULL")


async def test_sqlite_in_memory_url_works() -> None:
    backend = open_backend("sqlite:///:memory:")
    await backend.start()
    try:
        seq = await backend.enqueue(make_item("m1"))
        assert ids(await backend.pending_for("ue-b")) == ["m1"]
        backend.remove_nowait(seq)
        await backend.put_credential("ue", b"d")
        assert await backend.count() == 0
        assert await backend.list_credentials() == ["ue"]
    finally:
        await backend.aclose()


class _Rec(msgspec.Struct):
    name: str
    size: int = 0
    tags: list[str] = []


async def test_records_put_get_replace_delete_load(backend: Backend) -> None:
    assert await backend.get_record("k", "a", _Rec) is None
    await backend.put_record("k", "b", _Rec("b", 2, ["x"]))
    await backend.put_record("k", "a", _Rec("a", 1))
    await backend.put_record("other", "a", _Rec("zzz"))
    assert await backend.get_record("k", "a", _Rec) == _Rec("a", 1)
    await backend.put_record("k", "a", _Rec("a", 5))
    assert [r.size for r in await backend.load_records("k", _Rec)] == [5, 2]
    assert await backend.delete_record("k", "a") is True
    assert await backend.delete_record("k", "a") is False
    assert await backend.load_records("k", _Rec) == [_Rec("b", 2, ["x"])]
    assert await backend.load_records("other", _Rec) == [_Rec("zzz")]


async def test_records_are_copies(backend: Backend) -> None:
    record = _Rec("a", tags=["x"])
    await backend.put_record("k", "a", record)
    record.tags.append("changed")
    stored = await backend.get_record("k", "a", _Rec)
    assert stored is not None
    assert stored.tags == ["x"]


async def test_records_survive_reopen(backend_factory: BackendFactory) -> None:
    backend = await backend_factory.open()
    await backend.put_record("k", "a", _Rec("a", 3))
    again = await backend_factory.reopen(backend)
    assert await again.get_record("k", "a", _Rec) == _Rec("a", 3)


# ---------------------------------------------------------------- order contract
# (msgin5g.storage.base: "Visibility and order", "Seqs"; what a third backend must
# reproduce exactly)


async def test_loads_and_listings_come_in_key_order(backend: Backend) -> None:
    for ue in ("ue-2", "ue-10", "ue-1"):
        await backend.put_registration(make_registration(ue))
        await backend.enqueue(make_item(f"m-{ue}", recipient=ue))
    expected = ["ue-1", "ue-10", "ue-2"]  # code point order, not numeric
    assert [r.ue_service_id for r in await backend.load_registrations()] == expected
    assert await backend.recipients_with_pending() == expected


async def test_take_expired_orders_by_expiry_then_seq(backend: Backend) -> None:
    await backend.enqueue(make_item("late", expires_at=T0 + 5))
    await backend.enqueue(make_item("a", expires_at=T0 + 1, priority=2))
    await backend.enqueue(make_item("b", expires_at=T0 + 1, priority=0))
    await backend.enqueue(make_item("early", expires_at=T0))
    taken = await backend.take_expired(T0 + 5)
    assert ids(taken) == ["early", "a", "b", "late"]  # priority plays no part


async def test_take_report_route_does_not_check_expiry(backend: Backend) -> None:
    route = ReportRoute("m1", "ue-b", "ue-a", expires_at=1.0)  # long expired
    await backend.put_report_route(route)
    assert await backend.take_report_route("m1", "ue-b") == route


async def test_unawaited_writes_take_effect_in_submission_order(
    backend: Backend,
) -> None:
    await asyncio.gather(
        *(backend.put_credential("ue-1", f"d{i}".encode()) for i in range(20))
    )
    assert await backend.get_credential("ue-1") == b"d19"
    await asyncio.gather(
        backend.put_record("k", "a", _Rec("first")),
        backend.delete_record("k", "a"),
        backend.put_record("k", "a", _Rec("last")),
    )
    assert await backend.get_record("k", "a", _Rec) == _Rec("last")
    items = [make_item(f"m{i}") for i in range(20)]
    seqs = await asyncio.gather(*(backend.enqueue(item) for item in items))
    assert seqs == sorted(seqs)
    assert ids(await backend.pending_for("ue-b", limit=100)) == ids(items)


async def test_concurrent_submissions_of_one_key_store_once(backend: Backend) -> None:
    def record(fingerprint: bytes) -> DedupRecord:
        return DedupRecord("ue-a", "m1", fingerprint, b"answer", T0 + 100)

    first, second = make_item("m1"), make_item("m1")
    results = await asyncio.gather(
        backend.enqueue_once(first, record(b"f1"), T0),
        backend.enqueue_once(second, record(b"f2"), T0),
    )
    assert results == [None, record(b"f1")]  # the first submitted wins
    assert first.seq > 0 and second.seq == 0
    assert await backend.count() == 1


async def test_remove_nowait_after_aclose_does_not_raise(backend: Backend) -> None:
    seq = await backend.enqueue(make_item("m1"))
    await backend.aclose()
    backend.remove_nowait(seq)
