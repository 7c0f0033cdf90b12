"""MessageLayer (sans-I/O, RFC 7252 §4/§5.3) driven by a fake clock; no sleeping."""

from __future__ import annotations

import random

import pytest

from msgin5g.coap import (
    CoapMessage,
    Code,
    Complete,
    Dispatch,
    Fail,
    MessageLayer,
    Send,
    TransmissionParameters,
    Type,
    uri_path_options,
)
from msgin5g.coap.exchange import Action
from msgin5g.errors import RemoteReset, RequestTimeout

PEER = ("192.0.2.1", 5683)
OTHER = ("192.0.2.2", 5683)
LIFETIME = TransmissionParameters().exchange_lifetime


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def layer(clock: FakeClock) -> MessageLayer:
    return MessageLayer(clock, rng=random.Random(1))


def con_post(mid: int, token: bytes = b"tk", payload: bytes = b"{}") -> bytes:
    return CoapMessage(
        Type.CON, Code.POST, mid, token, uri_path_options(("r",)), payload
    ).encode()


def only(actions: list[Action], kind: type) -> list:
    return [a for a in actions if isinstance(a, kind)]


def sent(actions: list[Action]) -> list[CoapMessage]:
    return [CoapMessage.decode(a.data) for a in only(actions, Send)]


def dispatch(layer: MessageLayer, data: bytes, peer: object = PEER) -> CoapMessage:
    actions = layer.receive(data, peer)
    assert len(actions) == 1
    assert isinstance(actions[0], Dispatch)
    return actions[0].request


def request(layer: MessageLayer, handle: object, **kw: object) -> CoapMessage:
    msg = CoapMessage(Type.CON, Code.POST, options=uri_path_options(("x",)))
    actions = layer.send_request(msg, PEER, handle, **kw)  # type: ignore[arg-type]
    (out,) = sent(actions)
    return out


