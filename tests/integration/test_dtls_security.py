"""coaps:// under attack and on the move: identity binding, NAT rebinding, cookies, bounds, fuzz.

The peer is Mbed TLS's DTLS client (tests/dtls_peer.py) over real UDP sockets
against the real server; the third-party command-line clients are in
tests/interop/test_dtls.py.
"""

import asyncio
import json
import logging
import random
from pathlib import Path

import pytest
from mbedtls.tls import (
    ClientContext,
    DTLSConfiguration,
    DTLSVersion,
    WantReadError,
    WantWriteError,
)

from msgin5g.client import Client
from msgin5g.coap.message import CoapMessage, encode_uint, uri_path_options
from msgin5g.coap.numbers import Code, OptionNumber, Type
from msgin5g.coap_binding import post_options
from tests.dtls_peer import (
    DtlsPeer,
    connected,
    dtls_stats,
    msg_json,
    reg_json,
    secure_address,
    secure_server,
    token,
    wait_for,
)

pytestmark = pytest.mark.timeout(120)


def client_hello(ue: str = "ue1") -> bytes:
    """The first flight (a ClientHello without cookie) of a real DTLS client."""
    buffer = ClientContext(
        DTLSConfiguration(
            ciphers=("TLS-PSK-WITH-AES-128-CCM-8",),
            lowest_supported_version=DTLSVersion.DTLSv1_2,
            highest_supported_version=DTLSVersion.DTLSv1_2,
            validate_certificates=False,
            pre_shared_key=(ue, token(ue)[:32].encode()),
        )
    ).wrap_buffers(None)
    try:
        buffer.do_handshake()
        buffer.do_handshake()
    except (WantReadError, WantWriteError):
        pass
    out = buffer.peek_outgoing(4096)
    assert out[0] == 22
    return out


class _Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.received.append(data)


async def udp_socket(port: int = 0) -> tuple[asyncio.DatagramTransport, _Sink]:
    sink = _Sink()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: sink, local_addr=("127.0.0.1", port)
    )
    return transport, sink


async def udp_socket_when_free(port: int) -> tuple[asyncio.DatagramTransport, _Sink]:
    """Bind ``port`` once the closing socket that held it is gone (bounded)."""
    async with asyncio.timeout(20):
        while True:
            try:
                return await udp_socket(port)
            except OSError:
                await asyncio.sleep(0.02)


async def test_messages_flow_and_sessions_are_bound_to_identities(
    tmp_path: Path,
) -> None:
    async with secure_server(tmp_path) as server:
        ue1 = await connected(server, "ue1")
        ue2 = await connected(server, "ue2")
        answer = await ue1.post(msg_json("ue1", "ue2", "m-1"))
        assert json.loads(answer.payload)["deliveryStatus"] == "DELY_ACCEPTED"
        got = await asyncio.wait_for(ue2.requests.get(), 20)
        assert json.loads(got.payload)["messageId"] == "m-1"
        assert server.service is not None
        registration = server.service.registry.get("ue1")
        assert registration is not None
        assert registration.source.host == "psk:ue1"  # not an address
        # a UE registers only itself: ue2's valid credential on ue1's session
        answer = await ue1.post(reg_json("ue2", token("ue2")))
        assert answer.code == Code.FORBIDDEN
        assert json.loads(answer.payload)["failureCause"] == "NOT_AUTHORIZED"
        # and sends only as itself
        answer = await ue1.post(msg_json("ue2", "ue1", "m-2"))
        assert json.loads(answer.payload)["failureCause"] == "NOT_AUTHORIZED"
        for peer in (ue1, ue2):
            await peer.close()


async def test_wrong_key_gets_no_session(tmp_path: Path) -> None:
    async with secure_server(tmp_path) as server:
        wrong = DtlsPeer(secure_address(server), "ue1", b"not-the-token-of-ue1")
        with pytest.raises(Exception, match=r"(?i)alert|ssl|tls"):
            await wrong.connect(timeout=30)
        await wrong.close()
        unknown = DtlsPeer(secure_address(server), "nobody", b"whatever-key")
        with pytest.raises(Exception, match=r"(?i)alert|ssl|tls"):
            await unknown.connect(timeout=30)
        await unknown.close()
        assert dtls_stats(server)["handshake_failures"] >= 2
        ue1 = await connected(server, "ue1")  # the server keeps serving
        await ue1.close()


