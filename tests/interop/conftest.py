"""An in-process MSGin5G Server on a real loopback UDP socket for interop peers."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.config import load_config
from msgin5g.server import Server, provision_ue


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    url = f"sqlite:///{tmp_path / 'interop.db'}"
    for ue in ("ue1", "ue2"):
        await provision_ue(url, ue, f"secret-{ue}")
    config = load_config(
        None,
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "storage.url": url,
            "coap.max_payload": "1024",
            "rest.enabled": "false",
        },
    )
    async with Server(config) as srv:
        yield srv