def run_until(
    layer: MessageLayer, clock: FakeClock, limit: float
) -> list[tuple[float, Action]]:
    """Advance the clock from deadline to deadline until ``limit``."""
    log: list[tuple[float, Action]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= limit:
        clock.now = max(clock.now, deadline)
        log.extend((clock.now, a) for a in layer.poll())
    return log


# ------------------------------------------------------------ server side


def test_layer_request_is_dispatched_and_piggybacked(layer: MessageLayer) -> None:
    req = dispatch(layer, con_post(0x10))
    assert req.mid == 0x10
    assert req.uri_path == ("r",)
    actions = layer.respond(
        req, PEER, CoapMessage(Type.ACK, Code.CHANGED, payload=b"ok")
    )
    (resp,) = sent(actions)
    assert (resp.mtype, resp.code, resp.mid, resp.token) == (
        Type.ACK,
        Code.CHANGED,
        0x10,
        b"tk",
    )
    assert resp.payload == b"ok"


def test_layer_duplicate_con_replays_cached_response(layer: MessageLayer) -> None:
    req = dispatch(layer, con_post(0x10))
    first = layer.respond(req, PEER, CoapMessage(Type.ACK, Code.CHANGED))
    again = layer.receive(con_post(0x10), PEER)
    assert [a.data for a in only(again, Send)] == [first[0].data]  # type: ignore[union-attr]
    assert not only(again, Dispatch)
    assert layer.stats()["duplicates"] == 1
    # responding twice is ignored
    assert layer.respond(req, PEER, CoapMessage(Type.ACK, Code.CHANGED)) == []


def test_layer_reused_message_id_with_another_token_is_a_new_request(
    layer: MessageLayer,
) -> None:
    """A client restarted on the same port counts its Message IDs again: a
    request with an answered Message ID but another token is not a
    retransmission (which repeats the token) and gets its own answer."""
    req = dispatch(layer, con_post(0x10, b"old"))
    layer.respond(req, PEER, CoapMessage(Type.ACK, Code.CHANGED, payload=b"old"))
    new = dispatch(layer, con_post(0x10, b"new!", b'{"n":1}'))
    assert new.token == b"new!"
    (resp,) = sent(layer.respond(new, PEER, CoapMessage(Type.ACK, Code.CREATED)))
    assert (resp.mid, resp.token, resp.code) == (0x10, b"new!", Code.CREATED)
    # its own retransmission is a duplicate again, answered from the cache
    (again,) = sent(layer.receive(con_post(0x10, b"new!", b'{"n":1}'), PEER))
    assert (again.token, again.code) == (b"new!", Code.CREATED)
    assert layer.stats()["duplicates"] == 1


def test_layer_duplicate_in_progress_is_dropped(layer: MessageLayer) -> None:
    dispatch(layer, con_post(0x10))
    assert layer.receive(con_post(0x10), PEER) == []
    # the same mid from another peer is a different exchange
    dispatch(layer, con_post(0x10), OTHER)


def test_layer_duplicate_non_is_ignored(layer: MessageLayer) -> None:
    data = CoapMessage(Type.NON, Code.POST, 3, b"t").encode()
    req = dispatch(layer, data)
    (resp,) = sent(layer.respond(req, PEER, CoapMessage(Type.NON, Code.CHANGED)))
    assert resp.mtype == Type.NON
    assert resp.token == b"t"
    assert layer.receive(data, PEER) == []


def test_layer_separate_response_after_accept_empty(
    layer: MessageLayer, clock: FakeClock
) -> None:
    req = dispatch(layer, con_post(0x22, token=b"sep"))
    (ack,) = sent(layer.accept_empty(req, PEER))
    assert (ack.mtype, ack.code, ack.mid) == (Type.ACK, 0, 0x22)
    # a duplicate now gets the empty ACK again
    (dup_ack,) = sent(layer.receive(con_post(0x22, token=b"sep"), PEER))
    assert (dup_ack.mtype, dup_ack.code, dup_ack.mid) == (Type.ACK, 0, 0x22)
    (resp,) = sent(layer.respond(req, PEER, CoapMessage(Type.ACK, Code.CONTENT)))
    assert (resp.mtype, resp.code, resp.token) == (Type.CON, Code.CONTENT, b"sep")
    assert resp.mid != 0x22
    # the separate CON response is retransmitted until acknowledged
    clock.now += 3.1
    (again,) = sent(layer.poll())
    assert again == resp
    assert layer.receive(CoapMessage(Type.ACK, 0, resp.mid).encode(), PEER) == []
    assert run_until(layer, clock, clock.now + 100) == []
    # still replaying the empty ACK for duplicates of the request
    (dup_ack,) = sent(layer.receive(con_post(0x22, token=b"sep"), PEER))
    assert dup_ack.code == 0


def test_layer_unacknowledged_separate_response_is_dropped_silently(
    layer: MessageLayer, clock: FakeClock
) -> None:
    req = dispatch(layer, con_post(0x22))
    layer.accept_empty(req, PEER)
    layer.respond(req, PEER, CoapMessage(Type.ACK, Code.CONTENT))
    log = run_until(layer, clock, clock.now + 200)
    assert len(log) == 4
    assert all(isinstance(a, Send) for _, a in log)
    assert layer.stats()["timeouts"] == 1


def test_layer_unknown_critical_option_gets_bad_option(layer: MessageLayer) -> None:
    data = CoapMessage(
        Type.CON, Code.POST, 5, b"t", [(11, b"r"), (2049, b"x")]
    ).encode()
    (resp,) = sent(layer.receive(data, PEER))
    assert (resp.mtype, resp.code, resp.mid, resp.token) == (
        Type.ACK,
        Code.BAD_OPTION,
        5,
        b"t",
    )
    # duplicates get the same answer
    (again,) = sent(layer.receive(data, PEER))
    assert again == resp
    non = CoapMessage(Type.NON, Code.POST, 6, b"t", [(2049, b"x")]).encode()
    assert layer.receive(non, PEER) == []
    # an unknown elective (even) option is ignored
    elective = CoapMessage(Type.CON, Code.POST, 7, b"t", [(2048, b"x")]).encode()
    assert isinstance(layer.receive(elective, PEER)[0], Dispatch)


def test_layer_ping_gets_rst(layer: MessageLayer) -> None:
    (rst,) = sent(layer.receive(bytes((0x40, 0, 0x12, 0x34)), PEER))
    assert (rst.mtype, rst.code, rst.mid) == (Type.RST, 0, 0x1234)
    assert layer.receive(bytes((0x50, 0, 0x12, 0x34)), PEER) == []


def test_layer_malformed_con_gets_rst_others_dropped(layer: MessageLayer) -> None:
    (rst,) = sent(layer.receive(bytes((0x4F, 0x01, 0, 9)), PEER))
    assert (rst.mtype, rst.mid) == (Type.RST, 9)
    assert layer.receive(bytes((0x5F, 0x01, 0, 9)), PEER) == []
    assert layer.receive(bytes((0x80, 0x01, 0, 9)), PEER) == []  # version 2
    assert layer.receive(b"\x40", PEER) == []
    assert layer.stats()["malformed"] == 4
    assert layer.stats()["resets_sent"] == 1


def test_layer_reset_sends_rst(layer: MessageLayer) -> None:
    req = dispatch(layer, con_post(77))
    (rst,) = sent(layer.reset(req, PEER))
    assert (rst.mtype, rst.mid) == (Type.RST, 77)


def test_layer_dedup_entries_live_at_least_exchange_lifetime_then_expire(
    layer: MessageLayer, clock: FakeClock
) -> None:
    req = dispatch(layer, con_post(0x10))
    layer.respond(req, PEER, CoapMessage(Type.ACK, Code.CHANGED))
    for step in (LIFETIME - 1, LIFETIME * 0.5):  # rotation happens in between
        clock.now += step
        dispatch(layer, con_post(0x99 + int(step)), OTHER)
    assert clock.now - 1000.0 > LIFETIME
    assert sent(layer.receive(con_post(0x10), PEER))  # still remembered
    clock.now += 2 * LIFETIME + 1
    dispatch(layer, con_post(0x10))  # forgotten: a new request


def test_layer_dedup_cache_is_bounded(clock: FakeClock) -> None:
    layer = MessageLayer(clock, max_dedup_entries=100)
    for mid in range(1000):
        dispatch(layer, con_post(mid))
        assert layer.stats()["dedup_entries"] <= 100
    dispatch(layer, con_post(0))  # the oldest were evicted


# ------------------------------------------------------------ client side


def test_layer_retransmission_schedule_then_timeout(clock: FakeClock) -> None:
    for seed in range(20):
        layer = MessageLayer(clock, rng=random.Random(seed))
        start = clock.now
        first = request(layer, "h")
        log = run_until(layer, clock, start + 1000)
        sends = [(t - start, a) for t, a in log if isinstance(a, Send)]
        fails = [(t - start, a) for t, a in log if isinstance(a, Fail)]
        assert len(sends) == 4
        assert all(a.data == first.encode() for _, a in sends)  # type: ignore[union-attr]
        initial = sends[0][0]
        assert 2.0 <= initial <= 3.0
        expected = [initial * (2**k - 1) for k in (1, 2, 3, 4)]
        assert [t for t, _ in sends] == pytest.approx(expected)
        ((t_fail, fail),) = fails
        assert t_fail == pytest.approx(initial * 31)
        assert fail.handle == "h"  # type: ignore[union-attr]
        assert isinstance(fail.error, RequestTimeout)  # type: ignore[union-attr]
        assert layer.stats()["retransmissions"] == 4
        assert layer.stats()["pending"] == 0
        assert layer.next_deadline() is None


def test_layer_piggybacked_response_completes(
    layer: MessageLayer, clock: FakeClock
) -> None:
    out = request(layer, "h")
    ack = CoapMessage(Type.ACK, Code.CHANGED, out.mid, out.token, payload=b"r")
    (done,) = layer.receive(ack.encode(), PEER)
    assert isinstance(done, Complete)
    assert done.handle == "h"
    assert done.response.payload == b"r"
    assert run_until(layer, clock, clock.now + 1000) == []  # no retransmission


def test_layer_piggybacked_response_with_wrong_token_is_ignored(
    layer: MessageLayer, clock: FakeClock
) -> None:
    out = request(layer, "h")
    ack = CoapMessage(Type.ACK, Code.CHANGED, out.mid, b"other")
    assert layer.receive(ack.encode(), PEER) == []
    assert sent(run_until_first(layer, clock))  # still retransmitting


def run_until_first(layer: MessageLayer, clock: FakeClock) -> list[Action]:
    deadline = layer.next_deadline()
    assert deadline is not None
    clock.now = deadline
    return layer.poll()


def test_layer_ack_from_other_peer_is_ignored(layer: MessageLayer) -> None:
    out = request(layer, "h")
    ack = CoapMessage(Type.ACK, Code.CHANGED, out.mid, out.token)
    assert layer.receive(ack.encode(), OTHER) == []


def test_layer_empty_ack_then_separate_con_response(
    layer: MessageLayer, clock: FakeClock
) -> None:
    out = request(layer, "h")
    assert layer.receive(CoapMessage(Type.ACK, 0, out.mid).encode(), PEER) == []
    clock.now += 60  # no retransmission after the empty ACK
    assert sent(layer.poll()) == []
    resp = CoapMessage(Type.CON, Code.CONTENT, 0x7777, out.token, payload=b"late")
    actions = layer.receive(resp.encode(), PEER)
    (ack,) = sent(actions)
    assert (ack.mtype, ack.code, ack.mid) == (Type.ACK, 0, 0x7777)
    (done,) = only(actions, Complete)
    assert done.handle == "h"
    assert done.response.payload == b"late"
    # a retransmitted separate response gets the empty ACK again, no second Complete
    again = layer.receive(resp.encode(), PEER)
    assert [m.mid for m in sent(again)] == [0x7777]
    assert not only(again, Complete)


def test_layer_separate_response_wait_expires(clock: FakeClock) -> None:
    layer = MessageLayer(clock, separate_response_timeout=30.0)
    out = request(layer, "h")
    layer.receive(CoapMessage(Type.ACK, 0, out.mid).encode(), PEER)
    log = run_until(layer, clock, clock.now + 100)
    ((_, fail),) = log
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, RequestTimeout)