async def test_spoofed_source_with_a_valid_identity_is_refused(
    tmp_path: Path,
) -> None:
    async with secure_server(tmp_path, allow_insecure="true") as server:
        ue1 = await connected(server, "ue1")
        ue2 = await connected(server, "ue2")
        port = ue2.local_port
        assert ue2.transport is not None
        ue2.transport.close()  # the attacker now sends from ue2's exact address
        spoofer, sink = await udp_socket_when_free(port)
        plain, secure = server.coap_addresses
        assert plain is not None and secure is not None
        request = CoapMessage(
            Type.CON,
            Code.POST,
            mid=7,
            token=b"sp",
            options=post_options(("msgin5g",)),
            payload=msg_json("ue2", "ue1", "spoof-1"),
        ).encode()
        spoofer.sendto(request, plain)  # plain CoAP: the address is not the UE
        await wait_for(lambda: bool(sink.received))
        answer = CoapMessage.decode(sink.received[0])
        assert json.loads(answer.payload)["failureCause"] == "NOT_AUTHORIZED"
        before = dtls_stats(server)["bad_records"]
        spoofer.sendto(request, secure)  # plaintext on coaps: not a record
        forged = bytes([23, 254, 253, 0, 1]) + bytes(6) + b"\x00\x20" + bytes(32)
        spoofer.sendto(forged, secure)  # a forged record of the session's epoch
        await wait_for(lambda: dtls_stats(server)["bad_records"] >= before + 1)
        spoofer.close()
        await asyncio.sleep(0.2)
        assert ue1.requests.empty()  # nothing was delivered in ue2's name
        assert server.service is not None
        registration = server.service.registry.get("ue2")
        assert registration is not None and registration.source.host == "psk:ue2"
        await ue1.close()
        await ue2.close()


async def test_nat_rebinding_keeps_the_session_and_delivery(tmp_path: Path) -> None:
    async with secure_server(tmp_path) as server:
        ue1 = await connected(server, "ue1")
        ue2 = await connected(server, "ue2")
        assert server.coap is not None and server.coap.secure is not None
        dtls = server.coap.secure.dtls
        old = dtls.session_address("ue2")
        handshakes = dtls_stats(server)["handshakes"]
        await ue2.rebind()  # new source port, same DTLS session
        new_port = ue2.local_port
        assert old is not None and old[1] != new_port
        ping = CoapMessage(Type.CON, Code.EMPTY, mid=0x4242).encode()
        ue2.send_plain(ping)  # any record from the new port moves the session
        await wait_for(lambda: dtls.session_address("ue2") == ("127.0.0.1", new_port))
        answer = await ue1.post(msg_json("ue1", "ue2", "after-move"))
        assert json.loads(answer.payload)["deliveryStatus"] == "DELY_ACCEPTED"
        got = await asyncio.wait_for(ue2.requests.get(), 20)
        assert json.loads(got.payload)["messageId"] == "after-move"
        stats = dtls_stats(server)
        assert stats["rebound"] == 1
        assert stats["handshakes"] == handshakes  # no new handshake
        await ue1.close()
        await ue2.close()


async def test_client_hello_flood_keeps_no_state(tmp_path: Path) -> None:
    async with secure_server(tmp_path, source_rate="0") as server:
        hello = client_hello()
        address = secure_address(server)
        sockets = [await udp_socket() for _ in range(20)]
        for _ in range(25):
            for transport, _sink in sockets:
                transport.sendto(hello, address)
        await wait_for(lambda: dtls_stats(server)["hello_verify"] >= 500)
        stats = dtls_stats(server)
        assert stats["sessions"] == 0 and stats["handshaking"] == 0
        assert all(sink.received for _, sink in sockets)  # each got its cookie
        for transport, _sink in sockets:
            transport.close()


async def test_session_bounds_per_host(tmp_path: Path) -> None:
    async with secure_server(tmp_path, dtls_max_per_host="2") as server:
        ue1 = await connected(server, "ue1")
        ue2 = await connected(server, "ue2")
        third = DtlsPeer(secure_address(server), "ue3", token("ue3")[:32].encode())
        with pytest.raises(TimeoutError):
            await third.connect(timeout=4)
        await third.close()
        stats = dtls_stats(server)
        assert stats["refused_full"] >= 1 and stats["sessions"] == 2
        await ue1.close()
        await ue2.close()


