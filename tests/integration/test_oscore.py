"""OSCORE on MSGin5G-1: our client and hand-built protected datagrams against a
real server (loopback UDP, real SQLite file)."""

import asyncio
import json
import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.client import Client
from msgin5g.client.wire import post_options, ue_credential_info
from msgin5g.coap.message import CoapMessage
from msgin5g.coap.numbers import Code, Type
from msgin5g.coap.oscore import (
    ECHO,
    inner_option,
    protect_request,
    unprotect_response,
)
from msgin5g.codec.ue_payload import encode
from msgin5g.errors import MSGin5GError
from msgin5g.model.credentials import psk_token
from msgin5g.model.messages import Msg, Reg
from msgin5g.oscore_profile import ue_context
from msgin5g.server import Server
from msgin5g.transports.coap.oscore import RESERVATION_STEP
from tests.integration.attack_support import attack_server, post, server_uri

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    async for srv in attack_server(tmp_path, ("ue1", "ue2", "ue3")):
        yield srv


def oscore_client(server: Server, ue: str, state: Path | None = None) -> Client:
    return Client(
        ue,
        f"secret-{ue}",
        server=server_uri(server),
        bind=("127.0.0.1", 0),
        oscore=True,
        oscore_state=None if state is None else str(state),
    )


async def test_register_and_exchange_over_oscore(server: Server) -> None:
    async with (
        oscore_client(server, "ue1") as ue1,
        oscore_client(server, "ue2") as ue2,
    ):
        assert (await ue1.register()).registration_result == "SUCCESS"
        await ue2.register()
        resp = await ue1.send("ue2", b"sealed", report=True)
        assert resp.delivery_status == "DELY_ACCEPTED"
        got = await ue2.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.payload == b"sealed"
        report = await ue1.receive(timeout=10)
        assert report.item.message_id == resp.message_id
    edge = server.coap.oscore  # type: ignore[attr-defined]
    assert edge is not None
    assert edge.is_bound("ue1")


async def test_plain_and_oscore_ues_talk(server: Server) -> None:
    async with (
        oscore_client(server, "ue1") as ue1,
        Client(
            "ue2", "secret-ue2", server=server_uri(server), bind=("127.0.0.1", 0)
        ) as ue2,
    ):
        await ue1.register()
        await ue2.register()
        await ue2.send("ue1", b"to the sealed one")
        got = await ue1.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.payload == b"to the sealed one"


class Raw:
    """A UDP socket sending hand-protected requests as UE ``ue``."""

    def __init__(self, server: Server, ue: str) -> None:
        self.server = server
        self.ue = ue
        self.ctx = ue_context(ue, psk_token(f"secret-{ue}", ue))
        self.mid = 100

    async def exchange(
        self, body: object, *, echo: bytes | None = None, sock: socket.socket
    ) -> tuple[bytes, CoapMessage]:
        """Send one protected CON POST; (datagram sent, decrypted answer)."""
        self.mid += 1
        options = post_options(("msgin5g",))
        if echo is not None:
            options = [*options, (ECHO, echo)]
        plain = CoapMessage(
            Type.CON, Code.POST, self.mid, self.mid.to_bytes(2, "big"), options,
            encode(body),  # type: ignore[arg-type]
        )  # fmt: skip
        outer, binding = protect_request(self.ctx, plain)
        datagram = outer.encode()
        answer = await send_raw(sock, datagram, self.server.coap_address)
        return datagram, unprotect_response(self.ctx, answer, binding)

    async def register(self, sock: socket.socket) -> None:
        reg = Reg(ue_service_id=self.ue, ue_credential_info=ue_credential_info(
            psk_token(f"secret-{self.ue}", self.ue)))  # fmt: skip
        _, answer = await self.exchange(reg, sock=sock)
        assert answer.code == 0x81  # 4.01 with Echo: the server just met us
        echo = inner_option(answer, ECHO)
        assert echo
        _, answer = await self.exchange(reg, echo=echo, sock=sock)
        assert answer.code == Code.CREATED, answer


async def send_raw(
    sock: socket.socket, datagram: bytes, to: tuple[str, int]
) -> CoapMessage:
    loop = asyncio.get_running_loop()
    await loop.sock_sendto(sock, datagram, to)
    data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
    return CoapMessage.decode(data)


def udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    return sock


def msg(ue: str, to: str, mid: str) -> Msg:
    return Msg(
        message_id=mid,
        originating_ue_service_id=ue,
        recipient_ue_service_id=to,
        payload=b"x",
    )


