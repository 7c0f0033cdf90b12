"""`msgin5g ue listen|send --oscore` against a real `msgin5g serve` process:
two runs of the sender keep their sequence numbers in the state file."""

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import ServerProcess, msgin5g
from tests.e2e.test_scenarios import finish, lines, listen, send

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def test_oscore_devices_over_the_cli(server: ServerProcess, tmp_path: Path) -> None:
    receiver = listen(
        server, "ue2", "s2", "--count", "2", "--decode", "--oscore",
        "--oscore-state", str(tmp_path / "ue2.json"),
    )  # fmt: skip
    state = tmp_path / "ue1.json"
    for text in ("sealed one", "sealed two"):
        out = send(server, "--to", "ue2", "--text", text, "--oscore",
                   "--oscore-state", str(state))  # fmt: skip
        assert out[1]["deliveryStatus"] == "DELY_ACCEPTED", out
    assert json.loads(state.read_text())["next"] > 0
    stdout, _ = finish(receiver, 30)
    texts = [item.get("payloadText") for item in lines(stdout)]
    assert texts[-2:] == ["sealed one", "sealed two"]


def test_oscore_refusal_is_one_line_with_a_hint(
    server: ServerProcess, tmp_path: Path
) -> None:
    result = msgin5g(
        "ue", "register", "stranger", "--secret", "x", "--server", server.url,
        "--bind", "127.0.0.1:0", "--oscore", "--oscore-state",
        str(tmp_path / "s.json"), check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "Security context not found" in result.stderr
    assert "hint" in result.stderr.lower()
