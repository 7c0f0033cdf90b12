"""coapgen (the C engine of ``msgin5g bench --engine c``) against a scripted
server: the test holds the other end of the lane's socket (a datagram
socketpair) and answers with our CoAP codec, one exchange at a time.

Covers what the e2e runs against ``msgin5g serve`` rarely see: empty ACK then
a separate response, 5.03 and RST answers, a retransmitted server POST counted
once, a reused Message ID with a new token, an AGGMSG, a CoAP ping, the
RFC 7252 retransmission, the REG body cycle and paced sends with no room.
No timing assertions: every wait is a bounded read of the next datagram.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from msgin5g.bench import native
from msgin5g.bench.peer import stamp
from msgin5g.bench.stats import Counts
from msgin5g.coap import CoapMessage, Code, Type
from msgin5g.coap.message import encode_uint
from msgin5g.coap.numbers import OptionNumber

PREFIX = (
    b'{"messageType":"MSG","originatingUeServiceId":"bench-00001",'
    b'"recipientUeServiceId":"bench-00002","messageId":"bench-00001-t-'
)
ACCEPTED = b'{"messageType":"MSGRESP","deliveryStatus":"DELY_ACCEPTED"}'


@pytest.fixture(scope="module")
def binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if native.find_compiler() is None:
        pytest.skip("no C compiler")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        return native.build()


@dataclass
class Engine:
    """A running coapgen with one lane; ``server`` is the other end."""

    proc: subprocess.Popen[bytes]
    server: socket.socket
    lines: list[bytes] = field(default_factory=list)
    reader: threading.Thread | None = None

    def next(self) -> CoapMessage:
        return CoapMessage.decode(self.server.recv(65536))

    def send(self, message: CoapMessage) -> None:
        self.server.send(message.encode())

    def stop(self) -> Counts:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        self.proc.stdin.flush()
        assert self.proc.wait(30) == 0
        assert self.reader is not None
        self.reader.join(30)  # until stdout's end: the final line is in
        finals = [native.parse_final(line) for line in self.lines]
        (counts,) = [c for c in finals if c is not None]
        return counts


Start = Callable[..., Engine]
"""``start(mode, bodies, window=1, rate=0.0)``: a coapgen with one lane."""


@pytest.fixture
def engine(binary: Path) -> Iterator[Start]:
    started: list[Engine] = []

    def start(mode: str, bodies: list[bytes], **settings: float) -> Engine:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        theirs.settimeout(15)
        now = time.perf_counter()
        config = native.engine_config(
            mode=mode,
            window=int(settings.get("window", 1)),
            rate=settings.get("rate", 0.0),
            size=48,
            store=False,
            t0=now - 1,
            t_end=now + 120,
            lanes=[(ours.fileno(), 1000, bodies)],
        )
        proc = subprocess.Popen(
            [str(binary)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=[ours.fileno()],
        )
        ours.close()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(config)
        proc.stdin.flush()
        run = Engine(proc, theirs)
        stdout = proc.stdout
        run.reader = threading.Thread(
            target=lambda: run.lines.extend(iter(stdout.readline, b"")), daemon=True
        )
        run.reader.start()
        started.append(run)
        return run

    yield start
    for run in started:
        if run.proc.poll() is None:
            run.proc.kill()
        run.proc.wait()
        if run.reader is not None:
            run.reader.join(10)
        for pipe in (run.proc.stdin, run.proc.stdout):
            if pipe is not None:
                pipe.close()
        run.server.close()


def delivery(mid: int, token: bytes, body: bytes) -> CoapMessage:
    return CoapMessage(Type.CON, Code.POST, mid, token, [], body)


def msg_body(sent_at: float) -> bytes:
    payload = base64.b64encode(stamp(48, sent_at)).decode()
    return json.dumps({"messageType": "MSG", "payload": payload}).encode()


def test_p2p_lane_answers_deliveries_and_counts(engine: Start) -> None:
    run = engine("p2p", [PREFIX])
    first = run.next()
    assert (first.mtype, first.code, first.mid, len(first.token)) == (
        Type.CON,
        Code.POST,
        1000,  # goes on from the set-up's Message ID
        4,
    )
    assert first.uri_path == ("msgin5g",)
    assert first.uint_opt(OptionNumber.CONTENT_FORMAT) == 50
    body = json.loads(first.payload)
    assert body["messageId"] == "bench-00001-t-1"
    assert len(base64.b64decode(body["payload"])) == 48

    # empty ACK, then the answer as a separate CON response: ACKed, next request
    run.send(CoapMessage(Type.ACK, Code.EMPTY, first.mid))
    run.send(CoapMessage(Type.CON, Code.CHANGED, 77, first.token, [], ACCEPTED))
    ack = run.next()
    assert (ack.mtype, ack.code, ack.mid) == (Type.ACK, Code.EMPTY, 77)
    second = run.next()
    assert second.mid == 1001 and second.token != first.token
    assert json.loads(second.payload)["messageId"] == "bench-00001-t-2"

    # 5.03 with Max-Age: refused, the lane goes on after a pause; RST: refused
    max_age = [(int(OptionNumber.MAX_AGE), encode_uint(1))]
    run.send(CoapMessage(Type.ACK, 0xA3, second.mid, second.token, max_age, b""))
    third = run.next()
    run.send(CoapMessage(Type.RST, Code.EMPTY, third.mid))
    fourth = run.next()  # left unanswered: a timeout at the stop

    # deliveries: ACK 2.04 piggybacked; a retransmission counted once; the same
    # Message ID with a new token counted again; an AGGMSG counts each item
    now = time.perf_counter()
    post = delivery(500, b"\x01\x02", msg_body(now))
    for _ in range(2):
        run.send(post)
        reply = run.next()
        assert (reply.mtype, reply.code, reply.mid, reply.token) == (
            Type.ACK,
            Code.CHANGED,
            500,
            b"\x01\x02",
        )
    run.send(delivery(500, b"\x03", msg_body(now)))
    assert run.next().token == b"\x03"
    items = [
        {"messageId": f"m{i}", "payload": base64.b64encode(stamp(20, now)).decode()}
        for i in range(3)
    ]
    agg = {"messageType": "AGGMSG", "aggregatedMessages": items}
    run.send(delivery(501, b"\x04", json.dumps(agg).encode()))
    assert run.next().mid == 501
    run.send(delivery(502, b"\x05", msg_body(now - 3600)))  # sent before the window
    assert run.next().mid == 502

    # a CoAP ping gets RST
    run.send(CoapMessage(Type.CON, Code.EMPTY, 900))
    pong = run.next()
    assert (pong.mtype, pong.mid) == (Type.RST, 900)

    counts = run.stop()
    assert (counts.sent, counts.accepted, counts.refused) == (4, 1, 2)
    assert counts.timeouts == 1  # the fourth, in flight at the stop
    assert fourth.mid == 1003
    assert counts.received == 1 + 1 + 3  # retransmission not counted, old one not
    assert counts.latency.count == 5
    assert counts.answer.count == 3
    assert counts.extra == {"mid_reused": 1}
    assert counts.wall_s == pytest.approx(121.0)
    live = [native.parse_live(line) for line in run.lines]
    assert any(item is not None for item in live)


def test_unanswered_requests_are_retransmitted_unchanged(engine: Start) -> None:
    run = engine("p2p", [PREFIX])
    first = run.next()
    again = run.next()  # after ACK_TIMEOUT (2 s)
    assert again.encode() == first.encode()
    run.send(CoapMessage(Type.ACK, Code.CHANGED, first.mid, first.token, [], ACCEPTED))
    assert run.next().mid == first.mid + 1
    counts = run.stop()
    assert (counts.sent, counts.accepted, counts.timeouts) == (2, 1, 1)


def test_reg_lane_cycles_its_bodies_and_counts_success(engine: Start) -> None:
    bodies = [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    run = engine("reg", bodies)
    seen = []
    answers = [
        b'{"messageType":"REGRESP","registrationResult":"SUCCESS"}',
        b'{"messageType":"REGRESP","registrationResult":"FAILURE"}',
        b'{"messageType":"REGRESP","registrationResult":"SUCCESS"}',
    ]
    for answer in answers:
        request = run.next()
        seen.append(request.payload)
        run.send(
            CoapMessage(Type.ACK, Code.CHANGED, request.mid, request.token, [], answer)
        )
    seen.append(run.next().payload)
    assert seen == [bodies[1], bodies[2], bodies[0], bodies[1]]  # as RegWorker.body
    counts = run.stop()
    assert (counts.sent, counts.accepted, counts.received, counts.refused) == (
        4,
        2,
        2,
        1,
    )
    assert counts.latency.count == 2 and counts.answer.count == 3


def test_paced_sends_without_room_count_behind(engine: Start) -> None:
    run = engine("p2p", [PREFIX], rate=2000.0, window=1)
    first = run.next()  # never answered: the lane stays full
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
        (native.parse_live(line) or {}).get("sent") for line in run.lines
    ):
        time.sleep(0.05)
    time.sleep(0.2)
    counts = run.stop()
    assert first.mid == 1000
    assert counts.sent == 1
    assert counts.behind > 0