def test_layer_separate_response_before_ack_completes(
    layer: MessageLayer, clock: FakeClock
) -> None:
    out = request(layer, "h")
    resp = CoapMessage(Type.NON, Code.CONTENT, 0x55, out.token)
    (done,) = layer.receive(resp.encode(), PEER)
    assert isinstance(done, Complete)
    assert run_until(layer, clock, clock.now + 1000) == []


def test_layer_rst_fails_request(layer: MessageLayer) -> None:
    out = request(layer, "h")
    (fail,) = layer.receive(CoapMessage(Type.RST, 0, out.mid).encode(), PEER)
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, RemoteReset)
    assert layer.stats()["pending"] == 0


def test_layer_unmatched_con_response_gets_rst_non_dropped(layer: MessageLayer) -> None:
    resp = CoapMessage(Type.CON, Code.CONTENT, 0x31, b"nobody")
    (rst,) = sent(layer.receive(resp.encode(), PEER))
    assert (rst.mtype, rst.mid) == (Type.RST, 0x31)
    resp = CoapMessage(Type.NON, Code.CONTENT, 0x32, b"nobody")
    assert layer.receive(resp.encode(), PEER) == []
    assert layer.receive(CoapMessage(Type.ACK, Code.CONTENT, 0x33).encode(), PEER) == []
    assert layer.receive(CoapMessage(Type.RST, 0, 0x34).encode(), PEER) == []


