"""The CLI over MQTT: ``msgin5g serve --mqtt`` and ``msgin5g ue … --server mqtt://``.

Real processes: a private mosquitto, ``msgin5g serve`` and the device commands.
A missing broker is reported in one line plus a hint, within seconds.
"""

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, msgin5g, spawn
from tests.mosquitto import Mosquitto, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def _wait_for_line(proc: subprocess.Popen[str], text: str) -> str:
    assert proc.stdout is not None
    for _ in range(50):
        line = proc.stdout.readline()
        if not line:
            break
        if text in line:
            return line
    raise AssertionError(f"no {text!r} from {proc.args}")


def test_serve_mqtt_and_device_commands(tmp_path: Path, broker: Mosquitto) -> None:
    server = ServerProcess(tmp_path / "cli.db", extra=("--mqtt", broker.url))
    for ue in ("ue1", "ue2"):
        msgin5g("ue", "add", ue, "--secret", f"s-{ue}", "--storage", server.storage)
    server.start()
    try:
        assert any("over MQTT through" in line for line in server.logs)
        listen = spawn(
            "ue", "listen", "ue2", "--secret", "s-ue2", "--server", broker.url,
            "--count", "1", "--timeout", "30",
        )  # fmt: skip
        try:
            _wait_for_line(listen, "REGRESP")
            sent = msgin5g(
                "ue", "send", "ue1", "--secret", "s-ue1", "--server", broker.url,
                "--to", "ue2", "--text", "over mqtt", "--report", "--wait", "10",
            )  # fmt: skip
            out, err = listen.communicate(timeout=30)
        finally:
            if listen.poll() is None:
                listen.kill()
                listen.communicate()
        got = json.loads(out.splitlines()[0])
        assert got["messageType"] == "MSG" and got["originatingUeServiceId"] == "ue1"
        lines = [json.loads(line) for line in sent.stdout.splitlines()]
        assert [line["messageType"] for line in lines] == ["REGRESP", "MSGRESP", "IMDN"]
        assert lines[2]["deliveryStatus"] == "REPT_DELY_SUCCESS"
        assert "Traceback" not in err
    finally:
        server.stop()


def test_missing_broker_is_one_line_and_a_hint(tmp_path: Path) -> None:
    nobody = f"mqtt://127.0.0.1:{free_port()}"
    device = msgin5g(
        "ue", "register", "ue1", "--secret", "s", "--server", nobody,
        check=False, timeout=60,
    )  # fmt: skip
    assert device.returncode == 1
    assert device.stderr.startswith(f"msgin5g: MQTT broker {nobody} did not accept")
    assert "Traceback" not in device.stderr
    serve = msgin5g(
        "serve", "--coap", "127.0.0.1:0", "--storage", f"sqlite:///{tmp_path / 'x.db'}",
        "--set", "rest.enabled=false", "--mqtt", nobody,
        "--set", "mqtt.connect_timeout=2",
        check=False, timeout=60,
    )  # fmt: skip
    assert serve.returncode == 1, serve.stderr
    assert f"MQTT broker {nobody} did not accept" in serve.stderr
    assert "hint:" in serve.stderr and "Traceback" not in serve.stderr
