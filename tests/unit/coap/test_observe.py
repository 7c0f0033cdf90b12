"""Observe (RFC 7641) server state in the engine, sans-I/O with a fake clock.

Sequence numbers (:mod:`msgin5g.coap.observe`) and notifications through the
message layer (:meth:`MessageLayer.send_notification`): ACK, RST, timeout, NON.
No sockets, no sleeping.
"""

from __future__ import annotations

import itertools
import random

import pytest

from msgin5g.coap import (
    CoapMessage,
    Code,
    Complete,
    Fail,
    MessageLayer,
    OptionNumber,
    Rejected,
    Send,
    TransmissionParameters,
    Type,
    encode_uint,
)
from msgin5g.coap.exchange import Action
from msgin5g.coap.observe import (
    SEQUENCE_MODULUS,
    TICKS_PER_SECOND,
    ObserverTable,
    is_newer,
    next_sequence,
    sequence_at,
)
from msgin5g.errors import RemoteReset, RequestTimeout

PEER = ("192.0.2.1", 5683)
OTHER = ("192.0.2.2", 5683)
PARAMS = TransmissionParameters()


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def layer(clock: FakeClock) -> MessageLayer:
    return MessageLayer(clock, rng=random.Random(7))


def notification(
    mtype: int = Type.CON, token: bytes = b"ob", seq: int = 5
) -> CoapMessage:
    options: list[tuple[int, bytes]] = [
        (OptionNumber.OBSERVE, encode_uint(seq)),
        (OptionNumber.CONTENT_FORMAT, encode_uint(50)),
    ]
    return CoapMessage(mtype, Code.CONTENT, 0, token, options, b'{"x":1}')


def sent(actions: list[Action]) -> list[CoapMessage]:
    return [CoapMessage.decode(a.data) for a in actions if isinstance(a, Send)]


def run_until(layer: MessageLayer, clock: FakeClock, limit: float) -> list[Action]:
    out: list[Action] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= limit:
        clock.now = max(clock.now, deadline)
        out.extend(layer.poll())
    return out


# sequence numbers ------------------------------------------------------------


def test_rfc7641_freshness_rule() -> None:
    assert is_newer(1, 2)
    assert not is_newer(2, 1)
    assert not is_newer(5, 5)
    assert is_newer(SEQUENCE_MODULUS - 1, 0)  # wrap-around
    assert not is_newer(0, (1 << 23) + 1)  # too far ahead is old
    assert is_newer((1 << 23) + 2, 0)


def test_sequence_follows_the_wall_clock_and_always_increases() -> None:
    wall = 1_700_000_000.0
    first = next_sequence(None, wall)
    assert first == sequence_at(wall) < SEQUENCE_MODULUS
    later = next_sequence(first, wall + 1.0)
    assert later == sequence_at(wall + 1.0) and is_newer(first, later)
    # many notifications within one clock tick: previous + 1
    values = [later]
    for _ in range(100):
        values.append(next_sequence(values[-1], wall + 1.0))
    assert all(is_newer(a, b) for a, b in itertools.pairwise(values))


def test_sequence_is_fresh_across_a_restart() -> None:
    wall = 1_700_000_000.0
    before = next_sequence(None, wall)
    for step in range(1, 50):
        before = next_sequence(before, wall + step * 0.01)
    # restart: the in-memory value is lost; one second later the clock decides
    after_restart = next_sequence(None, wall + 1.0)
    assert is_newer(before, after_restart)


def test_sequence_wraps_modulo_2_24_and_stays_fresh() -> None:
    span = SEQUENCE_MODULUS // TICKS_PER_SECOND  # seconds per wrap (512)
    wall = span * 3_400_000 - 0.001  # just before the counter wraps
    before = next_sequence(None, wall)
    after = next_sequence(before, wall + 0.01)
    assert after < before  # wrapped
    assert is_newer(before, after)


def test_clock_moves_less_than_half_the_window_in_128_seconds() -> None:
    wall = 1_700_000_000.0
    start = sequence_at(wall)
    assert is_newer(start, sequence_at(wall + 128.0))
    assert (sequence_at(wall + 128.0) - start) % SEQUENCE_MODULUS <= 1 << 22


def test_observer_table_per_observation_state() -> None:
    clock = FakeClock()
    table = ObserverTable(clock)
    a = table.next(PEER, b"t1")
    b = table.next(PEER, b"t1")
    assert is_newer(a, b)
    assert table.last(PEER, b"t1") == b
    table.next(OTHER, b"t1")
    assert len(table) == 2 and (PEER, b"t1") in table
    assert table.forget(PEER, b"t1")
    assert not table.forget(PEER, b"t1")
    assert table.last(PEER, b"t1") is None
    assert len(table) == 1


# notifications through the message layer ---------------------------------------


