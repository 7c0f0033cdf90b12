"""Message IDs per peer (RFC 7252 §4.4): no reuse with one peer within EXCHANGE_LIFETIME.

A single counter shared by every peer wrapped after 65,536 messages to anybody,
so a busy server gave a UE a Message ID it had used minutes before, and a UE
deduplicating by Message ID (§4.5) dropped the new message silently (found by
``msgin5g bench``, issue 13).
"""

import random

from msgin5g.coap import TransmissionParameters
from msgin5g.coap.outgoing import Outgoing

PEER = ("192.0.2.1", 5683)
LIFETIME = TransmissionParameters().exchange_lifetime


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def outgoing(clock: Clock, seed: int = 1) -> Outgoing:
    return Outgoing(
        clock,
        TransmissionParameters(),
        random.Random(seed),
        max_pending=10,
        separate_response_timeout=10.0,
        non_response_timeout=10.0,
        max_non_entries=10,
        max_non_bytes=None,
    )


def test_traffic_to_others_never_makes_a_peer_see_an_id_again() -> None:
    out = outgoing(Clock())
    seen = {out.new_mid(PEER)}
    for round_ in range(3):
        for i in range(70_000):  # more than the 16-bit space, to other peers
            out.new_mid(("198.51.100.7", 1024 + (i + round_) % 60_000))
        mid = out.new_mid(PEER)
        assert mid not in seen
        seen.add(mid)


def test_a_peer_gets_consecutive_ids() -> None:
    out = outgoing(Clock())
    first = out.new_mid(PEER)
    assert [out.new_mid(PEER) for _ in range(3)] == [
        (first + n) & 0xFFFF for n in (1, 2, 3)
    ]


def test_a_silent_peer_is_forgotten_after_two_lifetimes_not_before() -> None:
    clock = Clock()
    out = outgoing(clock)
    out.new_mid(PEER)
    clock.now += LIFETIME
    out.poll(clock.now)  # rotation 1: still remembered (old generation)
    assert PEER in out._old_mids
    clock.now += LIFETIME
    out.poll(clock.now)  # rotation 2: silent for two lifetimes, gone
    assert PEER not in out._mids and PEER not in out._old_mids
