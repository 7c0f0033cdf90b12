"""Back-pressure of the delivery APIs (issue 13): an overload is refused, not queued.

``rest.max_in_flight`` bounds the messages the APIs hold inside the service; the
storage is stalled here (a gate on the backend's write), so without the bound
every request would wait inside the server, each holding its body and state.
"""

import asyncio

import httpx

from msgin5g.config import RestConfig
from msgin5g.transports.rest.runner import AsgiServer

from .conftest import as_message, make_rig

A2P = "/msgs-msgdelivery/v1/deliver-as-message"
UEO = "/msgs-msgdelivery/v1/deliver-ue-message"


def _stall(backend: object) -> tuple[asyncio.Event, list[str]]:
    """Hold every storage write of ``backend`` until the event is set."""
    gate = asyncio.Event()
    writes: list[str] = []
    original = backend.enqueue_once  # type: ignore[attr-defined]

    async def gated(item, *args, **kwargs):  # type: ignore[no-untyped-def]
        writes.append(item.item.message_id)
        await gate.wait()
        return await original(item, *args, **kwargs)

    backend.enqueue_once = gated  # type: ignore[attr-defined]
    return gate, writes


async def test_overload_gets_503_with_retry_after_and_no_queue() -> None:
    rig, backend = await make_rig(RestConfig(max_in_flight=4))
    try:
        assert (await rig.register_as()).status_code == 201
        gate, writes = _stall(backend)
        posts = [
            asyncio.create_task(rig.http.post(A2P, json=as_message(f"m-{i}")))
            for i in range(40)
        ]
        for _ in range(200):  # let every request reach the server
            await asyncio.sleep(0)
            if sum(t.done() for t in posts) >= 36:
                break
        done = [t.result() for t in posts if t.done()]
        assert len(done) == 36
        for resp in done:
            assert resp.status_code == 503
            assert resp.headers["retry-after"] == "1"
            assert resp.headers["content-type"] == "application/problem+json"
            assert resp.json()["cause"] == "SERVER_CONGESTION"
        for _ in range(200):  # the held ones reach the (stalled) storage write
            if len(writes) >= 4:
                break
            await asyncio.sleep(0)
        assert len(writes) == 4  # the refused ones touched no storage
        gate.set()
        held = await asyncio.gather(*(t for t in posts if not t.done()))
        assert [r.status_code for r in held] == [200] * 4
        assert all(r.json()["status"] == "DELY_STORED" for r in held)
        # the bound is released: a refused msgId may be sent again and is stored
        refused_id = next(
            m for m in (f"m-{i}" for i in range(40)) if m not in set(writes)
        )
        again = await rig.http.post(A2P, json=as_message(refused_id))
        assert again.status_code == 200
        assert again.json()["status"] == "DELY_STORED"
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


async def test_the_bound_covers_the_gateway_api_too() -> None:
    rig, backend = await make_rig(RestConfig(max_in_flight=1))
    try:
        assert (await rig.register_as()).status_code == 201
        gate, _ = _stall(backend)
        first = asyncio.create_task(rig.http.post(A2P, json=as_message("a")))
        for _ in range(100):
            await asyncio.sleep(0)
        body = {
            "oriAddr": {"addrType": "UE", "addr": "ue2"},
            "destAddr": {"addrType": "UE", "addr": "ue1"},
            "msgId": "u-1",
            "stoAndFwInd": True,
        }
        resp = await rig.http.post(UEO, json=body)
        assert resp.status_code == 503
        assert resp.headers["retry-after"] == "1"
        gate.set()
        assert (await first).status_code == 200
        assert (await rig.http.post(UEO, json=body)).status_code == 200
    finally:
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()


async def test_overload_over_real_http_sockets_is_refused() -> None:
    """200 requests on 50 keep-alive connections, storage stalled, bound 8."""
    rig, backend = await make_rig(RestConfig(max_in_flight=8))
    server = AsgiServer(rig.app, "127.0.0.1", 0)
    await server.start()
    try:
        assert (await rig.register_as()).status_code == 201
        gate, writes = _stall(backend)
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", limits=limits, timeout=30
        ) as client:

            async def post(i: int) -> int:
                resp = await client.post(A2P, json=as_message(f"s-{i}"))
                return resp.status_code

            posts = [asyncio.create_task(post(i)) for i in range(200)]
            for _ in range(1000):  # bounded: at most ~10 s
                if sum(t.done() for t in posts) >= 192:
                    break
                await asyncio.sleep(0.01)
            assert sum(t.done() for t in posts) == 192
            for _ in range(1000):  # the held ones reach the (stalled) storage write
                if len(writes) >= 8:
                    break
                await asyncio.sleep(0.01)
            assert len(writes) == 8
            gate.set()
            codes = await asyncio.gather(*posts)
        assert codes.count(200) == 8
        assert codes.count(503) == 192
    finally:
        await server.aclose()
        await rig.http.aclose()
        await rig.service.aclose()
        await backend.aclose()