def test_layer_nstart_queues_requests_per_peer(layer: MessageLayer) -> None:
    first = request(layer, "a")
    msg = CoapMessage(Type.CON, Code.POST)
    assert layer.send_request(msg, PEER, "b") == []
    assert layer.send_request(msg, PEER, "c") == []
    assert layer.stats()["pending"] == 3
    # another peer is not blocked
    assert sent(layer.send_request(msg, OTHER, "d"))
    ack = CoapMessage(Type.ACK, Code.CHANGED, first.mid, first.token)
    actions = layer.receive(ack.encode(), PEER)
    assert [type(a) for a in actions] == [Complete, Send]
    (second,) = sent(actions)
    assert second.mid != first.mid
    # an empty ACK also frees the slot
    actions = layer.receive(CoapMessage(Type.ACK, 0, second.mid).encode(), PEER)
    assert len(sent(actions)) == 1


def test_layer_cancel_frees_slot_via_poll(layer: MessageLayer) -> None:
    request(layer, "a")
    msg = CoapMessage(Type.CON, Code.POST)
    layer.send_request(msg, PEER, "b")
    layer.send_request(msg, PEER, "c")
    layer.cancel("c")  # queued: just forgotten
    layer.cancel("a")  # outstanding: frees the slot, "b" goes out on the next poll
    assert layer.next_deadline() is not None
    actions = layer.poll()
    assert len(sent(actions)) == 1
    assert layer.stats()["pending"] == 1


