"""Reaper: a dropped dict is emptied a few entries per call, memory stays bounded."""

from msgin5g.coap.dedup import DedupCache as CoapDedupCache
from msgin5g.runtime.reaper import AT_ONCE, MAX_WAITING, PER_REAP, Reaper
from msgin5g.service.dedup import DedupCache as ServiceDedupCache


def big(n: int, tag: str = "") -> dict[str, bytes]:
    return {f"{tag}{i}": b"v" for i in range(n)}


def test_a_big_dict_is_emptied_a_few_entries_per_reap() -> None:
    reaper = Reaper()
    old = big(AT_ONCE + 100)
    reaper.bury(old)
    assert len(reaper) == AT_ONCE + 100
    reaper.reap()
    assert len(old) == AT_ONCE + 100 - PER_REAP
    calls = 1
    while len(reaper):
        reaper.reap()
        calls += 1
    assert not old
    assert calls == -(-(AT_ONCE + 100) // PER_REAP)  # every call deleted PER_REAP
    reaper.reap()  # nothing waits: nothing happens


def test_a_small_dict_is_not_kept_and_waiting_dicts_are_bounded() -> None:
    reaper = Reaper()
    small = big(AT_ONCE)
    reaper.bury(small)
    assert len(reaper) == 0
    buried = [big(AT_ONCE + 1, str(k)) for k in range(MAX_WAITING + 2)]
    for old in buried:
        reaper.bury(old)
    assert len(reaper) == MAX_WAITING * (AT_ONCE + 1)  # the oldest were let go
    reaper.reap()
    assert len(buried[-1]) == AT_ONCE + 1 - PER_REAP  # the last buried goes first


def test_the_coap_cache_hands_its_dropped_generation_to_the_reaper() -> None:
    cache = CoapDedupCache(lifetime=10.0, max_entries=2 * (AT_ONCE + 10), now=0.0)
    peer = ("192.0.2.1", 5683)
    for mid in range(AT_ONCE + 10):  # fills `current` to half: the next put swaps
        cache.put((peer, mid), b"reply")
    for mid in range(AT_ONCE + 10, 2 * (AT_ONCE + 10)):
        cache.put((peer, mid), b"reply")
    cache.put((peer, 60000), b"reply")  # second swap: the first generation is buried
    assert len(cache.reaper) == AT_ONCE + 10 - PER_REAP
    assert cache.get((peer, 0)) is None  # dropped from the lookups at once
    assert cache.get((peer, AT_ONCE + 10)) == b"reply"


def test_the_service_cache_hands_its_dropped_generation_to_the_reaper() -> None:
    cache = ServiceDedupCache(
        window=10.0, max_entries=2 * (AT_ONCE + 10), max_bytes=1 << 40, now=0.0
    )
    for i in range(2 * (AT_ONCE + 10) + 1):
        cache.put(f"k{i}", b"answer", now=1.0)
    assert cache.get("k0", now=1.0) is None
    assert len(cache._reaper) == AT_ONCE + 10 - PER_REAP
    assert cache.get(f"k{AT_ONCE + 10}", now=1.0) == b"answer"