async def test_replayed_request_is_refused(server: Server) -> None:
    raw = Raw(server, "ue1")
    with udp() as sock, udp() as attacker:
        await raw.register(sock)
        datagram, answer = await raw.exchange(msg("ue1", "ue2", "m-1"), sock=sock)
        assert answer.code == Code.CHANGED, answer.payload
        # authorised (ue2 is simply not registered)
        assert json.loads(answer.payload)["failureCause"] == "RECIPIENT_NOT_REGISTERED"
        # the same datagram from elsewhere (not a CoAP duplicate: new source)
        replay = await send_raw(attacker, datagram, server.coap_address)
        assert replay.code == 0x81
        assert replay.payload == b"Replay detected"
        # and with a fresh Message ID from the original source
        bumped = CoapMessage.decode(datagram)
        bumped.mid = (bumped.mid + 7) & 0xFFFF
        replay = await send_raw(sock, bumped.encode(), server.coap_address)
        assert replay.code == 0x81
    assert server.coap.oscore.refused >= 2  # type: ignore[attr-defined]


async def test_tampered_and_unknown_contexts_are_refused(server: Server) -> None:
    raw = Raw(server, "ue1")
    stranger = Raw(server, "nobody")
    with udp() as sock:
        await raw.register(sock)
        plain = CoapMessage(Type.CON, Code.POST, 9, b"\1", post_options(("msgin5g",)))
        outer, _ = protect_request(raw.ctx, plain)
        outer.payload = bytes([outer.payload[0] ^ 0x55]) + outer.payload[1:]
        answer = await send_raw(sock, outer.encode(), server.coap_address)
        assert answer.code == 0x80
        assert answer.payload == b"Decryption failed"
        plain.mid = 10  # not a CoAP duplicate of the first
        outer, _ = protect_request(stranger.ctx, plain)
        answer = await send_raw(sock, outer.encode(), server.coap_address)
        assert answer.code == 0x81
        assert answer.payload == b"Security context not found"


async def test_plain_request_cannot_act_for_an_oscore_ue(server: Server) -> None:
    raw = Raw(server, "ue1")
    with udp() as sock:
        await raw.register(sock)
        body = {
            "messageType": "MSG",
            "messageId": "forged",
            "originatingUeServiceId": "ue1",
            "recipientUeServiceId": "ue2",
            "payload": "eA==",
        }
        # from the very address the UE registered from: a spoofed source
        answer = await send_raw(sock, post(body, 77), server.coap_address)
        assert answer.code == Code.FORBIDDEN
        assert json.loads(answer.payload)["failureCause"] == "NOT_AUTHORIZED"


async def test_context_cannot_act_for_another_ue(server: Server) -> None:
    raw = Raw(server, "ue1")
    with udp() as sock:
        await raw.register(sock)
        _, answer = await raw.exchange(msg("ue3", "ue2", "m-x"), sock=sock)
        assert answer.code == Code.FORBIDDEN


async def test_new_source_address_keeps_working(server: Server) -> None:
    """The identity is the context's UE: a NAT rebinding changes nothing."""
    raw = Raw(server, "ue1")
    with udp() as first, udp() as second:
        await raw.register(first)
        _, answer = await raw.exchange(msg("ue1", "ue2", "m-2"), sock=second)
        assert answer.code == Code.CHANGED
        # authorised (a foreign source would get DELY_REJECTED / NOT_AUTHORIZED)
        assert json.loads(answer.payload)["failureCause"] == "RECIPIENT_NOT_REGISTERED"


async def test_restart_asks_for_echo_and_never_reuses_numbers(tmp_path: Path) -> None:
    state = tmp_path / "ue1.oscore.json"
    gen = attack_server(tmp_path, ("ue1", "ue2"))
    server = await anext(gen)
    async with oscore_client(server, "ue1", state) as ue1:
        await ue1.register()
        await ue1.send("ue2", b"before")
        before = json.loads(state.read_text())["next"]
    edge = server.coap.oscore  # type: ignore[attr-defined]
    used = (await edge.context_of("ue1")).sender_sequence  # the Echo answer took one
    assert used >= 1
    address = server.coap_address
    await gen.aclose()
    gen = attack_server(tmp_path, ("ue1", "ue2"), **{"coap.bind": f"{address[0]}:0"})
    server = await anext(gen)
    try:
        async with oscore_client(server, "ue1", state) as ue1:
            transport = ue1._transport  # type: ignore[attr-defined]
            assert transport.context.sender_sequence == before
            await ue1.register()  # the new server's Echo is answered transparently
            resp = await ue1.send("ue2", b"after")
            assert resp.message_id
        # the server's own numbers resumed past everything it may have used
        edge = server.coap.oscore  # type: ignore[attr-defined]
        restarted = await edge.context_of("ue1")
        assert restarted.sender_sequence > used
        assert restarted.sender_sequence >= RESERVATION_STEP
    finally:
        await gen.aclose()