@pytest.mark.parametrize("seed", [1425, 7, 2026, 99991])
async def test_fuzzed_records_neither_crash_nor_accumulate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, seed: int
) -> None:
    caplog.set_level(logging.ERROR)
    async with secure_server(
        tmp_path, source_rate="0", dtls_max_handshakes="50"
    ) as server:
        ue1 = await connected(server, "ue1")
        seeds = [client_hello("ue2"), client_hello("nobody")]
        assert ue1.transport is not None
        sent: list[bytes] = []
        original = ue1.transport.sendto

        def capture(data: bytes, addr: object = None) -> None:
            sent.append(data)
            original(data, addr)

        ue1.transport.sendto = capture  # type: ignore[method-assign]
        answer = await ue1.post(msg_json("ue1", "ue1", "seed"))
        assert answer.code != 0
        seeds.extend(sent)
        rng = random.Random(seed)
        address = secure_address(server)
        sockets = [await udp_socket() for _ in range(16)]
        total = 3000
        for index in range(total):
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                kind = rng.random()
                if kind < 0.5 and data:
                    data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
                elif kind < 0.7:
                    del data[rng.randrange(len(data) + 1) :]
                elif kind < 0.9:
                    data += rng.randbytes(rng.randint(1, 64))
                else:
                    data[11:13] = rng.randbytes(2)  # record length
            if index % 4 == 0:  # from the UE's own address too (a spoofer's best)
                original(bytes(data), address)
            else:
                transport, _ = sockets[index % len(sockets)]
                transport.sendto(bytes(data), address)
            if index % 200 == 0:
                await asyncio.sleep(0)
        dtls = server.coap.secure.dtls  # type: ignore[union-attr]
        await wait_for(
            lambda: (
                sum(
                    dtls.counters[k]
                    for k in ("hello_verify", "bad_records", "handshake_failures")
                )
                > 0
            )
        )
        stats = dtls_stats(server)
        assert stats["sessions"] <= 1 + 50  # ue1 + at most the handshake bound
        for transport, _ in sockets:
            transport.close()
        # the server still serves the established session and new ones
        answer = await ue1.post(msg_json("ue1", "ue1", "after-fuzz"))
        assert json.loads(answer.payload)["deliveryStatus"] == "DELY_ACCEPTED"
        ue2 = await connected(server, "ue2")
        await ue1.close()
        await ue2.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_observe_over_dtls(tmp_path: Path) -> None:
    async with secure_server(tmp_path) as server:
        ue1 = await connected(server, "ue1")
        options = uri_path_options(("msgin5g", "topics", "news"))
        options.append((OptionNumber.OBSERVE, encode_uint(0)))
        answer = await ue1.request(CoapMessage(Type.CON, Code.GET, options=options))
        assert answer.code == Code.CONTENT
        host, port = secure_address(server)
        async with Client(
            "ue2", "secret-ue2", server=f"coaps://{host}:{port}", bind=("127.0.0.1", 0)
        ) as ue2:
            await ue2.register()
            await ue2.publish("news", "over dtls")
        got = await asyncio.wait_for(ue1.notifications.get(), 20)
        assert b'"messagingTopic":"news"' in got.payload
        await ue1.close()


async def test_per_source_limit_applies_before_any_dtls_work(tmp_path: Path) -> None:
    async with secure_server(tmp_path) as server:  # default coap.source_* limits
        transport, _sink = await udp_socket()
        hello = client_hello()
        for _ in range(100):
            transport.sendto(hello, secure_address(server))
        await wait_for(lambda: dtls_stats(server)["dropped"] >= 80)
        stats = dtls_stats(server)
        assert stats["hello_verify"] <= 10  # the burst of one untrusted source
        assert stats["sessions"] == 0
        transport.close()
        ue1 = await connected(server, "ue1")  # another source is unaffected
        await ue1.close()


async def test_idle_sessions_are_closed_with_close_notify(tmp_path: Path) -> None:
    async with secure_server(tmp_path, dtls_idle_timeout="1") as server:
        ue1 = await connected(server, "ue1")
        await wait_for(lambda: dtls_stats(server)["sessions"] == 0)
        reader = ue1._reader
        assert reader is not None
        await asyncio.wait_for(reader, 20)  # the peer read the close_notify
        await ue1.close()
