"""The duplicate-detection cache is bounded by bytes as well as entries."""

from __future__ import annotations

import random

from msgin5g.coap import CoapMessage, Code, Dispatch, MessageLayer, Send, Type
from msgin5g.coap.dedup import ANSWERED, ENTRY_OVERHEAD
from msgin5g.coap.message import uri_path_options


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def con_post(mid: int) -> bytes:
    return CoapMessage(
        Type.CON, Code.POST, mid, b"tk", uri_path_options(("r",)), b"{}"
    ).encode()


def test_cache_stays_under_its_byte_bound() -> None:
    bound = 64 * 1024
    layer = MessageLayer(FakeClock(), rng=random.Random(1), max_dedup_bytes=bound)
    body = b"x" * 300
    peak = 0
    for i in range(20_000):
        peer = ("192.0.2.1", 10_000 + i // 60_000)
        mid = i & 0xFFFF
        (dispatch,) = layer.receive(con_post(mid), peer)
        assert isinstance(dispatch, Dispatch)
        layer.respond(
            dispatch.request, peer, CoapMessage(0, Code.CHANGED, payload=body)
        )
        stats = layer.stats()
        peak = max(peak, stats["dedup_bytes"])
        # what is charged is what is stored
        assert stats["dedup_bytes"] >= stats["dedup_entries"] * ENTRY_OVERHEAD
    # exact to within one entry per generation (the swap is checked on insertion)
    assert peak <= bound + 2 * (ENTRY_OVERHEAD + len(body) + 16)
    assert layer.stats()["dedup_entries"] < 20_000
    # a recent request is still recognised as a duplicate
    (replay,) = layer.receive(con_post(19_999 & 0xFFFF), ("192.0.2.1", 10_000))
    assert isinstance(replay, Send) and replay.data.endswith(body)


def test_replies_to_requests_in_flight_at_the_swap_are_bounded() -> None:
    bound = 64 * 1024
    layer = MessageLayer(FakeClock(), rng=random.Random(1), max_dedup_bytes=bound)
    peer = ("192.0.2.1", 5683)
    # 250 requests in flight: their entries fill half the bound and are swapped
    # into the previous generation when the 206th arrives
    pending = []
    for mid in range(250):
        (dispatch,) = layer.receive(con_post(mid), peer)
        pending.append(dispatch.request)
    body = b"y" * 1000
    for request in pending:
        (send,) = layer.respond(
            request, peer, CoapMessage(0, Code.CHANGED, payload=body)
        )
        assert isinstance(send, Send)  # every request is still answered
    assert layer.stats()["dedup_bytes"] <= bound + 2 * (len(body) + 64)
    # a request answered after the swap whose reply was not kept: its
    # duplicates are ignored and it is not answered twice
    dropped = [
        request
        for request in pending
        if layer.stats()["dedup_entries"]
        and layer._cache.get((peer, request.mid)) == ANSWERED
    ]
    assert dropped
    assert layer.receive(con_post(dropped[0].mid), peer) == []
    again = CoapMessage(0, Code.CHANGED, payload=body)
    assert layer.respond(dropped[0], peer, again) == []
