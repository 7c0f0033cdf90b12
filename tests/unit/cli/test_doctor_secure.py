"""``msgin5g doctor`` on coaps://, HTTPS and an MQTT broker, with real peers.

The binary runs as a user runs it; the peers are real: the msgin5g server with
``coap.secure_bind`` and ``rest.tls_cert`` (in this process, on free loopback
ports), a plain UDP socket that speaks no DTLS, a private ``mosquitto`` with a
password file.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from pathlib import Path

from msgin5g.config import load_config
from msgin5g.server import Server
from tests.conftest import require_binary
from tests.e2e.test_rest_tls_jwt import self_signed
from tests.mosquitto import Mosquitto
from tests.unit.cli.test_doctor import env, free_port, lines


async def doctor(*args: str) -> tuple[int, str]:
    """Run the doctor without blocking the loop (a server may run in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "msgin5g", "doctor", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env(),
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert b"Traceback" not in err, err.decode()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def checks(text: str) -> dict[str, str]:
    """check name -> status, for the checks whose name is two words."""
    found = lines(text)
    for line in text.splitlines():
        for name in ("coaps port", "http tls", "mqtt broker"):
            if line[6:].startswith(name):
                found[name] = line.split()[0]
    return found


async def test_coaps_port_free_taken_and_served(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    free = free_port(socket.SOCK_DGRAM)
    common = (
        "--storage",
        storage,
        "--http",
        f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
    )
    status, text = await doctor(*common, "--coaps", f"127.0.0.1:{free}")
    assert status == 0, text
    assert checks(text)["coaps port"] == "ok"
    assert "coap port" not in checks(text)  # plain CoAP is off with coaps alone

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))  # bound, speaks no DTLS
        status, text = await doctor(
            *common, "--coaps", f"127.0.0.1:{udp.getsockname()[1]}"
        )
    assert status == 1, text
    assert checks(text)["coaps port"] == "FAIL"
    assert "taken by another process" in text and "hint:" in text

    config = load_config(
        None,
        {},
        {
            "storage.url": storage,
            "coap.secure_bind": "127.0.0.1:0",
            "coap.psk_store": str(tmp_path / "psk.db"),
            "rest.enabled": "false",
        },
    )
    async with Server(config) as server:
        secure = server.coap_addresses[1]
        assert secure is not None
        before = (
            server.coap.secure.dtls.stats()
            if server.coap and server.coap.secure
            else {}
        )
        status, text = await doctor(*common, "--coaps", f"127.0.0.1:{secure[1]}")
        assert server.coap is not None and server.coap.secure is not None
        after = server.coap.secure.dtls.stats()
    assert status == 0, text
    assert checks(text)["coaps port"] == "warn"
    assert "answers a ClientHello" in text
    assert after["hello_verify"] == before["hello_verify"] + 1
    assert after["sessions"] == 0  # the probe left no state


async def test_http_port_over_tls_is_recognised(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    storage = f"sqlite:///{tmp_path / 'db.sqlite'}"
    tls = ("--tls-cert", str(cert), "--tls-key", str(key))
    config = load_config(
        None,
        {},
        {
            "storage.url": storage,
            "coap.bind": "127.0.0.1:0",
            "rest.bind": "127.0.0.1:0",
            "rest.tls_cert": str(cert),
            "rest.tls_key": str(key),
        },
    )
    async with Server(config) as server:
        http = server.http_address
        assert http is not None
        where = ("--storage", storage, "--coap", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
                 "--http", f"{http[0]}:{http[1]}")  # fmt: skip
        status, text = await doctor(*where, *tls)
        # the same port without TLS in the configuration: not a msgin5g server
        plain_status, plain_text = await doctor(*where)
    assert status == 0, text
    assert checks(text)["http tls"] == "ok"
    assert checks(text)["http port"] == "warn"
    assert "and is ready" in text
    assert "curl https://" in text
    assert plain_status == 1
    assert checks(plain_text)["http port"] == "FAIL"

    (tmp_path / "broken.pem").write_text("not a certificate\n")
    status, text = await doctor(
        "--storage", storage,
        "--coap", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
        "--http", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
        "--tls-cert", str(tmp_path / "broken.pem"), "--tls-key", str(key),
    )  # fmt: skip
    assert status == 1, text
    assert checks(text)["http tls"] == "FAIL"


def broker_with_password(tmp_path: Path) -> Mosquitto:
    passwd = require_binary("mosquitto_passwd")
    workdir = tmp_path / "broker"
    workdir.mkdir()
    passwords = workdir / "passwd"
    subprocess.run(
        [passwd, "-c", "-b", str(passwords), "msgin5g-server", "right-pw"],
        check=True,
        capture_output=True,
    )
    return Mosquitto(workdir, password_file=passwords)


async def test_mqtt_broker_connect_with_the_configured_credentials(
    tmp_path: Path,
) -> None:
    common = (
        "--storage", f"sqlite:///{tmp_path / 'db.sqlite'}",
        "--coap", f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
        "--http", f"127.0.0.1:{free_port(socket.SOCK_STREAM)}",
        "--set", "mqtt.username=msgin5g-server",
    )  # fmt: skip
    with broker_with_password(tmp_path) as broker:
        ok_status, ok_text = await doctor(
            *common, "--mqtt", broker.url, "--set", "mqtt.password=right-pw"
        )
        bad_status, bad_text = await doctor(
            *common, "--mqtt", broker.url, "--set", "mqtt.password=wrong-pw"
        )
    gone_status, gone_text = await doctor(
        *common, "--mqtt", broker.url, "--set", "mqtt.password=right-pw"
    )
    assert ok_status == 0, ok_text
    assert checks(ok_text)["mqtt broker"] == "ok"
    assert "as msgin5g-server" in ok_text
    assert "right-pw" not in ok_text + bad_text  # no secret in the report
    assert bad_status == 1
    assert checks(bad_text)["mqtt broker"] == "FAIL"
    assert "hint:" in bad_text
    assert gone_status == 1
    assert checks(gone_text)["mqtt broker"] == "FAIL"
