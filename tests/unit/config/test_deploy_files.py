"""deploy/: the example configurations load through the real loader and serve.

Images cannot be pulled here and there is no systemd as PID 1, so the
Dockerfile and the unit are checked for what the docs promise (the unit also
passes ``systemd-analyze verify`` when that tool exists); the configurations
are loaded with :func:`msgin5g.config.load_config` and one starts a real
server.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from msgin5g.config import load_config
from msgin5g.server import Server

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def test_single_node_config_loads() -> None:
    config = load_config(DEPLOY / "single-node.toml", {})
    assert config.storage.url == "sqlite:////var/lib/msgin5g/msgin5g.db"
    assert config.storage.synchronous == "FULL"
    assert config.coap.bind == "0.0.0.0:5683"
    assert config.rest.bind == "0.0.0.0:8080"
    assert config.rest.oauth2 is True  # the REST port is open: tokens required


def test_cluster_node_config_loads_with_shared_nats_storage() -> None:
    config = load_config(DEPLOY / "cluster-node.toml", {})
    assert config.storage.url.startswith("nats://")
    assert config.rest.oauth2 is True
    # the environment overrides the URL (credentials stay out of the file)
    secret_url = "nats://user:pw@nats-1:4222"
    env = load_config(DEPLOY / "cluster-node.toml", {"MSGIN5G_STORAGE_URL": secret_url})
    assert env.storage.url == secret_url


async def test_single_node_config_serves(tmp_path: Path) -> None:
    config = load_config(
        DEPLOY / "single-node.toml",
        {},
        {
            "coap.bind": "127.0.0.1:0",
            "rest.bind": "127.0.0.1:0",
            "storage.url": f"sqlite:///{tmp_path / 'msgin5g.db'}",
        },
    )
    async with Server(config) as server:
        address = server.http_address
        assert address is not None
        async with httpx.AsyncClient(
            base_url=f"http://{address[0]}:{address[1]}", timeout=10
        ) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/readyz")).status_code == 200
            assert (await http.get("/metrics")).status_code == 401  # operator only
            console = await http.get("/console")
            assert console.status_code == 303
            assert console.headers["location"] == "/console/login"


def test_systemd_unit_is_hardened() -> None:
    unit = (DEPLOY / "msgin5g.service").read_text()
    for line in (
        "DynamicUser=yes",
        "StateDirectory=msgin5g",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=\n",
        "ExecStart=/opt/msgin5g/bin/msgin5g --log-format json serve "
        "--config /etc/msgin5g/msgin5g.toml",
    ):
        assert line in unit, line


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)
def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # verify needs ExecStart to exist: point it at this interpreter's msgin5g
    exe = Path(sys.executable).with_name("msgin5g")
    if not exe.exists():
        pytest.skip(f"{exe} is not installed")
    unit = (DEPLOY / "msgin5g.service").read_text()
    copy = tmp_path / "msgin5g.service"
    copy.write_text(unit.replace("/opt/msgin5g/bin/msgin5g", str(exe)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_dockerfile_is_multi_stage_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert text.count("\nFROM ") == 2
    assert "COPY --from=build /opt/msgin5g /opt/msgin5g" in text
    assert "USER 10001:10001" in text
    assert "EXPOSE 5683/udp 8080" in text
    assert "COPY deploy/single-node.toml /etc/msgin5g/msgin5g.toml" in text
