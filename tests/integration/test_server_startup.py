"""A server whose start fails releases everything it had opened (issue 11.5)."""

import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from msgin5g.config import load_config
from msgin5g.errors import ConnectError
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