def test_con_notification_completes_on_ack(layer: MessageLayer) -> None:
    handle = object()
    mid, actions = layer.send_notification(notification(), PEER, handle)
    (out,) = sent(actions)
    assert (out.mtype, out.code, out.mid, out.token) == (
        Type.CON,
        Code.CONTENT,
        mid,
        b"ob",
    )
    assert out.observe == 5 and out.content_format == 50
    assert layer.stats()["pending"] == 1
    (done,) = layer.receive(CoapMessage(Type.ACK, 0, mid).encode(), PEER)
    assert isinstance(done, Complete) and done.handle is handle
    assert layer.stats()["pending"] == 0
    assert layer.next_deadline() is None


def test_rst_to_con_notification_fails_with_remote_reset(layer: MessageLayer) -> None:
    handle = object()
    mid, _ = layer.send_notification(notification(), PEER, handle)
    (fail,) = layer.receive(CoapMessage(Type.RST, 0, mid).encode(), PEER)
    assert isinstance(fail, Fail) and fail.handle is handle
    assert isinstance(fail.error, RemoteReset)
    assert layer.stats()["pending"] == 0


def test_unacknowledged_con_notification_times_out(
    layer: MessageLayer, clock: FakeClock
) -> None:
    handle = object()
    layer.send_notification(notification(), PEER, handle)
    log = run_until(layer, clock, clock.now + 1000)
    retransmissions = [a for a in log if isinstance(a, Send)]
    assert len(retransmissions) == PARAMS.max_retransmit
    (fail,) = [a for a in log if isinstance(a, Fail)]
    assert fail.handle is handle and isinstance(fail.error, RequestTimeout)
    assert layer.stats()["pending"] == 0


def test_con_notification_does_not_block_requests_nstart(
    layer: MessageLayer,
) -> None:
    layer.send_notification(notification(), PEER, object())
    request = CoapMessage(Type.CON, Code.POST, payload=b"{}")
    assert sent(layer.send_request(request, PEER, object()))


def test_cancelled_and_aborted_notifications(layer: MessageLayer) -> None:
    handle = object()
    mid, _ = layer.send_notification(notification(), PEER, handle)
    layer.cancel(handle)
    assert layer.stats()["pending"] == 0
    assert layer.receive(CoapMessage(Type.ACK, 0, mid).encode(), PEER) == []
    other = object()
    layer.send_notification(notification(), PEER, other)
    (fail,) = layer.abort_all(RuntimeError("closing"))
    assert isinstance(fail, Fail) and fail.handle is other


def test_rst_to_non_notification_is_reported_with_its_token(
    layer: MessageLayer,
) -> None:
    mid, actions = layer.send_notification(notification(Type.NON, b"nn"), PEER, None)
    (out,) = sent(actions)
    assert out.mtype == Type.NON and out.mid == mid
    assert layer.stats()["pending"] == 0  # nothing to wait for
    # an RST from another peer with that MID is not ours
    assert layer.receive(CoapMessage(Type.RST, 0, mid).encode(), OTHER) == []
    (rejected,) = layer.receive(CoapMessage(Type.RST, 0, mid).encode(), PEER)
    assert isinstance(rejected, Rejected)
    assert (rejected.peer, rejected.mid, rejected.token) == (PEER, mid, b"nn")
    # reported once
    assert layer.receive(CoapMessage(Type.RST, 0, mid).encode(), PEER) == []


def test_late_rst_to_non_notification_is_ignored(
    layer: MessageLayer, clock: FakeClock
) -> None:
    mid, _ = layer.send_notification(notification(Type.NON), PEER, None)
    clock.now += 2 * PARAMS.non_lifetime + 1
    assert layer.receive(CoapMessage(Type.RST, 0, mid).encode(), PEER) == []


def test_invalid_notifications_are_refused(layer: MessageLayer) -> None:
    with pytest.raises(ValueError, match="handle"):
        layer.send_notification(notification(), PEER, None)
    with pytest.raises(ValueError, match="response code"):
        layer.send_notification(
            CoapMessage(Type.CON, Code.GET, token=b"x"), PEER, object()
        )
    with pytest.raises(ValueError, match="CON or NON"):
        layer.send_notification(notification(Type.ACK), PEER, object())
    handle = object()
    layer.send_notification(notification(), PEER, handle)
    with pytest.raises(ValueError, match="in use"):
        layer.send_notification(notification(), PEER, handle)


def test_max_pending_bounds_con_notifications(clock: FakeClock) -> None:
    layer = MessageLayer(clock, rng=random.Random(1), max_pending=1)
    layer.send_notification(notification(), PEER, object())
    _, (fail,) = layer.send_notification(notification(), PEER, object())
    assert isinstance(fail, Fail) and isinstance(fail.error, RequestTimeout)
