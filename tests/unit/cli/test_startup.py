"""CLI start-up: device commands never load the server stack; without it, one line.

Each case runs the CLI in a fresh interpreter (a real process, as a user runs
it). "Without the server extra" is simulated by ``sys.modules[name] = None`` for
every package of ``msgin5g[server]``: an import of any of them then fails with
``ModuleNotFoundError`` exactly as in a plain ``pip install msgin5g``.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from importlib.metadata import version
from pathlib import Path

import pytest

from msgin5g import _native
from msgin5g.cli.common import SERVER_EXTRA
from msgin5g.config import load_config
from msgin5g.server import Server, provision_ue

pytestmark = pytest.mark.timeout(60)

# run main(argv) in a fresh interpreter, optionally with the server stack
# hidden, then print which heavy modules got imported (as the last line)
_PROGRAM = """
import json, sys
argv, hide = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name in hide:
    sys.modules[name] = None
from msgin5g.cli import main
try:
    status = main(argv)
except SystemExit as exc:
    status = exc.code
heavy = sorted(
    m for m in sys.modules
    if sys.modules[m] is not None and (
        m.partition(".")[0] in set(json.loads(sys.argv[3]))
        or m.startswith(("msgin5g.server", "msgin5g.transports", "msgin5g.storage"))
    )
)
print(json.dumps({"status": status, "heavy": heavy}))
"""


def _run(
    argv: list[str], *, hide: bool = False
) -> tuple[dict[str, object], list[str], str]:
    hidden = sorted(SERVER_EXTRA) if hide else []
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROGRAM,
            json.dumps(argv),
            json.dumps(hidden),
            json.dumps(sorted(SERVER_EXTRA)),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    *out, last = result.stdout.splitlines()
    return json.loads(last), out, result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--version"],
        ["ue", "send", "--help"],
        ["ue", "listen", "--help"],
        ["serve", "--help"],
        ["ue", "import", "--help"],
        ["as", "send", "--help"],
        ["bench", "p2p", "--help"],
    ],
)
def test_help_and_version_load_no_server_module(argv: list[str]) -> None:
    verdict, out, _ = _run(argv)
    assert verdict == {"status": 0, "heavy": []}
    assert out


def test_version_is_the_package_version_and_says_if_compiled() -> None:
    _, out, _ = _run(["--version"])
    assert out[0] == f"msgin5g {version('msgin5g')}"
    assert out[1].startswith(("hot path: compiled (", "hot path: pure Python ("))
    assert len(out) == 2
    if _native.compiled:  # (a pure pass, MSGIN5G_PURE=1, is not passed on to the child)
        assert out[1] == f"hot path: {_native.status}"


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["serve", "--storage", "memory:", "--coap", "127.0.0.1:0"], "serve"),
        (["ue", "add", "u1", "--storage", "memory:"], "ue add"),
        (["group", "list", "--storage", "memory:"], "group list"),
        (["as", "send", "a1", "--to", "u1", "--text", "x"], "as send"),
    ],
)
def test_server_command_without_the_extra_is_one_line_and_a_hint(
    argv: list[str], command: str
) -> None:
    verdict, _, stderr = _run(argv, hide=True)
    assert verdict["status"] == 1
    assert "Traceback" not in stderr
    first, hint = stderr.splitlines()
    found = re.fullmatch(
        rf"msgin5g: '{command}' needs the server stack \((\w+) is not installed\)",
        first,
    )
    assert found is not None, first
    assert found.group(1) in SERVER_EXTRA
    assert hint == "hint: pip install 'msgin5g[server]'"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    url = f"sqlite:///{tmp_path / 'msgin5g.db'}"
    await provision_ue(url, "ue1", "s1")
    await provision_ue(url, "ue2", "s2")
    overrides = {
        "coap.bind": "127.0.0.1:0",
        "storage.url": url,
        "rest.enabled": "false",
    }
    async with Server(load_config(None, {}, overrides)) as srv:
        yield srv


async def test_device_commands_work_without_the_server_stack(server: Server) -> None:
    host, port = server.coap_address
    common = ["--server", f"coap://{host}:{port}", "--bind", "127.0.0.1:0"]
    sent = ["ue", "send", "ue1", "--secret", "s1", "--to", "ue2", "--text", "hi"]
    results = []
    for argv in (
        ["ue", "register", "ue2", "--secret", "s2", *common],
        [*sent, *common],
    ):
        results.append(await asyncio.to_thread(_run, argv, hide=True))
    (registered, reg_out, _), (sending, send_out, stderr) = results
    assert registered == {"status": 0, "heavy": []}
    assert json.loads(reg_out[0])["registrationResult"] == "SUCCESS"
    assert sending == {"status": 0, "heavy": []}, stderr
    assert json.loads(send_out[1])["deliveryStatus"] in {"DELY_ACCEPTED", "DELY_STORED"}


async def test_bench_runs_without_the_server_stack(server: Server) -> None:
    """``msgin5g bench`` is device side: a plain ``pip install msgin5g`` runs it."""
    url = server.config.storage.url
    for ue in ("bench-00001", "bench-00002"):
        await provision_ue(url, ue, "s")
    host, port = server.coap_address
    argv = ["bench", "p2p", "--server", f"coap://{host}:{port}", "--ues", "2"]
    argv += ["--secret", "s", "--duration", "1", "--warmup", "0", "--json"]
    verdict, out, stderr = await asyncio.to_thread(_run, argv, hide=True)
    assert verdict == {"status": 0, "heavy": []}, stderr
    summary = json.loads(out[0])
    assert summary["received"] > 0
    assert summary["lost"] == 0