async def test_refusal_is_reported_to_the_client(server: Server) -> None:
    async with Client(
        "nobody", "secret-nobody", server=server_uri(server),
        bind=("127.0.0.1", 0), oscore=True,
    ) as ghost:  # fmt: skip
        with pytest.raises(MSGin5GError, match="Security context not found"):
            await ghost.register()


async def test_mutated_oscore_datagrams_do_not_hurt_the_server(server: Server) -> None:
    """Bit flips anywhere in a valid protected request (header, OSCORE option,
    ciphertext): every answer is an error or silence, and service goes on."""

    rng = random.Random(14)
    raw = Raw(server, "ue1")
    with udp() as sock:
        await raw.register(sock)
        plain = CoapMessage(Type.CON, Code.POST, 1, b"\1", post_options(("msgin5g",)),
                            encode(msg("ue1", "ue2", "fuzz")))  # fmt: skip
        template, _ = protect_request(raw.ctx, plain)
        good = bytearray(template.encode())
        loop = asyncio.get_running_loop()
        for i in range(300):
            mutated = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(4, len(mutated))] ^= 1 << rng.randrange(8)
            mutated[2:4] = (1000 + i).to_bytes(2, "big")  # never a CoAP duplicate
            await loop.sock_sendto(sock, bytes(mutated), server.coap_address)
        # drain what came back (errors, RSTs), then a genuine request still works
        await asyncio.sleep(0.5)
        accepted = 0
        while True:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            answer = CoapMessage.decode(data)
            # a flip in the token alone leaves a valid request: its Partial IV
            # then counts once, every other copy is a replay
            accepted += 0 < answer.code < 0x80
        assert accepted <= 1
        _, answer = await raw.exchange(msg("ue1", "ue2", "after-fuzz"), sock=sock)
        assert answer.code == Code.CHANGED
    assert server.coap.endpoint.stats()["handler_errors"] == 0  # type: ignore[attr-defined]


async def test_restarted_device_asks_the_server_for_echo(
    server: Server, tmp_path: Path
) -> None:
    """A device restarted from its state file does not know which downlink it
    has seen: it answers the server's first request 4.01 + Echo, the server
    resends once with it, and the message arrives."""
    state = tmp_path / "ue2.json"
    async with oscore_client(server, "ue2", state) as ue2:
        await ue2.register()
    async with (
        oscore_client(server, "ue2", state) as ue2,
        oscore_client(server, "ue1") as ue1,
    ):
        transport = ue2._transport  # type: ignore[attr-defined]
        assert not transport.context.window.known
        await ue2.register()
        await ue1.register()
        resp = await ue1.send("ue2", b"after the device restarted")
        assert resp.delivery_status == "DELY_ACCEPTED"
        got = await ue2.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.payload == b"after the device restarted"
        assert transport.context.window.known


async def test_downlink_follows_an_oscore_ue_to_its_new_address(
    server: Server, tmp_path: Path
) -> None:
    """NAT rebinding: the UE's uplink comes from a new port (same context, no
    new REG); the server moves its contact, and downlink reaches the new port."""
    state = tmp_path / "ue2.json"
    async with oscore_client(server, "ue2", state) as ue2:
        await ue2.register()
        old = ue2.local_address
    async with (
        oscore_client(server, "ue2", state) as ue2,  # same context, new socket
        oscore_client(server, "ue1") as ue1,
    ):
        assert ue2.local_address != old
        await ue1.register()
        resp = await ue2.send("ue1", b"from my new address")
        assert resp.delivery_status == "DELY_ACCEPTED"
        assert (await ue1.receive(timeout=10)).item.payload == b"from my new address"
        for _ in range(100):  # the move is written in the background
            contact = server.service.registry.contact_for("ue2")  # type: ignore[union-attr]
            if contact is not None and contact.port == ue2.local_address[1]:
                break
            await asyncio.sleep(0.05)
        assert contact is not None and contact.port == ue2.local_address[1]
        resp = await ue1.send("ue2", b"to your new address")
        assert resp.delivery_status == "DELY_ACCEPTED"
        got = await ue2.receive(timeout=10)
        assert isinstance(got.item, Msg)
        assert got.item.payload == b"to your new address"
