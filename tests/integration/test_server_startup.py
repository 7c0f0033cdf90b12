"""A server whose start fails releases everything it had opened (issue 11.5)."""

import asyncio
import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from msgin5g.config import load_config
from msgin5g.errors import ConnectError, MSGin5GError
from msgin5g.server import Server

pytestmark = pytest.mark.timeout(30)


def ours() -> set[str]:
    """Live threads but the event loop's default executor (shared, reused)."""
    return {t.name for t in threading.enumerate() if not t.name.startswith("asyncio_")}


async def test_a_taken_http_port_releases_storage_and_sockets(tmp_path: Path) -> None:
    db = tmp_path / "msgin5g.db"
    threads_before = ours()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = load_config(
            None,
            {},
            {
                "coap.bind": "127.0.0.1:0",
                "storage.url": f"sqlite:///{db}",
                "rest.bind": f"127.0.0.1:{port}",
            },
        )
        server = Server(config)
        with pytest.raises(ConnectError):
            await server.start()
    # the storage writer/reader threads are gone and the file is not held open
    assert ours() == threads_before
    assert server.backend is None and server.service is None
    conn = sqlite3.connect(db, timeout=0)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        conn.rollback()
    finally:
        conn.close()
    # and the same configuration starts once the port is free
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": f"sqlite:///{db}",
            "rest.bind": "127.0.0.1:0",
        },
    )
    async with Server(config) as started:
        assert started.http_address is not None


async def test_a_taken_coap_port_releases_rest_service_and_storage(
    tmp_path: Path,
) -> None:
    """CoAP binds after REST and the service: all of them are closed again."""
    db = tmp_path / "msgin5g.db"
    threads_before = ours()
    tasks_before = len(asyncio.all_tasks())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        udp_port = taken.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            http_port = probe.getsockname()[1]
        config = load_config(
            None,
            {},
            {
                "coap.bind": f"127.0.0.1:{udp_port}",
                "storage.url": f"sqlite:///{db}",
                "rest.bind": f"127.0.0.1:{http_port}",
            },
        )
        server = Server(config)
        with pytest.raises(MSGin5GError):
            await server.start()
    assert server.backend is None and server.service is None and server.rest is None
    assert ours() == threads_before  # storage threads gone
    assert len(asyncio.all_tasks()) == tasks_before  # HTTP server, supervisor: gone
    # nobody listens on the HTTP port any more (SO_REUSEADDR: TIME_WAIT is fine)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", http_port))
        again.listen()
    await server.aclose()  # closing a server whose start failed is a no-op


async def test_stop_closes_in_reverse_order_and_twice_is_harmless(
    tmp_path: Path,
) -> None:
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": f"sqlite:///{tmp_path / 'msgin5g.db'}",
            "rest.enabled": "false",
        },
    )
    threads_before = ours()
    server = Server(config)
    await server.start()
    assert server.service is not None
    service = server.service
    await server.aclose()
    assert service.tasks.running == 0 and service.stats()["taskFailures"] == 0
    assert server.service is None and ours() == threads_before
    await server.aclose()
