"""``--log-format json``: one JSON object per line, structured fields, no secrets."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

from msgin5g.coap import (
    CoapMessage,
    Code,
    Endpoint,
    OptionNumber,
    Type,
    uri_path_options,
)
from msgin5g.codec.ue_payload import encode
from msgin5g.config import load_config
from msgin5g.logsafe import JsonFormatter
from msgin5g.model.messages import Reg, UECredentialInfo
from msgin5g.server import Server
from msgin5g.spec.coap import MSGIN5G_PATH


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("msgin5g.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_one_line_per_record_whatever_the_values() -> None:
    forged = "ue1\n2026-01-01 INFO forged line\u2028more\x1b[31m"
    line = JsonFormatter().format(
        record("registered %s", forged, ue_service_id=forged, message_id="m-1")
    )
    assert "\n" not in line and "\u2028" not in line and "\x1b" not in line
    data = json.loads(line)
    assert data["event"] == "registered %s"  # the template: stable per event
    assert data["message"] == f"registered {forged}"
    assert data["ue_service_id"] == forged
    assert data["message_id"] == "m-1"
    assert data["level"] == "INFO" and data["logger"] == "msgin5g.test"
    assert data["ts"].endswith("+00:00")


def test_secrets_are_never_written() -> None:
    data = json.loads(
        JsonFormatter().format(
            record("x", secret="s3cr3t", access_token="tok", cause="NOT_AUTHORIZED")
        )
    )
    assert "s3cr3t" not in json.dumps(data) and "tok" not in json.dumps(data)
    assert data["cause"] == "NOT_AUTHORIZED"


def test_traceback_stays_inside_the_line() -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        rec = logging.LogRecord(
            "msgin5g.test", logging.ERROR, __file__, 1, "bug", (), sys.exc_info()
        )
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    assert "ValueError" in json.loads(line)["exc"]


async def test_a_refused_uplink_logs_cause_ue_and_message_type(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A REG sent Non-confirmable is refused (4.00 INVALID_MESSAGE): the log
    record carries the cause, the UE and the Message Type as fields."""
    config = load_config(
        None,
        {},
        {"storage.url": "memory:", "coap.bind": "127.0.0.1:0", "rest.enabled": "false"},
    )
    reg = Reg(
        ue_service_id="ghost",
        ue_credential_info=UECredentialInfo(auth_type="PSK_TOKEN", credential="c"),
    )
    async with (
        Server(config) as server,
        await Endpoint.create(("127.0.0.1", 0)) as device,
    ):
        request = CoapMessage(
            Type.NON,
            Code.POST,
            options=[
                *uri_path_options(MSGIN5G_PATH),
                (OptionNumber.CONTENT_FORMAT, b"\x32"),
            ],
            payload=encode(reg),
        )
        with caplog.at_level(logging.INFO, "msgin5g"):
            answer = await device.request(request, server.coap_address, timeout=5)
    assert answer.code == Code.BAD_REQUEST
    refused = [r for r in caplog.records if getattr(r, "event", "") == "uplink_refused"]
    assert refused, [r.getMessage() for r in caplog.records]
    data = json.loads(JsonFormatter().format(refused[0]))
    assert data["cause"] == "INVALID_MESSAGE"
    assert data["ue_service_id"] == "ghost"
    assert data["message_type"] == "REG"
    assert data["peer"].startswith("127.0.0.1:")
    assert data.get("credential") != "c"  # never copied


def test_cli_json_log_lines() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "msgin5g", "--log-format", "json", "--log-level",
         "DEBUG", "ue", "register", "u1", "--secret", "s", "--server",
         "coap://127.0.0.1:9"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    logs = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert logs, result.stderr
    for line in logs:
        assert {"ts", "level", "logger", "event", "message"} <= json.loads(line).keys()