def test_layer_explicit_mid_and_token(layer: MessageLayer) -> None:
    out = request(layer, "h", mid=0xABCD, token=b"")
    assert (out.mid, out.token) == (0xABCD, b"")
    ack = CoapMessage(Type.ACK, Code.CHANGED, 0xABCD, b"")
    assert isinstance(layer.receive(ack.encode(), PEER)[0], Complete)
    msg = CoapMessage(Type.NON, Code.POST)
    layer.send_request(msg, PEER, "x", mid=5, token=b"t")
    with pytest.raises(ValueError, match="token"):
        layer.send_request(msg, PEER, "y", token=b"t")
    with pytest.raises(ValueError, match="message ID"):
        layer.send_request(msg, PEER, "z", mid=5)
    with pytest.raises(ValueError, match="handle"):
        layer.send_request(msg, PEER, "x")


def test_layer_send_request_rejects_bad_input(layer: MessageLayer) -> None:
    with pytest.raises(ValueError, match="CON or NON"):
        layer.send_request(CoapMessage(Type.ACK, Code.GET), PEER, "a")
    with pytest.raises(ValueError, match="request code"):
        layer.send_request(CoapMessage(Type.CON, Code.CONTENT), PEER, "a")


def test_layer_mids_are_sequential_and_tokens_random(layer: MessageLayer) -> None:
    msg = CoapMessage(Type.NON, Code.GET)
    outs = [sent(layer.send_request(msg, PEER, i))[0] for i in range(5)]
    mids = [m.mid for m in outs]
    assert mids == [(mids[0] + i) & 0xFFFF for i in range(5)]
    assert len({m.token for m in outs}) == 5
    assert all(len(m.token) == 4 for m in outs)


def test_layer_non_request_waits_for_response_then_times_out(clock: FakeClock) -> None:
    layer = MessageLayer(clock, non_response_timeout=10.0)
    (out,) = sent(layer.send_request(CoapMessage(Type.NON, Code.GET), PEER, "n"))
    assert out.mtype == Type.NON
    log = run_until(layer, clock, clock.now + 100)
    assert [type(a) for _, a in log] == [Fail]  # sent once, never retransmitted
    (out,) = sent(layer.send_request(CoapMessage(Type.NON, Code.GET), PEER, "m"))
    resp = CoapMessage(Type.NON, Code.CONTENT, 9, out.token)
    assert isinstance(layer.receive(resp.encode(), PEER)[0], Complete)


