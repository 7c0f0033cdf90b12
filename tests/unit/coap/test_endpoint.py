"""Endpoint over real loopback UDP: routing, errors, concurrency, timers, interop."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator

import pytest

from msgin5g import _native
from msgin5g.coap import (
    CoapMessage,
    Code,
    Endpoint,
    OptionNumber,
    Request,
    Site,
    TransmissionParameters,
    Type,
    make_response,
    uri_path_options,
)
from msgin5g.errors import ConnectError, RemoteReset, RequestTimeout

FAST = TransmissionParameters(ack_timeout=0.05, max_retransmit=2, nstart=64)


async def echo(req: Request) -> CoapMessage:
    return make_response(
        req.message, Code.CHANGED, req.message.payload, content_format=50
    )


async def boom(req: Request) -> CoapMessage:
    raise RuntimeError("secret detail")


def post(
    path: tuple[str, ...], payload: bytes = b"{}", mtype: int = Type.CON
) -> CoapMessage:
    return CoapMessage(
        mtype, Code.POST, options=uri_path_options(path), payload=payload
    )


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def server() -> AsyncIterator[Endpoint]:
    site = Site()
    site.add(("echo",), echo)
    site.add(("boom",), boom)
    site.add(("tree",), echo, prefix=True, methods=frozenset({Code.GET, Code.POST}))
    async with await Endpoint.create(
        site=site, params=FAST, max_request_payload=64
    ) as endpoint:
        yield endpoint


@pytest.fixture
async def client() -> AsyncIterator[Endpoint]:
    async with await Endpoint.create(params=FAST) as endpoint:
        yield endpoint


async def test_endpoint_request_response(server: Endpoint, client: Endpoint) -> None:
    resp = await client.request(post(("echo",), b'{"a":1}'), server.local_address)
    assert resp.mtype == Type.ACK
    assert resp.code == Code.CHANGED
    assert resp.payload == b'{"a":1}'
    assert resp.content_format == 50
    non = await client.request(post(("echo",), b"n", Type.NON), server.local_address)
    assert (non.mtype, non.payload) == (Type.NON, b"n")
    assert server.stats()["received"] == 2


async def test_endpoint_error_responses(
    server: Endpoint, client: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    addr = server.local_address
    assert (await client.request(post(("nope",)), addr)).code == Code.NOT_FOUND
    get = CoapMessage(Type.CON, Code.GET, options=uri_path_options(("echo",)))
    assert (await client.request(get, addr)).code == Code.METHOD_NOT_ALLOWED
    big = await client.request(post(("echo",), b"x" * 65), addr)
    assert big.code == Code.REQUEST_ENTITY_TOO_LARGE
    assert big.uint_opt(OptionNumber.SIZE1) == 64
    with caplog.at_level(logging.ERROR, logger="msgin5g.coap.endpoint"):
        failed = await client.request(post(("boom",)), addr)
    assert failed.code == Code.INTERNAL_SERVER_ERROR
    assert failed.payload == b""
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert errors[0].exc_info is not None
    assert server.stats()["handler_errors"] == 1


async def test_endpoint_prefix_route(server: Endpoint, client: Endpoint) -> None:
    get = CoapMessage(Type.CON, Code.GET, options=uri_path_options(("tree", "a", "b")))
    assert (await client.request(get, server.local_address)).code == Code.CHANGED
    get.options = uri_path_options(("treehouse",))
    assert (await client.request(get, server.local_address)).code == Code.NOT_FOUND


async def test_endpoint_handlers_run_concurrently(client: Endpoint) -> None:
    release = asyncio.Event()
    running = 0

    async def slow(req: Request) -> CoapMessage:
        nonlocal running
        running += 1
        await release.wait()
        return make_response(req.message, Code.CHANGED, req.message.payload)

    site = Site()
    site.add(("slow",), slow)
    async with await Endpoint.create(
        site=site, params=FAST, max_concurrent_requests=20
    ) as srv:
        pending = [
            asyncio.create_task(
                client.request(post(("slow",), str(i).encode()), srv.local_address)
            )
            for i in range(20)
        ]
        async with asyncio.timeout(2):
            while running < 20:
                await asyncio.sleep(0.005)
        assert srv.stats()["handlers_running"] == 20
        # one more than the limit is shed with 5.03 + Max-Age
        shed = await client.request(post(("slow",)), srv.local_address)
        assert shed.code == Code.SERVICE_UNAVAILABLE
        assert shed.uint_opt(OptionNumber.MAX_AGE) == 5
        release.set()
        answers = await asyncio.gather(*pending)
    assert sorted(int(a.payload) for a in answers) == list(range(20))


async def test_endpoint_timeout_when_nobody_answers(client: Endpoint) -> None:
    # a bound socket that never reads: no ICMP, so this is real loss (a closed
    # port fails at once instead: test_icmp_unreachable.py)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    loop = asyncio.get_running_loop()
    start = loop.time()
    with silent, pytest.raises(RequestTimeout):
        await client.request(post(("x",)), silent.getsockname())
    assert loop.time() - start < 1.0
    assert client.stats()["retransmissions"] == 2
    assert client.stats()["pending"] == 0


async def test_endpoint_request_overall_timeout_cancels_exchange(
    client: Endpoint,
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))  # bound, never answers: no ICMP
        with pytest.raises(RequestTimeout):
            await client.request(post(("x",)), silent.getsockname(), timeout=0.01)
    assert client.stats()["pending"] == 0


async def test_endpoint_separate_response(client: Endpoint) -> None:
    async def later(req: Request) -> CoapMessage:
        req.endpoint.accept_empty(req)
        await asyncio.sleep(0.02)
        return make_response(req.message, Code.CONTENT, b"late")

    site = Site()
    site.add(("later",), later)
    async with await Endpoint.create(site=site, params=FAST) as srv:
        resp = await client.request(post(("later",)), srv.local_address)
        assert (resp.mtype, resp.code, resp.payload) == (
            Type.CON,
            Code.CONTENT,
            b"late",
        )
        async with asyncio.timeout(1):
            while srv.stats()["pending"] or srv._layer.next_deadline() is not None:
                await asyncio.sleep(0.01)
        assert srv.stats()["retransmissions"] == 0  # our empty ACK stopped them


async def test_endpoint_rst_raises_remote_reset(client: Endpoint) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
        raw.bind(("127.0.0.1", 0))
        raw.setblocking(False)
        task = asyncio.create_task(
            client.request(post(("x",)), raw.getsockname(), mid=0x4242, token=b"tok")
        )
        data, addr = await loop.sock_recvfrom(raw, 2048)
        msg = CoapMessage.decode(data)
        assert (msg.mid, msg.token) == (0x4242, b"tok")
        await loop.sock_sendto(raw, CoapMessage(Type.RST, 0, msg.mid).encode(), addr)
        with pytest.raises(RemoteReset):
            await task


async def test_endpoint_survives_garbage(server: Endpoint, client: Endpoint) -> None:
    for junk in (
        b"",
        b"\xff" * 3,
        b"\x4f\x01\x00\x01",
        bytes(range(256)),
        b"\x40\x00\x00\x01x",
    ):
        client.send_raw(junk, server.local_address)
    resp = await client.request(post(("echo",)), server.local_address)
    assert resp.code == Code.CHANGED
    assert server.stats()["malformed"] >= 4


async def test_endpoint_aclose_fails_outstanding_requests() -> None:
    endpoint = await Endpoint.create(params=FAST)
    task = asyncio.create_task(
        endpoint.request(post(("x",)), ("127.0.0.1", free_udp_port()))
    )
    await asyncio.sleep(0)
    await endpoint.aclose()
    with pytest.raises(ConnectError):
        await task
    with pytest.raises(ConnectError):
        await endpoint.request(post(("x",)), ("127.0.0.1", 1))


async def test_endpoint_ipv6_and_hostname(server: Endpoint) -> None:
    try:
        v6 = await Endpoint.create(("::1", 0), params=FAST)
    except ConnectError:
        pytest.skip("no IPv6 loopback")
    async with v6:
        host, port = v6.local_address
        assert host == "::1"
        async with await Endpoint.create(("::", 0), params=FAST) as v6client:
            resp = await v6client.request(
                post(("echo",)), ("localhost", server.local_address[1])
            )
            assert resp.code == Code.CHANGED
            resp = await v6client.request(post(("echo",)), ("0:0::1", port))
            assert resp.code == Code.NOT_FOUND


async def test_endpoint_bind_error_is_connect_error(server: Endpoint) -> None:
    with pytest.raises(ConnectError):
        await Endpoint.create(server.local_address)


# ----------------------------------------------------------------- interop


async def test_endpoint_interop_aiocoap_client(server: Endpoint) -> None:
    import aiocoap

    ctx = await aiocoap.Context.create_client_context()
    try:
        host, port = server.local_address
        msg = aiocoap.Message(
            code=aiocoap.POST, uri=f"coap://{host}:{port}/echo", payload=b'{"x":2}'
        )
        resp = await asyncio.wait_for(ctx.request(msg).response, 5)
        assert resp.code == aiocoap.CHANGED
        assert resp.payload == b'{"x":2}'
        assert resp.opt.content_format == 50
        missing = aiocoap.Message(code=aiocoap.POST, uri=f"coap://{host}:{port}/nope")
        resp = await asyncio.wait_for(ctx.request(missing).response, 5)
        assert resp.code == aiocoap.NOT_FOUND
    finally:
        await ctx.shutdown()


async def test_endpoint_interop_aiocoap_server(client: Endpoint) -> None:
    import aiocoap
    import aiocoap.resource

    class Echo(aiocoap.resource.Resource):  # type: ignore[misc]
        async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload[::-1])

    root = aiocoap.resource.Site()
    root.add_resource(["echo"], Echo())
    port = free_udp_port()
    ctx = await aiocoap.Context.create_server_context(
        root, bind=("127.0.0.1", port), transports=["udp6"]
    )
    try:
        resp = await client.request(post(("echo",), b"abc"), ("127.0.0.1", port))
        assert (resp.code, resp.payload) == (Code.CHANGED, b"cba")
        missing = await client.request(post(("nope",)), ("127.0.0.1", port))
        assert missing.code == Code.NOT_FOUND
    finally:
        await ctx.shutdown()


# request_callback: the outcome without a future (issue 13) --------------------


async def test_endpoint_request_callback_gets_the_response(
    server: Endpoint, client: Endpoint
) -> None:
    loop = asyncio.get_running_loop()
    got: asyncio.Future[tuple[CoapMessage | None, Exception | None]]
    got = loop.create_future()
    client.request_callback(
        post(("echo",), b'{"a":1}'),
        server.local_address,
        lambda response, error: got.set_result((response, error)),
    )
    response, error = await asyncio.wait_for(got, 5)
    assert error is None and response is not None
    assert response.code == Code.CHANGED and response.payload == b'{"a":1}'
    assert client.stats()["pending"] == 0


async def test_endpoint_request_callback_gets_timeout_and_close_errors(
    client: Endpoint,
) -> None:
    outcomes: list[tuple[CoapMessage | None, Exception | None]] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        client.request_callback(
            post(("x",)), silent.getsockname(), lambda r, e: outcomes.append((r, e))
        )
        for _ in range(200):  # FAST: 0.05 s, 2 retransmissions
            if outcomes:
                break
            await asyncio.sleep(0.01)
    [(response, error)] = outcomes
    assert response is None and isinstance(error, RequestTimeout)
    assert client.stats()["retransmissions"] == 2
    # a callback that raises is logged, the endpoint goes on; closing fails
    # what is outstanding
    endpoint = await Endpoint.create(params=FAST)

    def raising(response: CoapMessage | None, error: Exception | None) -> None:
        raise RuntimeError("callback bug")

    endpoint.request_callback(post(("x",)), ("127.0.0.1", free_udp_port()), raising)
    endpoint.request_callback(
        post(("x",)),
        ("127.0.0.1", free_udp_port()),
        lambda r, e: outcomes.append((r, e)),
    )
    await endpoint.aclose()
    assert isinstance(outcomes[-1][1], ConnectError)
    with pytest.raises(ConnectError):
        endpoint.request_callback(post(("x",)), ("127.0.0.1", 1), lambda r, e: None)


async def test_endpoint_request_callback_wants_a_numeric_peer(client: Endpoint) -> None:
    with pytest.raises(ValueError, match="numeric"):
        client.request_callback(post(("x",)), ("localhost", 5683), lambda r, e: None)


@pytest.mark.skipif(
    "msgin5g.coap.exchange" in _native.compiled,
    reason="replaces methods of MessageLayer, a native class when compiled (mypyc): "
    "runs in the pure pass of scripts/test (MSGIN5G_PURE=1)",
)
async def test_endpoint_timer_rearmed_only_for_an_earlier_deadline(
    client: Endpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After each datagram an O(1) bound decides; the timer is never too late."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    layer = client._layer
    deadlines = {"bound": now + 50.0, "next": now + 60.0}
    monkeypatch.setattr(layer, "deadline_bound", lambda: deadlines["bound"])
    monkeypatch.setattr(layer, "next_deadline", lambda: deadlines["next"])
    client._arm_timer()
    assert client._timer_when == now + 60.0
    deadlines.update(bound=now + 70.0, next=now + 80.0)  # later: left alone
    client._arm_timer()
    assert client._timer_when == now + 60.0
    deadlines.update(bound=now + 55.0, next=now + 58.0)  # stale top, earlier live
    client._arm_timer()
    assert client._timer_when == now + 58.0
    deadlines.update(bound=now + 57.0, next=now + 59.0)  # popping finds later
    client._arm_timer()
    assert client._timer_when == now + 58.0
    assert client._timer is not None
    client._timer.cancel()
    client._timer = None
