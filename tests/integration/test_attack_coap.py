"""Attacks on the CoAP edge (issue 10 items 5, 7, 8, 11) against a real server.

Real UDP sockets on loopback, a real SQLite file, the server's own logging
captured through :class:`~msgin5g.logsafe.SafeFormatter`. Bounded in count and
time; no timing assertions.
"""

import asyncio
import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from msgin5g.coap.message import CoapMessage, encode_uint, uri_path_options
from msgin5g.coap.numbers import Code, Type
from msgin5g.logsafe import DEFAULT_FORMAT, SafeFormatter
from msgin5g.model.credentials import psk_token
from msgin5g.server import Server
from tests.integration.attack_support import attack_server

pytestmark = pytest.mark.timeout(60)

OPTIONS = [*uri_path_options(("msgin5g",)), (12, encode_uint(50))]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for srv in attack_server(tmp_path, **{"coap.max_payload": "64000"}):
        yield srv


@pytest.fixture
def server_log() -> Iterator[io.StringIO]:
    """What `msgin5g serve` would write: every msgin5g record, SafeFormatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(SafeFormatter(DEFAULT_FORMAT))
    handler.setLevel(logging.DEBUG)
    logger = logging.getLogger("msgin5g")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(old_level)


class RawClient:
    """A bare UDP socket that sends datagrams and waits for the answer by MID."""

    def __init__(self, server: Server) -> None:
        self.address = server.coap_address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.mid = 0

    async def post(self, payload: bytes, *, timeout: float = 5.0) -> CoapMessage:
        self.mid += 1
        data = CoapMessage(
            Type.CON, Code.POST, self.mid, b"tk", OPTIONS, payload
        ).encode()
        assert len(data) < 65_000
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                self.sock.sendto(data, self.address)
                try:
                    async with asyncio.timeout(1.0):
                        while True:
                            reply = CoapMessage.decode(
                                await loop.sock_recv(self.sock, 65_536)
                            )
                            if reply.mid == self.mid:
                                return reply
                except TimeoutError:
                    continue  # retransmit

    def close(self) -> None:
        self.sock.close()


def reg(ue: str, secret: str, **extra: object) -> bytes:
    body: dict[str, object] = {
        "messageType": "REG",
        "ueServiceId": ue,
        "ueCredentialInfo": {
            "authType": "PSK_TOKEN",
            "credential": psk_token(secret, ue),
        },
    }
    body.update(extra)
    return json.dumps(body).encode()


def error_body(reply: CoapMessage) -> dict[str, object]:
    body = json.loads(reply.payload)
    assert isinstance(body, dict)
    return body


def no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not bad, [r.getMessage() for r in bad]


async def test_newline_in_ue_service_id_is_refused_and_forges_no_line(
    server: Server, server_log: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    client = RawClient(server)
    try:
        forged = "a\n2026-01-01 00:00:00,000 WARNING msgin5g: FORGED admin login"
        reply = await client.post(reg(forged, "x"))
        assert reply.code == Code.BAD_REQUEST
        body = error_body(reply)
        assert body["failureCause"] == "INVALID_MESSAGE"
        assert body["messageType"] == "REG"
        assert "ueServiceId" in str(body["detail"])
        # a DEREG and a MSG with forged IDs too
        for payload in (
            {"messageType": "DEREG", "ueServiceId": "b\rFORGED"},
            {
                "messageType": "MSG",
                "messageId": "m\u2028FORGED",
                "originatingUeServiceId": "ue1",
                "recipientUeServiceId": "ue2",
            },
        ):
            reply = await client.post(json.dumps(payload).encode())
            assert reply.code == Code.BAD_REQUEST
    finally:
        client.close()
    lines = server_log.getvalue().splitlines()
    assert lines, "the server logged nothing"
    assert not [line for line in lines if "FORGED" in line.split(" ", 1)[0]]
    assert not [line for line in lines if line.startswith(("FORGED", "2026-01-01"))]
    no_errors(caplog)


@pytest.mark.parametrize(
    ("depth", "closed"),
    [(1_000, True), (10_000, True), (30_000, False)],
)
async def test_deeply_nested_json_is_a_400_without_traceback(
    server: Server,
    caplog: pytest.LogCaptureFixture,
    depth: int,
    closed: bool,
) -> None:
    # 100,000 levels need 100 kB: more than one UDP datagram can carry (the
    # codec test covers it); 30,000 unclosed levels is the most that fits.
    payload = (
        b'{"messageType":"REG","ueServiceId":"ue1","junk":'
        + b"[" * depth
        + (b"]" * depth + b"}" if closed else b"")
    )
    client = RawClient(server)
    try:
        for _ in range(3):  # the same attack again and again
            reply = await client.post(payload)
            assert reply.code == Code.BAD_REQUEST
            body = error_body(reply)
            assert body["failureCause"] == "INVALID_MESSAGE"
            assert body["messageType"] == "REG"
            assert "nested" in str(body["detail"])
        # and the server still serves
        reply = await client.post(reg("ue1", "secret-ue1"))
        assert reply.code == Code.CREATED
    finally:
        client.close()
    no_errors(caplog)
    assert not [r for r in caplog.records if r.exc_info]


HUGE = 2**64 + 1


async def test_huge_integers_from_a_registered_ue_are_a_400_never_a_500(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    client = RawClient(server)
    try:
        reply = await client.post(reg("ue1", "secret-ue1"))
        assert reply.code == Code.CREATED
        msg = {
            "messageType": "MSG",
            "originatingUeServiceId": "ue1",
            "recipientUeServiceId": "ue2",
            "payload": "QQ==",
        }
        refused = [
            # REG profile members
            reg("ue1", "secret-ue1", waitTime=HUGE),
            reg("ue1", "secret-ue1", maxSegmentSize=HUGE),
            reg(
                "ue1",
                "secret-ue1",
                commAvailability={
                    "scheduledCommTime": "2025-01-01T00:00:00Z",
                    "commDurationTime": HUGE,
                },
            ),
            reg("ue1", "secret-ue1", clientPorts=[{"port": -(2**63) - 1}]),
            # MSG segmentation members
            json.dumps(
                {
                    **msg,
                    "messageId": "seg-1",
                    "segmentationSetId": "s1",
                    "segmentNumber": 1,
                    "totalSegments": HUGE,
                }
            ).encode(),
            json.dumps(
                {
                    **msg,
                    "messageId": "seg-2",
                    "segmentationSetId": "s2",
                    "segmentNumber": HUGE,
                }
            ).encode(),
            # segment recovery
            json.dumps(
                {
                    "messageType": "SEGREC",
                    "messageId": "m",
                    "segmentationSetId": "s",
                    "missingSegments": [HUGE],
                    "originatingUeServiceId": "ue1",
                    "recipientUeServiceId": "ue2",
                }
            ).encode(),
        ]
        for payload in refused:
            reply = await client.post(payload)
            assert reply.code == Code.BAD_REQUEST, payload
            assert error_body(reply)["failureCause"] == "INVALID_MESSAGE"
        # huge integers in members the model does not keep are ignored, and
        # nothing is stored from them: the request succeeds
        accepted = [
            json.dumps({**msg, "messageId": "m-1", "extension": HUGE}).encode(),
            json.dumps(
                {
                    "messageType": "AGGMSG",
                    "messageId": "agg-1",
                    "originatingUeServiceId": "ue1",
                    "recipientUeServiceId": "ue2",
                    "aggregatedMessages": [
                        {"messageId": "i-1", "payload": "QQ==", "extra": HUGE},
                        {"messageId": "i-2", "payload": "QQ==", "n": -HUGE},
                    ],
                }
            ).encode(),
            json.dumps(
                {
                    "messageType": "TOPICSUB",
                    "originatingUeServiceId": "ue1",
                    "messagingTopics": ["t1"],
                    "level": HUGE,
                }
            ).encode(),
            reg("ue1", "secret-ue1", profile={"n": HUGE, "m": [HUGE]}),
        ]
        for payload in accepted:
            reply = await client.post(payload)
            assert reply.code in (Code.CHANGED, Code.CREATED), (payload, reply)
    finally:
        client.close()
    no_errors(caplog)


async def test_a_flooding_source_does_not_starve_a_registration(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = server.coap_address
    garbage = [
        CoapMessage(
            Type.CON, Code.POST, mid, b"g", OPTIONS, b'{"messageType":"REG"'
        ).encode()
        for mid in range(2_000)
    ]
    flooders = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(20)]
    try:
        for sock in flooders:
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        for i, data in enumerate(garbage):
            try:
                flooders[i % len(flooders)].sendto(data, (host, port))
            except BlockingIOError:
                await asyncio.sleep(0)
        client = RawClient(server)
        try:
            reply = await client.post(reg("ue1", "secret-ue1"))
            assert reply.code == Code.CREATED
        finally:
            client.close()
    finally:
        for sock in flooders:
            sock.close()
    assert server.coap is not None
    stats = server.coap.endpoint.stats()
    assert stats["dropped"] > 0  # 100 per source, most beyond the burst of 8
    # repeated faults were logged a bounded number of times
    refused = [r for r in caplog.records if "4.00 from" in r.getMessage()]
    assert len(refused) <= 10
    no_errors(caplog)