def test_layer_max_pending_fails_fast(clock: FakeClock) -> None:
    layer = MessageLayer(clock, max_pending=2)
    msg = CoapMessage(Type.CON, Code.POST)
    layer.send_request(msg, PEER, "a")
    layer.send_request(msg, PEER, "b")
    (fail,) = layer.send_request(msg, PEER, "c")
    assert isinstance(fail, Fail)
    assert isinstance(fail.error, RequestTimeout)


def test_layer_abort_all_fails_everything(layer: MessageLayer) -> None:
    request(layer, "a")
    layer.send_request(CoapMessage(Type.CON, Code.POST), PEER, "b")
    err = RuntimeError("closed")
    fails = layer.abort_all(err)
    assert sorted(f.handle for f in fails) == ["a", "b"]  # type: ignore[union-attr]
    assert layer.next_deadline() is None
    assert layer.stats()["pending"] == 0


def test_layer_many_exchanges_keep_heap_small(clock: FakeClock) -> None:
    layer = MessageLayer(clock, params=TransmissionParameters(nstart=100_000))
    msg = CoapMessage(Type.CON, Code.POST)
    for i in range(20_000):
        (out,) = sent(layer.send_request(msg, PEER, i))
        layer.receive(
            CoapMessage(Type.ACK, Code.CHANGED, out.mid, out.token).encode(), PEER
        )
    assert len(layer._out._heap) < 10_000
    assert layer.next_deadline() is None


def test_layer_respond_rejects_non_response_code(layer: MessageLayer) -> None:
    req = dispatch(layer, con_post(1))
    with pytest.raises(ValueError, match="response code"):
        layer.respond(req, PEER, CoapMessage(Type.ACK, Code.POST))


def test_layer_abort_peer_fails_its_requests_only(
    layer: MessageLayer, clock: FakeClock
) -> None:
    msg = CoapMessage(Type.CON, Code.POST, options=uri_path_options(("x",)))
    first, queued, other = object(), object(), object()
    assert sent(layer.send_request(msg, PEER, first))
    assert layer.send_request(msg, PEER, queued) == []  # behind NSTART = 1
    assert sent(layer.send_request(msg, OTHER, other))
    error = RequestTimeout("peer moved")
    actions = layer.abort_peer(PEER, error)
    assert not only(actions, Send)  # the queued one is not started
    failed = only(actions, Fail)
    assert {id(f.handle) for f in failed} == {id(first), id(queued)}
    assert all(f.error is error for f in failed)
    # nothing is retransmitted to PEER later; OTHER's request still is
    later = run_until(layer, clock, clock.now + 10)
    resent = [CoapMessage.decode(a.data) for _, a in later if isinstance(a, Send)]
    assert resent and all(a.peer == OTHER for _, a in later if isinstance(a, Send))
    assert layer.abort_peer(PEER, error) == []


def test_layer_request_sent_now_and_queued_get_consecutive_mids(
    layer: MessageLayer,
) -> None:
    """Sent at once: encoded with its allocated Message ID; queued: given one
    when it starts (issue 13 encodes the first kind once)."""
    msg = CoapMessage(Type.CON, Code.POST, options=uri_path_options(("x",)))
    (first,) = sent(layer.send_request(msg, PEER, "a"))
    assert layer.send_request(msg, PEER, "b") == []
    ack = CoapMessage(Type.ACK, Code.CHANGED, first.mid, first.token)
    (second,) = sent(layer.receive(ack.encode(), PEER))
    assert second.mid == (first.mid + 1) & 0xFFFF
    assert second.options == first.options and second.token != first.token


def test_layer_retransmission_timeout_drawn_in_range(clock: FakeClock) -> None:
    params = TransmissionParameters(ack_timeout=2.0, ack_random_factor=1.5)
    for seed in range(20):
        layer = MessageLayer(clock, params=params, rng=random.Random(seed))
        layer.send_request(CoapMessage(Type.CON, Code.POST), PEER, "a")
        deadline = layer.next_deadline()
        assert deadline is not None
        assert 2.0 <= deadline - clock.now <= 3.0
