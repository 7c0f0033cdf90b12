"""Gateway start-up and shutdown, and bulk timing on a manual clock.

Start-up goes through an AsyncExitStack: a failed bind must release storage
threads, files and sockets. The bulk trigger's wait times (seconds to minutes in
real life) run on a :class:`~msgin5g.testing.ManualClock`: no real waiting.
"""

import asyncio
import os
import socket
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from msgin5g.config import load_config
from msgin5g.errors import ConnectError
from msgin5g.gateway import ConstrainedUE, Gateway, GatewayConfig
from msgin5g.server import Server, provision_ue
from msgin5g.storage import open_backend
from msgin5g.testing import ManualClock

pytestmark = pytest.mark.timeout(60)


def _threads() -> list[str]:
    """Threads other than the event loop's resolver pool (getaddrinfo keeps it)."""
    return sorted(
        t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")
    )


def _fds() -> dict[str, int]:
    """Open descriptors of this process by kind (socket, file path)."""
    kinds: dict[str, int] = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        key = "socket" if target.startswith("socket:") else target
        kinds[key] = kinds.get(key, 0) + 1
    return kinds


async def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for socket I/O to complete (bounded; no timers involved)."""
    for _ in range(2_000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"never happened: {what}")


async def test_failed_bind_releases_storage_threads_and_sockets(
    tmp_path: Path,
) -> None:
    """Attack-free reproduction: the listen port is taken by another process."""
    db = tmp_path / "gateway.db"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        config = GatewayConfig(
            ue_service_id="gw",
            secret="s-gw",
            server="coap://127.0.0.1:9",
            listen=f"127.0.0.1:{port}",
            storage=f"sqlite:///{db}",
        )
        threads_before = _threads()
        fds_before = _fds()
        for _ in range(3):  # repeated failures do not accumulate anything
            gateway = Gateway(config)
            with pytest.raises(ConnectError):
                await gateway.start()
            await gateway.aclose()  # harmless after a failed start
        assert _threads() == threads_before
        after = _fds()
        assert after.get("socket", 0) == fds_before.get("socket", 0)
        assert not [path for path in after if path.startswith(str(db))]
    # the port is free now: the same gateway starts and stops cleanly
    async with Gateway(config) as gateway:
        assert gateway.local_address[1] == port
    assert _threads() == threads_before


@pytest.fixture
async def server_uri(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite:///{tmp_path / 'server.db'}"
    for ue in ("gw", "c1", "c2"):
        await provision_ue(url, ue, f"s-{ue}")
    config = load_config(
        None,
        {},
        {"coap.bind": "127.0.0.1:0", "storage.url": url, "rest.enabled": "false"},
    )
    async with Server(config) as server:
        host, port = server.coap_address
        yield f"coap://{host}:{port}"


async def test_bulk_goes_when_the_smallest_wait_time_expires_on_the_clock(
    server_uri: str,
) -> None:
    clock = ManualClock()
    backend = open_backend("memory:")
    await backend.start()
    config = GatewayConfig(
        ue_service_id="gw",
        secret="s-gw",
        server=server_uri,
        listen="127.0.0.1:0",
        storage="memory:",
        batch_size=50,
        max_wait=30.0,
        guard=0.0,
    )
    try:
        async with Gateway(config, backend=backend, clock=clock) as gateway:
            await _until(lambda: gateway.upstream.registered, "gateway registered")
            uri = f"coap://127.0.0.1:{gateway.local_address[1]}"
            async with (
                ConstrainedUE("c1", "s-c1", gateway=uri) as c1,
                ConstrainedUE("c2", "s-c2", gateway=uri) as c2,
            ):
                first = asyncio.create_task(c1.register(wait_time=20, timeout=30))
                second = asyncio.create_task(c2.register(wait_time=600, timeout=30))
                await _until(
                    lambda: len(gateway._bulk.batcher) == 2,
                    "both requests cached",
                )
                await clock.run_for(19.5)
                assert gateway.bulk_requests == 0
                assert not first.done() and not second.done()
                await clock.run_for(0.5)  # c1's waitTime (20 s) expires
                outcomes = await asyncio.gather(first, second)
            assert gateway.bulk_requests == 1  # both in one BULKREG
            assert all(o.succeeded and not o.piggybacked for o in outcomes)
            assert [o.response_token for o in outcomes] == [
                o.request_token for o in outcomes
            ]
            assert gateway.task_failures == 0
    finally:
        await backend.aclose()
