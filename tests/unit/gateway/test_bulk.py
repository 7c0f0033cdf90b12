"""The bulk trigger and sizing rules (pure, digest §3.4.3 G4/G5)."""

from msgin5g.gateway.bulk import Batcher, strip
from msgin5g.model.messages import Reg, UECredentialInfo


def test_nothing_due_before_deadline_and_not_full() -> None:
    batcher = Batcher(batch_size=3, max_octets=10_000, overhead=100)
    batcher.add("REG", "a", 100, send_by=10.0)
    batcher.add("REG", "b", 100, send_by=20.0)
    assert batcher.due(5.0) == []
    assert batcher.next_deadline() == 10.0
    assert batcher.expected("REG", "b") == 10.0


def test_earliest_deadline_flushes_the_whole_kind() -> None:
    batcher = Batcher(batch_size=10, max_octets=10_000, overhead=100)
    batcher.add("REG", "a", 100, send_by=10.0)
    batcher.add("REG", "b", 100, send_by=20.0)
    batcher.add("DEREG", "c", 100, send_by=30.0)
    batches = batcher.due(10.0)
    assert [(b.kind, b.keys) for b in batches] == [("REG", ["a", "b"])]
    assert len(batcher) == 1


def test_full_batches_go_at_once_remainder_waits() -> None:
    batcher = Batcher(batch_size=2, max_octets=10_000, overhead=100)
    for key in "abcde":
        batcher.add("REG", key, 100, send_by=100.0)
    batches = batcher.due(0.0)
    assert [b.keys for b in batches] == [["a", "b"], ["c", "d"]]
    assert len(batcher) == 1


def test_batches_are_capped_by_encoded_size() -> None:
    batcher = Batcher(batch_size=1000, max_octets=1000, overhead=200)
    for index in range(10):
        batcher.add("REG", f"k{index}", 199, send_by=0.0)
    batches = batcher.due(0.0)
    assert [len(b.keys) for b in batches] == [4, 4, 2]
    for batch in batches:
        assert 200 + sum(199 + 1 for _ in batch.keys) <= 1000


def test_oversized_entry_goes_alone() -> None:
    batcher = Batcher(batch_size=10, max_octets=500, overhead=200)
    batcher.add("REG", "big", 5000, send_by=0.0)
    batcher.add("REG", "small", 10, send_by=0.0)
    assert [b.keys for b in batcher.due(0.0)] == [["big"], ["small"]]


def test_strip_removes_gateway_only_members() -> None:
    reg = Reg(
        ue_service_id="x",
        ue_credential_info=UECredentialInfo(auth_type="NONE"),
        msgin5g_service_id="org.3gpp.msgin5g",
        registration_urgent_degree="NORMAL",
        wait_time=5,
    )
    bare = strip(reg)
    assert bare.msgin5g_service_id is None
    assert bare.registration_urgent_degree is None and bare.wait_time is None
    assert bare.ue_service_id == "x"
